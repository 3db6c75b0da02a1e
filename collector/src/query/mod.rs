//! The read side: what the dashboard, the API and the `report` / `import` commands ask the collector,
//! answered in one way.
//!
//! - [`catalogue`]: the one table of reports (name, path, page, titles, options, summary) and the pure
//!   function of each; [`run`] is the one dispatch every caller uses.
//! - [`params`]: the URL (or flags) parsed into a [`Filter`] and [`Options`] within [`Bounds`].
//! - [`dataset`]: the [`Dataset`] loaded from the store, joined, cached ([`Source`]); the join snapshot is
//!   written there, by [`Dataset::save_snapshot`] after every load, whoever asked.
//! - [`view`](mod@view): the dataset seen through a filter, and [`run`].
//! - [`shift`]: the shift report (a page and an API call of its own, over the same dataset).
//!
//! Everything here but the loading is pure; loading goes through the store's narrow read API
//! ([`crate::store::reads`]), so no SQL is written above `store`. Handlers in `http` make one call here
//! ([`report`], [`downtime_feed`], [`gateways`], [`import`], [`shift::compute`]) and render what comes back.

pub mod catalogue;
pub mod dataset;
pub mod error;
pub mod params;
pub mod shift;
pub mod view;

pub use catalogue::{entry, Entry, Kind, CATALOGUE, JOIN_LIMIT};
pub use dataset::{Choices, Dataset, Source, StoreFigures, RECHECK, RELOAD_FACTOR};
pub use error::QueryError;
pub use params::{
    parse_time, Bounds, Filter, Options, Params, DEFAULT_MAX_ROWS, DEFAULT_MAX_WINDOW_DAYS, MAX_OFFSET, MAX_TIME_MS,
    MAX_WINDOW_DAYS, MIN_TIME_MS,
};
pub use view::{run, view, Output, View};

use crate::feed;
use crate::people::import::{ImportError, Kind as CsvKind};
use crate::report::Report;
use crate::store::reads::{self, Gateway};
use serde_json::Value;
use shiftlens_common::clock::now_ms;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A report's headline figures.
pub type Summary = BTreeMap<String, Value>;

/// One report as a request asks for it: the cached dataset, `params` parsed and bounded, [`run`].
/// Blocks (call it off the async threads).
///
/// # Errors
/// Bad parameters, or the store.
pub fn report(source: &Arc<Source>, params: &Params, kind: Kind) -> Result<(Output, Filter), QueryError> {
    let ds = source.dataset()?;
    let now = now_ms();
    let filter = Filter::parse(params, source.settings(), now, source.bounds())?;
    let options = Options::parse(params, kind, source.bounds())?;
    if kind == Kind::AlarmLoad {
        source.ensure_alarms(&ds)?;
    }
    Ok((run(&ds, kind, &filter, &options, now), filter))
}

/// The downtime feed (`shiftlens.downtime/1`) of events overlapping the window, filtered, oldest first,
/// paged; and how many the window holds. Blocks.
///
/// # Errors
/// Bad parameters, a window holding more than `max_rows` events without `limit`, or the store.
pub fn downtime_feed(source: &Arc<Source>, q: &Params) -> Result<(Vec<feed::Record>, usize), QueryError> {
    let ds = source.dataset()?;
    let bounds = source.bounds();
    let f = Filter::parse(q, source.settings(), now_ms(), bounds)?;
    let o = Options::parse(q, Kind::Join, bounds)?;
    let matching = || {
        ds.downtime.iter().zip(&ds.events).take_while(|(d, _)| d.start_ms < f.to_ms).filter(|(d, e)| {
            d.end_ms.is_none_or(|end| end > f.from_ms)
                && f.asset_in_scope(&ds.people, d.site.as_str(), d.asset.as_str())
                && f.crew.as_deref().is_none_or(|c| e.crew.as_deref() == Some(c))
        })
    };
    let total = matching().count();
    if o.limit.is_none() && total > bounds.max_rows {
        return Err(QueryError::invalid(format!(
            "the window holds {total} downtime events, more than {} ([http] max_rows) in one answer: page with limit and offset, or narrow the window",
            bounds.max_rows
        )));
    }
    let records: Vec<feed::Record> = matching()
        .skip(o.offset)
        .take(o.limit.unwrap_or(bounds.max_rows))
        .map(|(d, _)| feed::Record::new(d, ds.people.line_of(d.site.as_str(), d.asset.as_str()).map(str::to_owned)))
        .collect();
    Ok((records, total))
}

/// Gateways as a [`Report`], as of `now_ms`. Blocks.
///
/// # Errors
/// The store.
pub fn gateways(source: &Source, now_ms: i64) -> Result<Report, QueryError> {
    Ok(gateways_report(&source.gateways()?, now_ms))
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

/// What a personnel import did, or why it stored nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    /// What changed, in words.
    Stored(String),
    Rejected(Vec<ImportError>),
}

/// Validates and stores one personnel CSV, all rows or none (the `import` command and the dashboard's
/// import both call this). Blocks.
///
/// # Errors
/// The store failed (nothing stored).
pub fn import(
    db: &std::path::Path,
    settings: &crate::people::Settings,
    kind: CsvKind,
    file: &str,
    text: &str,
) -> Result<ImportOutcome, QueryError> {
    let s = match reads::import_personnel(db, settings.clone(), kind, file, text, now_ms())? {
        Ok(s) => s,
        Err(errors) => return Ok(ImportOutcome::Rejected(errors)),
    };
    tracing::info!(kind = %kind, file, added = s.added, changed = s.changed, removed = s.removed, "personnel imported");
    Ok(ImportOutcome::Stored(match s.import_id {
        Some(id) => format!(
            "{kind}: {} added, {} changed, {} removed, {} unchanged (revision {id})",
            s.added, s.changed, s.removed, s.unchanged
        ),
        None => format!("{kind}: no changes ({} unchanged)", s.unchanged),
    }))
}
