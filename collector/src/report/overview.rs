//! The plant overview: headline figures and a weekly trend. Availability = 1 − down time / (assets ×
//! window) (planned and unknown time are not in the downtime records, so they are not deducted), downtime
//! hours (clipped to the window; open events count until the window's end or `now_ms`), MTTR of closed
//! events, covered and uncovered.

use crate::report::join::Baselines;
use crate::report::{num, round, week_starts, Input, JoinedEvent, Report, HOUR_MS};
use serde_json::Value;
use std::collections::BTreeMap;

const DAY_MS: i64 = 86_400_000;

/// Headline figures and the weekly trend of `inp` over `assets` assets in scope. `max_weeks` caps the
/// series (the window is bounded where it comes from a request; the cap keeps a hand-made one from
/// sizing the series beyond it).
pub fn overview(inp: &Input, assets: usize, now_ms: i64, max_weeks: usize) -> (BTreeMap<String, Value>, Report) {
    let (from_ms, to_ms) = (inp.from_ms, inp.to_ms);
    let events = inp.events;
    let end_of = |e: &JoinedEvent| e.end_ms.unwrap_or(now_ms.min(to_ms)).min(to_ms);
    let down_h: f64 =
        events.iter().map(|e| end_of(e).saturating_sub(e.start_ms.max(from_ms)).max(0) as f64 / HOUR_MS).sum();
    let window_h = to_ms.saturating_sub(from_ms) as f64 / HOUR_MS;
    // Three decimals (3.6 s): a demo's stops of seconds still read in seconds on the page.
    let mean = |xs: &[f64]| if xs.is_empty() { Value::Null } else { num(xs.iter().sum::<f64>() / xs.len() as f64, 3) };
    let ttr = |pred: &dyn Fn(&JoinedEvent) -> bool| -> Vec<f64> {
        events.iter().filter(|e| pred(e)).filter_map(|e| e.ttr_h()).collect()
    };
    let all = ttr(&|_| true);
    let covered = ttr(&|e| e.covered == Some(true));
    let uncovered = ttr(&|e| e.covered == Some(false));
    let base = Baselines::new(events, inp.people.settings.min_baseline_events);
    let avoidable: f64 = events.iter().map(|e| base.avoidable_h(e)).sum();
    let availability = if assets > 0 {
        Value::from(round(100.0 * (1.0 - down_h / (assets as f64 * window_h)), 2))
    } else {
        Value::Null
    };
    let mut s = BTreeMap::new();
    s.insert("assets".into(), assets.into());
    s.insert("availability_pct".into(), availability);
    s.insert("events".into(), events.len().into());
    s.insert("downtime_h".into(), num(down_h, 3));
    s.insert("mttr_h".into(), mean(&all));
    s.insert("covered_events".into(), covered.len().into());
    s.insert("uncovered_events".into(), uncovered.len().into());
    s.insert("covered_mttr_h".into(), mean(&covered));
    s.insert("uncovered_mttr_h".into(), mean(&uncovered));
    s.insert("avoidable_h".into(), num(avoidable, 3));
    let mut rep = Report::new("overview", ["week", "events", "downtime_h", "mttr_h", "uncovered_events"]);
    // Weeks by the site's calendar (local midnight, seven days apart), so a daylight-saving change does not
    // shift the labels.
    let tz = inp.people.settings.tz;
    let starts = week_starts(tz, from_ms, to_ms, max_weeks);
    let mut acc = vec![(0usize, 0.0f64, 0.0f64, 0usize, 0usize); starts.len()];
    for e in events {
        let w = starts.partition_point(|s| *s <= e.start_ms).saturating_sub(1);
        let a = &mut acc[w];
        a.0 += 1;
        a.1 += end_of(e).saturating_sub(e.start_ms).max(0) as f64 / HOUR_MS;
        if let Some(h) = e.ttr_h() {
            a.2 += h;
            a.3 += 1;
        }
        a.4 += usize::from(e.covered == Some(false));
    }
    for (start, (n, down, ttr_sum, closed, unc)) in starts.iter().zip(acc) {
        let week = chrono::DateTime::from_timestamp_millis(*start)
            .map_or(String::new(), |d| d.with_timezone(&tz).format("%Y-%m-%d").to_string());
        let mttr = if closed > 0 { num(ttr_sum / closed as f64, 2) } else { Value::Null };
        rep.rows.push(vec![week.into(), n.into(), num(down, 1), mttr, unc.into()]);
    }
    (s, rep)
}

/// Weeks a series may hold for windows of at most `max_window_ms`.
pub fn max_weeks(max_window_ms: i64) -> usize {
    (max_window_ms.max(0) / (7 * DAY_MS) + 2) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::people::{Personnel, Settings};

    #[test]
    fn weeks_start_at_local_midnight_across_daylight_saving_changes() {
        let p = Personnel::new(Settings { tz: chrono_tz::Europe::Berlin, ..Settings::default() });
        // 2025-10-20 .. 2025-11-10 in Berlin.
        let (from_ms, to_ms) = (1_760_911_200_000, 1_762_729_200_000);
        let inp = Input { people: &p, events: &[], from_ms, to_ms };
        let (_, rep) = overview(&inp, 0, to_ms, 100);
        let weeks: Vec<&str> = rep.rows.iter().map(|r| r[0].as_str().unwrap()).collect();
        // Berlin leaves summer time on 2025-10-26: the labels stay on Mondays.
        assert_eq!(weeks, ["2025-10-20", "2025-10-27", "2025-11-03"]);
    }
}
