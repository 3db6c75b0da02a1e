//! Training priorities from observed downtime: per crew × skill, the avoidable hours per month of that
//! crew's uncovered events that missed the skill (an event's avoidable hours split evenly over its missing
//! skills) × the asset's cost per hour, ranked; and per person × skill, the crew members closest to
//! qualifying (smallest level gap, then a certificate already held) for each of those.

use crate::report::{join::Baselines, num, privacy, Input, Report};
use serde::Serialize;
use std::collections::HashMap;

/// One crew × skill priority.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Priority {
    pub rank: usize,
    pub crew: String,
    pub skill: String,
    pub min_level: u8,
    pub events: usize,
    pub avoidable_h_per_month: f64,
    pub value_per_month: f64,
    /// Closest to qualifying first: (person, current level).
    pub candidates: Vec<(String, u8)>,
    /// Candidates whose certificate for the skill has lapsed (not renewed), with when it expired (UTC ms).
    pub lapsed: Vec<(String, i64)>,
}

/// Ranked priorities; `candidates_per_row` people each.
pub fn priorities(inp: &Input, candidates_per_row: usize) -> Vec<Priority> {
    let p = inp.people;
    let base = Baselines::new(inp.events, p.settings.min_baseline_events);
    let months = inp.months();
    let mut m: HashMap<(String, String), (usize, f64, f64, u8)> = HashMap::new();
    for e in inp.events.iter().filter(|e| e.covered == Some(false) && !e.missing.is_empty()) {
        let av = base.avoidable_h(e) / e.missing.len() as f64;
        let cost = p.asset(&e.asset).map_or(0.0, |a| a.cost_per_hour);
        let crew = e.crew.clone().unwrap_or_else(|| "none".into());
        for s in &e.missing {
            let level = e.required.iter().find(|c| &c.skill == s).map_or(0, |c| c.min_level);
            let x = m.entry((crew.clone(), s.clone())).or_default();
            *x = (x.0 + 1, x.1 + av, x.2 + av * cost, x.3.max(level));
        }
    }
    let mut rows: Vec<Priority> = m
        .into_iter()
        .filter(|(_, v)| v.1 > 0.0)
        .map(|((crew, skill), (events, h, v, min_level))| Priority {
            rank: 0,
            crew,
            skill,
            min_level,
            events,
            avoidable_h_per_month: h / months,
            value_per_month: v / months,
            candidates: Vec::new(),
            lapsed: Vec::new(),
        })
        .collect();
    rows.sort_by(|a, b| {
        b.value_per_month.total_cmp(&a.value_per_month).then_with(|| (&a.crew, &a.skill).cmp(&(&b.crew, &b.skill)))
    });
    let t = inp.to_ms;
    for (i, r) in rows.iter_mut().enumerate() {
        r.rank = i + 1;
        let req = crate::people::Requirement { skill: r.skill.clone(), min_level: r.min_level };
        let mut c: Vec<(u8, bool, String, u8)> = p
            .crew_members(&r.crew, t)
            .iter()
            .filter(|x| !p.qualified(x, &req, t))
            .map(|x| {
                let a = p.assessment_at(x, &r.skill, t);
                let level = a.map_or(0, |a| a.level);
                (r.min_level.saturating_sub(level), a.is_none_or(|a| a.cert_id.is_none()), x.clone(), level)
            })
            .collect();
        c.sort();
        r.candidates = c.into_iter().take(candidates_per_row).map(|(_, _, x, l)| (x, l)).collect();
        r.lapsed = r
            .candidates
            .iter()
            .filter_map(|(x, _)| {
                let a = p.assessment_at(x, &r.skill, t)?;
                let exp = a.expires_ms.filter(|e| a.cert_id.is_some() && *e <= t)?;
                Some((x.clone(), exp))
            })
            .collect();
    }
    rows
}

/// The date (site time) a candidate's certificate for the row's skill lapsed, if it has.
fn lapsed_date(p: &crate::people::Personnel, x: &Priority, person: &str) -> Option<String> {
    let ms = x.lapsed.iter().find(|(c, _)| c == person)?.1;
    chrono::DateTime::from_timestamp_millis(ms).map(|d| d.with_timezone(&p.settings.tz).format("%Y-%m-%d").to_string())
}

/// As a [`Report`]: one row per crew × skill, or per person × skill when `per_person` (left out when
/// `min_group_size` > 1).
pub fn report(inp: &Input, rows: &[Priority], per_person: bool) -> Report {
    let p = inp.people;
    let lapsed = |x: &Priority, person: &str| lapsed_date(p, x, person);
    if per_person {
        let mut r = Report::new(
            "priorities",
            [
                "rank",
                "person",
                "crew",
                "skill",
                "level",
                "min_level",
                "certificate_lapsed",
                "avoidable_h_per_month",
                "value_per_month",
            ],
        );
        if !privacy::persons_allowed(p) {
            r.notes.push(format!("per-person rows left out: min_group_size is {}", p.settings.min_group_size));
            return r;
        }
        for x in rows {
            for (person, level) in &x.candidates {
                r.rows.push(vec![
                    x.rank.into(),
                    privacy::show(p, person).into(),
                    x.crew.clone().into(),
                    x.skill.clone().into(),
                    (*level).into(),
                    x.min_level.into(),
                    lapsed(x, person).into(),
                    num(x.avoidable_h_per_month, 2),
                    num(x.value_per_month, 0),
                ]);
            }
        }
        return r;
    }
    let mut r = Report::new(
        "priorities",
        ["rank", "crew", "skill", "min_level", "events", "avoidable_h_per_month", "value_per_month", "closest"],
    );
    for x in rows {
        let closest = if privacy::persons_allowed(p) {
            x.candidates
                .iter()
                .map(|(c, l)| match lapsed(x, c) {
                    Some(d) => format!("{} (level {l}, certificate lapsed {d})", privacy::show(p, c)),
                    None => format!("{} (level {l})", privacy::show(p, c)),
                })
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            String::new()
        };
        r.rows.push(vec![
            x.rank.into(),
            x.crew.clone().into(),
            x.skill.clone().into(),
            x.min_level.into(),
            x.events.into(),
            num(x.avoidable_h_per_month, 2),
            num(x.value_per_month, 0),
            closest.into(),
        ]);
    }
    r
}
