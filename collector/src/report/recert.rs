//! Recertification due, weighted by exposure. Each certificate that expires within the horizon (counted
//! from the end of the window, "now") and is not already renewed by a later assessment is projected onto
//! the person's future rotation shifts in the horizon after it lapses: coverage hours lost are the hours
//! of those shifts on which nobody else on shift is qualified; thin hours those left with one.
//! Certificates that have already lapsed (the person's latest assessment of the skill carries a
//! certificate that expired before now) are listed too, projected onto the horizon from now.
//!
//! The horizon is `[people] recert_horizon`; a request may choose another one ([`parse_horizon`], at most
//! [`MAX_HORIZON_MS`], which bounds the work a request can ask for).

use crate::people::{cert_valid_at, roster, Personnel, Requirement};
use crate::report::{needed_skills, num, privacy, Input, Report, HOUR_MS};
use serde::Serialize;
use shiftlens_common::config::HumanDuration;
use std::collections::HashMap;

const DAY_MS: i64 = 86_400_000;

/// The longest horizon a request (`--horizon`, `?horizon=`) may ask for: 730 days.
pub const MAX_HORIZON_MS: i64 = 730 * DAY_MS;

/// What a horizon must look like, for error messages.
pub const HORIZON_FORM: &str =
    "expected a duration such as 30d or 12h (a whole number and a unit: ms, s, m, h, d), more than zero and at most 730d";

/// Parses a horizon chosen per request (`90d`, `12h`) into milliseconds: a duration as in the config,
/// more than zero and at most [`MAX_HORIZON_MS`].
///
/// # Errors
/// [`HORIZON_FORM`] for anything else.
pub fn parse_horizon(s: &str) -> Result<i64, String> {
    let d: HumanDuration = s.trim().parse().map_err(|_| HORIZON_FORM.to_string())?;
    match i64::try_from(d.0.as_millis()) {
        Ok(ms) if ms > 0 && ms <= MAX_HORIZON_MS => Ok(ms),
        _ => Err(HORIZON_FORM.to_string()),
    }
}

/// A horizon in the largest unit that divides it: `90d`, `36h`, `1500ms`.
pub fn format_horizon(ms: i64) -> String {
    for (unit, size) in [("d", DAY_MS), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms != 0 && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// One expiring certificate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recert {
    pub person: String,
    pub crew: String,
    pub skill: String,
    pub cert_id: String,
    pub expires_ms: i64,
    /// Lapsed before now (not renewed).
    pub expired: bool,
    pub shifts: usize,
    pub shifts_to_zero: usize,
    pub coverage_hours_lost: f64,
    pub thin_hours: f64,
}

/// Lapsed and expiring certificates, most coverage hours lost first.
pub fn recert(inp: &Input) -> Vec<Recert> {
    recert_of(inp, inp.people.person_ids())
}

/// [`recert`] of some people only (a shift's crew).
pub fn recert_of(inp: &Input, people: &[String]) -> Vec<Recert> {
    let p = inp.people;
    let now = inp.to_ms;
    let horizon = p.settings.recert_horizon_ms;
    let needed = needed_skills(p);
    let mut out = Vec::new();
    let mut cache: HashMap<(String, Requirement), Projected> = HashMap::new();
    for id in people {
        for skill in p.skills.iter().filter(|s| s.cert_required) {
            let Some(a) = p.assessment_at(id, &skill.id, now) else { continue };
            let Some(exp) = a.expires_ms.filter(|e| *e < now.saturating_add(horizon)) else { continue };
            let expired = exp < now;
            if a.cert_id.is_none() || (!expired && !cert_valid_at(a, now)) {
                continue;
            }
            // A lapsed certificate costs coverage from now on; an expiring one from its lapse.
            let from = exp.max(now);
            let min_level = needed.iter().find(|r| r.skill == skill.id).map_or(a.level, |r| r.min_level);
            let req = Requirement { skill: skill.id.clone(), min_level };
            let crew = p.person_at(id, from).map(|x| x.crew.clone()).unwrap_or_default();
            let mut r = Recert {
                person: id.clone(),
                crew: crew.clone(),
                skill: skill.id.clone(),
                cert_id: a.cert_id.clone().unwrap_or_default(),
                expires_ms: exp,
                expired,
                shifts: 0,
                shifts_to_zero: 0,
                coverage_hours_lost: 0.0,
                thin_hours: 0.0,
            };
            // Every lapse projects onto `[from, from + horizon)` with `now ≤ from < now + horizon`: the crew's
            // slots in `[now, now + 2 × horizon)` and who on them is qualified are computed once per crew and
            // skill, and each certificate reads its part.
            let end = from.saturating_add(horizon);
            let slots = cache
                .entry((crew.clone(), req.clone()))
                .or_insert_with(|| projected(p, &crew, &req, now, horizon.saturating_mul(2)));
            for (start, h, qualified) in slots.iter().filter(|(t, _, _)| from <= *t && *t < end) {
                if p.absent(id, *start) {
                    continue;
                }
                r.shifts += 1;
                match qualified.iter().filter(|o| **o != id.as_str()).count() {
                    0 => {
                        r.shifts_to_zero += 1;
                        r.coverage_hours_lost += h;
                    }
                    1 => r.thin_hours += h,
                    _ => {}
                }
            }
            out.push(r);
        }
    }
    out.sort_by(|a, b| {
        b.coverage_hours_lost
            .total_cmp(&a.coverage_hours_lost)
            .then(a.expires_ms.cmp(&b.expires_ms))
            .then_with(|| a.person.cmp(&b.person))
    });
    out
}

/// Whole days from `now_ms` to `expires_ms`, rounded towards zero: negative once lapsed (-3 for a
/// certificate that lapsed three to four days ago), 0 within a day either side.
pub fn days_left(expires_ms: i64, now_ms: i64) -> i64 {
    expires_ms.saturating_sub(now_ms) / DAY_MS
}

/// A certificate's [`days_left`] in words: "expired 3 days ago", "expires within a day", "expires in 40 days".
pub fn days_left_text(expired: bool, days: i64) -> String {
    match (expired, days) {
        (true, 0) => "expired within the last day".into(),
        (true, -1) => "expired 1 day ago".into(),
        (true, d) => format!("expired {} days ago", d.unsigned_abs()),
        (false, 0) => "expires within a day".into(),
        (false, 1) => "expires in 1 day".into(),
        (false, d) => format!("expires in {d} days"),
    }
}

/// Slots a lapse is projected on: (start, hours, the people on shift qualified for the skill).
type Projected<'p> = Vec<(i64, f64, Vec<&'p str>)>;

