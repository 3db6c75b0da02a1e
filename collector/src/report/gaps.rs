//! Gap analysis and readiness. For a scope (the plant's current needs, or an initiative at its go-live),
//! each crew × needed skill: how many crew members are qualified at that date against the headcount per
//! shift needed (1 for current needs; the initiative's figure otherwise). Readiness % of a scope =
//! Σ min(have, need) / Σ need over its crews and skills.

use crate::people::{Need, Personnel};
use crate::report::{needed_skills, num, Input, Report};
use serde::Serialize;

/// One crew × skill of a scope.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GapRow {
    pub scope: String,
    pub date_ms: i64,
    pub crew: String,
    pub skill: String,
    pub min_level: u8,
    pub need: u32,
    pub have: u32,
    /// Readiness of the whole scope, 0-100.
    pub readiness_pct: f64,
}

/// Rows of one scope at instant `t`.
pub fn scope(p: &Personnel, name: &str, t: i64, needs: &[Need]) -> Vec<GapRow> {
    let mut rows = Vec::new();
    for crew in p.crews() {
        for n in needs {
            let req = crate::people::Requirement { skill: n.skill.clone(), min_level: n.min_level };
            let have = p.crew_members(&crew, t).iter().filter(|x| p.qualified(x, &req, t)).count() as u32;
            rows.push(GapRow {
                scope: name.to_string(),
                date_ms: t,
                crew: crew.clone(),
                skill: n.skill.clone(),
                min_level: n.min_level,
                need: n.headcount,
                have,
                readiness_pct: 0.0,
            });
        }
    }
    let need: u32 = rows.iter().map(|r| r.need).sum();
    let met: u32 = rows.iter().map(|r| r.have.min(r.need)).sum();
    let pct = if need == 0 { 100.0 } else { 100.0 * f64::from(met) / f64::from(need) };
    rows.iter_mut().for_each(|r| r.readiness_pct = pct);
    rows
}

/// The current scope ("now" = the end of the window) and every initiative at its go-live.
pub fn gaps(inp: &Input) -> Vec<GapRow> {
    let p = inp.people;
    let now: Vec<Need> =
        needed_skills(p).into_iter().map(|r| Need { skill: r.skill, min_level: r.min_level, headcount: 1 }).collect();
    let mut rows = scope(p, "now", inp.to_ms, &now);
    let mut inits: Vec<_> = p.initiatives.iter().collect();
    inits.sort_by_key(|i| (i.go_live_ms, i.id.clone()));
    for i in inits {
        rows.extend(scope(p, &i.id, i.go_live_ms, &i.needs));
    }
    rows
}

/// As a [`Report`].
pub fn report(inp: &Input, rows: &[GapRow]) -> Report {
    let mut r =
        Report::new("gaps", ["scope", "date", "crew", "skill", "min_level", "need", "have", "short", "readiness_pct"]);
    for x in rows {
        let date = chrono::DateTime::from_timestamp_millis(x.date_ms)
            .map_or(String::new(), |d| d.with_timezone(&inp.people.settings.tz).format("%Y-%m-%d").to_string());
        r.rows.push(vec![
            x.scope.clone().into(),
            date.into(),
            x.crew.clone().into(),
            x.skill.clone().into(),
            x.min_level.into(),
            x.need.into(),
            x.have.into(),
            x.need.saturating_sub(x.have).into(),
            num(x.readiness_pct, 1),
        ]);
    }
    r
}
