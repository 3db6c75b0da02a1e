//! The collector's SQLite store: WAL mode, one writer thread, readers on their own connections.
//!
//! The writer thread owns the only write connection and the [`Timeline`]. It takes whatever
//! [`WriteOp`]s are queued (up to a bound), applies them in one transaction (events with
//! `INSERT OR IGNORE`, dead letters, status, and the downtime rows the timeline changed), commits, and
//! only then reports [`Committed`] outputs: the seqs now stored (for acks) and the downtime events that
//! opened or closed (for the feed). Nothing is confirmed before it is durable. Readers open their own
//! connections ([`open_reader`]); WAL lets them read while the writer writes. The read side (`query`, the
//! dashboard, the API and the commands) reaches the store only through [`reads`].

pub mod alarms;
mod config;
pub mod escalations;
pub mod events;
pub mod migrations;
pub mod people;
pub mod pg;
pub mod reads;

use crate::timeline::{Changes, Downtime, Input, Timeline};
use events::{DeadLetter, Rows};
use rusqlite::{Connection, OpenFlags};
use shiftlens_common::{status::Status, AssetId, GatewayId, SiteId};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

pub use config::{Backend, PgSettings, RawStoreConfig, StoreConfig};

/// Work for the writer thread.
#[derive(Debug)]
pub enum WriteOp {
    /// A decoded, validated batch, its rows prepared by the sender ([`Rows::new`]).
    Batch {
        rows: Rows,
        received_ms: i64,
    },
    DeadLetter(DeadLetter),
    Status {
        site: SiteId,
        gateway: GatewayId,
        status: Status,
        received_ms: i64,
    },
    /// Mark offline the gateways whose last status arrived before `cutoff_ms` (heartbeat overdue).
    Overdue {
        cutoff_ms: i64,
        now_ms: i64,
    },
    /// Delete raw events older than the retention.
    Prune {
        now_ms: i64,
    },
    /// A liveness probe (the systemd watchdog): answered after the transaction it joined commits, so an
    /// answer proves the writer takes work and commits it.
    Ping(tokio::sync::oneshot::Sender<()>),
}

/// What the writer reports after a commit.
#[derive(Debug, Clone, PartialEq)]
pub enum Committed {
    /// Every seq of a batch is now stored (new or already there).
    Stored {
        site: SiteId,
        gateway: GatewayId,
        epoch: u64,
        seqs: Vec<u64>,
        new: usize,
    },
    /// A downtime event was created or changed (opened, closed, re-attributed).
    Downtime(Downtime),
    /// A downtime event no longer exists under its key (late data moved its start), as it last stood.
    Retracted(Downtime),
    DeadLetter {
        kind: String,
    },
}

/// Errors opening the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("cannot migrate the store {path}: {source}")]
    Migrate { path: PathBuf, source: rusqlite_migration::Error },
    #[error("store {path}: {source}")]
    Sql { path: PathBuf, source: rusqlite::Error },
    #[error("cannot start the writer thread: {0}")]
    Thread(std::io::Error),
    #[error(transparent)]
    Postgres(#[from] pg::PgError),
}

/// Opens (creating and migrating if needed) a write connection.
///
/// # Errors
/// When the file cannot be opened or migrated.
pub fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    let open = |source| StoreError::Open { path: path.to_path_buf(), source };
    let mut conn = Connection::open(path).map_err(open)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(open)?;
    // WAL with synchronous=NORMAL: a commit is durable against a killed process (the guarantee acks rest
    // on); only a power loss or OS crash may lose the last commits, which the agents then resend.
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(open)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(open)?;
    // Up to 64 MiB of page cache (allocated as used): a 20,000-event transaction dirties several MiB, which
    // the default 2 MiB cache spilled to the WAL mid-transaction and read back.
    conn.pragma_update(None, "cache_size", -65_536).map_err(open)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(open)?;
    migrations::migrations()
        .to_latest(&mut conn)
        .map_err(|source| StoreError::Migrate { path: path.to_path_buf(), source })?;
    Ok(conn)
}

/// Opens a read-only connection that never blocks the writer.
///
/// # Errors
/// When the file cannot be opened.
pub fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|source| StoreError::Open { path: path.to_path_buf(), source })?;
    let _ = conn.busy_timeout(Duration::from_secs(5));
    Ok(conn)
}

/// Ops queued for the writer. Few, so that the fair order in which ingest hands batches over counts: a
/// batch waits behind at most this many ops and the transaction in progress, however much one gateway
/// sends (ingest keeps the backlog in per-gateway queues; more here would only make it first come, first
/// served).
pub(crate) const QUEUED_OPS: usize = 16;
/// Most ops taken into one transaction.
pub(crate) const MAX_OPS_PER_TX: usize = 512;
/// Most events taken into one transaction.
pub(crate) const MAX_EVENTS_PER_TX: usize = 20_000;

