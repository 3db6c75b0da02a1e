//! The shift report over the cached dataset: the shift asked for (a local date and a slot name) or the
//! last one that ended, its stops, people, missing skills and certificates, and its neighbours. The
//! `/shift` page and `/api/v1/shift` both call [`compute`].

use super::{Dataset, QueryError, Source};
use crate::report::shift::{self, ShiftReport};
use crate::report::Report;
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Which shift: a local date and a slot name; both or neither.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ShiftParams {
    pub date: Option<String>,
    pub shift: Option<String>,
}

/// One computed shift.
pub struct Computed {
    pub ds: Arc<Dataset>,
    pub date: NaiveDate,
    pub shift: String,
    pub names: Vec<&'static str>,
    pub report: ShiftReport,
    pub summary: BTreeMap<String, Value>,
    pub stops: Report,
    /// The shifts before and after, as (date, name).
    pub prev: Option<ShiftId>,
    pub next: Option<ShiftId>,
}

/// A shift: its local date and slot name.
pub type ShiftId = (NaiveDate, &'static str);

fn some(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// # Errors
/// An unreadable date, an unknown shift name, one of date and shift without the other, or no
/// rotations to know shifts from; the store's errors.
pub fn compute(source: &Arc<Source>, q: &ShiftParams) -> Result<Computed, QueryError> {
    {
        let ds = source.dataset()?;
        let p = &ds.people;
        let now = chrono::Utc::now().timestamp_millis();
        let names = shift::slot_names(p);
        if names.is_empty() {
            return Err(QueryError::invalid(
                "no shifts are known: import rotation.csv (crew rotations) to see shift reports",
            ));
        }
        let (date, name) = match (some(&q.date), some(&q.shift)) {
            (None, None) => match shift::last_completed(p, now) {
                Some((d, n)) => (d, n.to_string()),
                None => (roster_today(p, now), names[0].to_string()),
            },
            (Some(d), Some(n)) => {
                let date = NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
                    QueryError::invalid(format!("invalid date {d:?}: expected a date such as 2025-06-10"))
                })?;
                if !names.contains(&n) {
                    return Err(QueryError::invalid(format!(
                        "unknown shift {n:?}: expected one of {}",
                        names.join(", ")
                    )));
                }
                (date, n.to_string())
            }
            _ => return Err(QueryError::invalid("give both date and shift, or neither for the last shift")),
        };
        let slots = shift::slots(p, date, &name);
        let report = shift::shift_report(p, &ds.events, &slots, now);
        let (summary, mut stops) = shift::report(p, &ds.events, &report, now);
        if slots.is_empty() {
            stops.notes.push(format!("no crew works the {name} shift on {date}"));
        }
        let (prev, next) = neighbours(&ds, date, &name);
        Ok(Computed { ds: ds.clone(), date, shift: name, names, report, summary, stops, prev, next })
    }
}

fn roster_today(p: &crate::people::Personnel, now: i64) -> NaiveDate {
    crate::people::roster::local_date(p.settings.tz, now)
}

/// The worked shifts just before and just after (date, name), within two days.
fn neighbours(ds: &Dataset, date: NaiveDate, name: &str) -> (Option<ShiftId>, Option<ShiftId>) {
    let p = &ds.people;
    let mut all: Vec<(NaiveDate, i64, &'static str)> = Vec::new();
    for d in
        [date.pred_opt(), Some(date), date.succ_opt(), date.succ_opt().and_then(|d| d.succ_opt())].into_iter().flatten()
    {
        for r in &p.rotations {
            if let Some(s) = crate::people::roster::slot_on(&p.settings, r, d) {
                all.push((d, s.start_ms, s.name));
            }
        }
    }
    all.sort_unstable();
    all.dedup_by(|a, b| a.0 == b.0 && a.2 == b.2);
    let Some(i) = all.iter().position(|(d, _, n)| *d == date && *n == name) else { return (None, None) };
    let pick = |j: Option<usize>| j.and_then(|j| all.get(j)).map(|(d, _, n)| (*d, *n));
    (pick(i.checked_sub(1)), pick(Some(i + 1)))
}
