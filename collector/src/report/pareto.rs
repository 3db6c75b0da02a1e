//! Downtime Pareto: hours, events and cost (hours × cost per hour) by asset, or of uncovered events by
//! missing skill (an event counts in full under each skill it missed), largest first, with the
//! cumulative share.

use crate::report::{join::Baselines, num, Input, Report};
use serde::Serialize;
use std::collections::HashMap;

/// Pareto by asset or by missing skill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ParetoBy {
    Asset,
    Skill,
}

/// One bar of the Pareto.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParetoRow {
    pub key: String,
    pub events: usize,
    pub hours: f64,
    pub cost: f64,
    pub avoidable_hours: f64,
    pub share: f64,
    pub cumulative: f64,
}

/// The Pareto rows, by hours descending (closed events only).
pub fn pareto(inp: &Input, by: ParetoBy) -> Vec<ParetoRow> {
    let p = inp.people;
    let base = Baselines::new(inp.events, p.settings.min_baseline_events);
    let mut m: HashMap<&str, (usize, f64, f64, f64)> = HashMap::new();
    for e in inp.events {
        let Some(h) = e.ttr_h() else { continue };
        let cost = p.asset(&e.asset).map_or(0.0, |a| a.cost_per_hour);
        let av = base.avoidable_h(e);
        let keys: Vec<&str> = match by {
            ParetoBy::Asset => vec![e.asset.as_str()],
            ParetoBy::Skill if e.covered == Some(false) => e.missing.iter().map(String::as_str).collect(),
            ParetoBy::Skill => vec![],
        };
        for k in keys {
            let x = m.entry(k).or_default();
            *x = (x.0 + 1, x.1 + h, x.2 + h * cost, x.3 + av);
        }
    }
    let total: f64 = m.values().map(|x| x.1).sum();
    let mut rows: Vec<ParetoRow> = m
        .into_iter()
        .map(|(k, (events, hours, cost, avoidable_hours))| ParetoRow {
            key: k.to_string(),
            events,
            hours,
            cost,
            avoidable_hours,
            share: 0.0,
            cumulative: 0.0,
        })
        .collect();
    rows.sort_by(|a, b| b.hours.total_cmp(&a.hours).then_with(|| a.key.cmp(&b.key)));
    let mut cum = 0.0;
    for r in &mut rows {
        r.share = if total > 0.0 { r.hours / total } else { 0.0 };
        cum += r.share;
        r.cumulative = cum;
    }
    rows
}

/// As a [`Report`].
pub fn report(rows: &[ParetoRow], by: ParetoBy) -> Report {
    let k = if by == ParetoBy::Asset { "asset" } else { "missing_skill" };
    let mut r = Report::new("pareto", [k, "events", "hours", "cost", "avoidable_hours", "share", "cumulative"]);
    for x in rows {
        r.rows.push(vec![
            x.key.clone().into(),
            x.events.into(),
            num(x.hours, 2),
            num(x.cost, 0),
            num(x.avoidable_hours, 2),
            num(x.share, 3),
            num(x.cumulative, 3),
        ]);
    }
    r
}
