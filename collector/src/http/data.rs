//! What pages and API calls read: a [`Dataset`] (personnel, downtime and its join, alarm activations) loaded
//! from the store and cached, the URL [`Params`] parsed into a [`Filter`] and report [`Options`], and
//! [`run`], the one dispatch from a report name to a [`Report`] that both the API and the pages use.
//!
//! Invariants: the dataset is immutable once built and shared as `Arc` (alarm activations are read on the
//! first alarm-load request). After an import through this server the next request rebuilds it; when
//! anything else changed the store (`PRAGMA data_version`, checked at most every [`RECHECK`]), it is
//! rebuilt in the background while requests keep the previous one, so a busy ingest never makes a page
//! wait for a re-join of the year. Rebuilds start at most every [`RECHECK`] or [`RELOAD_FACTOR`] × the
//! last build's duration, whichever is longer: a small plant is fresh within seconds, and a year of data
//! (a 10 s join) costs at most a fifth of a core. Everything except loading is pure. Time windows are `[from, to)` in UTC ms; a downtime event belongs to
//! the window it started in (the feed endpoint alone uses overlap, as the feed does).

use super::error::AppError;
use super::metrics::StoreFigures;
use crate::feed;
use crate::people::import::parse_time as parse_local;
use crate::people::{Personnel, Settings};
use crate::report::alarms::AlarmStart;
use crate::report::coverage::GroupBy;
use crate::report::join::Baselines;
use crate::report::mttr::Dim;
use crate::report::pareto::ParetoBy;
use crate::report::whatif::Change;
use crate::report::{self as r, num, Input, JoinedEvent, Report, HOUR_MS};
use crate::store::{self, events, people as db};
use crate::timeline::Downtime;
use rusqlite::Connection;
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a loaded dataset is served before the store is asked whether it changed.
pub const RECHECK: Duration = Duration::from_secs(2);
/// Background rebuilds start at most every this many times the last build's duration.
pub const RELOAD_FACTOR: u32 = 5;
const DAY_MS: i64 = 86_400_000;

/// The earliest time a request may name: 2000-01-01T00:00:00Z.
pub const MIN_TIME_MS: i64 = 946_684_800_000;
/// The latest time a request may name: 2200-01-01T00:00:00Z.
pub const MAX_TIME_MS: i64 = 7_258_118_400_000;
/// Default `[http] max_window`: three years (and a leap day).
pub const DEFAULT_MAX_WINDOW_DAYS: u64 = 3 * 365 + 1;
/// The largest `[http] max_window` the config accepts: the whole range of times.
pub const MAX_WINDOW_DAYS: u64 = ((MAX_TIME_MS - MIN_TIME_MS) / DAY_MS) as u64;
/// Default `[http] max_rows`.
pub const DEFAULT_MAX_ROWS: usize = 10_000;
/// The largest `offset` a request may give.
pub const MAX_OFFSET: usize = 100_000_000;

/// What one request may ask for, so that no request sizes work from an unchecked number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The longest window `[from, to)`.
    pub max_window_ms: i64,
    /// The largest `limit`, and the most feed records one answer holds.
    pub max_rows: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Self { max_window_ms: DEFAULT_MAX_WINDOW_DAYS as i64 * DAY_MS, max_rows: DEFAULT_MAX_ROWS }
    }
}

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
        let events = r::join(&people, &downtime);
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

    /// Reads personnel and downtime from the store and joins them.
    ///
    /// # Errors
    /// Store failures.
    pub fn load(conn: &Connection, settings: Settings) -> Result<Self, AppError> {
        let people = db::load(conn, settings).map_err(AppError::store)?;
        let downtime = events::query_downtime(conn, &events::DowntimeFilter::default()).map_err(AppError::store)?;
        let mut d = Self::new(people, downtime, None);
        store::escalations::fill_acks(conn, &mut d.events);
        Ok(d)
    }

    /// Alarm activations (empty until [`Source::ensure_alarms`]).
    pub fn alarms(&self) -> &[AlarmStart] {
        self.alarms.get().map_or(&[], Vec::as_slice)
    }
}

