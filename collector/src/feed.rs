//! The normalized downtime feed for central IT: schema `shiftlens.downtime/1` (docs/feed.md).
//!
//! One record per downtime event, published as JSON on `shiftlens/v1/{site}/downtime` whenever the event
//! is created or changed (it opens, it closes, or late data corrects it), and served by
//! `GET /api/v1/downtime` and `shiftlens-collector export downtime` as JSON or CSV. Consumers upsert by
//! `(site, asset, start)`. Times are RFC 3339 UTC with milliseconds. Fields are only ever added within a
//! schema version; a breaking change gets a new version.

use crate::timeline::Downtime;
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use shiftlens_common::{AssetId, SiteId};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The schema name and version every record carries.
pub const SCHEMA: &str = "shiftlens.downtime/1";

/// Looks up the production line of an asset (filled in by the people/assets import; `None` if unknown).
pub type LineOf = Arc<dyn Fn(&SiteId, &AssetId) -> Option<String> + Send + Sync>;

/// A `LineOf` that knows no lines.
pub fn no_lines() -> LineOf {
    Arc::new(|_, _| None)
}

/// The (site, asset) → line map of the current assets import (`assets.csv`, stored by the people store).
#[derive(Debug, Clone, Default)]
pub struct LineMap(HashMap<(String, String), String>);

impl LineMap {
    /// The map of these asset records (the current assets import).
    pub fn from_assets(assets: Vec<crate::people::model::Asset>) -> Self {
        Self(assets.into_iter().map(|a| ((a.site, a.id), a.line)).collect())
    }

    /// Assets in the map.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The line of `asset` at `site`, `None` when the assets import does not name it: the one way an
    /// asset's line is looked up for the feed (live records, `export downtime`).
    pub fn line(&self, site: &SiteId, asset: &AssetId) -> Option<String> {
        self.0.get(&(site.to_string(), asset.to_string())).cloned()
    }
}

/// Reads the line of every current asset from a store (only the asset records).
///
/// # Errors
/// SQLite failures or a stored asset record that does not read back.
pub fn load_lines(conn: &Connection) -> Result<LineMap, Box<dyn std::error::Error + Send + Sync>> {
    Ok(LineMap::from_assets(crate::store::people::current_assets(conn)?))
}

/// How often the cached map asks the store whether an import happened (one indexed `MAX(id)`).
const LINES_RECHECK: Duration = Duration::from_secs(2);

struct LinesCache {
    conn: Option<Connection>,
    revision: i64,
    checked: Option<Instant>,
    lines: Arc<LineMap>,
    recheck: Duration,
}

/// A cached asset → line map that reloads itself after a people import (any process may import: the
/// data revision in the store tells). Lookups are a hash lookup; at most every [`LINES_RECHECK`] one
/// lookup also reads the revision. Store errors keep the last map and are logged.
pub struct AssetLines {
    db: PathBuf,
    cache: Mutex<LinesCache>,
}

impl AssetLines {
    pub fn new(db: &Path) -> Self {
        Self::with_recheck(db, LINES_RECHECK)
    }

    /// As [`AssetLines::new`], asking the store for a new import at most every `recheck`.
    pub fn with_recheck(db: &Path, recheck: Duration) -> Self {
        let cache = LinesCache { conn: None, revision: -1, checked: None, lines: Arc::default(), recheck };
        Self { db: db.to_path_buf(), cache: Mutex::new(cache) }
    }

    /// As a [`LineOf`] hook for ingest.
    pub fn line_of(db: &Path) -> LineOf {
        let lines = Arc::new(Self::new(db));
        Arc::new(move |site, asset| lines.get(site, asset))
    }

    /// The current map, reloaded if the store's people data changed since the last check.
    pub fn lines(&self) -> Arc<LineMap> {
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if c.checked.is_some_and(|t| t.elapsed() < c.recheck) {
            return c.lines.clone();
        }
        c.checked = Some(Instant::now());
        if let Err(e) = self.refresh(&mut c) {
            tracing::warn!(db = %self.db.display(), error = %e, "cannot read asset lines; the feed keeps the last known");
            c.conn = None;
        }
        c.lines.clone()
    }

    /// The line of `asset` at `site` ([`LineMap::line`] on the current map).
    pub fn get(&self, site: &SiteId, asset: &AssetId) -> Option<String> {
        self.lines().line(site, asset)
    }

