//! The read side's narrow door into the store: what the `query` layer (the dashboard, the API and the
//! `report` / `import` commands) reads, and the two writes it makes (a personnel import, the join
//! snapshot). Everything above `store` calls these and writes no SQL; the SQL itself stays in
//! [`super::events`] and [`super::people`], with the few queries that had been written
//! in `http/` now here.

use super::people::{self as db, ImportSummary, PeopleStoreError, Snapshot, SnapshotSummary};
use super::{events, StoreError};
use crate::join::{AlarmStart, JoinedEvent};
use crate::people::import::{self, ImportError, Kind};
use crate::people::{Personnel, Settings};
use crate::timeline::Downtime;
use rusqlite::Connection;
use std::path::Path;
use std::time::Duration;

/// A read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Open(#[from] StoreError),
    #[error(transparent)]
    People(#[from] PeopleStoreError),
    #[error("SQLite: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// One gateway as the store knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Gateway {
    pub gateway: String,
    pub site: String,
    pub online: bool,
    pub last_seen_ms: i64,
    pub status: Option<shiftlens_common::status::Status>,
}

/// A read-only connection that never blocks the writer.
pub struct Reader {
    conn: Connection,
}

impl Reader {
    /// # Errors
    /// The file cannot be opened.
    pub fn open(path: &Path) -> Result<Self, ReadError> {
        Ok(Self { conn: super::open_reader(path)? })
    }

    /// SQLite's `PRAGMA data_version`: changes when another connection commits.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn data_version(&self) -> Result<i64, ReadError> {
        Ok(self.conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    /// The current personnel records.
    ///
    /// # Errors
    /// SQLite failures or an unreadable stored record.
    pub fn personnel(&self, settings: Settings) -> Result<Personnel, ReadError> {
        Ok(db::load(&self.conn, settings)?)
    }

    /// Every downtime event.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn downtime(&self) -> Result<Vec<Downtime>, ReadError> {
        Ok(events::query_downtime(&self.conn, &events::DowntimeFilter::default())?)
    }

    /// Alarm activations in `[from, to)`, sorted by time.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn alarm_starts(&self, from_ms: i64, to_ms: i64) -> Result<Vec<AlarmStart>, ReadError> {
        Ok(db::alarm_starts(&self.conn, from_ms, to_ms)?)
    }

    /// Every stored revision of one event's join, oldest first.
    ///
    /// # Errors
    /// SQLite failures or an unreadable body.
    pub fn snapshots(&self, event_key: &str) -> Result<Vec<Snapshot>, ReadError> {
        Ok(db::snapshots(&self.conn, event_key)?)
    }

    /// Gateways, online first, then by id.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn gateways(&self) -> Result<Vec<Gateway>, ReadError> {
        let mut st = self.conn.prepare(
            "SELECT gateway, site, online, last_seen_ms, status FROM gateways ORDER BY online DESC, gateway",
        )?;
        let rows = st.query_map([], |r| {
            Ok(Gateway {
                gateway: r.get(0)?,
                site: r.get(1)?,
                online: r.get(2)?,
                last_seen_ms: r.get(3)?,
                status: serde_json::from_str(&r.get::<_, String>(4)?).ok(),
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// (gateways online, gateways known).
    ///
    /// # Errors
    /// SQLite failures.
    pub fn gateway_counts(&self) -> Result<(u64, u64), ReadError> {
        let (online, known): (i64, i64) =
            self.conn.query_row("SELECT COALESCE(SUM(online), 0), COUNT(*) FROM gateways", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        Ok((online.max(0) as u64, known.max(0) as u64))
    }

    /// Stored dead letters.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn dead_letters(&self) -> Result<u64, ReadError> {
        Ok(events::dead_letter_count(&self.conn)?)
    }
}

fn open_writer(path: &Path) -> Result<Connection, ReadError> {
    let conn = db::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// Saves the join as snapshots (new and revised events only), stamped with the current data revision.
///
/// # Errors
/// The store cannot be opened for writing, or SQLite failures (nothing is then stored).
pub fn save_join_snapshots(path: &Path, joined: &[JoinedEvent], now_ms: i64) -> Result<SnapshotSummary, ReadError> {
    let mut conn = open_writer(path)?;
    let rev = db::data_revision(&conn)?;
    Ok(db::save_snapshots(&mut conn, rev, joined, now_ms)?)
}

/// Validates one personnel CSV against what is stored and stores it whole: `Ok(Err(rows))` when rows are
/// invalid (nothing stored).
///
/// # Errors
/// Store failures (nothing stored).
pub fn import_personnel(
    path: &Path,
    settings: Settings,
    kind: Kind,
    file: &str,
    text: &str,
    now_ms: i64,
) -> Result<Result<ImportSummary, Vec<ImportError>>, ReadError> {
    let mut conn = open_writer(path)?;
    let known = db::load(&conn, settings)?;
    let records = match import::parse(kind, file, text, &known) {
        Ok(r) => r,
        Err(errors) => return Ok(Err(errors)),
    };
    Ok(Ok(db::import(&mut conn, kind, file, &records, now_ms)?))
}

/// Creates the store file if needed and brings its schema up to date (the commands may run before the
/// collector ever has).
///
/// # Errors
/// The file cannot be opened or migrated.
pub fn prepare(path: &Path) -> Result<(), ReadError> {
    open_writer(path).map(drop)
}
