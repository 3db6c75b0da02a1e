//! The read side's narrow door into the store: what the `query` layer (the dashboard, the API and the
//! `report` / `import` commands) reads, and the two writes it makes (a personnel import, the join
//! snapshot). Everything above `store` calls these and writes no SQL; the SQL itself stays in
//! [`super::events`] and [`super::people`], with the few queries that had been written
//! in `http/` now here.

use super::people::{self as db, ImportSummary, PeopleStoreError, Snapshot, SnapshotSummary};
use super::{events, StoreError};
use crate::join::{AlarmStart, Alarms, JoinedEvent};
use crate::people::import::{self, ImportError, Kind};
use crate::people::{Personnel, Settings};
use crate::timeline::Downtime;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
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
    #[error(transparent)]
    Postgres(#[from] super::pg::PgError),
    #[error("{0} is not available with the PostgreSQL store yet")]
    NotOnPostgres(&'static str),
}

/// Store paths whose reads go to PostgreSQL instead (`[store] backend = "postgres"`): registered once at
/// start by [`serve_from_postgres`], so every caller of [`Reader::open`] reads the same store.
static POSTGRES: std::sync::Mutex<Vec<(std::path::PathBuf, super::pg::Target)>> = std::sync::Mutex::new(Vec::new());

/// Sends the reads of the store named by `config.path` to its PostgreSQL database when the backend is
/// PostgreSQL (a no-op for SQLite).
///
/// # Errors
/// A bad url, an unreadable password file or CA.
pub fn serve_from_postgres(config: &super::StoreConfig) -> Result<(), ReadError> {
    if config.backend == super::Backend::Postgres {
        let target = super::pg::Target::from_store(config)?;
        let mut map = POSTGRES.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|(p, _)| p != &config.path);
        map.push((config.path.clone(), target));
        let stale: Vec<_> = {
            let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
            let (stale, keep) = std::mem::take(&mut *idle).into_iter().partition(|(p, _)| p == &config.path);
            *idle = keep;
            stale
        };
        drop(stale);
    }
    Ok(())
}

/// PostgreSQL readers not in use, still connected, by store path: [`Reader::open`] takes one before it
/// connects anew (a connection costs a login and a server process, about as long as most reports), and a
/// dropped [`Reader`] puts its connection back, up to [`IDLE_MAX`] per store.
static IDLE: std::sync::Mutex<Vec<(PathBuf, Box<super::pg::read::Reader>)>> = std::sync::Mutex::new(Vec::new());

/// Idle PostgreSQL connections kept per store.
const IDLE_MAX: usize = 4;

/// An idle reader of `path` that still answers, else a new connection to `target`.
fn pg_reader(path: &Path, target: &super::pg::Target) -> Result<Box<super::pg::read::Reader>, ReadError> {
    loop {
        let idle = {
            let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
            idle.iter().rposition(|(p, _)| p == path).map(|i| idle.swap_remove(i).1)
        };
        match idle {
            Some(r) if r.ping() => return Ok(r),
            Some(_) => continue, // the server closed it (a restart): dropped, try the next
            None => return Ok(Box::new(super::pg::read::Reader::open(target)?)),
        }
    }
}

/// The PostgreSQL database registered for the store at `path`, if any.
pub(crate) fn postgres_for(path: &Path) -> Option<super::pg::Target> {
    POSTGRES.lock().unwrap_or_else(|e| e.into_inner()).iter().find(|(p, _)| p == path).map(|(_, t)| t.clone())
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

/// A read-only connection that never blocks the writer: SQLite, or PostgreSQL when the store's path was
/// registered by [`serve_from_postgres`].
pub struct Reader {
    conn: Option<Connection>,
    pg: Option<Box<super::pg::read::Reader>>,
    path: PathBuf,
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(pg) = self.pg.take() {
            if pg.is_closed() {
                return;
            }
            let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
            if idle.iter().filter(|(p, _)| *p == self.path).count() < IDLE_MAX {
                idle.push((std::mem::take(&mut self.path), pg));
                return;
            }
            drop(idle);
            drop(pg);
        }
    }
}

impl Reader {
    /// # Errors
    /// The file (or database) cannot be opened.
    pub fn open(path: &Path) -> Result<Self, ReadError> {
        if let Some(target) = postgres_for(path) {
            return Ok(Self { conn: None, pg: Some(pg_reader(path, &target)?), path: path.to_path_buf() });
        }
        Ok(Self { conn: Some(super::open_reader(path)?), pg: None, path: path.to_path_buf() })
    }

    fn conn(&self) -> Result<&Connection, ReadError> {
        self.conn.as_ref().ok_or(ReadError::NotOnPostgres("this read"))
    }