    fn refresh(&self, c: &mut LinesCache) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if c.conn.is_none() {
            c.conn = Some(crate::store::open_reader(&self.db)?);
        }
        let Some(conn) = c.conn.as_ref() else { return Ok(()) };
        let revision = crate::store::people::data_revision(conn)?;
        if revision != c.revision {
            c.lines = Arc::new(load_lines(conn)?);
            c.revision = revision;
            tracing::info!(revision, assets = c.lines.0.len(), "asset lines loaded for the downtime feed");
        }
        Ok(())
    }
}

/// The first-out alarm as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstOutAlarm {
    pub id: String,
    pub text: String,
    pub class: Option<String>,
    /// When it became active.
    pub at: String,
}

/// One downtime event as central IT sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub schema: String,
    pub site: String,
    pub line: Option<String>,
    pub asset: String,
    pub start: String,
    /// `null` while open.
    pub end: Option<String>,
    /// `end - start` in seconds; `null` while open.
    pub duration_s: Option<f64>,
    /// `open`, `closed`, or `retracted` (the key no longer exists: late data moved the event's start).
    pub state: String,
    pub reason: Option<String>,
    pub first_out_alarm: Option<FirstOutAlarm>,
    pub data_gap: bool,
    pub gateway: String,
    /// When an escalation of the stop was acknowledged (docs/escalation.md); `null` when none was.
    #[serde(default)]
    pub acknowledged: Option<String>,
    /// `acknowledged - start` in seconds (response); `null` when not acknowledged.
    #[serde(default)]
    pub response_s: Option<f64>,
    /// `end - acknowledged` in seconds (repair); `null` while open or not acknowledged.
    #[serde(default)]
    pub repair_s: Option<f64>,
}

/// RFC 3339 UTC with milliseconds, e.g. `2025-03-04T05:06:07.089Z`. Always an RFC 3339 date: a time outside
/// the years 0000-9999 (only a store written before the codec refused such times can hold one) is clamped.
pub fn rfc3339(ms: i64) -> String {
    const YEAR_0: i64 = -62_167_219_200_000;
    const YEAR_10000: i64 = 253_402_300_800_000;
    let ms = ms.clamp(YEAR_0, YEAR_10000 - 1);
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map_or_else(|| ms.to_string(), |t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Parses RFC 3339 or integer milliseconds since the Unix epoch.
///
/// # Errors
/// A message naming the value.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("invalid time {s:?}: {e} (expected RFC 3339, e.g. 2025-03-04T05:06:07Z)"))
}

impl Record {
    /// The record that withdraws `d`'s key, with `d` as it last stood.
    pub fn retracted(d: &Downtime, line: Option<String>) -> Self {
        Self { state: "retracted".to_string(), ..Self::new(d, line) }
    }

    pub fn new(d: &Downtime, line: Option<String>) -> Self {
        Self {
            schema: SCHEMA.to_string(),
            site: d.site.to_string(),
            line,
            asset: d.asset.to_string(),
            start: rfc3339(d.start_ms),
            end: d.end_ms.map(rfc3339),
            duration_s: d.ttr_ms().map(|ms| ms as f64 / 1000.0),
            state: if d.end_ms.is_some() { "closed" } else { "open" }.to_string(),
            reason: d.reason.clone(),
            first_out_alarm: d.first_out.as_ref().map(|f| FirstOutAlarm {
                id: f.id.clone(),
                text: f.text.clone(),
                class: f.class.clone(),
                at: rfc3339(f.ts_ms),
            }),
            data_gap: d.data_gap,
            gateway: d.gateway.to_string(),
            acknowledged: None,
            response_s: None,
            repair_s: None,
        }
    }

    /// With the split of the time to restoration at the escalation's acknowledgement `ack_ms`.
    pub fn with_ack(mut self, d: &Downtime, ack_ms: Option<i64>) -> Self {
        if let Some(ack) = ack_ms {
            let ack = ack.max(d.start_ms);
            self.acknowledged = Some(rfc3339(ack));
            self.response_s = Some((ack - d.start_ms) as f64 / 1000.0);
            self.repair_s = d.end_ms.map(|e| (e - ack).max(0) as f64 / 1000.0);
        }
        self
    }
}

/// The flat CSV row (first-out alarm spread over four columns); text cells pass through
/// [`csv_text`](crate::report::render::csv_text).
#[derive(Serialize)]
struct CsvRow<'a> {
    schema: Cow<'a, str>,
    site: Cow<'a, str>,
    line: Option<Cow<'a, str>>,
    asset: Cow<'a, str>,
    start: Cow<'a, str>,
    end: Option<Cow<'a, str>>,
    duration_s: Option<f64>,
    state: Cow<'a, str>,
    reason: Option<Cow<'a, str>>,
    first_out_alarm_id: Option<Cow<'a, str>>,
    first_out_alarm_text: Option<Cow<'a, str>>,
    first_out_alarm_class: Option<Cow<'a, str>>,
    first_out_alarm_at: Option<Cow<'a, str>>,
    data_gap: bool,
    gateway: Cow<'a, str>,
}