struct Cache {
    conn: Option<Connection>,
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
}

/// One gateway as the dashboard shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Gateway {
    pub gateway: String,
    pub site: String,
    pub online: bool,
    pub last_seen_ms: i64,
    pub status: Option<shiftlens_common::status::Status>,
}

impl Source {
    pub fn new(db: PathBuf, settings: Settings) -> Self {
        let cache = Cache {
            conn: None,
            version: 0,
            checked: None,
            data: None,
            reload_started: None,
            reloading: false,
            last_build: Duration::ZERO,
        };
        Self { db, settings, bounds: Bounds::default(), cache: Mutex::new(cache) }
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
    pub fn dataset(self: &Arc<Self>) -> Result<Arc<Dataset>, AppError> {
        let mut guard = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let c: &mut Cache = &mut guard;
        if let (Some(d), Some(t)) = (&c.data, c.checked) {
            if t.elapsed() < RECHECK || c.reloading {
                return Ok(d.clone());
            }
        }
        if c.conn.is_none() {
            c.conn = Some(store::open_reader(&self.db).map_err(AppError::store)?);
        }
        let conn = c.conn.as_ref().ok_or_else(|| AppError::internal("no connection"))?;
        let version: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0)).map_err(AppError::store)?;
        c.checked = Some(Instant::now());
        let Some(current) = c.data.clone() else {
            let t = Instant::now();
            let d = Arc::new(self.build(conn)?);
            c.last_build = t.elapsed();
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

    fn build(&self, conn: &Connection) -> Result<Dataset, AppError> {
        let t = Instant::now();
        let d = Dataset::load(conn, self.settings.clone())?;
        tracing::info!(
            events = d.events.len(),
            ms = t.elapsed().as_millis() as u64,
            "dashboard data loaded and joined"
        );
        Ok(d)
    }

    fn reload(&self, version: i64) {
        let t = Instant::now();
        let built = store::open_reader(&self.db).map_err(AppError::store).and_then(|conn| self.build(&conn));
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        c.reloading = false;
        c.last_build = t.elapsed();
        // An import may have dropped the data meanwhile: the next request builds it afresh then.
        if let (Ok(d), Some(_)) = (built, &c.data) {
            c.data = Some(Arc::new(d));
            c.version = version;
        }
    }

    /// Reads the alarm activations into `ds` if not yet there.
    ///
    /// # Errors
    /// Store failures.
    pub fn ensure_alarms(&self, ds: &Dataset) -> Result<(), AppError> {
        if ds.alarms.get().is_none() {
            let conn = store::open_reader(&self.db).map_err(AppError::store)?;
            let mut a = db::alarm_starts(&conn, i64::MIN, i64::MAX).map_err(AppError::store)?;
            a.sort_by_key(|a| a.ts_ms);
            let _ = ds.alarms.set(a);
        }
        Ok(())
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
    pub fn gateways(&self) -> Result<Vec<Gateway>, AppError> {
        let conn = store::open_reader(&self.db).map_err(AppError::store)?;
        let mut st = conn
            .prepare("SELECT gateway, site, online, last_seen_ms, status FROM gateways ORDER BY online DESC, gateway")
            .map_err(AppError::store)?;
        let rows = st
            .query_map([], |r| {
                Ok(Gateway {
                    gateway: r.get(0)?,
                    site: r.get(1)?,
                    online: r.get(2)?,
                    last_seen_ms: r.get(3)?,
                    status: serde_json::from_str(&r.get::<_, String>(4)?).ok(),
                })
            })
            .map_err(AppError::store)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(AppError::store)
    }

    /// Gateway counts, stored dead letters and file sizes for `/metrics`.
    ///
    /// # Errors
    /// Store failures.
    pub fn store_figures(&self) -> Result<StoreFigures, AppError> {
        let conn = store::open_reader(&self.db).map_err(AppError::store)?;
        let (online, known): (i64, i64) = conn
            .query_row("SELECT COALESCE(SUM(online), 0), COUNT(*) FROM gateways", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(AppError::store)?;
        let dead = events::dead_letter_count(&conn).map_err(AppError::store)?;
        let size = |suffix: &str| {
            let mut p = self.db.clone().into_os_string();
            p.push(suffix);
            std::fs::metadata(p).map_or(0, |m| m.len())
        };
        Ok(StoreFigures {
            gateways_online: online as u64,
            gateways_known: known as u64,
            dead_letters: dead,
            bytes: size("") + size("-wal"),
        })
    }
}

/// The query string every page and API call understands. Empty values count as absent (HTML forms send them).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Params {
    pub site: Option<String>,
    pub line: Option<String>,
    pub asset: Option<String>,
    pub crew: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub format: Option<String>,
    pub group: Option<String>,
    pub dim: Option<String>,
    pub by: Option<String>,
    pub per_person: Option<String>,
    pub change: Option<String>,
    pub limit: Option<String>,
    pub offset: Option<String>,
}

fn some(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Which rows: a window and optional site, line, asset and crew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub site: Option<String>,
    pub line: Option<String>,
    pub asset: Option<String>,
    pub crew: Option<String>,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// A time from the URL: RFC 3339, milliseconds, or a date / date-time in the site's time zone, between
/// [`MIN_TIME_MS`] and [`MAX_TIME_MS`].
///
/// # Errors
/// 400 naming the value and the formats, or the range.
pub fn parse_time(settings: &Settings, name: &str, v: &str) -> Result<i64, AppError> {
    let ms = feed::parse_time(v).ok().or_else(|| parse_local(settings.tz, v)).ok_or_else(|| {
        AppError::bad_request(format!(
            "invalid {name} {v:?}: expected a date (2025-03-01), a local date-time (2025-03-01T06:00), RFC 3339 or milliseconds"
        ))
    })?;
    if !(MIN_TIME_MS..=MAX_TIME_MS).contains(&ms) {
        return Err(AppError::bad_request(format!(
            "{name} {v:?} is out of range: times must lie between 2000-01-01 and 2200-01-01"
        )));
    }
    Ok(ms)
}

impl Filter {
    /// The filter of `p`; the window defaults to the 90 days before `now_ms` and may be at most
    /// `bounds.max_window_ms` long.
    ///
    /// # Errors
    /// 400 for an unreadable or out-of-range time, an empty window or one longer than the bound.
    pub fn parse(p: &Params, settings: &Settings, now_ms: i64, bounds: &Bounds) -> Result<Self, AppError> {
        let to_ms = some(&p.to).map(|v| parse_time(settings, "to", v)).transpose()?.unwrap_or(now_ms);
        let from_ms = some(&p.from)
            .map(|v| parse_time(settings, "from", v))
            .transpose()?
            .unwrap_or(to_ms.saturating_sub(90 * DAY_MS));
        if from_ms >= to_ms {
            return Err(AppError::bad_request("from must be before to"));
        }
        let len = to_ms.saturating_sub(from_ms);
        if len > bounds.max_window_ms {
            let day = |ms: i64| (ms + DAY_MS - 1) / DAY_MS;
            return Err(AppError::bad_request(format!(
                "the window from {} to {} is {} days long; at most {} days may be asked for at once ([http] max_window): narrow from and to",
                feed::rfc3339(from_ms),
                feed::rfc3339(to_ms),
                day(len),
                bounds.max_window_ms / DAY_MS
            )));
        }
        let s = |v: &Option<String>| some(v).map(str::to_string);
        Ok(Self { site: s(&p.site), line: s(&p.line), asset: s(&p.asset), crew: s(&p.crew), from_ms, to_ms })
    }

    fn scopes_assets(&self) -> bool {
        self.site.is_some() || self.line.is_some() || self.asset.is_some()
    }

    /// Whether an asset (of `site`) is in scope.
    pub fn asset_in_scope(&self, people: &Personnel, site: &str, asset: &str) -> bool {
        let line = people.asset(asset).map(|a| a.line.as_str());
        self.site.as_deref().is_none_or(|s| s == site)
            && self.asset.as_deref().is_none_or(|a| a == asset)
            && self.line.as_deref().is_none_or(|l| Some(l) == line)
    }

    fn event_in_scope(&self, people: &Personnel, e: &JoinedEvent) -> bool {
        self.asset_in_scope(people, &e.site, &e.asset)
            && self.crew.as_deref().is_none_or(|c| e.crew.as_deref() == Some(c))
    }
}

/// The dataset seen through a filter.
pub struct View<'a> {
    /// Personnel; limited to the assets in scope when the view was made for a report that reads
    /// requirements (coverage, gaps, recertification, alarm load, what-if).
    pub people: Cow<'a, Personnel>,
    pub events: Cow<'a, [JoinedEvent]>,
    pub alarms: Cow<'a, [AlarmStart]>,
    pub filter: &'a Filter,
    /// Assets in scope (for availability).
    pub assets: usize,
    /// The whole dataset (reports that look before the window: repeat incidents).
    pub ds: &'a Dataset,
}

/// Whether a report asks the personnel which skills the assets need (and so needs them scoped).
fn reads_requirements(kind: Kind) -> bool {
    matches!(kind, Kind::Coverage | Kind::Gaps | Kind::Recert | Kind::AlarmLoad | Kind::Whatif)
}

/// Applies `f` to `ds` for a report of `kind`: events started in the window and in scope, alarms in the
/// window, and (where the report reads requirements) personnel limited to the assets in scope.
pub fn view<'a>(ds: &'a Dataset, f: &'a Filter, kind: Kind) -> View<'a> {
    let lo = ds.events.partition_point(|e| e.start_ms < f.from_ms);
    let hi = ds.events.partition_point(|e| e.start_ms < f.to_ms);
    let window = &ds.events[lo..hi.max(lo)];
    let events: Cow<[JoinedEvent]> = if f.scopes_assets() || f.crew.is_some() {
        Cow::Owned(window.iter().filter(|e| f.event_in_scope(&ds.people, e)).cloned().collect())
    } else {
        Cow::Borrowed(window)
    };
    let all = ds.alarms();
    let awindow = &all[all.partition_point(|a| a.ts_ms < f.from_ms)..all.partition_point(|a| a.ts_ms < f.to_ms)];
    let in_scope = |site: &str, id: &str| f.asset_in_scope(&ds.people, site, id);
    let assets = match ds.people.assets.len() {
        0 => ds.choices.assets.len(),
        _ => ds.people.assets.iter().filter(|a| in_scope(&a.site, &a.id)).count(),
    };
    let mut alarms = Cow::Borrowed(awindow);
    let mut people = Cow::Borrowed(&ds.people);
    if f.scopes_assets() {
        let keep: std::collections::HashSet<&str> =
            ds.people.assets.iter().filter(|a| in_scope(&a.site, &a.id)).map(|a| a.id.as_str()).collect();
        alarms = Cow::Owned(awindow.iter().filter(|a| keep.contains(a.asset.as_str())).cloned().collect());
        if reads_requirements(kind) {
            let mut p = ds.people.clone();
            p.assets.retain(|a| keep.contains(a.id.as_str()));
            people = Cow::Owned(p.rebuilt());
        }
    }
    View { people, events, alarms, filter: f, assets, ds }
}

impl View<'_> {
    pub fn input(&self) -> Input<'_> {
        Input { people: &self.people, events: &self.events, from_ms: self.filter.from_ms, to_ms: self.filter.to_ms }
    }
}

