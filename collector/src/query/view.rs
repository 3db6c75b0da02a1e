//! The dataset seen through a [`Filter`] ([`View`]), and [`run`]: the one dispatch from a report kind to
//! its rows, used by the API, the pages, the OpenAPI document and the `report` command. Pure.

use super::catalogue::{entry, Kind};
use super::dataset::Dataset;
use super::params::{Filter, Options};
use super::Summary;
use crate::join::{AlarmStart, JoinedEvent};
use crate::people::Personnel;
use crate::report::{Input, Report};
use serde_json::Value;
use std::borrow::Cow;

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
    /// Now (UTC ms): open events count until then.
    pub now_ms: i64,
}

/// Applies `f` to `ds` for a report of `kind`: events started in the window and in scope, alarms in the
/// window, and (where the report reads requirements) personnel limited to the assets in scope.
pub fn view<'a>(ds: &'a Dataset, f: &'a Filter, kind: Kind, now_ms: i64) -> View<'a> {
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
        if entry(kind).reads_requirements {
            let mut p = ds.people.clone();
            p.assets.retain(|a| keep.contains(a.id.as_str()));
            people = Cow::Owned(p.rebuilt());
        }
    }
    View { people, events, alarms, filter: f, assets, ds, now_ms }
}

impl View<'_> {
    pub fn input(&self) -> Input<'_> {
        Input { people: &self.people, events: &self.events, from_ms: self.filter.from_ms, to_ms: self.filter.to_ms }
    }
}

/// A report with its headline figures (overview, repeats) and the row count before paging.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub report: Report,
    pub summary: Option<Summary>,
    pub total_rows: usize,
}

/// Runs one report over `ds` seen through `f`: the catalogue's function of `kind`, then the rows kept
/// that match the filter's site, line, asset and crew columns where the report has them, then paged.
/// The alarm-load report needs `ds`'s alarms read ([`Dataset::read_alarms`]).
pub fn run(ds: &Dataset, kind: Kind, f: &Filter, o: &Options, now_ms: i64) -> Output {
    let mut v = view(ds, f, kind, now_ms);
    if let Some(h) = o.horizon_ms.filter(|h| *h != v.people.settings.recert_horizon_ms) {
        // The reports read their settings from the personnel: this call gets its own copy.
        v.people.to_mut().settings.recert_horizon_ms = h;
    }
    let made = (entry(kind).make)(&v, o);
    let mut report = made.report;
    if let Some(total_rows) = made.paged_total {
        return Output { report, summary: made.summary, total_rows };
    }
    for (col, want) in [("site", &f.site), ("line", &f.line), ("asset", &f.asset), ("crew", &f.crew)] {
        if let (Some(want), Some(i)) = (want, report.columns.iter().position(|c| c == col)) {
            report.rows.retain(|row| row.get(i).and_then(Value::as_str) == Some(want.as_str()));
        }
    }
    let total_rows = report.rows.len();
    report.rows = report.rows.into_iter().skip(o.offset).take(o.limit.unwrap_or(usize::MAX)).collect();
    Output { report, summary: made.summary, total_rows }
}
