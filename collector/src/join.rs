//! The join, pure: each downtime event with who was on shift at its start, its required skills, who was
//! qualified for each, whether it was covered, what was missing and who resolved it. Computed only from
//! records valid at the event's start, so the result is a point-in-time fact that `store::people` keeps
//! as an immutable snapshot (written by `query::Dataset::save_snapshot` after every load, whoever asks).
//!
//! A plain module both `store` (snapshots, alarm activations) and `report` import, so neither imports the
//! other. Also here: [`AlarmStart`], the other plain fact the reports read.

use crate::people::{Personnel, Requirement};
use crate::timeline::Downtime;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const HOUR_MS: f64 = 3_600_000.0;

/// An alarm becoming active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmStart {
    pub asset: String,
    pub ts_ms: i64,
}

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
}

impl JoinedEvent {
    /// TTR in hours for closed events.
    pub fn ttr_h(&self) -> Option<f64> {
        self.end_ms.map(|e| (e - self.start_ms) as f64 / HOUR_MS)
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
    }
}

/// Joins every event, in input order.
pub fn join(p: &Personnel, events: &[Downtime]) -> Vec<JoinedEvent> {
    events.iter().map(|d| join_one(p, d)).collect()
}