/// Rows of the join served when no `limit` is given.
pub const JOIN_LIMIT: usize = 1000;

/// The reports served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Overview,
    Join,
    Coverage,
    Mttr,
    Pareto,
    Gaps,
    Priorities,
    Recert,
    AlarmLoad,
    Whatif,
    Repeats,
    TrainingEffect,
}

/// Report options from the URL.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub group: GroupBy,
    pub dim: Dim,
    pub by: ParetoBy,
    pub per_person: bool,
    pub change: Option<Change>,
    pub limit: Option<usize>,
    pub offset: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            group: GroupBy::Crew,
            dim: Dim::Asset,
            by: ParetoBy::Asset,
            per_person: false,
            change: None,
            limit: None,
            offset: 0,
        }
    }
}

fn choice<T: Copy>(name: &str, v: Option<&str>, default: T, options: &[(&str, T)]) -> Result<T, AppError> {
    let Some(v) = v else { return Ok(default) };
    options.iter().find(|(n, _)| *n == v).map(|(_, t)| *t).ok_or_else(|| {
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        AppError::bad_request(format!("invalid {name} {v:?}: expected one of {}", names.join(", ")))
    })
}

impl Options {
    /// # Errors
    /// 400 for an unknown choice, a bad number (`limit` above `bounds.max_rows`, `offset` above
    /// [`MAX_OFFSET`]), or a what-if without `change`.
    pub fn parse(p: &Params, kind: Kind, bounds: &Bounds) -> Result<Self, AppError> {
        let number = |name: &str, v: Option<&str>, max: usize, why: &str| {
            v.map(|v| match v.parse::<usize>() {
                Ok(n) if n <= max => Ok(n),
                Ok(_) => Err(AppError::bad_request(format!("{name} {v} is too large: at most {max}{why}"))),
                Err(_) => Err(AppError::bad_request(format!(
                    "invalid {name} {v:?}: expected a whole number from 0 to {max}{why}"
                ))),
            })
            .transpose()
        };
        let change = some(&p.change).map(|c| c.parse::<Change>().map_err(AppError::bad_request)).transpose()?;
        if kind == Kind::Whatif && change.is_none() {
            return Err(AppError::bad_request(
                "whatif needs change=person:skill:level (add) or change=person:skill (remove)",
            ));
        }
        Ok(Self {
            group: choice(
                "group",
                some(&p.group),
                GroupBy::Crew,
                &[("crew", GroupBy::Crew), ("shift", GroupBy::Shift)],
            )?,
            dim: choice(
                "dim",
                some(&p.dim),
                Dim::Asset,
                &[("asset", Dim::Asset), ("skill", Dim::Skill), ("shift", Dim::Shift), ("crew", Dim::Crew)],
            )?,
            by: choice("by", some(&p.by), ParetoBy::Asset, &[("asset", ParetoBy::Asset), ("skill", ParetoBy::Skill)])?,
            per_person: choice("per_person", some(&p.per_person), false, &[("true", true), ("false", false)])?,
            change,
            limit: number("limit", some(&p.limit), bounds.max_rows, " ([http] max_rows)")?,
            offset: number("offset", some(&p.offset), MAX_OFFSET, "")?.unwrap_or(0),
        })
    }
}

