//! The SQLite outbox: the source of truth for what is unsent.
//!
//! Invariants:
//! - every event gets its `seq` in the insert transaction (`AUTOINCREMENT`: never reused, not even after the
//!   table was emptied); seq order is observation order;
//! - the database carries a random `epoch` written once when it is created;
//! - rows leave only when the collector confirmed them ([`Outbox::delete`]) or when the size bound forces the
//!   oldest out; then, in the same transaction, a gap event names the dropped seqs (`GapReason::OutboxFull`);
//! - events lost while the database could not be written (disk full) are recorded as a gap whose seqs are
//!   reserved in the sequence, so the collector sees exactly which seqs are missing (`StorageFailed`); while
//!   commits fail, the count of events that would be lost is kept in a small side file written in place
//!   (`<path>-lost`, allocated when the outbox opens, so a full disk does not stop it), and the next start
//!   records that gap when the agent stopped before the disk had room again ([`LossRecord`]);
//! - a zero-length database file is not silently taken for a new outbox: it is set aside as
//!   `<path>.empty-<unix ms>` (with its `-wal`, if any) with a warning, and a new outbox (new epoch) made.
//!
//! Gap events belong to no machine: they carry the asset id [`GAP_ASSET`].
//!
//! [`Outbox`] is synchronous and owned by one connection; [`writer`] runs the group-commit thread; [`runs`]
//! keeps the record of the agent's runs and of the alarm flags it last reported.

pub mod runs;
mod schema;
pub mod writer;

use crate::Observation;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Deserialize;
use shiftlens_common::clock::now_ms;
use shiftlens_common::config::ByteSize;
use shiftlens_common::{AssetId, Event, EventBody, GapReason};
use std::path::{Path, PathBuf};

/// The asset id of gap events.
pub const GAP_ASSET: &str = "_agent";

/// Fixed per-row overhead counted against `max_bytes` besides body and asset.
const ROW_OVERHEAD: u64 = 24;

/// `[outbox]`, validated.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    pub path: PathBuf,
    pub max_bytes: ByteSize,
    pub memory_bytes: ByteSize,
    pub synchronous: Synchronous,
}

/// SQLite `PRAGMA synchronous`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    #[default]
    Normal,
    Full,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/var/lib/shiftlens/outbox.db"),
            max_bytes: ByteSize(256 << 20),
            memory_bytes: ByteSize(16 << 20),
            synchronous: Synchronous::default(),
        }
    }
}

impl OutboxConfig {
    /// A config for `path` with the defaults otherwise.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), ..Self::default() }
    }
}

/// Why the outbox failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("cannot open outbox {}: {source}", path.display())]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("outbox {} is corrupt: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("cannot migrate outbox {}: {source}", path.display())]
    Migrate { path: PathBuf, source: rusqlite_migration::Error },
    #[error("outbox database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot encode event body: {0}")]
    Encode(String),
    #[error("cannot write the loss record {}: {source}", path.display())]
    Loss { path: PathBuf, source: std::io::Error },
}

impl OutboxError {
    /// Whether the error is SQLite's "database or disk is full".
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Self::Sqlite(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DiskFull)
    }
}

/// What the health report needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub epoch: u64,
    /// Unconfirmed events.
    pub depth: u64,
    /// Bytes counted against `max_bytes`.
    pub bytes: u64,
    /// `ts_ms` of the oldest unconfirmed event.
    pub oldest_ts_ms: Option<i64>,
    /// Events dropped since the database was created.
    pub dropped: u64,
}

/// The outcome of one [`Outbox::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Highest seq now in the outbox (0 when nothing was written).
    pub last_seq: u64,
    /// Events dropped for the size bound in this transaction.
    pub dropped: u64,
}

/// The outbox database.
pub struct Outbox {
    conn: Connection,
    path: PathBuf,
    epoch: u64,
    max_bytes: u64,
    rows: u64,
    bytes: u64,
    dropped: u64,
    /// Where a loss during a disk-full outage is kept until a commit records it; `None` if it could not be made.
    loss: Option<LossRecord>,
    /// Events lost at the previous stop (read from `loss`), to be recorded as a gap by the next commit.
    recovered_loss: u64,
    /// The current run's row in `runs` (see [`runs`]), once [`Outbox::begin_run`] was called.
    run: Option<i64>,
    /// No event of this run is stored with an earlier time (the previous run's last observation).
    floor_ms: i64,
}

