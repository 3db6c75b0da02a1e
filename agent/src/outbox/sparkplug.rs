//! The Sparkplug uplink's birth/death sequence number (`bdSeq`), kept in the outbox database so that it
//! survives restarts: the row `meta('sparkplug_bd_seq')` holds the bdSeq of the last MQTT session that
//! reached the broker. No schema change: `meta` is the outbox's key/value table.

use super::{Outbox, OutboxError};
use rusqlite::OptionalExtension;

const KEY: &str = "sparkplug_bd_seq";

impl Outbox {
    /// The bdSeq of the last session that reached the broker, if any was recorded.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn sparkplug_bd_seq(&self) -> Result<Option<u64>, OutboxError> {
        let v: Option<i64> =
            self.conn.query_row("SELECT value FROM meta WHERE key = ?1", [KEY], |r| r.get(0)).optional()?;
        Ok(v.map(|v| (v as u64) % 256))
    }

    /// Records the bdSeq of a session that reached the broker.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_sparkplug_bd_seq(&self, bd_seq: u64) -> Result<(), OutboxError> {
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            rusqlite::params![KEY, (bd_seq % 256) as i64],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::OutboxConfig;

    #[test]
    fn bd_seq_survives_reopening_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let config = OutboxConfig::at(dir.path().join("o.db"));
        let o = Outbox::open(&config).unwrap();
        assert_eq!(o.sparkplug_bd_seq().unwrap(), None);
        o.set_sparkplug_bd_seq(255).unwrap();
        o.set_sparkplug_bd_seq(7).unwrap();
        drop(o);
        assert_eq!(Outbox::open(&config).unwrap().sparkplug_bd_seq().unwrap(), Some(7));
    }
}