/// A report with its headline figures (overview only) and the row count before paging.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub report: Report,
    pub summary: Option<BTreeMap<String, Value>>,
    pub total_rows: usize,
}

/// Runs one report over a view, keeps the rows matching the filter's site, line, asset and crew columns
/// where the report has them, and pages the rows.
pub fn run(v: &View, kind: Kind, o: &Options) -> Output {
    let inp = v.input();
    let mut summary = None;
    let mut report = match kind {
        Kind::Overview => {
            let (s, rep) = overview(v);
            summary = Some(s);
            rep
        }
        Kind::Join => {
            // Newest first, paged before rendering: the page of a year is cheap.
            let total = inp.events.len();
            let end = total.saturating_sub(o.offset);
            let start = end.saturating_sub(o.limit.unwrap_or(JOIN_LIMIT));
            let page: Vec<JoinedEvent> = inp.events[start..end].iter().rev().cloned().collect();
            let mut rep = r::join::report(&Input { events: &page, ..inp });
            rep.notes.push(format!("{total} events in the window, newest first"));
            return Output { report: rep, summary: None, total_rows: total };
        }
        Kind::Coverage => r::coverage::report(&r::coverage::coverage(&inp, o.group), o.group),
        Kind::Mttr => r::mttr::report(&inp, o.dim),
        Kind::Pareto => r::pareto::report(&r::pareto::pareto(&inp, o.by), o.by),
        Kind::Gaps => r::gaps::report(&inp, &r::gaps::gaps(&inp)),
        Kind::Priorities => r::priority::report(&inp, &r::priority::priorities(&inp, 3), o.per_person),
        Kind::Recert => r::recert::report(&inp, &r::recert::recert(&inp)),
        Kind::AlarmLoad => r::alarms::report(&inp, &r::alarms::alarm_load(&inp, &v.alarms)),
        Kind::Repeats => {
            let ds = v.ds;
            let scoped: Vec<(&Downtime, bool)> = ds
                .downtime
                .iter()
                .zip(&ds.events)
                .take_while(|(d, _)| d.start_ms < v.filter.to_ms)
                .map(|(d, e)| (d, v.filter.event_in_scope(&ds.people, e)))
                .collect();
            let (s, rep) = r::repeats::report(
                &scoped,
                v.people.settings.repeat_window_ms,
                v.people.settings.tz,
                v.filter.from_ms,
                v.filter.to_ms,
            );
            summary = Some(s);
            rep
        }
        Kind::TrainingEffect => r::training::report(&inp, &r::training::effects(&inp)),
        Kind::Whatif => match &o.change {
            Some(c) => r::whatif::report(&r::whatif::what_if(&inp, c)),
            None => Report::new("whatif", Vec::<String>::new()),
        },
    };
    let f = v.filter;
    for (col, want) in [("site", &f.site), ("line", &f.line), ("asset", &f.asset), ("crew", &f.crew)] {
        if let (Some(want), Some(i)) = (want, report.columns.iter().position(|c| c == col)) {
            report.rows.retain(|row| row.get(i).and_then(Value::as_str) == Some(want.as_str()));
        }
    }
    let total_rows = report.rows.len();
    report.rows = report.rows.into_iter().skip(o.offset).take(o.limit.unwrap_or(usize::MAX)).collect();
    Output { report, summary, total_rows }
}