/// The side file `<outbox>-lost`: 32 bytes, `SLLOST01`, then epoch, last seq and count (u64 little-endian):
/// `count` events were lost after seq `last` of the outbox with that epoch. It is made (full size) when the
/// outbox opens and only ever overwritten in place, which needs no free space.
pub struct LossRecord {
    file: std::fs::File,
    path: PathBuf,
}

const LOSS_MAGIC: &[u8; 8] = b"SLLOST01";

impl LossRecord {
    fn open(db: &Path) -> std::io::Result<Self> {
        use std::io::{Read, Seek, Write};
        let mut name = db.as_os_str().to_owned();
        name.push("-lost");
        let path = PathBuf::from(name);
        let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        if buf.len() != 32 || &buf[..8] != LOSS_MAGIC {
            file.set_len(0)?;
            file.seek(std::io::SeekFrom::Start(0))?;
            file.write_all(&Self::encode(0, 0, 0))?;
            file.sync_all()?;
        }
        Ok(Self { file, path })
    }

    fn encode(epoch: u64, last: u64, count: u64) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(LOSS_MAGIC);
        b[8..16].copy_from_slice(&epoch.to_le_bytes());
        b[16..24].copy_from_slice(&last.to_le_bytes());
        b[24..].copy_from_slice(&count.to_le_bytes());
        b
    }

    /// (epoch, last seq, count) as stored.
    fn read(&self) -> std::io::Result<(u64, u64, u64)> {
        use std::io::{Read, Seek};
        let mut b = [0u8; 32];
        let mut f = &self.file;
        f.seek(std::io::SeekFrom::Start(0))?;
        f.read_exact(&mut b)?;
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        Ok((word(8), word(16), word(24)))
    }

    fn write(&self, epoch: u64, last: u64, count: u64) -> std::io::Result<()> {
        use std::io::{Seek, Write};
        let mut f = &self.file;
        f.seek(std::io::SeekFrom::Start(0))?;
        f.write_all(&Self::encode(epoch, last, count))?;
        f.sync_data()
    }
}

/// SQLite page cache of the outbox connection, in KiB.
const OUTBOX_CACHE_KIB: i64 = 512;

impl Outbox {
    /// Opens or creates the outbox, checks its integrity and migrates its schema.
    ///
    /// # Errors
    /// A file that cannot be created or written, is not a database or fails SQLite's quick check.
    pub fn open(config: &OutboxConfig) -> Result<Self, OutboxError> {
        let path = config.path.clone();
        let open_err = |source| OutboxError::Open { path: path.clone(), source };
        set_aside_if_empty(&path);
        let mut conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(open_err)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(OutboxError::Corrupt { path, detail: format!("cannot switch to WAL (journal mode {mode})") });
        }
        let sync = match config.synchronous {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        };
        conn.pragma_update(None, "synchronous", sync).map_err(open_err)?;
        // The outbox appends at the end of its b-trees and deletes from their start: a small page cache
        // serves that as well as SQLite's default 2 MiB, which a gateway would keep resident.
        conn.pragma_update(None, "cache_size", OUTBOX_CACHE_KIB.saturating_neg()).map_err(open_err)?;
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(open_err)?;
        if check != "ok" {
            return Err(OutboxError::Corrupt { path, detail: check });
        }
        schema::migrations()
            .to_latest(&mut conn)
            .map_err(|source| OutboxError::Migrate { path: path.clone(), source })?;
        let fresh_epoch = rand::random::<u64>() | 1; // never 0, which means "unknown" in a status
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('epoch', ?1)", [fresh_epoch as i64])
            .map_err(open_err)?;
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('dropped', 0)", []).map_err(open_err)?;
        let epoch = meta(&conn, "epoch").map_err(open_err)? as u64;
        let dropped = meta(&conn, "dropped").map_err(open_err)? as u64;
        let (rows, bytes): (i64, i64) = conn
            .query_row("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM events", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(open_err)?;
        let last_seq = last_seq(&conn).map_err(open_err)?;
        let (loss, recovered_loss) = match LossRecord::open(&path) {
            Ok(record) => {
                let recovered = match record.read() {
                    // A commit after the record was written has moved the sequence on and recorded the loss.
                    Ok((e, last, count)) if e == epoch && last == last_seq && count > 0 => {
                        tracing::error!(
                            lost = count,
                            first = last + 1,
                            last = last + count,
                            "events were lost at the last stop while the outbox could not be written; recording the gap"
                        );
                        count
                    }
                    _ => 0,
                };
                (Some(record), recovered)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot make the outbox's loss record; a loss at a stop during a full disk would only be logged");
                (None, 0)
            }
        };
        Ok(Self {
            conn,
            path,
            epoch,
            max_bytes: config.max_bytes.0,
            rows: rows as u64,
            bytes: bytes as u64,
            dropped,
            loss,
            recovered_loss,
            run: None,
            floor_ms: i64::MIN,
        })
    }

