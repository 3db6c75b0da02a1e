//! Reports over the join ([`crate::join`]): the join itself as rows, and the avoidable hours of an
//! uncovered event: max(0, TTR − covered MTTR of its asset, or of its missing skills where the asset has
//! fewer than `min_baseline_events` covered events).

pub use crate::join::{event_key, join, join_one, required_skills, JoinedEvent, SkillCheck};
use std::collections::HashMap;

/// Covered-event MTTR (hours) per asset and per skill: the yardstick of avoidable hours.
#[derive(Debug, Clone, Default)]
pub struct Baselines {
    asset: HashMap<String, (f64, usize)>,
    skill: HashMap<String, (f64, usize)>,
    min_events: usize,
}

impl Baselines {
    /// From closed covered events (per skill: closed events where that skill was covered).
    pub fn new(events: &[JoinedEvent], min_events: usize) -> Self {
        let mut asset: HashMap<String, (f64, usize)> = HashMap::new();
        let mut skill: HashMap<String, (f64, usize)> = HashMap::new();
        for e in events {
            let Some(h) = e.ttr_h() else { continue };
            if e.covered == Some(true) {
                let a = asset.entry(e.asset.clone()).or_default();
                *a = (a.0 + h, a.1 + 1);
            }
            if e.roster_known {
                for c in e.required.iter().filter(|c| !c.qualified.is_empty()) {
                    let s = skill.entry(c.skill.clone()).or_default();
                    *s = (s.0 + h, s.1 + 1);
                }
            }
        }
        let avg = |m: HashMap<String, (f64, usize)>| m.into_iter().map(|(k, (s, n))| (k, (s / n as f64, n))).collect();
        Self { asset: avg(asset), skill: avg(skill), min_events }
    }

    /// The covered MTTR to compare `e` against, in hours: the asset's when it has at least `min_events`
    /// covered events, else the mean of its missing skills' (those with enough events), else the asset's
    /// with any events; `None` when nothing is known.
    pub fn baseline(&self, e: &JoinedEvent) -> Option<f64> {
        let a = self.asset.get(&e.asset).copied();
        if let Some((m, n)) = a {
            if n >= self.min_events {
                return Some(m);
            }
        }
        let skills: Vec<f64> = e
            .missing
            .iter()
            .filter_map(|s| self.skill.get(s))
            .filter(|(_, n)| *n >= self.min_events)
            .map(|(m, _)| *m)
            .collect();
        if !skills.is_empty() {
            return Some(skills.iter().sum::<f64>() / skills.len() as f64);
        }
        a.map(|(m, _)| m)
    }

    /// Avoidable hours of an event: 0 unless closed and uncovered.
    pub fn avoidable_h(&self, e: &JoinedEvent) -> f64 {
        match (e.covered, e.ttr_h()) {
            (Some(false), Some(ttr)) => self.baseline(e).map_or(0.0, |b| (ttr - b).max(0.0)),
            _ => 0.0,
        }
    }
}

/// The join as a [`Report`](crate::report::Report): one row per event (person ids pseudonymized when
/// configured; names of people left out below `min_group_size`).
pub fn report(inp: &crate::report::Input) -> crate::report::Report {
    use crate::report::privacy;
    let p = inp.people;
    let persons = privacy::persons_allowed(p);
    let show = |v: &[String]| {
        if persons {
            v.iter().map(|x| privacy::show(p, x)).collect::<Vec<_>>().join(" ")
        } else {
            format!("{} people", v.len())
        }
    };
    let mut r = crate::report::Report::new(
        "join",
        ["event", "asset", "start", "ttr_h", "shift", "crew", "on_shift", "required", "covered", "missing", "resolver"],
    );
    for e in inp.events {
        let start = chrono::DateTime::from_timestamp_millis(e.start_ms)
            .map_or(String::new(), |d| d.with_timezone(&p.settings.tz).format("%Y-%m-%d %H:%M").to_string());
        let required: Vec<String> =
            e.required.iter().map(|c| format!("{}:{} ({})", c.skill, c.min_level, show(&c.qualified))).collect();
        r.rows.push(vec![
            e.key.clone().into(),
            e.asset.clone().into(),
            start.into(),
            // Four decimals (about a third of a second): a short stop still reads in seconds on the page.
            e.ttr_h().map_or(serde_json::Value::Null, |h| crate::report::num(h, 4)),
            e.shift.clone().into(),
            e.crew.clone().into(),
            show(&e.on_shift).into(),
            required.join("; ").into(),
            e.covered_word().into(),
            e.missing.join(" ").into(),
            e.resolver.as_deref().filter(|_| persons).map(|x| privacy::show(p, x)).into(),
        ]);
    }
    r
}
