//! What-if: give a person a skill at a level (with a valid certificate) or take it away, over the whole
//! history, and show what changes: covered and uncovered events, avoidable hours and their cost per
//! month (against the unchanged covered-MTTR baselines), and the share of shift time covered for that
//! skill per shift.

use crate::people::model::FxMap;
use crate::people::{PersonSkill, Personnel, Requirement};
use crate::report::coverage::{self, Column, GroupBy, WHATIF_FROM};
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
            assessed_ms: WHATIF_FROM,
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
    rejoin_by(e, c, |x, req, t| q.qualified(x, req, t))
}

/// [`rejoin_one`] with the qualification question answered by `qualified(person, requirement, t)`.
fn rejoin_by(e: &JoinedEvent, c: &Change, qualified: impl Fn(&str, &Requirement, i64) -> bool) -> Option<JoinedEvent> {
    let chk = e.required.iter().find(|x| x.skill == c.skill)?;
    let req = Requirement { skill: chk.skill.clone(), min_level: chk.min_level };
    let any = e.on_shift.iter().any(|x| qualified(x, &req, e.start_ms));
    if any != chk.qualified.is_empty() {
        return None;
    }
    let qualified: Vec<String> = e.on_shift.iter().filter(|x| qualified(x, &req, e.start_ms)).cloned().collect();
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

/// Whether `person` is qualified for `req` (a requirement in the changed skill) at t once the change is
/// applied: what [`apply`] then [`Personnel::qualified`] answer, without copying the personnel.
/// `assessed` holds everyone with an assessment in the changed skill; nobody else can be qualified in it.
fn qualified_after(
    p: &Personnel,
    c: &Change,
    assessed: &FxMap<&str, ()>,
    person: &str,
    req: &Requirement,
    t: i64,
) -> bool {
    if person == c.person && req.skill == c.skill {
        // The only assessment left is the what-if one, with a certificate that never expires.
        return t >= WHATIF_FROM && c.level.is_some_and(|l| l >= req.min_level);
    }
    (req.skill != c.skill || assessed.contains_key(person)) && p.qualified(person, req, t)
}

/// Covered and uncovered events, avoidable hours and cost per month: before and after the change, in one
/// pass (an event the change does not flip counts the same on both sides).
fn figures(inp: &Input, base: &Baselines, c: &Change) -> ([f64; 4], [f64; 4]) {
    let p = inp.people;
    let assessed: FxMap<&str, ()> =
        p.person_skills.iter().filter(|a| a.skill == c.skill).map(|a| (a.person.as_str(), ())).collect();
    let (mut before, mut after) = ([0.0; 4], [0.0; 4]);
    let add = |acc: &mut [f64; 4], e: &JoinedEvent, a: f64| {
        match e.covered {
            Some(true) => acc[0] += 1.0,
            Some(false) => acc[1] += 1.0,
            None => {}
        }
        acc[2] += a;
        acc[3] += a * p.asset(&e.asset).map_or(0.0, |x| x.cost_per_hour);
    };
    for e in inp.events {
        let a = base.avoidable_h(e);
        add(&mut before, e, a);
        match rejoin_by(e, c, |x, req, t| qualified_after(p, c, &assessed, x, req, t)) {
            Some(changed) => add(&mut after, &changed, base.avoidable_h(&changed)),
            None => add(&mut after, e, a),
        }
    }
    let per_month = |x: [f64; 4]| [x[0], x[1], x[2] / inp.months(), x[3] / inp.months()];
    (per_month(before), per_month(after))
}

/// Before and after figures. The change is not applied to a copy of the personnel: events are re-checked
/// only for the changed skill, and the covered share comes from one walk of the window with the skill
/// counted twice, as it is and with the changed person's qualification replaced.
pub fn what_if(inp: &Input, c: &Change) -> Vec<WhatIfRow> {
    let p = inp.people;
    let base = Baselines::new(inp.events, p.settings.min_baseline_events);
    let (b, a) = figures(inp, &base, c);
    let names = ["covered_events", "uncovered_events", "avoidable_h_per_month", "avoidable_cost_per_month"];
    let mut rows: Vec<WhatIfRow> = names
        .iter()
        .zip(b.iter().zip(a))
        .map(|(m, (b, a))| WhatIfRow { metric: m.to_string(), before: *b, after: a })
        .collect();
    let Some(req) = crate::report::needed_skills(p).into_iter().find(|r| r.skill == c.skill) else { return rows };
    let cols = [Column { req: &req, over: None }, Column { req: &req, over: Some((&c.person, c.level)) }];
    let w = coverage::walk(p, &cols, GroupBy::Shift, inp.from_ms, inp.to_ms);
    let share = |hist: &[i64]| {
        let total: i64 = hist.iter().sum();
        let cov: i64 = hist.iter().skip(1).sum();
        if total > 0 {
            cov as f64 / total as f64
        } else {
            0.0
        }
    };
    let mut shares: Vec<(&str, f64, f64)> =
        w.groups.iter().zip(&w.hist).map(|(g, h)| (*g, share(&h[0]), share(&h[1]))).collect();
    shares.sort_by(|x, y| x.0.cmp(y.0));
    for (g, before, after) in shares {
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