/// The writer: spawn it with [`Writer::spawn`], send [`WriteOp`]s, read [`Committed`] outputs.
pub struct Writer {
    pub tx: mpsc::Sender<WriteOp>,
    pub thread: std::thread::JoinHandle<()>,
    /// PostgreSQL: the sites this writer owns (`None` with SQLite, whose one writer owns every site).
    pub owned: Option<pg::owner::OwnedSites>,
}

impl Writer {
    /// Opens the store, rebuilds the timeline from stored events, and starts the writer thread.
    /// The thread ends when every sender of `tx` is dropped.
    ///
    /// # Errors
    /// When the store cannot be opened or read.
    pub fn spawn(config: &StoreConfig, out: mpsc::Sender<Committed>) -> Result<Self, StoreError> {
        if config.backend == Backend::Postgres {
            return pg::writer::spawn(config, out);
        }
        let path = config.path.clone();
        let mut conn = open_writer(&path)?;
        let sql = |source| StoreError::Sql { path: path.clone(), source };
        let mut timeline = Timeline::new(config.first_out_window_ms());
        let inputs = events::load_inputs(&conn).map_err(sql)?;
        let count = inputs.len();
        for i in inputs {
            timeline.apply(i);
        }
        let tx = conn.transaction().map_err(sql)?;
        for d in timeline.downtimes() {
            events::upsert_downtime(&tx, &d).map_err(sql)?;
        }
        tx.commit().map_err(sql)?;
        tracing::info!(path = %path.display(), events = count, "store opened, timeline rebuilt");
        let retention = Retention::of(config);
        let (tx, rx) = mpsc::channel(QUEUED_OPS);
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(conn, timeline, rx, out, retention))
            .map_err(StoreError::Thread)?;
        Ok(Self { tx, thread, owned: None })
    }
}

/// What the writer deletes: raw events and dead letters past their age, dead letters past their count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retention {
    pub(crate) events_ms: i64,
    pub(crate) dead_letters_ms: i64,
    pub(crate) dead_letters_max: usize,
}

impl Retention {
    pub(crate) fn of(config: &StoreConfig) -> Self {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self {
            events_ms: ms(config.retention),
            dead_letters_ms: ms(config.dead_letter_retention),
            dead_letters_max: config.dead_letter_max,
        }
    }
}

