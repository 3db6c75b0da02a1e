//! The [`Dataset`] the reports read (personnel, downtime and its join, alarm activations), and the
//! [`Source`] that loads it from the store and caches it.
//!
//! The join snapshot is written on one path, [`Dataset::save_snapshot`], whatever asks for the data: the
//! `report` command calls it after its load, the [`Source`] behind the pages and the API after each of
//! its loads, on a thread of its own so that no request waits for it. Events new or changed since the
//! last save become their next revision; when nothing changed nothing is written.
//!
//! Invariants: the dataset is immutable once built and shared as `Arc` (alarm activations are read on the
//! first alarm-load request). After an import through this server the next request rebuilds it; when
//! anything else changed the store (`PRAGMA data_version`, checked at most every [`RECHECK`]), it is
//! rebuilt in the background while requests keep the previous one, so a busy ingest never makes a page
//! wait for a re-join of the year. Rebuilds start at most every [`RECHECK`] or [`RELOAD_FACTOR`] × the
//! last build's duration, whichever is longer: a small plant is fresh within seconds, and a year of data
//! (a 10 s join) costs at most a fifth of a core.

use super::params::Bounds;
use super::QueryError;
use crate::join::{self, AlarmStart, JoinedEvent};
use crate::people::{Personnel, Settings};
use crate::store::people::SnapshotSummary;
use crate::store::reads::{self, Gateway, Reader};
use crate::timeline::Downtime;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a loaded dataset is served before the store is asked whether it changed.
pub const RECHECK: Duration = Duration::from_secs(2);
/// Background rebuilds start at most every this many times the last build's duration.
pub const RELOAD_FACTOR: u32 = 5;

/// Everything the reports read, joined once.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub people: Personnel,
    /// Downtime events sorted by start, and their join in the same order.
    pub downtime: Vec<Downtime>,
    pub events: Vec<JoinedEvent>,
    /// Alarm activations sorted by time, read when first needed.
    pub alarms: OnceLock<Vec<AlarmStart>>,
    /// Sites, lines, assets and crews, sorted, for the filter bar.
    pub choices: Choices,
    /// When it was built (UTC ms).
    pub built_ms: i64,
}

/// The values each filter can take.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Choices {
    pub sites: Vec<String>,
    pub lines: Vec<String>,
    pub assets: Vec<String>,
    pub crews: Vec<String>,
}

fn sorted(v: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = v.collect();
    v.sort_unstable();
    v.dedup();
    v
}

impl Dataset {
    /// Joins `downtime` to `people`; `alarms` when already known.
    pub fn new(people: Personnel, mut downtime: Vec<Downtime>, alarms: Option<Vec<AlarmStart>>) -> Self {
        downtime.sort_by(|a, b| (a.start_ms, &a.site, &a.asset).cmp(&(b.start_ms, &b.site, &b.asset)));
        let events = join::join(&people, &downtime);
        let mut assets = sorted(people.assets.iter().map(|a| a.id.clone()));
        if assets.is_empty() {
            assets = sorted(downtime.iter().map(|d| d.asset.to_string()));
        }
        let choices = Choices {
            sites: sorted(
                people.assets.iter().map(|a| a.site.clone()).chain(downtime.iter().map(|d| d.site.to_string())),
            ),
            lines: sorted(people.assets.iter().map(|a| a.line.clone())),
            assets,
            crews: people.crews(),
        };
        let cell = OnceLock::new();
        if let Some(mut a) = alarms {
            a.sort_by_key(|a| a.ts_ms);
            let _ = cell.set(a);
        }
        Self { people, downtime, events, alarms: cell, choices, built_ms: chrono::Utc::now().timestamp_millis() }
    }

    /// Reads personnel and downtime (or `downtime` when given) from the store and joins them.
    ///
    /// # Errors
    /// Store reads.
    pub fn load(db: &Path, settings: Settings, downtime: Option<Vec<Downtime>>) -> Result<Self, QueryError> {
        let r = Reader::open(db)?;
        let people = r.personnel(settings)?;
        let downtime = match downtime {
            Some(d) => d,
            None => r.downtime()?,
        };
        Ok(Self::new(people, downtime, None))
    }

    /// Saves the join as the store's snapshot: each event whose join is new or changed since the last save
    /// becomes its next revision.
    ///
    /// # Errors
    /// The store cannot be written (nothing is then saved).
    pub fn save_snapshot(&self, db: &Path) -> Result<SnapshotSummary, QueryError> {
        Ok(reads::save_join_snapshots(db, &self.events, chrono::Utc::now().timestamp_millis())?)
    }

    /// Reads the alarm activations from `db` if not yet there.
    ///
    /// # Errors
    /// Store reads.
    pub fn read_alarms(&self, db: &Path) -> Result<(), QueryError> {
        if self.alarms.get().is_none() {
            let mut a = Reader::open(db)?.alarm_starts(i64::MIN, i64::MAX)?;
            a.sort_by_key(|a| a.ts_ms);
            let _ = self.alarms.set(a);
        }
        Ok(())
    }

    /// Alarm activations (empty until [`Dataset::read_alarms`]).
    pub fn alarms(&self) -> &[AlarmStart] {
        self.alarms.get().map_or(&[], Vec::as_slice)
    }
}

struct Cache {
    reader: Option<Reader>,
    version: i64,
    checked: Option<Instant>,
    data: Option<Arc<Dataset>>,
    reload_started: Option<Instant>,
    reloading: bool,
    last_build: Duration,
}