/// Headline figures and a weekly trend: availability = 1 − down time / (assets × window) (planned and
/// unknown time are not in the downtime records, so they are not deducted), downtime hours (clipped to the
/// window; open events count until the window's end or now), MTTR of closed events, covered and uncovered.
pub fn overview(v: &View) -> (BTreeMap<String, Value>, Report) {
    let f = v.filter;
    let now = chrono::Utc::now().timestamp_millis();
    let end_of = |e: &JoinedEvent| e.end_ms.unwrap_or(now.min(f.to_ms)).min(f.to_ms);
    let down_h: f64 =
        v.events.iter().map(|e| end_of(e).saturating_sub(e.start_ms.max(f.from_ms)).max(0) as f64 / HOUR_MS).sum();
    let window_h = f.to_ms.saturating_sub(f.from_ms) as f64 / HOUR_MS;
    // Three decimals (3.6 s): a demo's stops of seconds still read in seconds on the page.
    let mean = |xs: &[f64]| if xs.is_empty() { Value::Null } else { num(xs.iter().sum::<f64>() / xs.len() as f64, 3) };
    let ttr = |pred: &dyn Fn(&JoinedEvent) -> bool| -> Vec<f64> {
        v.events.iter().filter(|e| pred(e)).filter_map(|e| e.ttr_h()).collect()
    };
    let all = ttr(&|_| true);
    let covered = ttr(&|e| e.covered == Some(true));
    let uncovered = ttr(&|e| e.covered == Some(false));
    let base = Baselines::new(&v.events, v.people.settings.min_baseline_events);
    let avoidable: f64 = v.events.iter().map(|e| base.avoidable_h(e)).sum();
    let availability = if v.assets > 0 {
        Value::from(r::round(100.0 * (1.0 - down_h / (v.assets as f64 * window_h)), 2))
    } else {
        Value::Null
    };
    let mut s = BTreeMap::new();
    s.insert("assets".into(), v.assets.into());
    s.insert("availability_pct".into(), availability);
    s.insert("events".into(), v.events.len().into());
    s.insert("downtime_h".into(), num(down_h, 3));
    s.insert("mttr_h".into(), mean(&all));
    s.insert("covered_events".into(), covered.len().into());
    s.insert("uncovered_events".into(), uncovered.len().into());
    s.insert("covered_mttr_h".into(), mean(&covered));
    s.insert("uncovered_mttr_h".into(), mean(&uncovered));
    s.insert("avoidable_h".into(), num(avoidable, 3));
    let mut rep = Report::new("overview", ["week", "events", "downtime_h", "mttr_h", "uncovered_events"]);
    // Weeks by the site's calendar (local midnight, seven days apart), so a daylight-saving change does not
    // shift the labels. The window is bounded by `Bounds::max_window_ms` when it comes from a request
    // (Filter::parse); the cap keeps a hand-made filter from sizing the series beyond the whole range of times.
    let tz = v.people.settings.tz;
    let cap = ((MAX_TIME_MS - MIN_TIME_MS) / (7 * DAY_MS) + 2) as usize;
    let starts = r::week_starts(tz, f.from_ms, f.to_ms, cap);
    let mut acc = vec![(0usize, 0.0f64, 0.0f64, 0usize, 0usize); starts.len()];
    for e in v.events.iter() {
        let w = starts.partition_point(|s| *s <= e.start_ms).saturating_sub(1);
        let a = &mut acc[w];
        a.0 += 1;
        a.1 += end_of(e).saturating_sub(e.start_ms).max(0) as f64 / HOUR_MS;
        if let Some(h) = e.ttr_h() {
            a.2 += h;
            a.3 += 1;
        }
        a.4 += usize::from(e.covered == Some(false));
    }
    for (start, (n, down, ttr_sum, closed, unc)) in starts.iter().zip(acc) {
        let week = chrono::DateTime::from_timestamp_millis(*start)
            .map_or(String::new(), |d| d.with_timezone(&tz).format("%Y-%m-%d").to_string());
        let mttr = if closed > 0 { num(ttr_sum / closed as f64, 2) } else { Value::Null };
        rep.rows.push(vec![week.into(), n.into(), num(down, 1), mttr, unc.into()]);
    }
    (s, rep)
}