    /// Events lost at the previous stop that no commit has recorded yet; the writer's first commit records
    /// them as a gap right after the last stored seq. Taken once.
    pub fn take_recovered_loss(&mut self) -> u64 {
        std::mem::take(&mut self.recovered_loss)
    }

    /// Keeps `count` (0: none) as the number of events that are lost if the agent stops before the next
    /// successful commit; written in place, so it works on a full disk.
    ///
    /// # Errors
    /// When the record cannot be read or written.
    pub fn record_pending_loss(&mut self, count: u64) -> Result<(), OutboxError> {
        let Some(record) = &self.loss else { return Ok(()) };
        let last = if count == 0 { 0 } else { last_seq(&self.conn)? };
        record.write(self.epoch, last, count).map_err(|e| OutboxError::Loss { path: record.path.clone(), source: e })
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Limits the database file to `pages` pages (SQLite `max_page_count`), as a full device would.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_max_page_count(&self, pages: u64) -> Result<u64, OutboxError> {
        Ok(self.conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Stores observations in one transaction and gives them seqs. `lost` events that never reached the
    /// database are first recorded as a gap (their seqs are reserved); past `max_bytes` the oldest events are
    /// dropped and a gap names them. Event times below the run's floor are raised to it, alarm flags go to
    /// `last_reported` and the run's `last_ms` moves on, in the same transaction (see [`runs`]). Nothing
    /// changes when it fails.
    ///
    /// # Errors
    /// SQLite errors, such as a full disk.
    pub fn append(&mut self, observations: &[Observation], lost: u64) -> Result<Appended, OutboxError> {
        let rows: Vec<Row> = observations
            .iter()
            .map(|o| Row::new(o.ts_ms.max(self.floor_ms), &o.asset, &o.body))
            .collect::<Result<_, _>>()?;
        let incoming: u64 = rows.iter().map(|r| r.size).sum();
        let (mut rows_delta, mut bytes_delta, mut dropped) = (0i64, 0i64, 0u64);
        let tx = self.conn.transaction()?;
        let now = now_ms();
        if lost > 0 {
            let last: i64 = tx
                .query_row("SELECT seq FROM sqlite_sequence WHERE name = 'events'", [], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            let reserved = last + lost as i64;
            if tx.execute("UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'events'", [reserved])? == 0 {
                tx.execute("INSERT INTO sqlite_sequence(name, seq) VALUES ('events', ?1)", [reserved])?;
            }
            let gap =
                EventBody::Gap { first: last as u64 + 1, last: reserved as u64, reason: GapReason::StorageFailed };
            let row = Row::gap(now, &gap)?;
            insert(&tx, &row)?;
            (rows_delta, bytes_delta, dropped) = (1, row.size as i64, lost);
        }
        if self.bytes + incoming + bytes_delta as u64 > self.max_bytes {
            // Drop down to 90% so that a full outbox does not write a gap on every commit.
            let target = (self.max_bytes / 10 * 9).saturating_sub(incoming + bytes_delta as u64);
            let excess = (self.bytes + bytes_delta as u64).saturating_sub(target);
            if let Some(d) = drop_oldest(&tx, excess, now)? {
                rows_delta += 1 - d.rows as i64;
                bytes_delta += d.gap_size as i64 - d.bytes as i64;
                dropped += d.rows;
            }
        }
        let mut last_seq = 0;
        for row in &rows {
            last_seq = insert(&tx, row)?;
        }
        if dropped > 0 {
            tx.execute("UPDATE meta SET value = value + ?1 WHERE key = 'dropped'", [dropped as i64])?;
        }
        runs::record(&tx, self.run, observations, self.floor_ms, now)?;
        if last_seq == 0 {
            last_seq = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get::<_, i64>(0))? as u64;
        }
        tx.commit()?;
        self.rows = (self.rows as i64 + rows_delta + rows.len() as i64) as u64;
        self.bytes = (self.bytes as i64 + bytes_delta + incoming as i64) as u64;
        self.dropped += dropped;
        Ok(Appended { last_seq, dropped })
    }

    /// Up to `max_events` events with seq above `after`, oldest first, within `max_bytes` of stored size
    /// (at least one event).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn read_after(&self, after: u64, max_events: usize, max_bytes: u64) -> Result<Vec<Event>, OutboxError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, ts_ms, asset, body, size FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let mut rows = stmt.query(params![after as i64, max_events as i64])?;
        let (mut out, mut bytes) = (Vec::new(), 0u64);
        while let Some(r) = rows.next()? {
            let size: i64 = r.get(4)?;
            bytes += size as u64;
            if bytes > max_bytes && !out.is_empty() {
                break;
            }
            out.push(event_from_row(r)?);
        }
        Ok(out)
    }

    /// The latest state event of every asset, in seq order (at most `max_events`).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn latest_states(&self, max_events: usize) -> Result<Vec<Event>, OutboxError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, ts_ms, asset, body, size FROM events WHERE seq IN
                 (SELECT MAX(seq) FROM events WHERE kind = 0 GROUP BY asset)
             ORDER BY seq LIMIT ?1",
        )?;
        let mut rows = stmt.query([max_events as i64])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(event_from_row(r)?);
        }
        Ok(out)
    }

    /// Deletes confirmed events, given as inclusive seq ranges. Returns how many rows went.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn delete(&mut self, ranges: &[(u64, u64)]) -> Result<u64, OutboxError> {
        let tx = self.conn.transaction()?;
        let (mut rows, mut bytes) = (0u64, 0u64);
        {
            let mut stmt = tx.prepare_cached("DELETE FROM events WHERE seq BETWEEN ?1 AND ?2 RETURNING size")?;
            for &(a, b) in ranges {
                let (a, b) = (i64::try_from(a).unwrap_or(i64::MAX), i64::try_from(b).unwrap_or(i64::MAX));
                let mut q = stmt.query([a, b])?;
                while let Some(r) = q.next()? {
                    rows += 1;
                    bytes += r.get::<_, i64>(0)? as u64;
                }
            }
        }
        tx.commit()?;
        self.rows -= rows.min(self.rows);
        self.bytes -= bytes.min(self.bytes);
        Ok(rows)
    }

    /// Depth, size, oldest event time and drops.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn stats(&self) -> Result<Stats, OutboxError> {
        let oldest_ts_ms = self
            .conn
            .prepare_cached("SELECT ts_ms FROM events ORDER BY seq LIMIT 1")?
            .query_row([], |r| r.get(0))
            .optional()?;
        Ok(Stats { epoch: self.epoch, depth: self.rows, bytes: self.bytes, oldest_ts_ms, dropped: self.dropped })
    }
}

