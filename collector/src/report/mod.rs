//! Reports: pure functions from plain data (a [`Personnel`](crate::people::Personnel), downtime events
//! and their [`join`]) to typed rows, each convertible to the uniform [`Report`] that the CLI renders as
//! a table, JSON or CSV and the HTTP API serves. No SQL and no I/O here, except in [`cli`], the `report`
//! command, a thin adapter over the read side (`crate::query`), which lists and dispatches these
//! reports through its one catalogue.
//!
//! Every report takes an [`Input`]: the personnel, the joined events and the analysis window.

pub mod alarms;
pub mod cli;
pub mod coverage;
pub mod gaps;
pub mod join;
pub mod mttr;
pub mod overview;
pub mod pareto;
pub mod priority;
pub mod privacy;
pub mod recert;
pub mod render;
pub mod repeats;
pub mod shift;
pub mod stats;
pub mod synth;
pub mod training;
pub mod whatif;

use crate::people::Personnel;
use serde::Serialize;
use serde_json::Value;

pub use join::{join, JoinedEvent, SkillCheck};

/// A report in the one shape every output uses: named columns and rows of JSON values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub name: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
    /// Caveats a reader needs (suppressed groups, fallbacks used).
    pub notes: Vec<String>,
}

impl Report {
    pub fn new<S: Into<String>>(name: &str, columns: impl IntoIterator<Item = S>) -> Self {
        Self {
            name: name.into(),
            columns: columns.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }
}

/// Rounds to `d` decimals for display (reports carry numbers, not strings); never `-0`, so an empty
/// window reads 0.0, not -0.0.
pub fn round(x: f64, d: i32) -> f64 {
    let f = 10f64.powi(d);
    (x * f).round() / f + 0.0
}

/// What every report reads.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub people: &'a Personnel,
    pub events: &'a [JoinedEvent],
    /// The analysis window `[from, to)` in UTC ms (per-month figures divide by its length).
    pub from_ms: i64,
    pub to_ms: i64,
}

impl Input<'_> {
    /// The window's length in months of 30.44 days (at least one day's worth).
    pub fn months(&self) -> f64 {
        ((self.to_ms - self.from_ms).max(86_400_000) as f64) / (30.44 * 86_400_000.0)
    }
}

/// A number rounded to `d` decimals as a JSON value.
pub fn num(x: f64, d: i32) -> serde_json::Value {
    round(x, d).into()
}

pub(crate) const HOUR_MS: f64 = 3_600_000.0;

/// The skills the plant needs and at which level: the highest minimum any asset or alarm class asks for.
pub fn needed_skills(p: &Personnel) -> Vec<crate::people::Requirement> {
    let mut m: std::collections::BTreeMap<&str, u8> = std::collections::BTreeMap::new();
    for r in p.assets.iter().flat_map(|a| &a.requires).chain(p.alarm_classes.iter().flat_map(|c| &c.requires)) {
        let e = m.entry(r.skill.as_str()).or_insert(r.min_level);
        *e = (*e).max(r.min_level);
    }
    m.into_iter().map(|(s, l)| crate::people::Requirement { skill: s.to_string(), min_level: l }).collect()
}

/// The starts (UTC ms) of the weeks that cover `[from_ms, to_ms)` in the site's time zone: the first at
/// local midnight of the day `from_ms` falls on, each next one seven calendar days later at local midnight,
/// so a week across a daylight-saving change is 167 or 169 hours long and every week starts on the same
/// weekday. At least one week; a window that would need more than `max` weeks is cut at `max`.
pub fn week_starts(tz: chrono_tz::Tz, from_ms: i64, to_ms: i64, max: usize) -> Vec<i64> {
    let Some(first) = chrono::DateTime::from_timestamp_millis(from_ms).map(|d| d.with_timezone(&tz).date_naive())
    else {
        return vec![from_ms];
    };
    let mut out = Vec::new();
    let mut day = first;
    while out.len() < max.max(1) {
        let start = crate::people::roster::local_midnight(tz, day);
        if !out.is_empty() && start >= to_ms {
            break;
        }
        out.push(start);
        match day.checked_add_days(chrono::Days::new(7)) {
            Some(d) => day = d,
            None => break,
        }
    }
    out
}

/// Skills required by the costliest assets: cost per hour at or above the configured quantile.
pub fn critical_skills(p: &Personnel) -> std::collections::BTreeSet<String> {
    let mut costs: Vec<f64> = p.assets.iter().map(|a| a.cost_per_hour).collect();
    costs.sort_by(f64::total_cmp);
    let Some(threshold) = stats::quantile(&costs, p.settings.critical_cost_quantile) else { return Default::default() };
    p.assets
        .iter()
        .filter(|a| a.cost_per_hour >= threshold)
        .flat_map(|a| a.requires.iter().map(|r| r.skill.clone()))
        .collect()
}
