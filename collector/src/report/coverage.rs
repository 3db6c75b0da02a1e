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
    let mut c = roster_cuts(p, from, to);
    for a in &p.person_skills {
        c.push(a.assessed_ms);
        c.extend(a.issued_ms);
        c.extend(a.expires_ms);
    }
    c.retain(|t| (from..=to).contains(t));
    c.sort_unstable();
    c.dedup();
    c
}

/// Every instant in `[from, to]` where who is on shift (and in which crew and shift) may change: rotation
/// slot bounds, assignments, absences, crew changes, and `from` and `to`. Sorted, no duplicates.
fn roster_cuts(p: &Personnel, from: i64, to: i64) -> Vec<i64> {
    let mut c = vec![from, to];
    for r in &p.rotations {
        for s in roster::slots_between(&p.settings, r, from.saturating_sub(86_400_000), to) {
            c.extend([s.start_ms, s.end_ms]);
        }
    }
    c.extend(p.roster.iter().flat_map(|r| [r.start_ms, r.end_ms]));
    c.extend(p.people.iter().filter_map(|x| x.from_ms));
    c.retain(|t| (from..=to).contains(t));
    c.sort_unstable();
    c.dedup();
    c
}

/// Time-weighted headcount histogram per (group, skill): headcount → ms.
type Hist = HashMap<(String, String), BTreeMap<usize, i64>>;

/// One column of a [`walk`]: a requirement, and optionally one person whose qualification in it is replaced
/// (what-if): `Some((person, Some(level)))` = holds the skill at `level` with a certificate that never
/// expires from [`WHATIF_FROM`] on, `Some((person, None))` = never holds it.
pub(crate) struct Column<'a> {
    pub req: &'a Requirement,
    pub over: Option<(&'a str, Option<u8>)>,
}

/// When a what-if qualification starts (long before any data).
pub(crate) const WHATIF_FROM: i64 = i64::MIN / 2;

/// The outcome of a [`walk`]: groups in first-seen order and, per group and column, headcount → ms
/// (dense; zero where that headcount never occurred).
pub(crate) struct Walk<'a> {
    pub groups: Vec<&'a str>,
    pub hist: Vec<Vec<Vec<i64>>>,
}

/// A change of one person's qualification in one column at an instant.
#[derive(Clone, Copy)]
struct Flip {
    t: i64,
    person: usize,
    col: usize,
    qualified: bool,
}