    /// SQLite's `PRAGMA data_version` (PostgreSQL: a count of changed rows): changes when another
    /// connection commits.
    ///
    /// # Errors
    /// Store failures.
    pub fn data_version(&self) -> Result<i64, ReadError> {
        if let Some(pg) = &self.pg {
            return Ok(pg.data_version()?);
        }
        Ok(self.conn()?.query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    /// The current personnel records.
    ///
    /// # Errors
    /// Store failures or an unreadable stored record.
    pub fn personnel(&self, settings: Settings) -> Result<Personnel, ReadError> {
        if let Some(pg) = &self.pg {
            return Ok(pg.people(settings)?);
        }
        Ok(db::load(self.conn()?, settings)?)
    }

    /// Every downtime event.
    ///
    /// # Errors
    /// Store failures.
    pub fn downtime(&self) -> Result<Vec<Downtime>, ReadError> {
        if let Some(pg) = &self.pg {
            return Ok(pg.downtime(&events::DowntimeFilter::default())?);
        }
        Ok(events::query_downtime(self.conn()?, &events::DowntimeFilter::default())?)
    }

    /// Sets each event's escalation acknowledgement (`ack_ms`, docs/escalation.md).
    pub fn fill_acks(&self, events: &mut [crate::join::JoinedEvent]) {
        if let Some(conn) = &self.conn {
            super::escalations::fill_acks(conn, events);
        }
        if let Some(pg) = &self.pg {
            match pg.ack_times() {
                Ok(acks) => super::escalations::set_acks(&acks, events),
                Err(e) => tracing::debug!(error = %e, "no escalation acknowledgements read"),
            }
        }
    }

    /// Alarm activations in `[from, to)`, sorted by time.
    ///
    /// # Errors
    /// Store failures.
    pub fn alarm_starts(&self, from_ms: i64, to_ms: i64) -> Result<Vec<AlarmStart>, ReadError> {
        if let Some(pg) = &self.pg {
            return Ok(pg.alarm_starts(from_ms, to_ms)?);
        }
        Ok(db::alarm_starts(self.conn()?, from_ms, to_ms)?)
    }

    /// Alarm activations raised before `to_ms` with their attributes, keys interned, sorted by raise time.
    ///
    /// # Errors
    /// Store failures.
    pub fn alarms(&self, to_ms: i64) -> Result<Alarms, ReadError> {
        if let Some(pg) = &self.pg {
            return Ok(pg.alarms(to_ms)?);
        }
        Ok(super::alarms::alarm_records(self.conn()?, to_ms)?)
    }

    /// Every stored revision of one event's join, oldest first.
    ///
    /// # Errors
    /// Store failures or an unreadable body.
    pub fn snapshots(&self, event_key: &str) -> Result<Vec<Snapshot>, ReadError> {
        if let Some(pg) = &self.pg {
            return Ok(pg.snapshots(event_key)?);
        }
        Ok(db::snapshots(self.conn()?, event_key)?)
    }

    /// Gateways, online first, then by id.
    ///
    /// # Errors
    /// Store failures.
    pub fn gateways(&self) -> Result<Vec<Gateway>, ReadError> {
        if let Some(pg) = &self.pg {
            return Ok(pg
                .gateways()?
                .into_iter()
                .map(|(gateway, site, online, last_seen_ms, status)| Gateway {
                    gateway,
                    site,
                    online,
                    last_seen_ms,
                    status: serde_json::from_str(&status).ok(),
                })
                .collect());
        }
        let mut st = self.conn()?.prepare(
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
        if self.pg.is_some() {
            let g = self.gateways()?;
            return Ok((g.iter().filter(|g| g.online).count() as u64, g.len() as u64));
        }
        let (online, known): (i64, i64) =
            self.conn()?.query_row("SELECT COALESCE(SUM(online), 0), COUNT(*) FROM gateways", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        Ok((online.max(0) as u64, known.max(0) as u64))
    }

    /// Stored dead letters.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn dead_letters(&self) -> Result<u64, ReadError> {
        if let Some(pg) = &self.pg {
            return Ok(pg.dead_letter_count()?);
        }
        Ok(events::dead_letter_count(self.conn()?)?)
    }
}

fn open_writer(path: &Path) -> Result<Connection, ReadError> {
    if postgres_for(path).is_some() {
        return Err(ReadError::NotOnPostgres("importing personnel"));
    }
    let conn = db::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// Saves the join as snapshots (new and revised events only), stamped with the current data revision.
///
/// # Errors
/// The store cannot be opened for writing, or SQLite failures (nothing is then stored).
pub fn save_join_snapshots(path: &Path, joined: &[JoinedEvent], now_ms: i64) -> Result<SnapshotSummary, ReadError> {
    if let Some(target) = postgres_for(path) {
        return Ok(super::pg::read::Reader::open(&target)?.save_snapshots(joined, now_ms)?);
    }
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
    if let Some(target) = postgres_for(path) {
        let mut r = super::pg::read::Reader::open(&target)?;
        let known = r.people(settings)?;
        let records = match import::parse(kind, file, text, &known) {
            Ok(records) => records,
            Err(errors) => return Ok(Err(errors)),
        };
        return Ok(Ok(r.import_people(kind, file, &records, now_ms)?));
    }
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
