//! The join: each downtime event with who was on shift at its start, its required skills, who was
//! qualified for each, whether it was covered, what was missing and who resolved it. Computed only from
//! records valid at the event's start, so the result is a point-in-time fact that `store::people` keeps
//! as an immutable snapshot.
//!
//! Also the avoidable hours of an uncovered event: max(0, TTR − covered MTTR of its asset, or of its
//! missing skills where the asset has fewer than `min_baseline_events` covered events).

use crate::people::{Personnel, Requirement};
use crate::report::HOUR_MS;
use crate::timeline::Downtime;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// One required skill and who on shift was qualified for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkillCheck {
    pub skill: String,
    pub min_level: u8,
    pub qualified: Vec<String>,
}

/// The capability at failure of one downtime event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinedEvent {
    /// `site/asset/start_ms`: stable across recomputations.
    pub key: String,
    pub site: String,
    pub asset: String,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
    pub data_gap: bool,
    pub first_out_class: Option<String>,
    pub shift: Option<String>,
    pub crew: Option<String>,
    pub on_shift: Vec<String>,
    /// Some roster source (rotation or assignment) speaks about the start instant.
    pub roster_known: bool,
    pub required: Vec<SkillCheck>,
    /// `None` when no roster is known at the start: neither covered nor uncovered.
    pub covered: Option<bool>,
    pub missing: Vec<String>,
    pub resolver: Option<String>,
    pub work_order: Option<String>,
    /// When an escalation of this stop was acknowledged (docs/escalation.md): splits TTR into response and
    /// repair. Filled in from the store after the join; not part of the snapshot (it is not known at the start).
    #[serde(skip)]
    pub ack_ms: Option<i64>,
}

impl JoinedEvent {
    /// TTR in hours for closed events.
    pub fn ttr_h(&self) -> Option<f64> {
        self.end_ms.map(|e| (e - self.start_ms) as f64 / HOUR_MS)
    }

    /// Response (start → acknowledged) and repair (acknowledged → end) in hours, for closed acknowledged
    /// events (ISO 22400's parts of the time to restoration).
    pub fn response_repair_h(&self) -> Option<(f64, f64)> {
        let (ack, end) = (self.ack_ms?, self.end_ms?);
        let ack = ack.clamp(self.start_ms, end);
        Some(((ack - self.start_ms) as f64 / HOUR_MS, (end - ack) as f64 / HOUR_MS))
    }

    /// The `covered` column's word: `yes`, `no`, or `no roster` when nobody was scheduled.
    pub fn covered_word(&self) -> &'static str {
        match self.covered {
            Some(true) => "yes",
            Some(false) => "no",
            None => "no roster",
        }
    }
}

/// Stable key of a downtime event.
pub fn event_key(d: &Downtime) -> String {
    format!("{}/{}/{}", d.site, d.asset, d.start_ms)
}

/// Required skills: the asset's requirements plus those of the class of its first-out alarm (the timeline
/// attributes it within the store's `first_out_window`); the higher level wins, sorted by skill.
pub fn required_skills(p: &Personnel, d: &Downtime) -> Vec<Requirement> {
    let mut req: BTreeMap<String, u8> = BTreeMap::new();
    let mut add = |r: &Requirement| {
        let e = req.entry(r.skill.clone()).or_insert(r.min_level);
        *e = (*e).max(r.min_level);
    };
    if let Some(a) = p.asset(d.asset.as_str()) {
        a.requires.iter().for_each(&mut add);
    }
    if let Some(fo) = first_out_class(d) {
        if let Some(c) = p.alarm_class(fo) {
            c.requires.iter().for_each(&mut add);
        }
    }
    req.into_iter().map(|(skill, min_level)| Requirement { skill, min_level }).collect()
}

fn first_out_class(d: &Downtime) -> Option<&str> {
    d.first_out.as_ref()?.class.as_deref()
}

/// Joins one event.
pub fn join_one(p: &Personnel, d: &Downtime) -> JoinedEvent {
    let t = d.start_ms;
    let on = p.on_shift(t);
    let roster_known = p.roster_known(t);
    let required: Vec<SkillCheck> = required_skills(p, d)
        .into_iter()
        .map(|r| {
            let qualified = on.iter().filter(|o| p.qualified(o.person, &r, t)).map(|o| o.person.to_string()).collect();
            SkillCheck { skill: r.skill, min_level: r.min_level, qualified }
        })
        .collect();
    let missing: Vec<String> = required.iter().filter(|c| c.qualified.is_empty()).map(|c| c.skill.clone()).collect();
    let wo = p.work_order_for(d.asset.as_str(), t, d.end_ms);
    // The crew and shift the roster schedules at t, so a swapped-in person does not take the event to their
    // home crew; only where no rotation covers t (explicit work rows alone) do the people on shift decide.
    let scheduled = p.slots_at(t).into_iter().map(|(s, _)| (s.crew, s.name)).min();
    JoinedEvent {
        key: event_key(d),
        site: d.site.to_string(),
        asset: d.asset.to_string(),
        start_ms: t,
        end_ms: d.end_ms,
        data_gap: d.data_gap,
        first_out_class: first_out_class(d).map(str::to_string),
        shift: scheduled
            .as_ref()
            .map(|x| x.1.to_string())
            .or_else(|| on.iter().find_map(|o| o.shift.map(str::to_string))),
        crew: scheduled.map(|x| x.0).or_else(|| on.iter().find_map(|o| o.crew.map(str::to_string))),
        on_shift: on.iter().map(|o| o.person.to_string()).collect(),
        roster_known,
        covered: roster_known.then_some(missing.is_empty()),
        missing,
        required,
        resolver: wo.and_then(|w| w.resolved_by.clone()),
        work_order: wo.map(|w| w.ticket.clone()),
        ack_ms: None,
    }
}

/// Joins every event, in input order.
pub fn join(p: &Personnel, events: &[Downtime]) -> Vec<JoinedEvent> {
    events.iter().map(|d| join_one(p, d)).collect()
}

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
