//! One shift on one page: a shift is a local date and a rotation slot name (`day`, `night`, `1st`...), worked
//! by the crews whose rotation has that slot on that date. Its report lists the stops that started during
//! it (duration, cost = duration × the asset's cost per hour, covered or not, skills missing), who was on
//! shift at its start, the needed skills nobody on shift held at its start, and the open certificate
//! issues (lapsed, or expiring within the recertification horizon from the shift's end) of its crews.
//!
//! Invariants: pure; stops keep the order of the events given (the dataset's: by start); an open stop
//! counts until `now_ms`.

use crate::people::{roster, Personnel};
use crate::report::{needed_skills, num, privacy, recert, Input, JoinedEvent, Report, HOUR_MS};
use chrono::NaiveDate;
use serde_json::Value;
use std::collections::BTreeMap;

/// The slots worked on local date `date` under the slot name `name`, one per crew.
pub fn slots(p: &Personnel, date: NaiveDate, name: &str) -> Vec<roster::Slot> {
    p.rotations.iter().filter_map(|r| roster::slot_on(&p.settings, r, date)).filter(|s| s.name == name).collect()
}

/// The slot names the rotations use, in the order of a day (`day`, `night`, or `1st`, `2nd`, `3rd`).
pub fn slot_names(p: &Personnel) -> Vec<&'static str> {
    let mut v: Vec<(i64, &'static str)> = p
        .rotations
        .iter()
        .flat_map(|r| r.cycle.chars())
        .filter_map(|c| roster::code(c).map(|k| (k.offset_h, k.name)))
        .collect();
    v.sort_unstable();
    v.dedup();
    v.into_iter().map(|(_, n)| n).collect()
}

/// The last shift that ended at or before `now_ms` (its local date and slot name), looking back up to 14 days.
pub fn last_completed(p: &Personnel, now_ms: i64) -> Option<(NaiveDate, &'static str)> {
    let from = now_ms.saturating_sub(14 * 86_400_000);
    p.rotations
        .iter()
        .flat_map(|r| roster::slots_between(&p.settings, r, from, now_ms))
        .filter(|s| s.end_ms <= now_ms)
        .max_by_key(|s| (s.end_ms, s.start_ms))
        .map(|s| (roster::local_date(p.settings.tz, s.start_ms), s.name))
}

/// One shift's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct ShiftReport {
    pub crews: Vec<String>,
    pub start_ms: i64,
    pub end_ms: i64,
    /// Person ids on shift at the start.
    pub on_shift: Vec<String>,
    /// Indexes into the events given: stops that started during the shift.
    pub stops: Vec<usize>,
    pub downtime_h: f64,
    pub cost: f64,
    pub covered: usize,
    pub uncovered: usize,
    /// Skills missing on this shift's stops, with how many stops missed each.
    pub missing: BTreeMap<String, usize>,
    /// Needed skills (at their level) nobody on shift held at the start.
    pub not_held: Vec<String>,
    /// Lapsed or expiring certificates of the shift's crews.
    pub certificates: Vec<recert::Recert>,
}

/// The report of the shift made of `slots` (all the same date and name); empty slots give an empty report.
pub fn shift_report(p: &Personnel, events: &[JoinedEvent], slots: &[roster::Slot], now_ms: i64) -> ShiftReport {
    let start = slots.iter().map(|s| s.start_ms).min().unwrap_or(0);
    let end = slots.iter().map(|s| s.end_ms).max().unwrap_or(0);
    let crews: Vec<String> = slots.iter().map(|s| s.crew.clone()).collect();
    let on: Vec<String> = p
        .on_shift(start)
        .iter()
        .filter(|o| o.crew.is_some_and(|c| crews.iter().any(|x| x == c)))
        .map(|o| o.person.to_string())
        .collect();
    let stops: Vec<usize> =
        events.iter().enumerate().filter(|(_, e)| start <= e.start_ms && e.start_ms < end).map(|(i, _)| i).collect();
    let mut r = ShiftReport {
        crews: crews.clone(),
        start_ms: start,
        end_ms: end,
        on_shift: on.clone(),
        stops: stops.clone(),
        downtime_h: 0.0,
        cost: 0.0,
        covered: 0,
        uncovered: 0,
        missing: BTreeMap::new(),
        not_held: Vec::new(),
        certificates: Vec::new(),
    };
    for &i in &stops {
        let e = &events[i];
        let h = duration_h(e, now_ms);
        r.downtime_h += h;
        r.cost += h * p.asset(&e.asset).map_or(0.0, |a| a.cost_per_hour);
        match e.covered {
            Some(true) => r.covered += 1,
            Some(false) => r.uncovered += 1,
            None => {}
        }
        for s in &e.missing {
            *r.missing.entry(s.clone()).or_default() += 1;
        }
    }
    if !slots.is_empty() {
        r.not_held = needed_skills(p)
            .into_iter()
            .filter(|req| !on.iter().any(|x| p.qualified(x, req, start)))
            .map(|req| req.skill)
            .collect();
        let inp = Input { people: p, events: &[], from_ms: start, to_ms: end };
        r.certificates = recert::recert_of(&inp, &on).into_iter().filter(|c| crews.contains(&c.crew)).collect();
    }
    r
}

