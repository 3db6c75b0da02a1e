//! The outbox schema, as an append-only list of migrations (`PRAGMA user_version` counts them).
//!
//! `events.seq` is `AUTOINCREMENT`, so a seq is never handed out twice, even after the table was emptied.
//! `meta` holds the outbox `epoch` (random, written once when the database is created) and the count of
//! events dropped since then. `runs` (migration 2) records each run of the agent: its start, the last moment
//! it is known to have observed (updated with every commit and while idle) and, on a clean stop, the stop
//! time. `last_reported` holds each alarm's last reported flag per asset, written in the transaction that
//! stores the alarm event.

use rusqlite_migration::{Migrations, M};

/// `events.kind` values; only used for queries (the CBOR body is the truth).
pub const KIND_STATE: i64 = 0;
pub const KIND_ALARM: i64 = 1;
pub const KIND_SOURCE: i64 = 2;
pub const KIND_GAP: i64 = 3;

pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            "CREATE TABLE meta (
             key   TEXT PRIMARY KEY,
             value INTEGER NOT NULL
         ) STRICT;
         CREATE TABLE events (
             seq   INTEGER PRIMARY KEY AUTOINCREMENT,
             ts_ms INTEGER NOT NULL,
             asset TEXT NOT NULL,
             kind  INTEGER NOT NULL,
             body  BLOB NOT NULL,
             size  INTEGER NOT NULL
         );
         CREATE INDEX events_latest_state ON events(asset, seq) WHERE kind = 0;
         CREATE INDEX events_gaps ON events(seq) WHERE kind = 3;",
        ),
        M::up(
            "CREATE TABLE runs (
                 id         INTEGER PRIMARY KEY AUTOINCREMENT,
                 started_ms INTEGER NOT NULL,
                 last_ms    INTEGER NOT NULL,
                 stopped_ms INTEGER
             ) STRICT;
             CREATE TABLE last_reported (
                 asset  TEXT NOT NULL,
                 alarm  TEXT NOT NULL,
                 active INTEGER NOT NULL,
                 ts_ms  INTEGER NOT NULL,
                 PRIMARY KEY (asset, alarm)
             ) STRICT, WITHOUT ROWID;",
        ),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        assert!(super::migrations().validate().is_ok());
    }
}
