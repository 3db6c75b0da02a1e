//! Rotation patterns in local time. A cycle is a string of day codes: `D` day and `N` night (12 h),
//! `1`, `2`, `3` first, second and third shift (8 h), `-` off. Shifts start at `day_start` + an offset in
//! local wall-clock time and end `hours` later in wall-clock time, so a night shift across a DST change
//! is 11 or 13 real hours long. A 4-crew DuPont is `NNNN---DDD-NNN---DDDD-------` with the crews'
//! anchors 7 days apart; a fixed 3×8 is `1111111`, `2222222`, `3333333`.

use crate::people::{Rotation, Settings};
use chrono::{Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Tz;

/// One shift code's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShiftCode {
    pub name: &'static str,
    pub offset_h: i64,
    pub hours: i64,
}

/// The meaning of a cycle character; `None` for off (`-`) and unknown characters.
pub fn code(c: char) -> Option<ShiftCode> {
    let (name, offset_h, hours) = match c {
        'D' => ("day", 0, 12),
        'N' => ("night", 12, 12),
        '1' => ("1st", 0, 8),
        '2' => ("2nd", 8, 8),
        '3' => ("3rd", 16, 8),
        _ => return None,
    };
    Some(ShiftCode { name, offset_h, hours })
}

/// Whether a cycle string uses only known codes.
pub fn valid_cycle(cycle: &str) -> Result<(), String> {
    if cycle.is_empty() {
        return Err("cycle must not be empty".into());
    }
    match cycle.chars().find(|&c| c != '-' && code(c).is_none()) {
        Some(c) => Err(format!("unknown shift code {c:?} in cycle: expected D, N (12 h), 1, 2, 3 (8 h) or - (off)")),
        None => Ok(()),
    }
}

/// A local wall-clock time as UTC ms: the earlier instant when ambiguous (DST fall-back), and the time one
/// hour later when it does not exist (spring-forward gap). Date arithmetic here and below is checked, so
/// times at the ends of chrono's range give an answer (or no slot), never a panic.
pub fn resolve_local(tz: Tz, t: NaiveDateTime) -> i64 {
    match tz.from_local_datetime(&t) {
        LocalResult::Single(d) => d.timestamp_millis(),
        LocalResult::Ambiguous(a, _) => a.timestamp_millis(),
        LocalResult::None => match t.checked_add_signed(Duration::hours(1)).map(|t| tz.from_local_datetime(&t)) {
            Some(LocalResult::Single(d) | LocalResult::Ambiguous(d, _)) => d.timestamp_millis(),
            _ => t.and_utc().timestamp_millis(),
        },
    }
}

/// Local midnight at the start of a date, as UTC ms.
pub fn local_midnight(tz: Tz, d: NaiveDate) -> i64 {
    resolve_local(tz, d.and_time(chrono::NaiveTime::MIN))
}

/// The local date of an instant.
pub fn local_date(tz: Tz, t: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp_millis(t).map_or(NaiveDate::MIN, |d| d.with_timezone(&tz).date_naive())
}

/// One worked shift of a crew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub crew: String,
    pub name: &'static str,
    pub start_ms: i64,
    pub end_ms: i64,
}

/// The slot a rotation works on local date `d`, if any.
pub fn slot_on(s: &Settings, r: &Rotation, d: NaiveDate) -> Option<Slot> {
    let days = (d - r.anchor).num_days();
    let len = i64::try_from(r.cycle.chars().count()).ok()?;
    if days < 0 || len == 0 {
        return None;
    }
    let c = r.cycle.chars().nth(usize::try_from(days % len).ok()?)?;
    let k = code(c)?;
    let start = d.and_time(s.day_start).checked_add_signed(Duration::hours(k.offset_h))?;
    let end = start.checked_add_signed(Duration::hours(k.hours))?;
    Some(Slot {
        crew: r.crew.clone(),
        name: k.name,
        start_ms: resolve_local(s.tz, start),
        end_ms: resolve_local(s.tz, end),
    })
}

/// The slot of `r` that covers t (start ≤ t < end), if the crew works then.
pub fn shift_at(s: &Settings, r: &Rotation, t: i64) -> Option<Slot> {
    let d = local_date(s.tz, t);
    [d.pred_opt(), Some(d)]
        .into_iter()
        .flatten()
        .filter_map(|d| slot_on(s, r, d))
        .find(|x| x.start_ms <= t && t < x.end_ms)
}

/// Every slot of `r` that starts in `[from, to)`, in order.
pub fn slots_between(s: &Settings, r: &Rotation, from: i64, to: i64) -> Vec<Slot> {
    let mut out = Vec::new();
    let first = local_date(s.tz, from);
    let mut d = first.pred_opt().unwrap_or(first);
    let last = local_date(s.tz, to);
    while d <= last {
        if let Some(x) = slot_on(s, r, d) {
            if from <= x.start_ms && x.start_ms < to {
                out.push(x);
            }
        }
        match d.succ_opt() {
            Some(next) => d = next,
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_at_the_ends_of_the_range_give_no_slot_and_no_panic() {
        let s = Settings::default();
        let r = Rotation { crew: "a".into(), anchor: NaiveDate::MIN, cycle: "DN".into() };
        // Before the fix: "NaiveDate - TimeDelta overflowed" (local_date of an impossible time is
        // NaiveDate::MIN, and the day before it does not exist).
        for (from, to) in [(i64::MIN, i64::MIN + 1), (i64::MIN, i64::MIN / 2 + 1), (i64::MAX - 1, i64::MAX)] {
            assert!(slots_between(&s, &r, from, to).is_empty(), "{from}..{to}");
        }
        for t in [i64::MIN, i64::MAX] {
            assert_eq!(shift_at(&s, &r, t), None);
        }
        let last = Rotation { anchor: NaiveDate::MAX, cycle: "N".into(), ..r.clone() };
        assert_eq!(slot_on(&s, &last, NaiveDate::MAX), None, "a night shift would end after NaiveDate::MAX");
        assert!(resolve_local(s.tz, NaiveDate::MAX.and_time(chrono::NaiveTime::MIN)) > 0);
    }
}