/// The cached dataset of one store file. Its methods block: call them from `spawn_blocking`.
pub struct Source {
    db: PathBuf,
    settings: Settings,
    bounds: Bounds,
    cache: Mutex<Cache>,
    /// Held while a snapshot is saved: saves run one after the other, in the order of the loads.
    saving: Arc<Mutex<()>>,
}

/// Gateway counts, stored dead letters and file sizes, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreFigures {
    pub gateways_online: u64,
    pub gateways_known: u64,
    pub dead_letters: u64,
    pub bytes: u64,
}

impl Source {
    pub fn new(db: PathBuf, settings: Settings) -> Self {
        let cache = Cache {
            reader: None,
            version: 0,
            checked: None,
            data: None,
            reload_started: None,
            reloading: false,
            last_build: Duration::ZERO,
        };
        Self { db, settings, bounds: Bounds::default(), cache: Mutex::new(cache), saving: Arc::default() }
    }

    /// The same source with other request bounds (`[http] max_window`, `max_rows`).
    pub fn with_bounds(self, bounds: Bounds) -> Self {
        Self { bounds, ..self }
    }

    pub fn db(&self) -> &Path {
        &self.db
    }

    pub fn bounds(&self) -> &Bounds {
        &self.bounds
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The current dataset: built now if there is none, else the cached one (starting a background
    /// rebuild when the store changed).
    ///
    /// # Errors
    /// Store failures.
    pub fn dataset(self: &Arc<Self>) -> Result<Arc<Dataset>, QueryError> {
        let mut guard = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let c: &mut Cache = &mut guard;
        if let (Some(d), Some(t)) = (&c.data, c.checked) {
            if t.elapsed() < RECHECK || c.reloading {
                return Ok(d.clone());
            }
        }
        let reader = match c.reader.take() {
            Some(r) => r,
            None => Reader::open(&self.db)?,
        };
        let version = reader.data_version()?;
        c.reader = Some(reader);
        c.checked = Some(Instant::now());
        let Some(current) = c.data.clone() else {
            let t = Instant::now();
            let d = self.build()?;
            c.last_build = t.elapsed();
            // The version from before the build: a commit during it (or the snapshot it wrote) brings one
            // more rebuild, which finds the snapshot unchanged, rather than a change missed.
            c.version = version;
            c.data = Some(d.clone());
            return Ok(d);
        };
        let pause = RECHECK.max(c.last_build * RELOAD_FACTOR);
        if version != c.version && c.reload_started.is_none_or(|t| t.elapsed() >= pause) {
            c.reloading = true;
            c.reload_started = Some(Instant::now());
            let me = self.clone();
            let spawned = std::thread::Builder::new().name("dashboard-reload".into()).spawn(move || me.reload(version));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the dashboard reload");
                c.reloading = false;
            }
        }
        Ok(current)
    }

    /// Loads and joins, then saves the snapshot on a thread of its own.
    fn build(&self) -> Result<Arc<Dataset>, QueryError> {
        let t = Instant::now();
        let d = Arc::new(Dataset::load(&self.db, self.settings.clone(), None)?);
        tracing::info!(
            events = d.events.len(),
            ms = t.elapsed().as_millis() as u64,
            "dashboard data loaded and joined"
        );
        let (ds, db, saving) = (d.clone(), self.db.clone(), self.saving.clone());
        let spawned = std::thread::Builder::new().name("join-snapshot".into()).spawn(move || {
            let _one_at_a_time = saving.lock().unwrap_or_else(|e| e.into_inner());
            match ds.save_snapshot(&db) {
                Ok(s) => tracing::debug!(new = s.new, revised = s.revised, "join snapshot saved"),
                Err(e) => tracing::warn!(error = %e, "the join snapshot was not saved; the next load tries again"),
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the join snapshot save; the next load tries again");
        }
        Ok(d)
    }

    fn reload(&self, version: i64) {
        let t = Instant::now();
        let built = self.build();
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        c.reloading = false;
        c.last_build = t.elapsed();
        // An import may have dropped the data meanwhile: the next request builds it afresh then.
        if let (Ok(d), Some(_)) = (built, &c.data) {
            c.data = Some(d);
            c.version = version;
        }
    }

    /// Reads the alarm activations into `ds` if not yet there.
    ///
    /// # Errors
    /// Store failures.
    pub fn ensure_alarms(&self, ds: &Dataset) -> Result<(), QueryError> {
        ds.read_alarms(&self.db)
    }

    /// Forgets the cached dataset (after an import).
    pub fn invalidate(&self) {
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        c.data = None;
        c.checked = None;
    }

    /// Gateways, online first, then by id.
    ///
    /// # Errors
    /// Store failures.
    pub fn gateways(&self) -> Result<Vec<Gateway>, QueryError> {
        Ok(Reader::open(&self.db)?.gateways()?)
    }

    /// Gateway counts, stored dead letters and file sizes for `/metrics`.
    ///
    /// # Errors
    /// Store failures.
    pub fn store_figures(&self) -> Result<StoreFigures, QueryError> {
        let r = Reader::open(&self.db)?;
        let (online, known) = r.gateway_counts()?;
        let dead = r.dead_letters()?;
        let size = |suffix: &str| {
            let mut p = self.db.clone().into_os_string();
            p.push(suffix);
            std::fs::metadata(p).map_or(0, |m| m.len())
        };
        Ok(StoreFigures {
            gateways_online: online,
            gateways_known: known,
            dead_letters: dead,
            bytes: size("") + size("-wal"),
        })
    }
}