/// Records as CSV with a header row; text that a spreadsheet would run as a formula is written as text.
///
/// # Errors
/// Only if the CSV writer fails, which it does not for in-memory output.
pub fn to_csv(records: &[Record]) -> Result<String, csv::Error> {
    use crate::report::render::csv_text as t;
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in records {
        let fo = r.first_out_alarm.as_ref();
        w.serialize(CsvRow {
            schema: t(&r.schema),
            site: t(&r.site),
            line: r.line.as_deref().map(t),
            asset: t(&r.asset),
            start: t(&r.start),
            end: r.end.as_deref().map(t),
            duration_s: r.duration_s,
            state: t(&r.state),
            reason: r.reason.as_deref().map(t),
            first_out_alarm_id: fo.map(|f| t(&f.id)),
            first_out_alarm_text: fo.map(|f| t(&f.text)),
            first_out_alarm_class: fo.and_then(|f| f.class.as_deref()).map(t),
            first_out_alarm_at: fo.map(|f| t(&f.at)),
            data_gap: r.data_gap,
            gateway: t(&r.gateway),
        })?;
    }
    if records.is_empty() {
        return Ok("schema,site,line,asset,start,end,duration_s,state,reason,first_out_alarm_id,first_out_alarm_text,first_out_alarm_class,first_out_alarm_at,data_gap,gateway\n".into());
    }
    let bytes = w.into_inner().map_err(|e| csv::Error::from(e.into_error()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::people::import::{self, Kind};

    fn import_assets(conn: &mut Connection, text: &str, now_ms: i64) {
        let known = crate::store::people::load(conn, crate::people::Settings::default()).unwrap();
        let recs = import::parse(Kind::Assets, "assets.csv", text, &known).unwrap();
        crate::store::people::import(conn, Kind::Assets, "assets.csv", &recs, now_ms).unwrap();
    }

    #[test]
    fn asset_lines_follow_imports_and_match_site_and_asset() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("collector.db");
        let mut conn = crate::store::open_writer(&db).unwrap();
        let lines = AssetLines::with_recheck(&db, Duration::ZERO);
        let (site, press) = (SiteId::parse("plant-a").unwrap(), AssetId::parse("press-1").unwrap());
        assert_eq!(lines.get(&site, &press), None, "nothing imported yet");

        import_assets(&mut conn, "id,site,line,cost_per_hour,requires\npress-1,plant-a,line-3,250,\n", 1);
        assert_eq!(lines.get(&site, &press).as_deref(), Some("line-3"));
        assert_eq!(lines.get(&SiteId::parse("plant-b").unwrap(), &press), None, "another site's press-1");

        import_assets(&mut conn, "id,site,line,cost_per_hour,requires\npress-1,plant-a,line-4,250,\n", 2);
        assert_eq!(lines.get(&site, &press).as_deref(), Some("line-4"), "a re-import moves the asset");

        // Within the recheck period the cached map answers without asking the store.
        let cached = AssetLines::with_recheck(&db, Duration::from_secs(3600));
        assert_eq!(cached.get(&site, &press).as_deref(), Some("line-4"));
        import_assets(&mut conn, "id,site,line,cost_per_hour,requires\npress-1,plant-a,line-5,250,\n", 3);
        assert_eq!(cached.get(&site, &press).as_deref(), Some("line-4"));
        assert_eq!(lines.get(&site, &press).as_deref(), Some("line-5"));
    }

    #[test]
    fn extreme_times_print_as_dates_and_durations_do_not_overflow() {
        let d = Downtime {
            site: shiftlens_common::SiteId::parse("s").unwrap(),
            gateway: shiftlens_common::GatewayId::parse("g").unwrap(),
            asset: shiftlens_common::AssetId::parse("a").unwrap(),
            start_ms: i64::MIN,
            end_ms: Some(i64::MAX),
            reason: None,
            first_out: None,
            data_gap: false,
        };
        let r = Record::new(&d, None);
        for t in [&r.start, r.end.as_ref().unwrap()] {
            assert!(DateTime::parse_from_rfc3339(t).is_ok(), "{t}");
        }
        assert_eq!(r.duration_s, Some(i64::MAX as f64 / 1000.0));
    }
}