fn write_loop(
    mut conn: Connection,
    mut timeline: Timeline,
    mut rx: mpsc::Receiver<WriteOp>,
    out: mpsc::Sender<Committed>,
    retention: Retention,
) {
    while let Some(first) = rx.blocking_recv() {
        let (mut ops, mut pings, mut n_events) = (Vec::new(), Vec::new(), 0);
        let mut next = Some(first);
        while let Some(op) = next.take() {
            match op {
                WriteOp::Ping(reply) => pings.push(reply),
                op => {
                    if let WriteOp::Batch { rows, .. } = &op {
                        n_events += rows.len();
                    }
                    ops.push(op);
                }
            }
            if ops.len() < MAX_OPS_PER_TX && n_events < MAX_EVENTS_PER_TX {
                next = rx.try_recv().ok();
            }
        }
        let n_ops = ops.len();
        match apply_ops(&mut conn, &mut timeline, ops, retention) {
            Ok(outputs) => {
                for p in pings {
                    let _ = p.send(());
                }
                for o in outputs {
                    if out.blocking_send(o).is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                // Nothing is acked, so the agents will resend. The timeline may already hold events that were
                // rolled back: rebuild it from what is really stored.
                tracing::error!(error = %e, ops = n_ops, "store transaction failed; nothing acked, agents will resend");
                if let Ok(inputs) = events::load_inputs(&conn) {
                    timeline = Timeline::new(timeline.first_out_window_ms());
                    for i in inputs {
                        timeline.apply(i);
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    tracing::info!("store writer stopped: every queued write committed");
}

fn apply_ops(
    conn: &mut Connection,
    timeline: &mut Timeline,
    ops: Vec<WriteOp>,
    retention: Retention,
) -> rusqlite::Result<Vec<Committed>> {
    let tx = conn.transaction()?;
    let mut outputs = Vec::new();
    let mut changes = Pending::new();
    let mut dead_letters = false;
    for op in ops {
        match op {
            WriteOp::Batch { rows, received_ms } => {
                let is_new = events::insert_rows(&tx, &rows, received_ms)?;
                outputs.push(apply_stored(rows.batch, is_new, true, timeline, &mut changes));
            }
            WriteOp::DeadLetter(d) => {
                events::insert_dead_letter(&tx, &d)?;
                dead_letters = true;
                outputs.push(Committed::DeadLetter { kind: d.kind });
            }
            WriteOp::Status { site, gateway, status, received_ms } => {
                if events::upsert_status(&tx, &site, &gateway, &status, received_ms)? {
                    tracing::info!(%site, %gateway, "gateway offline: its assets are unknown from now");
                    let input = Input::Offline { site, gateway, ts_ms: received_ms };
                    merge(&mut changes, timeline.apply(input));
                }
            }
            WriteOp::Overdue { cutoff_ms, now_ms } => {
                for (site, gateway) in events::mark_overdue(&tx, cutoff_ms, now_ms)? {
                    tracing::warn!(%site, %gateway, "gateway heartbeat overdue: its assets are unknown from now");
                    let input = Input::Offline { site, gateway, ts_ms: now_ms };
                    merge(&mut changes, timeline.apply(input));
                }
            }
            WriteOp::Prune { now_ms } => {
                let n = events::prune_events(&tx, now_ms.saturating_sub(retention.events_ms))?;
                tracing::info!(deleted = n, "raw events past retention deleted");
                let n = events::prune_dead_letters(&tx, now_ms.saturating_sub(retention.dead_letters_ms))?;
                tracing::info!(deleted = n, "dead letters past retention deleted");
            }
            // Taken out by the write loop before the transaction.
            WriteOp::Ping(_) => {}
        }
    }
    if dead_letters {
        events::bound_dead_letters(&tx, retention.dead_letters_max)?;
    }
    for ((site, asset, start), c) in &changes {
        match c {
            Committed::Retracted(_) => events::delete_downtime(&tx, site, asset, *start)?,
            Committed::Downtime(d) => events::upsert_downtime(&tx, d)?,
            _ => {}
        }
    }
    tx.commit()?;
    outputs.extend(changes.into_values());
    Ok(outputs)
}

/// Downtime changes to write at commit, keyed by (site, asset, start): [`Committed::Downtime`] upserts the row,
/// [`Committed::Retracted`] deletes it. Only the latest change of each key within a transaction is kept.
pub(crate) type Pending = BTreeMap<(SiteId, AssetId, i64), Committed>;

/// A committed batch's outcome: its new events (each `is_new` flag in event order) move into the timeline
/// when `timeline_owner` (this writer owns the batch's site), and are counted either way.
pub(crate) fn apply_stored(
    batch: shiftlens_common::Batch,
    is_new: impl IntoIterator<Item = bool>,
    timeline_owner: bool,
    timeline: &mut Timeline,
    changes: &mut Pending,
) -> Committed {
    let seqs = batch.events.iter().map(|e| e.seq).collect();
    let mut new = 0;
    // The events move into the timeline: no copies.
    for (event, is_new) in batch.events.into_iter().zip(is_new) {
        if !is_new {
            continue;
        }
        new += 1;
        if timeline_owner {
            let input =
                Input::Event { site: batch.site.clone(), gateway: batch.gateway.clone(), epoch: batch.epoch, event };
            merge(changes, timeline.apply(input));
        }
    }
    Committed::Stored { site: batch.site, gateway: batch.gateway, epoch: batch.epoch, seqs, new }
}

pub(crate) fn merge(into: &mut Pending, new: Changes) {
    for d in new.removed {
        into.insert((d.site.clone(), d.asset.clone(), d.start_ms), Committed::Retracted(d));
    }
    for d in new.upserted {
        into.insert((d.site.clone(), d.asset.clone(), d.start_ms), Committed::Downtime(d));
    }
}

#[cfg(test)]
mod tests {
    use shiftlens_common::config::ConfigFile;

    fn load(text: &str) -> Result<crate::Config, String> {
        crate::Config::from_file(&ConfigFile::from_text(std::path::PathBuf::from("c.toml"), text.to_string()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn dead_letter_bounds_have_defaults_and_are_range_checked_where_written() {
        let ok = load("[store]\npath = \"x.db\"\n").unwrap();
        assert_eq!(ok.store.dead_letter_max, 10_000);
        assert_eq!(ok.store.dead_letter_retention.as_secs(), 7 * 86_400);
        let e = load("[store]\npath = \"x.db\"\ndead_letter_max = 0\ndead_letter_retention = \"10m\"\n").unwrap_err();
        assert!(e.contains("c.toml:3:19: dead_letter_max 0 is out of range (1-1000000)"), "{e}");
        assert!(e.contains("c.toml:4:25: dead_letter_retention must be at least 1h"), "{e}");
    }
}
