//! Training effect (DESIGN.md): for each person and skill whose qualification rose in the window (an
//! assessment in the window with a higher level than the one before it), the MTTR of the events that
//! required the skill while the person was on shift, before the rise and after it (within the window),
//! each with n and a 95 % confidence interval (bootstrap, [`stats::mean_ci`]), and the hours saved: the
//! events after × (MTTR before − MTTR after), when both sides have events.
//!
//! Invariants: pure; only closed events count (an open one has no time to repair).

use crate::report::{num, privacy, stats, Input, Report};
use serde_json::Value;

/// One rise of one person in one skill.
#[derive(Debug, Clone, PartialEq)]
pub struct Effect {
    pub person: String,
    pub skill: String,
    pub from_level: u8,
    pub to_level: u8,
    pub rose_ms: i64,
    pub before: Vec<f64>,
    pub after: Vec<f64>,
}

impl Effect {
    /// Hours saved: n after × (mean before − mean after); `None` unless both sides have events.
    pub fn saved_h(&self) -> Option<f64> {
        let (b, a) = (stats::mean(&self.before)?, stats::mean(&self.after)?);
        Some(self.after.len() as f64 * (b - a))
    }
}

/// The rises in the window, most hours saved first.
pub fn effects(inp: &Input) -> Vec<Effect> {
    let p = inp.people;
    // Closed events by required skill, so each rise reads only the events that needed its skill.
    let mut by_skill: std::collections::HashMap<&str, Vec<(&crate::report::JoinedEvent, f64)>> =
        std::collections::HashMap::new();
    for ev in inp.events {
        let Some(h) = ev.ttr_h() else { continue };
        for c in &ev.required {
            by_skill.entry(c.skill.as_str()).or_default().push((ev, h));
        }
    }
    let mut out = Vec::new();
    for a in p.person_skills.iter().filter(|a| inp.from_ms <= a.assessed_ms && a.assessed_ms < inp.to_ms) {
        let before = p.level_at(&a.person, &a.skill, a.assessed_ms - 1);
        // The assessment in force at its own time (the last of several on one instant).
        if a.level <= before || p.assessment_at(&a.person, &a.skill, a.assessed_ms).map(|x| x.level) != Some(a.level) {
            continue;
        }
        let mut e = Effect {
            person: a.person.clone(),
            skill: a.skill.clone(),
            from_level: before,
            to_level: a.level,
            rose_ms: a.assessed_ms,
            before: Vec::new(),
            after: Vec::new(),
        };
        for &(ev, h) in by_skill.get(a.skill.as_str()).map_or(&[][..], Vec::as_slice) {
            if !ev.on_shift.contains(&a.person) {
                continue;
            }
            if ev.start_ms < a.assessed_ms {
                e.before.push(h);
            } else {
                e.after.push(h);
            }
        }
        out.push(e);
    }
    out.sort_by(|x, y| {
        y.saved_h()
            .unwrap_or(f64::MIN)
            .total_cmp(&x.saved_h().unwrap_or(f64::MIN))
            .then_with(|| (&x.person, &x.skill, x.rose_ms).cmp(&(&y.person, &y.skill, y.rose_ms)))
    });
    out
}

/// As a [`Report`] (people pseudonymized as configured; left out below `min_group_size`).
pub fn report(inp: &Input, rows: &[Effect]) -> Report {
    let p = inp.people;
    let mut r = Report::new(
        "training-effect",
        [
            "person",
            "skill",
            "from_level",
            "to_level",
            "rose",
            "before_n",
            "before_mttr_h",
            "before_ci_low_h",
            "before_ci_high_h",
            "after_n",
            "after_mttr_h",
            "after_ci_low_h",
            "after_ci_high_h",
            "hours_saved",
        ],
    );
    if !privacy::persons_allowed(p) {
        r.notes.push(format!("left out: min_group_size is {}", p.settings.min_group_size));
        return r;
    }
    r.notes.push(
        "events that required the skill while the person was on shift, before and after the assessment that raised the level; hours saved = events after × (MTTR before − MTTR after)".into(),
    );
    let opt = |x: Option<f64>, d| x.map_or(Value::Null, |v| num(v, d));
    for x in rows {
        let rose = chrono::DateTime::from_timestamp_millis(x.rose_ms)
            .map_or(String::new(), |d| d.with_timezone(&p.settings.tz).format("%Y-%m-%d").to_string());
        let ci = |v: &[f64]| stats::mean_ci(v);
        let (bc, ac) = (ci(&x.before), ci(&x.after));
        r.rows.push(vec![
            privacy::show(p, &x.person).into(),
            x.skill.clone().into(),
            x.from_level.into(),
            x.to_level.into(),
            rose.into(),
            x.before.len().into(),
            opt(stats::mean(&x.before), 3),
            opt(bc.map(|c| c.0), 3),
            opt(bc.map(|c| c.1), 3),
            x.after.len().into(),
            opt(stats::mean(&x.after), 3),
            opt(ac.map(|c| c.0), 3),
            opt(ac.map(|c| c.1), 3),
            opt(x.saved_h(), 2),
        ]);
    }
    r
}
