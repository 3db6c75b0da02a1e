//! MTTR by asset, skill, shift or crew, covered and uncovered side by side: count, mean, median, p90, a
//! 95 % confidence interval of the mean (seeded bootstrap) and the mean shrunk toward the overall MTTR
//! with the weight of `shrink_events` pseudo-events, so three events do not mislead.
//!
//! Where escalations were acknowledged (docs/escalation.md), the time to restoration also splits into
//! response (stop → acknowledged) and repair (acknowledged → end): mean hours over those events, per group.
//!
//! Closed events with a known roster only. For the skill dimension an event counts under each required
//! skill, as covered when that skill was covered.

use crate::report::stats::{self, Summary};
use crate::report::{num, privacy, Input, Report};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// The grouping dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dim {
    Asset,
    Skill,
    Shift,
    Crew,
}

/// One group: covered and uncovered summaries (hours).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MttrRow {
    pub group: String,
    pub covered: Option<Summary>,
    pub uncovered: Option<Summary>,
    /// Acknowledged events: (n, mean response h, mean repair h).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<(usize, f64, f64)>,
}

/// MTTR rows sorted by group, and the overall MTTR (hours) used as the shrinkage prior.
pub fn mttr(inp: &Input, dim: Dim) -> (Vec<MttrRow>, f64) {
    let mut groups: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    let mut splits: BTreeMap<String, (usize, f64, f64)> = BTreeMap::new();
    let mut all = Vec::new();
    for e in inp.events.iter().filter(|e| e.roster_known) {
        let Some(h) = e.ttr_h() else { continue };
        all.push(h);
        let mut put = |g: &str, covered: bool| {
            let v = groups.entry(g.to_string()).or_default();
            if covered { &mut v.0 } else { &mut v.1 }.push(h);
        };
        let covered = e.covered == Some(true);
        let split = e.response_repair_h();
        let mut put_split = |g: &str| {
            if let Some((resp, rep)) = split {
                let s = splits.entry(g.to_string()).or_default();
                *s = (s.0 + 1, s.1 + resp, s.2 + rep);
            }
        };
        match dim {
            Dim::Asset => {
                put(&e.asset, covered);
                put_split(&e.asset);
            }
            Dim::Shift => {
                put(e.shift.as_deref().unwrap_or("none"), covered);
                put_split(e.shift.as_deref().unwrap_or("none"));
            }
            Dim::Crew => {
                put(e.crew.as_deref().unwrap_or("none"), covered);
                put_split(e.crew.as_deref().unwrap_or("none"));
            }
            Dim::Skill => e.required.iter().for_each(|c| {
                put(&c.skill, !c.qualified.is_empty());
                put_split(&c.skill);
            }),
        }
    }
    let prior = stats::mean(&all).unwrap_or(0.0);
    let k = inp.people.settings.shrink_events;
    let rows = groups
        .into_iter()
        .map(|(group, (mut c, mut u))| MttrRow {
            split: splits.get(&group).map(|&(n, r, p)| (n, r / n as f64, p / n as f64)),
            group,
            covered: stats::summarize(&mut c, prior, k),
            uncovered: stats::summarize(&mut u, prior, k),
        })
        .collect();
    (rows, prior)
}

/// As a [`Report`]; crews smaller than `min_group_size` are left out when grouping by crew.
pub fn report(inp: &Input, dim: Dim) -> Report {
    let (rows, prior) = mttr(inp, dim);
    let mut cols = vec!["group".to_string()];
    for side in ["covered", "uncovered"] {
        for f in ["n", "mean_h", "median_h", "p90_h", "ci_low_h", "ci_high_h", "shrunk_h"] {
            cols.push(format!("{side}_{f}"));
        }
    }
    cols.extend(["acknowledged_n", "response_mean_h", "repair_mean_h"].map(String::from));
    let mut r = Report::new("mttr", cols);
    r.notes.push(format!("overall MTTR {prior:.2} h (shrinkage prior)"));
    for x in rows {
        if dim == Dim::Crew && !privacy::group_allowed(inp.people, &x.group, inp.to_ms) {
            r.notes
                .push(format!("crew {} left out: fewer than {} people", x.group, inp.people.settings.min_group_size));
            continue;
        }
        let mut row: Vec<Value> = vec![x.group.into()];
        for s in [x.covered, x.uncovered] {
            match s {
                Some(s) => {
                    row.push(s.n.into());
                    row.extend([s.mean, s.median, s.p90, s.ci_low, s.ci_high, s.shrunk].map(|v| num(v, 2)));
                }
                None => {
                    row.push(0.into());
                    row.extend(std::iter::repeat_n(Value::Null, 6));
                }
            }
        }
        match x.split {
            Some((n, resp, rep)) => row.extend([n.into(), num(resp, 2), num(rep, 2)]),
            None => row.extend([0.into(), Value::Null, Value::Null]),
        }
        r.rows.push(row);
    }
    r
}
