//! The store's schema, as an ordered list of migrations (rusqlite_migration, tracked in `user_version`).
//! Append new migrations; never edit one that has shipped.

use rusqlite_migration::{Migrations, M};

/// All migrations in order.
pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![M::up(include_str!("sql/001_events.sql")), M::up(include_str!("sql/002_people.sql"))])
}
