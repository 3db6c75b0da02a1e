//! Coverage matrix: for each shift (or crew) × needed skill, the qualified headcount on shift and the
//! share of that group's shift time with at least one qualified person, over the window.
//!
//! Exact, not sampled: the window is cut at every instant where anything can change (rotation slot
//! bounds, assignments, absences, assessments, certificate issue and expiry, crew changes); between two
//! cuts who is on shift and who is qualified are constant. Headcount is the time-weighted median.
//! Status: covered ≥ 2, thin 1, gap 0, critical gap 0 on a skill of the costliest assets.

use crate::people::{roster, Personnel, Requirement};
use crate::report::{critical_skills, needed_skills, round, Input, Report, HOUR_MS};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Group rows by shift name or by crew.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    Shift,
    Crew,
}

/// Coverage in the words matrix users know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Covered,
    Thin,
    Gap,
    CriticalGap,
}

impl Status {
    pub fn of(headcount: usize, critical: bool) -> Self {
        match headcount {
            0 if critical => Status::CriticalGap,
            0 => Status::Gap,
            1 => Status::Thin,
            _ => Status::Covered,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Covered => "covered",
            Status::Thin => "thin",
            Status::Gap => "gap",
            Status::CriticalGap => "critical_gap",
        }
    }
}

/// One cell of the matrix.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoverageRow {
    pub group: String,
    pub skill: String,
    pub min_level: u8,
    /// Time-weighted median qualified headcount.
    pub headcount: usize,
    pub min_headcount: usize,
    /// Share of the group's shift time with ≥ 1 qualified person on shift.
    pub covered_share: f64,
    pub shift_hours: f64,
    pub status: Status,
}

/// Every instant in `[from, to)` where on-shift sets or qualifications may change.
pub fn cuts(p: &Personnel, from: i64, to: i64) -> Vec<i64> {
    let mut c = vec![from, to];
    for r in &p.rotations {
        for s in roster::slots_between(&p.settings, r, from - 86_400_000, to) {
            c.extend([s.start_ms, s.end_ms]);
        }
    }
    c.extend(p.roster.iter().flat_map(|r| [r.start_ms, r.end_ms]));
    for a in &p.person_skills {
        c.push(a.assessed_ms);
        c.extend(a.issued_ms);
        c.extend(a.expires_ms);
    }
    c.extend(p.people.iter().filter_map(|x| x.from_ms));
    c.retain(|t| (from..=to).contains(t));
    c.sort_unstable();
    c.dedup();
    c
}

/// Time-weighted headcount histogram per (group, skill): headcount → ms.
type Hist = HashMap<(String, String), BTreeMap<usize, i64>>;

/// Walks the segments of `[from, to)` and counts qualified people per group and skill.
pub fn histogram(p: &Personnel, skills: &[Requirement], by: GroupBy, from: i64, to: i64) -> Hist {
    let mut h: Hist = HashMap::new();
    let c = cuts(p, from, to);
    for w in c.windows(2) {
        let (a, b) = (w[0], w[1]);
        let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for o in p.on_shift(a) {
            let g = match by {
                GroupBy::Shift => o.shift.unwrap_or("assigned"),
                GroupBy::Crew => o.crew.unwrap_or("none"),
            };
            groups.entry(g).or_default().push(o.person);
        }
        for (g, people) in groups {
            for r in skills {
                let n = people.iter().filter(|x| p.qualified(x, r, a)).count();
                *h.entry((g.to_string(), r.skill.clone())).or_default().entry(n).or_default() += b - a;
            }
        }
    }
    h
}

/// The coverage matrix over the window, sorted by group and skill.
pub fn coverage(inp: &Input, by: GroupBy) -> Vec<CoverageRow> {
    let p = inp.people;
    let skills = needed_skills(p);
    let critical = critical_skills(p);
    let h = histogram(p, &skills, by, inp.from_ms, inp.to_ms);
    let mut rows: Vec<CoverageRow> = h
        .into_iter()
        .map(|((group, skill), hist)| {
            let total: i64 = hist.values().sum();
            let covered: i64 = hist.iter().filter(|(n, _)| **n > 0).map(|(_, t)| t).sum();
            let mut acc = 0;
            let headcount = hist.iter().find(|(_, t)| {
                acc += **t;
                acc * 2 >= total
            });
            let headcount = headcount.map_or(0, |(n, _)| *n);
            let min_level = skills.iter().find(|r| r.skill == skill).map_or(0, |r| r.min_level);
            CoverageRow {
                status: Status::of(headcount, critical.contains(&skill)),
                min_headcount: hist.keys().next().copied().unwrap_or(0),
                covered_share: if total > 0 { covered as f64 / total as f64 } else { 0.0 },
                shift_hours: total as f64 / HOUR_MS,
                group,
                skill,
                min_level,
                headcount,
            }
        })
        .collect();
    rows.sort_by(|a, b| (&a.group, &a.skill).cmp(&(&b.group, &b.skill)));
    rows
}

/// As a [`Report`].
pub fn report(rows: &[CoverageRow], by: GroupBy) -> Report {
    let g = if by == GroupBy::Shift { "shift" } else { "crew" };
    let mut r = Report::new(
        "coverage",
        [g, "skill", "min_level", "headcount", "min_headcount", "covered_share", "shift_hours", "status"],
    );
    for x in rows {
        r.rows.push(vec![
            x.group.clone().into(),
            x.skill.clone().into(),
            x.min_level.into(),
            x.headcount.into(),
            x.min_headcount.into(),
            round(x.covered_share, 3).into(),
            round(x.shift_hours, 1).into(),
            x.status.as_str().into(),
        ]);
    }
    r
}
