//! Repeat incidents (DESIGN.md): a downtime event on the same asset with the same first-out alarm as one
//! that ended at most N days before it started (`[people] repeat_window`, default 7 days). Reported per
//! calendar week of the site (as the overview's weeks): stops, stops with a first-out alarm (only those can
//! repeat), repeats and their share, and the trend as the share in the window's second half against the
//! first.
//!
//! Invariants: pure. The earlier event may lie before the window (the whole history is given); only events
//! that started in the window are counted.

use crate::report::{num, week_starts, Report};
use crate::timeline::Downtime;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// Default `[people] repeat_window`: 7 days.
pub const DEFAULT_WINDOW_MS: i64 = 7 * 86_400_000;

/// Which of `events` (sorted by start, the whole history) are repeats: `Some(true)` for a repeat,
/// `Some(false)` for an event with a first-out alarm that is not, `None` without a first-out alarm.
pub fn repeats(events: &[&Downtime], window_ms: i64) -> Vec<Option<bool>> {
    // (site, asset, first-out id) → the latest end seen so far.
    let mut last_end: HashMap<(&str, &str, &str), i64> = HashMap::new();
    let mut out = Vec::with_capacity(events.len());
    for d in events {
        let Some(fo) = &d.first_out else {
            out.push(None);
            continue;
        };
        let key = (d.site.as_str(), d.asset.as_str(), fo.id.as_str());
        let repeat = last_end.get(&key).is_some_and(|&end| end <= d.start_ms && d.start_ms - end <= window_ms);
        out.push(Some(repeat));
        if let Some(end) = d.end_ms {
            let e = last_end.entry(key).or_insert(end);
            *e = (*e).max(end);
        }
    }
    out
}

/// Weekly repeat shares of the events that started in `[from_ms, to_ms)`, and the headline figures.
/// `events` is the whole history sorted by start with each event's scope flag (in the filter or not).
pub fn report(
    events: &[(&Downtime, bool)],
    window_ms: i64,
    tz: chrono_tz::Tz,
    from_ms: i64,
    to_ms: i64,
) -> (BTreeMap<String, Value>, Report) {
    let all: Vec<&Downtime> = events.iter().map(|(d, _)| *d).collect();
    let flags = repeats(&all, window_ms);
    let starts = week_starts(tz, from_ms, to_ms, 10_000);
    let mut acc = vec![(0usize, 0usize, 0usize); starts.len()];
    let mid = from_ms + (to_ms - from_ms) / 2;
    let mut halves = [(0usize, 0usize); 2];
    for ((d, in_scope), flag) in events.iter().zip(&flags) {
        if !in_scope || d.start_ms < from_ms || d.start_ms >= to_ms {
            continue;
        }
        let w = starts.partition_point(|s| *s <= d.start_ms).saturating_sub(1);
        let a = &mut acc[w];
        a.0 += 1;
        if let Some(r) = flag {
            a.1 += 1;
            a.2 += usize::from(*r);
            let h = &mut halves[usize::from(d.start_ms >= mid)];
            h.0 += 1;
            h.1 += usize::from(*r);
        }
    }
    let share = |with: usize, rep: usize| if with > 0 { num(rep as f64 / with as f64, 3) } else { Value::Null };
    let mut r = Report::new("repeats", ["week", "events", "with_first_out", "repeats", "repeat_share"]);
    for (s, (n, with, rep)) in starts.iter().zip(&acc) {
        let week = chrono::DateTime::from_timestamp_millis(*s)
            .map_or(String::new(), |d| d.with_timezone(&tz).format("%Y-%m-%d").to_string());
        r.rows.push(vec![week.into(), (*n).into(), (*with).into(), (*rep).into(), share(*with, *rep)]);
    }
    let (n, with, rep) = acc.iter().fold((0, 0, 0), |a, x| (a.0 + x.0, a.1 + x.1, a.2 + x.2));
    let days = window_ms as f64 / 86_400_000.0;
    r.notes.push(format!(
        "a repeat: same asset and first-out alarm as a stop that ended at most {days} days before ([people] repeat_window)"
    ));
    if with == 0 && n > 0 {
        r.notes.push(
            "no stop in this window has a first-out alarm, so none can be a repeat: first-out alarms come from the agents' alarm points".into(),
        );
    }
    let mut m = BTreeMap::new();
    m.insert("events".into(), n.into());
    m.insert("with_first_out".into(), with.into());
    m.insert("repeats".into(), rep.into());
    m.insert("repeat_share".into(), share(with, rep));
    m.insert("first_half_share".into(), share(halves[0].0, halves[0].1));
    m.insert("second_half_share".into(), share(halves[1].0, halves[1].1));
    m.insert("window_days".into(), num(days, 2));
    (m, r)
}