/// A stop's duration in hours; an open stop counts until `now_ms`.
fn duration_h(e: &JoinedEvent, now_ms: i64) -> f64 {
    e.end_ms.unwrap_or(now_ms).saturating_sub(e.start_ms).max(0) as f64 / HOUR_MS
}

/// The stops as a [`Report`] and the headline figures (people pseudonymized as configured, left out below
/// `min_group_size`).
pub fn report(
    p: &Personnel,
    events: &[JoinedEvent],
    s: &ShiftReport,
    now_ms: i64,
) -> (BTreeMap<String, Value>, Report) {
    let persons = privacy::persons_allowed(p);
    let time = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map_or(String::new(), |d| d.with_timezone(&p.settings.tz).format("%Y-%m-%d %H:%M").to_string())
    };
    let mut rep = Report::new("shift", ["asset", "start", "ttr_h", "open", "cost", "covered", "missing", "resolver"]);
    for &i in &s.stops {
        let e = &events[i];
        let h = duration_h(e, now_ms);
        rep.rows.push(vec![
            e.asset.clone().into(),
            time(e.start_ms).into(),
            num(h, 4),
            e.end_ms.is_none().into(),
            num(h * p.asset(&e.asset).map_or(0.0, |a| a.cost_per_hour), 0),
            e.covered_word().into(),
            e.missing.join(" ").into(),
            e.resolver.as_deref().filter(|_| persons).map(|x| privacy::show(p, x)).into(),
        ]);
    }
    if !persons {
        rep.notes.push(format!("people left out: min_group_size is {}", p.settings.min_group_size));
    }
    let mut m = BTreeMap::new();
    m.insert("crews".into(), s.crews.join(" ").into());
    m.insert("start".into(), time(s.start_ms).into());
    m.insert("end".into(), time(s.end_ms).into());
    m.insert("stops".into(), s.stops.len().into());
    m.insert("downtime_h".into(), num(s.downtime_h, 4));
    m.insert("cost".into(), num(s.cost, 0));
    m.insert("covered_events".into(), s.covered.into());
    m.insert("uncovered_events".into(), s.uncovered.into());
    let people: Vec<Value> =
        if persons { s.on_shift.iter().map(|x| privacy::show(p, x).into()).collect() } else { Vec::new() };
    m.insert("on_shift".into(), Value::Array(people));
    m.insert("on_shift_count".into(), s.on_shift.len().into());
    m.insert(
        "skills_missing".into(),
        Value::Object(s.missing.iter().map(|(k, v)| (k.clone(), Value::from(*v))).collect()),
    );
    m.insert("skills_not_held".into(), s.not_held.clone().into());
    let certs: Vec<Value> = s
        .certificates
        .iter()
        .filter(|_| persons)
        .map(|c| {
            serde_json::json!({
                "person": privacy::show(p, &c.person),
                "skill": c.skill,
                "status": if c.expired { "expired" } else { "expiring" },
                "expires": time(c.expires_ms),
                "days_left": recert::days_left(c.expires_ms, s.end_ms),
            })
        })
        .collect();
    m.insert("certificates".into(), Value::Array(certs));
    (m, rep)
}
