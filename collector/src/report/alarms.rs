//! Alarm load per on-shift operator: for each rotation shift in the window, alarm activations per 10
//! minutes per person on shift (the EEMUA 191 / ISA-18.2 guide is about one), grouped by crew and by the
//! crew's competency on that shift (all needed skills covered at its start, or some missing).

use crate::people::roster;
use crate::report::{needed_skills, num, privacy, Input, Report};
use serde::Serialize;
use std::collections::BTreeMap;

pub use crate::join::AlarmStart;

/// One crew × competency group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlarmLoad {
    pub crew: String,
    /// `all_covered` or `skills_missing`.
    pub competency: String,
    pub shifts: usize,
    pub alarms: usize,
    pub mean_per_10min_per_operator: f64,
    pub peak_per_10min_per_operator: f64,
    /// Mean share of needed skills covered at shift start.
    pub skill_share: f64,
}

/// Groups sorted by crew and competency. `alarms` must be sorted by time.
pub fn alarm_load(inp: &Input, alarms: &[AlarmStart]) -> Vec<AlarmLoad> {
    let p = inp.people;
    let needed = needed_skills(p);
    // (crew, band) → (shifts, alarms, sum of rates, peak rate, sum of skill shares)
    type Acc = (usize, usize, f64, f64, f64);
    let mut g: BTreeMap<(String, &str), Acc> = BTreeMap::new();
    for rot in &p.rotations {
        for s in roster::slots_between(&p.settings, rot, inp.from_ms, inp.to_ms) {
            let on = p.on_shift(s.start_ms);
            if on.is_empty() {
                continue;
            }
            let lo = alarms.partition_point(|a| a.ts_ms < s.start_ms);
            let hi = alarms.partition_point(|a| a.ts_ms < s.end_ms);
            let n = hi - lo;
            let tens = (s.end_ms - s.start_ms) as f64 / 600_000.0;
            let rate = n as f64 / tens / on.len() as f64;
            let covered = needed.iter().filter(|r| on.iter().any(|o| p.qualified(o.person, r, s.start_ms))).count();
            let share = if needed.is_empty() { 1.0 } else { covered as f64 / needed.len() as f64 };
            let band = if covered == needed.len() { "all_covered" } else { "skills_missing" };
            let x = g.entry((s.crew.clone(), band)).or_default();
            *x = (x.0 + 1, x.1 + n, x.2 + rate, x.3.max(rate), x.4 + share);
        }
    }
    g.into_iter()
        .map(|((crew, band), (shifts, n, sum, peak, share))| AlarmLoad {
            crew,
            competency: band.to_string(),
            shifts,
            alarms: n,
            mean_per_10min_per_operator: sum / shifts as f64,
            peak_per_10min_per_operator: peak,
            skill_share: share / shifts as f64,
        })
        .collect()
}

/// As a [`Report`]; crews below `min_group_size` are left out.
pub fn report(inp: &Input, rows: &[AlarmLoad]) -> Report {
    let mut r = Report::new(
        "alarm-load",
        [
            "crew",
            "competency",
            "shifts",
            "alarms",
            "mean_per_10min_per_operator",
            "peak_per_10min_per_operator",
            "skill_share",
        ],
    );
    r.notes.push("guide (EEMUA 191 / ISA-18.2): about 1 alarm per 10 minutes per operator".into());
    if rows.is_empty() {
        r.notes.push(if inp.people.rotations.is_empty() {
            "no shifts to count alarms on: import rotation.csv (crew rotations) and people.csv".into()
        } else {
            "no rotation shift with people on it falls in this window".into()
        });
    } else if rows.iter().all(|x| x.alarms == 0) {
        r.notes.push(
            "all zeros: no alarm became active on the assets in scope in this window. Alarm activations come from \
             the agents' alarm points (meaning alarm, alarm_word or threshold in the agent config); a plant whose \
             agents map no alarm points shows zeros here"
                .into(),
        );
    }
    for x in rows {
        if !privacy::group_allowed(inp.people, &x.crew, inp.to_ms) {
            r.notes.push(format!("crew {} left out: fewer than {} people", x.crew, inp.people.settings.min_group_size));
            continue;
        }
        r.rows.push(vec![
            x.crew.clone().into(),
            x.competency.clone().into(),
            x.shifts.into(),
            x.alarms.into(),
            num(x.mean_per_10min_per_operator, 3),
            num(x.peak_per_10min_per_operator, 3),
            num(x.skill_share, 3),
        ]);
    }
    r
}