/// The slots of `crew` in `[from, from + horizon)` with the people on shift qualified for `req`.
fn projected<'p>(p: &'p Personnel, crew: &str, req: &Requirement, from: i64, horizon: i64) -> Projected<'p> {
    let mut out = Vec::new();
    for rot in p.rotations.iter().filter(|x| x.crew == crew) {
        for s in roster::slots_between(&p.settings, rot, from, from.saturating_add(horizon)) {
            let q: Vec<&str> = p
                .on_shift(s.start_ms)
                .iter()
                .filter(|o| p.qualified(o.person, req, s.start_ms))
                .map(|o| o.person)
                .collect();
            out.push((s.start_ms, (s.end_ms - s.start_ms) as f64 / HOUR_MS, q));
        }
    }
    out
}

/// As a [`Report`] (person ids pseudonymized when configured; left out below `min_group_size`).
pub fn report(inp: &Input, rows: &[Recert]) -> Report {
    let p = inp.people;
    let mut r = Report::new(
        "recert",
        [
            "person",
            "crew",
            "skill",
            "certificate",
            "status",
            "expires",
            "days_left",
            "shifts",
            "shifts_to_zero",
            "coverage_hours_lost",
            "thin_hours",
        ],
    );
    let persons = privacy::persons_allowed(p);
    if !persons {
        r.notes.push(format!("person column left out: min_group_size is {}", p.settings.min_group_size));
    }
    let date = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map_or(String::new(), |d| d.with_timezone(&p.settings.tz).format("%Y-%m-%d %H:%M").to_string())
    };
    let horizon = p.settings.recert_horizon_ms;
    r.notes.push(format!(
        "horizon {}: certificates expiring from {} to before {}, and those already lapsed (not renewed)",
        format_horizon(horizon),
        date(inp.to_ms),
        date(inp.to_ms.saturating_add(horizon))
    ));
    for x in rows {
        let expires = date(x.expires_ms);
        r.rows.push(vec![
            if persons { privacy::show(p, &x.person).into() } else { serde_json::Value::Null },
            x.crew.clone().into(),
            x.skill.clone().into(),
            if persons { x.cert_id.clone().into() } else { serde_json::Value::Null },
            if x.expired { "expired" } else { "expiring" }.into(),
            expires.into(),
            days_left(x.expires_ms, inp.to_ms).into(),
            x.shifts.into(),
            x.shifts_to_zero.into(),
            num(x.coverage_hours_lost, 1),
            num(x.thin_hours, 1),
        ]);
    }
    r
}