/// A row ready to insert.
struct Row {
    ts_ms: i64,
    asset: String,
    kind: i64,
    body: Vec<u8>,
    size: u64,
}

impl Row {
    fn new(ts_ms: i64, asset: &AssetId, body: &EventBody) -> Result<Self, OutboxError> {
        let mut buf = Vec::with_capacity(64);
        ciborium::into_writer(body, &mut buf).map_err(|e| OutboxError::Encode(e.to_string()))?;
        let kind = match body {
            EventBody::State { .. } => schema::KIND_STATE,
            EventBody::Alarm(_) => schema::KIND_ALARM,
            EventBody::Source { .. } => schema::KIND_SOURCE,
            EventBody::Gap { .. } => schema::KIND_GAP,
        };
        let size = buf.len() as u64 + asset.as_str().len() as u64 + ROW_OVERHEAD;
        Ok(Self { ts_ms, asset: asset.as_str().to_string(), kind, body: buf, size })
    }

    fn gap(ts_ms: i64, body: &EventBody) -> Result<Self, OutboxError> {
        let asset = AssetId::parse(GAP_ASSET).map_err(|e| OutboxError::Encode(e.to_string()))?;
        Self::new(ts_ms, &asset, body)
    }
}

fn insert(tx: &Transaction<'_>, row: &Row) -> Result<u64, OutboxError> {
    let mut stmt =
        tx.prepare_cached("INSERT INTO events(ts_ms, asset, kind, body, size) VALUES (?1, ?2, ?3, ?4, ?5)")?;
    stmt.execute(params![row.ts_ms, row.asset, row.kind, row.body, row.size as i64])?;
    Ok(tx.last_insert_rowid() as u64)
}