/// Walks the segments of `[from, to)` once and counts qualified people per group and column.
///
/// Equal to asking [`Personnel::on_shift`] and [`Personnel::qualified`] at the start of every segment
/// between [`cuts`], but cheaper: who is on shift is asked only at roster cuts, and each person's
/// qualification in a column is asked only at the instants where one of their assessments or
/// certificates begins or ends (it is constant in between); headcounts are then kept up to date by
/// those flips. Cutting a segment where nothing changes leaves the histogram as it was.
pub(crate) fn walk<'a>(p: &'a Personnel, cols: &[Column], by: GroupBy, from: i64, to: i64) -> Walk<'a> {
    // Person ids with an assessment in a column's skill (or replaced in a column), as dense indexes.
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut times: HashMap<(usize, &str), Vec<i64>> = HashMap::new();
    for a in &p.person_skills {
        if cols.iter().any(|c| c.req.skill == a.skill) {
            let n = ids.len();
            let i = *ids.entry(a.person.as_str()).or_insert(n);
            let v = times.entry((i, a.skill.as_str())).or_default();
            v.push(a.assessed_ms);
            v.extend(a.issued_ms);
            v.extend(a.expires_ms);
        }
    }
    for c in cols {
        if let Some((who, _)) = c.over {
            let n = ids.len();
            ids.entry(who).or_insert(n);
        }
    }
    let mut names: Vec<&str> = vec![""; ids.len()];
    for (name, &i) in &ids {
        names[i] = name;
    }
    let ncols = cols.len();
    let mut flips: Vec<Flip> = Vec::new();
    for (j, c) in cols.iter().enumerate() {
        let mut push = |person: usize, ts: &mut dyn Iterator<Item = (i64, bool)>| {
            let mut was = false;
            for (t, q) in ts {
                if q != was {
                    flips.push(Flip { t, person, col: j, qualified: q });
                    was = q;
                }
            }
        };
        for (&(i, skill), ts) in &times {
            if skill != c.req.skill || c.over.is_some_and(|(who, _)| who == names[i]) {
                continue;
            }
            let mut ts = ts.clone();
            ts.push(i64::MIN);
            ts.sort_unstable();
            ts.dedup();
            push(i, &mut ts.into_iter().map(|t| (t, p.qualified(names[i], c.req, t))));
        }
        if let Some((who, level)) = c.over {
            let q = level.is_some_and(|l| l >= c.req.min_level);
            push(ids[who], &mut [(i64::MIN, false), (WHATIF_FROM, q)].into_iter());
        }
    }
    flips.sort_by_key(|f| f.t);
    let rcuts = roster_cuts(p, from, to);
    let mut all: Vec<i64> = flips.iter().map(|f| f.t).filter(|t| (from..=to).contains(t)).collect();
    all.extend_from_slice(&rcuts);
    all.sort_unstable();
    all.dedup();

    let mut qual = vec![false; ids.len() * ncols];
    let mut out = Walk { groups: Vec::new(), hist: Vec::new() };
    // Per person: the group they are on shift in now; per group: headcounts per column.
    let mut group_of: Vec<Option<usize>> = vec![None; ids.len()];
    let mut counts: Vec<Vec<usize>> = Vec::new();
    let mut present: Vec<usize> = Vec::new();
    let (mut next_flip, mut next_rcut) = (0, 0);
    for w in all.windows(2) {
        let (a, b) = (w[0], w[1]);
        let roster_changed = rcuts.get(next_rcut) == Some(&a);
        if roster_changed {
            next_rcut += 1;
        }
        while let Some(f) = flips.get(next_flip).filter(|f| f.t <= a) {
            next_flip += 1;
            let q = &mut qual[f.person * ncols + f.col];
            if *q == f.qualified {
                continue;
            }
            *q = f.qualified;
            if let (false, Some(g)) = (roster_changed, group_of[f.person]) {
                let n = &mut counts[g][f.col];
                *n = if f.qualified { *n + 1 } else { n.saturating_sub(1) };
            }
        }
        if roster_changed {
            group_of.iter_mut().for_each(|g| *g = None);
            present.clear();
            for o in p.on_shift(a) {
                let name = match by {
                    GroupBy::Shift => o.shift.unwrap_or("assigned"),
                    GroupBy::Crew => o.crew.unwrap_or("none"),
                };
                let g = match out.groups.iter().position(|x| *x == name) {
                    Some(g) => g,
                    None => {
                        out.groups.push(name);
                        out.hist.push(vec![Vec::new(); ncols]);
                        counts.push(vec![0; ncols]);
                        out.groups.len() - 1
                    }
                };
                if !present.contains(&g) {
                    present.push(g);
                    counts[g].iter_mut().for_each(|n| *n = 0);
                }
                if let Some(&i) = ids.get(o.person) {
                    group_of[i] = Some(g);
                    for (n, q) in counts[g].iter_mut().zip(&qual[i * ncols..(i + 1) * ncols]) {
                        *n += usize::from(*q);
                    }
                }
            }
        }
        for &g in &present {
            for (h, &n) in out.hist[g].iter_mut().zip(&counts[g]) {
                if h.len() <= n {
                    h.resize(n + 1, 0);
                }
                h[n] += b - a;
            }
        }
    }
    out
}

/// Walks the segments of `[from, to)` and counts qualified people per group and skill.
pub fn histogram(p: &Personnel, skills: &[Requirement], by: GroupBy, from: i64, to: i64) -> Hist {
    let cols: Vec<Column> = skills.iter().map(|req| Column { req, over: None }).collect();
    let w = walk(p, &cols, by, from, to);
    let mut h: Hist = HashMap::new();
    for (g, per_col) in w.groups.iter().zip(w.hist) {
        for (c, dense) in cols.iter().zip(per_col) {
            if dense.is_empty() {
                continue;
            }
            let e = h.entry((g.to_string(), c.req.skill.clone())).or_default();
            for (n, t) in dense.into_iter().enumerate().filter(|(_, t)| *t > 0) {
                *e.entry(n).or_default() += t;
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
