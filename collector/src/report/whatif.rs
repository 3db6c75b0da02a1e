//! What-if: give a person a skill at a level (with a valid certificate) or take it away, over the whole
//! history, and show what changes: covered and uncovered events, avoidable hours and their cost per
//! month (against the unchanged covered-MTTR baselines), and the share of shift time covered for that
//! skill per shift.

use crate::people::{PersonSkill, Personnel};
use crate::report::coverage::{self, GroupBy};
use crate::report::{join::Baselines, num, Input, JoinedEvent, Report};
use serde::Serialize;

/// The qualification to add (`level` Some) or remove (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub person: String,
    pub skill: String,
    pub level: Option<u8>,
}

impl std::str::FromStr for Change {
    type Err = String;
    /// `person:skill:level` to add, `person:skill` to remove.
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let level = match parts.get(2) {
            Some(l) => Some(
                l.parse::<u8>().ok().filter(|l| *l <= 4).ok_or_else(|| format!("invalid level {l:?}: expected 0-4"))?,
            ),
            None => None,
        };
        match parts.as_slice() {
            [p, s, ..] if parts.len() <= 3 && !p.is_empty() && !s.is_empty() => {
                Ok(Change { person: p.to_string(), skill: s.to_string(), level })
            }
            _ => Err(format!("invalid change {s:?}: expected person:skill:level (add) or person:skill (remove)")),
        }
    }
}

/// The personnel with the change applied to all time.
pub fn apply(p: &Personnel, c: &Change) -> Personnel {
    let mut q = p.clone();
    q.person_skills.retain(|a| !(a.person == c.person && a.skill == c.skill));
    if let Some(level) = c.level {
        q.person_skills.push(PersonSkill {
            person: c.person.clone(),
            skill: c.skill.clone(),
            level,
            assessed_ms: i64::MIN / 2,
            cert_id: Some("what-if".into()),
            issued_ms: None,
            expires_ms: None,
        });
    }
    q.rebuilt()
}

/// The events re-evaluated for the changed skill only (everything else in a snapshot stays as it was).
pub fn rejoin(q: &Personnel, events: &[JoinedEvent], c: &Change) -> Vec<JoinedEvent> {
    events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            if let Some(chk) = e.required.iter_mut().find(|x| x.skill == c.skill) {
                let req = crate::people::Requirement { skill: chk.skill.clone(), min_level: chk.min_level };
                chk.qualified = e.on_shift.iter().filter(|x| q.qualified(x, &req, e.start_ms)).cloned().collect();
                e.missing = e.required.iter().filter(|x| x.qualified.is_empty()).map(|x| x.skill.clone()).collect();
                e.covered = e.roster_known.then_some(e.missing.is_empty());
            }
            e
        })
        .collect()
}

/// One compared figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WhatIfRow {
    pub metric: String,
    pub before: f64,
    pub after: f64,
}

fn figures(inp: &Input, base: &Baselines, events: &[JoinedEvent]) -> [f64; 4] {
    let covered = events.iter().filter(|e| e.covered == Some(true)).count() as f64;
    let uncovered = events.iter().filter(|e| e.covered == Some(false)).count() as f64;
    let (mut h, mut cost) = (0.0, 0.0);
    for e in events {
        let a = base.avoidable_h(e);
        h += a;
        cost += a * inp.people.asset(&e.asset).map_or(0.0, |x| x.cost_per_hour);
    }
    [covered, uncovered, h / inp.months(), cost / inp.months()]
}

/// Before and after figures.
pub fn what_if(inp: &Input, c: &Change) -> Vec<WhatIfRow> {
    let p = inp.people;
    let base = Baselines::new(inp.events, p.settings.min_baseline_events);
    let q = apply(p, c);
    let after_events = rejoin(&q, inp.events, c);
    let b = figures(inp, &base, inp.events);
    let a = figures(inp, &base, &after_events);
    let names = ["covered_events", "uncovered_events", "avoidable_h_per_month", "avoidable_cost_per_month"];
    let mut rows: Vec<WhatIfRow> = names
        .iter()
        .zip(b.iter().zip(a))
        .map(|(m, (b, a))| WhatIfRow { metric: m.to_string(), before: *b, after: a })
        .collect();
    let skills: Vec<_> = crate::report::needed_skills(p).into_iter().filter(|r| r.skill == c.skill).collect();
    let share = |pp: &Personnel| {
        let h = coverage::histogram(pp, &skills, GroupBy::Shift, inp.from_ms, inp.to_ms);
        let mut v: Vec<(String, f64)> = h
            .into_iter()
            .map(|((g, _), hist)| {
                let total: i64 = hist.values().sum();
                let cov: i64 = hist.iter().filter(|(n, _)| **n > 0).map(|(_, t)| t).sum();
                (g, if total > 0 { cov as f64 / total as f64 } else { 0.0 })
            })
            .collect();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    };
    for ((g, before), (_, after)) in share(p).into_iter().zip(share(&q)) {
        rows.push(WhatIfRow { metric: format!("covered_share[{g}]"), before, after });
    }
    rows
}

/// As a [`Report`].
pub fn report(rows: &[WhatIfRow]) -> Report {
    let mut r = Report::new("whatif", ["metric", "before", "after", "delta"]);
    for x in rows {
        r.rows.push(vec![x.metric.clone().into(), num(x.before, 3), num(x.after, 3), num(x.after - x.before, 3)]);
    }
    r
}