/// Gateways as a [`Report`].
pub fn gateways_report(gws: &[Gateway], now_ms: i64) -> Report {
    let mut rep = Report::new(
        "gateways",
        [
            "gateway",
            "site",
            "online",
            "last_seen",
            "last_seen_age_s",
            "agent_version",
            "buffer_depth",
            "oldest_unsent_age_s",
            "dropped",
            "clock_ok",
            "sources_connected",
            "sources",
        ],
    );
    for g in gws {
        let s = g.status.as_ref();
        rep.rows.push(vec![
            g.gateway.clone().into(),
            g.site.clone().into(),
            g.online.into(),
            feed::rfc3339(g.last_seen_ms).into(),
            (now_ms.saturating_sub(g.last_seen_ms).max(0) / 1000).into(),
            s.map(|s| s.agent_version.clone()).into(),
            s.map(|s| s.buffer_depth).into(),
            s.map(|s| s.oldest_unsent_age_ms / 1000).into(),
            s.map(|s| s.dropped).into(),
            s.map(|s| s.clock_ok).into(),
            s.map(|s| s.sources.iter().filter(|x| x.connected).count()).into(),
            s.map(|s| s.sources.len()).into(),
        ]);
    }
    rep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings { tz: chrono_tz::Europe::Berlin, ..Settings::default() }
    }

    #[test]
    fn overview_weeks_start_at_local_midnight_across_daylight_saving_changes() {
        let s = settings();
        let p = Params { from: Some("2025-10-20".into()), to: Some("2025-11-10".into()), ..Params::default() };
        let f = Filter::parse(&p, &s, MAX_TIME_MS, &Bounds::default()).unwrap();
        let ds = Dataset::new(Personnel::new(s), Vec::new(), None);
        let (_, rep) = overview(&view(&ds, &f, Kind::Overview));
        let weeks: Vec<&str> = rep.rows.iter().map(|r| r[0].as_str().unwrap()).collect();
        // Berlin leaves summer time on 2025-10-26: the labels stay on Mondays.
        assert_eq!(weeks, ["2025-10-20", "2025-10-27", "2025-11-03"]);
    }

    #[test]
    fn times_read_as_dates_in_site_time_rfc3339_or_millis() {
        let s = settings();
        assert_eq!(parse_time(&s, "from", "1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time(&s, "from", "2025-01-01T00:00:00Z"), Ok(1_735_689_600_000));
        // Midnight in Berlin is 23:00 UTC the day before in winter.
        assert_eq!(parse_time(&s, "from", "2025-01-01"), Ok(1_735_689_600_000 - 3_600_000));
        let e = parse_time(&s, "to", "yesterday").unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        assert!(e.message.contains("invalid to \"yesterday\""), "{}", e.message);
    }

    #[test]
    fn window_defaults_to_90_days_and_must_not_be_empty() {
        let s = settings();
        let b = Bounds::default();
        let now = MIN_TIME_MS + 100 * DAY_MS;
        let f = Filter::parse(&Params::default(), &s, now, &b).unwrap();
        assert_eq!((f.from_ms, f.to_ms), (now - 90 * DAY_MS, now));
        let p = Params { from: Some("2025-02-01".into()), to: Some("2025-01-01".into()), ..Params::default() };
        assert!(Filter::parse(&p, &s, now, &b).is_err());
        let blank = Params { crew: Some("".into()), ..Params::default() };
        assert_eq!(Filter::parse(&blank, &s, now, &b).unwrap().crew, None);
    }

    #[test]
    fn windows_and_times_from_a_request_are_bounded() {
        let s = settings();
        let b = Bounds::default();
        let now = 1_750_000_000_000;
        let window = |from: &str, to: &str| {
            let p = Params { from: Some(from.into()), to: Some(to.into()), ..Params::default() };
            Filter::parse(&p, &s, now, &b).map(|f| (f.from_ms, f.to_ms)).map_err(|e| e.message)
        };
        let e = window("0", "9000000000000000000").unwrap_err();
        assert!(
            e.contains("to \"9000000000000000000\" is out of range") && e.contains("2000-01-01 and 2200-01-01"),
            "{e}"
        );
        let e = window("2001-01-01", "2199-12-31").unwrap_err();
        assert!(e.contains("at most 1096 days") && e.contains("[http] max_window"), "{e}");
        assert!(window("-9223372036854775808", "2025-01-01").is_err());
        assert!(window("2022-01-01", "2025-01-01").is_ok());
        let e = Filter::parse(&Params { from: Some("2001-01-01".into()), ..Params::default() }, &s, now, &b)
            .unwrap_err()
            .message;
        assert!(e.contains("max_window"), "a far `from` with the default `to` (now) is bounded too: {e}");

        let opts = |limit: &str, offset: &str| {
            let p = Params { limit: Some(limit.into()), offset: Some(offset.into()), ..Params::default() };
            Options::parse(&p, Kind::Join, &b).map(|o| (o.limit, o.offset)).map_err(|e| e.message)
        };
        assert_eq!(opts("10000", "5"), Ok((Some(10_000), 5)));
        let e = opts("10001", "0").unwrap_err();
        assert!(e.contains("limit 10001 is too large: at most 10000 ([http] max_rows)"), "{e}");
        assert!(opts("1", "100000001").unwrap_err().contains("offset"));
        assert!(opts("99999999999999999999999", "0").unwrap_err().contains("expected a whole number"));
    }

    #[test]
    fn options_refuse_unknown_choices_by_name() {
        let p = Params { dim: Some("colour".into()), ..Params::default() };
        let e = Options::parse(&p, Kind::Mttr, &Bounds::default()).unwrap_err();
        assert!(e.message.contains("expected one of asset, skill, shift, crew"), "{}", e.message);
        assert!(Options::parse(&Params::default(), Kind::Whatif, &Bounds::default()).is_err());
    }
}