struct Dropped {
    rows: u64,
    bytes: u64,
    gap_size: u64,
}

/// Deletes the oldest rows until at least `excess` bytes are gone and inserts one gap naming them. A gap
/// that is itself dropped widens the new gap, so no loss is forgotten.
fn drop_oldest(tx: &Transaction<'_>, excess: u64, now: i64) -> Result<Option<Dropped>, OutboxError> {
    let (mut first, mut last, mut rows, mut bytes) = (None::<u64>, 0u64, 0u64, 0u64);
    {
        let mut stmt = tx.prepare_cached("SELECT seq, size, kind, body FROM events ORDER BY seq")?;
        let mut q = stmt.query([])?;
        while bytes < excess {
            let Some(r) = q.next()? else { break };
            let seq = r.get::<_, i64>(0)? as u64;
            first.get_or_insert(seq);
            last = seq;
            rows += 1;
            bytes += r.get::<_, i64>(1)? as u64;
            if r.get::<_, i64>(2)? == schema::KIND_GAP {
                if let Ok(EventBody::Gap { first: f, .. }) = ciborium::from_reader(r.get::<_, Vec<u8>>(3)?.as_slice()) {
                    first = first.map(|x| x.min(f));
                }
            }
        }
    }
    let Some(first) = first else { return Ok(None) };
    tx.execute("DELETE FROM events WHERE seq <= ?1", [last as i64])?;
    let gap = Row::gap(now, &EventBody::Gap { first, last, reason: GapReason::OutboxFull })?;
    insert(tx, &gap)?;
    tracing::error!(first, last, rows, "outbox full: dropped the oldest events");
    Ok(Some(Dropped { rows, bytes, gap_size: gap.size }))
}

fn event_from_row(r: &rusqlite::Row<'_>) -> Result<Event, OutboxError> {
    let seq = r.get::<_, i64>(0)? as u64;
    let ts_ms: i64 = r.get(1)?;
    let asset = AssetId::parse(r.get::<_, String>(2)?);
    let body: Result<EventBody, _> = ciborium::from_reader(r.get::<_, Vec<u8>>(3)?.as_slice());
    match (asset, body) {
        (Ok(asset), Ok(body)) => Ok(Event { seq, ts_ms, asset, body }),
        _ => {
            // An unreadable row is reported as lost rather than blocking the uplink forever.
            tracing::error!(seq, "outbox row cannot be decoded; sending it as a gap");
            let asset = AssetId::parse(GAP_ASSET).map_err(|e| OutboxError::Encode(e.to_string()))?;
            Ok(Event {
                seq,
                ts_ms,
                asset,
                body: EventBody::Gap { first: seq, last: seq, reason: GapReason::StorageFailed },
            })
        }
    }
}

/// The highest seq ever handed out (0 for a new outbox).
fn last_seq(conn: &Connection) -> rusqlite::Result<u64> {
    let seq: Option<i64> =
        conn.query_row("SELECT seq FROM sqlite_sequence WHERE name = 'events'", [], |r| r.get(0)).optional()?;
    Ok(seq.unwrap_or(0) as u64)
}

/// A zero-length database file (and its `-wal`, which SQLite would discard with it) is renamed to
/// `<name>.empty-<unix ms>` with a warning, so that it is not silently taken for a new outbox.
fn set_aside_if_empty(path: &Path) {
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0) {
        return;
    }
    let stamp = now_ms();
    let aside = |p: &Path| {
        let mut name = p.as_os_str().to_owned();
        name.push(format!(".empty-{stamp}"));
        let to = PathBuf::from(name);
        std::fs::rename(p, &to).map(|()| to)
    };
    match aside(path) {
        Ok(to) => {
            let mut wal = path.as_os_str().to_owned();
            wal.push("-wal");
            let wal = PathBuf::from(wal);
            let wal_aside = if wal.exists() { aside(&wal).ok() } else { None };
            tracing::warn!(
                path = %path.display(),
                kept_as = %to.display(),
                wal_kept_as = ?wal_aside,
                "outbox file is empty (0 bytes): set aside; starting a new outbox with a new epoch"
            );
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "outbox file is empty (0 bytes) and cannot be set aside")
        }
    }
}

fn meta(conn: &Connection, key: &str) -> rusqlite::Result<i64> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
}
