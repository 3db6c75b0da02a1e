//! The store's schema, as an ordered list of migrations (rusqlite_migration, tracked in `user_version`).
//! Append new migrations; never edit one that has shipped.

use rusqlite_migration::{Migrations, M};

/// All migrations in order.
pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("sql/001_events.sql")),
        M::up(include_str!("sql/002_people.sql")),
        M::up(include_str!("sql/003_gateway_identity.sql")),
        M::up(include_str!("sql/004_escalations_escalate.sql")),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    #[test]
    fn migration_3_keys_events_gateways_and_offline_marks_by_site_and_keeps_existing_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("c.db")).unwrap();
        migrations().to_version(&mut conn, 2).unwrap();
        conn.execute_batch(
            "INSERT INTO events VALUES ('gw-1', 7, 1, 'a', 'press-1', 10, 'state', '{}', 11);
             INSERT INTO gateways VALUES ('gw-1', 'a', 1, 12, '{}');
             INSERT INTO gateway_offline VALUES ('gw-1', 'a', 13);",
        )
        .unwrap();
        migrations().to_latest(&mut conn).unwrap();
        let n = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
        assert_eq!(n("SELECT COUNT(*) FROM events WHERE site = 'a' AND gateway = 'gw-1' AND received_ms = 11"), 1);
        assert_eq!(n("SELECT COUNT(*) FROM gateways WHERE site = 'a' AND last_seen_ms = 12"), 1);
        assert_eq!(n("SELECT COUNT(*) FROM gateway_offline WHERE site = 'a' AND ts_ms = 13"), 1);
        // The same gateway id, epoch and seq in another site is another row everywhere.
        conn.execute_batch(
            "INSERT INTO events (site, gateway, epoch, seq, asset, ts_ms, kind, body, received_ms)
               VALUES ('b', 'gw-1', 7, 1, 'press-1', 10, 'state', '{}', 11);
             INSERT INTO gateways (site, gateway, online, last_seen_ms, status) VALUES ('b', 'gw-1', 1, 12, '{}');
             INSERT INTO gateway_offline (site, gateway, ts_ms) VALUES ('b', 'gw-1', 13);",
        )
        .unwrap();
        for table in ["events", "gateways", "gateway_offline"] {
            assert_eq!(n(&format!("SELECT COUNT(*) FROM {table}")), 2, "{table}");
        }
    }
}
