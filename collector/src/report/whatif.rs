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

/// The event re-evaluated under `q` if the change flips whether anyone on shift has the changed skill
/// (everything else in a snapshot stays as it was); `None` when nothing that counts changes.
pub fn rejoin_one(q: &Personnel, e: &JoinedEvent, c: &Change) -> Option<JoinedEvent> {
    let chk = e.required.iter().find(|x| x.skill == c.skill)?;
    let req = crate::people::Requirement { skill: chk.skill.clone(), min_level: chk.min_level };
    let qualified: Vec<String> = e.on_shift.iter().filter(|x| q.qualified(x, &req, e.start_ms)).cloned().collect();
    if qualified.is_empty() == chk.qualified.is_empty() {
        return None;
    }
    let mut e = e.clone();
    if let Some(chk) = e.required.iter_mut().find(|x| x.skill == c.skill) {
        chk.qualified = qualified;
    }
    e.missing = e.required.iter().filter(|x| x.qualified.is_empty()).map(|x| x.skill.clone()).collect();
    e.covered = e.roster_known.then_some(e.missing.is_empty());
    Some(e)
}

/// One compared figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WhatIfRow {
    pub metric: String,
    pub before: f64,
    pub after: f64,
}

fn figures(inp: &Input, base: &Baselines, after: Option<(&Personnel, &Change)>) -> [f64; 4] {
    let (mut covered, mut uncovered, mut h, mut cost) = (0.0, 0.0, 0.0, 0.0);
    for e in inp.events {
        let changed = after.and_then(|(q, c)| rejoin_one(q, e, c));
        let e = changed.as_ref().unwrap_or(e);
        match e.covered {
            Some(true) => covered += 1.0,
            Some(false) => uncovered += 1.0,
            None => {}
        }
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
    let b = figures(inp, &base, None);
    let a = figures(inp, &base, Some((&q, c)));
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
