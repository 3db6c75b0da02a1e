//! Alarm management figures per ISA-18.2 / EEMUA 191, for the whole plant and per crew, joined to who
//! was on shift: alarms per operator per 10 minutes and per hour (mean and peak), the share of 10-minute
//! windows in flood, the ten most frequent alarms (bad actors) and their share, chattering and stale
//! alarms, shelved and suppressed counts, the priority mix against 80/15/5, and time to acknowledge; each
//! beside its target.
//!
//! Definitions (also in `config/people.md`, "Alarm load"):
//! - The window `[from, to)` is cut into 10-minute windows from `from` (the last may be shorter), hours are
//!   six of them. A window belongs to the crew the rotation schedules at its start (as the join does).
//! - A **line** is an asset's (site, line) from `assets.csv`; alarms of assets not listed there form one
//!   line of their own per site. Only lines with at least one alarm in the data count.
//! - **Operators** of a line at t: the people on shift at t who are qualified at t for at least one skill
//!   that an asset of the line requires; where the line's assets require nothing, everyone on shift.
//!   Counted at the start of each window.
//! - **Alarms per operator** in a window = activations raised at the line in it ÷ its operators; the mean
//!   is over the (line, window) pairs with an operator, the peak their maximum; per hour is the sum of the
//!   six windows' figures. Alarms raised while a line had no operator are counted apart. The mean is also
//!   split by the competency on shift (every skill the plant needs held by someone on shift, or not).
//! - **Flood**: a (line, window) with more than 10 activations (the standard's console is a line here).
//! - **Chattering**: an alarm with 3 or more activations within 60 s; **stale**: active over 24 h (still
//!   active ones until `to`).
//! - Priority shares are of the activations whose priority is known; activations without attributes
//!   (Modbus alarm points) have an unknown priority and count as never acknowledged.

use crate::join::{AlarmKey, AlarmRecord, Priority};
use crate::people::Requirement;
use crate::report::{coverage, num, privacy, stats, Input, Report};
use serde_json::Value;
use std::collections::HashMap;

/// Length of the standard's window.
pub const WINDOW_MS: i64 = 600_000;
/// A (line, window) is in flood above this many activations.
pub const FLOOD_ABOVE: u32 = 10;
/// Three activations of one alarm within this span make it chattering (the raise before the one before
/// the current is kept per alarm).
pub const CHATTER_SPAN_MS: i64 = 60_000;
/// Active longer than this is stale.
pub const STALE_MS: i64 = 86_400_000;
/// How many bad actors are listed.
pub const TOP: usize = 10;
const DAY_MS: i64 = 86_400_000;

/// What a figure is held against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    AtMost(f64),
    /// About the value, within ± the tolerance.
    About(f64, f64),
}

impl Target {
    pub fn text(self) -> String {
        match self {
            Self::AtMost(x) => format!("≤ {x}"),
            Self::About(x, tol) => format!("≈ {x} (± {tol})"),
        }
    }

    pub fn met(self, actual: f64) -> bool {
        match self {
            Self::AtMost(x) => actual <= x + 1e-9,
            Self::About(x, tol) => (actual - x).abs() <= tol + 1e-9,
        }
    }
}

/// One figure of one scope (`all` or a crew).
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub crew: String,
    /// A stable key (`per_operator_10min_mean`, `bad_actor`, ...).
    pub figure: &'static str,
    /// What the number is of (a bad actor's alarm, the chattering alarms), or a caveat.
    pub detail: String,
    /// `None`: nothing to measure (no acknowledged alarm, no known priority).
    pub actual: Option<f64>,
    pub target: Option<Target>,
}

impl Figure {
    /// `ok`, `not_met`, `no_data`, or empty where there is no target.
    pub fn status(&self) -> &'static str {
        match (self.target, self.actual) {
            (None, _) => "",
            (Some(_), None) => "no_data",
            (Some(t), Some(a)) if t.met(a) => "ok",
            _ => "not_met",
        }
    }
}

/// Every figure key with its words, in the report's order (the page shows the words, the API the key).
pub const FIGURES: [(&str, &str); 27] = [
    ("alarms", "alarms raised"),
    ("operators_mean", "operators on shift per line, mean"),
    ("per_operator_10min_mean", "alarms per operator per 10 min, mean"),
    ("per_operator_10min_peak", "alarms per operator per 10 min, peak"),
    ("per_operator_10min_mean_all_covered", "alarms per operator per 10 min, mean, every needed skill on shift"),
    ("per_operator_10min_mean_skills_missing", "alarms per operator per 10 min, mean, a needed skill missing"),
    ("per_operator_hour_mean", "alarms per operator per hour, mean"),
    ("per_operator_hour_peak", "alarms per operator per hour, peak"),
    ("flood_windows_pct", "10-min windows in flood (%)"),
    ("alarms_without_operator", "alarms with no operator on shift"),
    ("top10_share_pct", "share of the 10 most frequent alarms (%)"),
    ("bad_actor", "bad actor (activations)"),
    ("chattering_alarms", "chattering alarms"),
    ("stale_alarms", "stale alarms"),
    ("stale_standing_max_per_day", "stale alarms standing, most on one day"),
    ("shelved", "activations shelved"),
    ("suppressed", "activations suppressed"),
    ("priority_high_pct", "high priority (%)"),
    ("priority_medium_pct", "medium priority (%)"),
    ("priority_low_pct", "low priority (%)"),
    ("priority_unknown_pct", "priority unknown (%)"),
    ("acked_pct", "acknowledged (%)"),
    ("ack_time_median_s", "time to acknowledge, median (s)"),
    ("ack_time_p90_s", "time to acknowledge, 90th percentile (s)"),
    ("status_ok", "ok"),
    ("status_not_met", "not met"),
    ("status_no_data", "no data"),
];

/// The words of a figure key or status, if it is one.
pub fn label(key: &str) -> Option<&'static str> {
    FIGURES.iter().find(|(k, _)| *k == key).map(|(_, w)| *w)
}

/// Per scope sums.
#[derive(Default, Clone)]
struct Acc {
    alarms: u64,
    line_windows: u64,
    staffed_windows: u64,
    operators: u64,
    rate_sum: f64,
    /// Sum of rates and (line, window) pairs by the competency on shift: every needed skill, or not.
    band_sum: [f64; 2],
    band_windows: [u64; 2],
    rate_peak: f64,
    staffed_hours: u64,
    hour_sum: f64,
    hour_peak: f64,
    flood: u64,
    unstaffed_alarms: u64,
    stale: u64,
    shelved: u64,
    suppressed: u64,
    priority: [u64; 4],
    acked: u64,
    ack_s: Vec<f64>,
}

fn prio_index(p: Priority) -> usize {
    match p {
        Priority::High => 0,
        Priority::Medium => 1,
        Priority::Low => 2,
        Priority::Unknown => 3,
    }
}

/// The lines alarms were raised on, each key's line, and each line's requirements.
struct Lines {
    of_key: Vec<usize>,
    requires: Vec<Vec<Requirement>>,
    /// The skills the plant needs (the competency split, as in the coverage and gaps reports).
    needed: Vec<Requirement>,
}

fn lines(inp: &Input, keys: &[AlarmKey]) -> Lines {
    let p = inp.people;
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    let mut requires: Vec<Vec<Requirement>> = Vec::new();
    let mut of_key = Vec::with_capacity(keys.len());
    for k in keys {
        let asset = p.asset(&k.asset);
        // Assets not in assets.csv: one line per site, named by no line.
        let id = asset.map_or((k.site.as_str(), ""), |a| (a.site.as_str(), a.line.as_str()));
        let n = index.len();
        let i = *index.entry(id).or_insert_with(|| {
            let mut req: Vec<Requirement> = p
                .assets
                .iter()
                .filter(|a| asset.is_some() && a.site == id.0 && a.line == id.1)
                .flat_map(|a| a.requires.iter().cloned())
                .collect();
            req.sort();
            req.dedup();
            requires.push(req);
            n
        });
        of_key.push(i);
    }
    Lines { of_key, requires, needed: crate::report::needed_skills(p) }
}

/// Per (person), whether they operate each line, valid until their next qualification change.
struct Qualified<'a> {
    changes: HashMap<&'a str, Vec<i64>>,
    cache: HashMap<&'a str, (i64, Vec<bool>)>,
}

impl<'a> Qualified<'a> {
    fn new(inp: &Input<'a>) -> Self {
        let mut changes: HashMap<&str, Vec<i64>> = HashMap::new();
        for a in &inp.people.person_skills {
            let v = changes.entry(a.person.as_str()).or_default();
            v.push(a.assessed_ms);
            v.extend(a.issued_ms);
            v.extend(a.expires_ms);
        }
        for v in changes.values_mut() {
            v.sort_unstable();
            v.dedup();
        }
        Self { changes, cache: HashMap::new() }
    }

    /// Whether `person` operates each line at t, then whether they hold each needed skill (times asked must
    /// not decrease).
    fn at(&mut self, inp: &Input<'a>, person: &'a str, lines: &Lines, t: i64) -> &[bool] {
        let fresh = self.cache.get(person).is_some_and(|(until, _)| t < *until);
        if !fresh {
            let until = self.changes.get(person).and_then(|v| v.get(v.partition_point(|c| *c <= t)).copied());
            let flags = lines
                .requires
                .iter()
                .map(|req| req.is_empty() || req.iter().any(|r| inp.people.qualified(person, r, t)))
                .chain(lines.needed.iter().map(|r| inp.people.qualified(person, r, t)))
                .collect();
            self.cache.insert(person, (until.unwrap_or(i64::MAX), flags));
        }
        self.cache.get(person).map_or(&[], |(_, f)| f.as_slice())
    }
}

/// The figures: `all` first, then each crew in name order (crews below the minimum group size are left
/// out by [`report`]). `alarms` must be sorted by `raised_ms` and raised in `[inp.from_ms, inp.to_ms)`.
pub fn alarm_load(inp: &Input, keys: &[AlarmKey], alarms: &[AlarmRecord]) -> Vec<Figure> {
    let p = inp.people;
    let (from, to) = (inp.from_ms, inp.to_ms.max(inp.from_ms));
    let lines = lines(inp, keys);
    let nl = lines.requires.len();
    let nw = ((to - from + WINDOW_MS - 1) / WINDOW_MS).max(0) as usize;
    // Scopes: 0 = all, then crews; "none" for windows no crew is scheduled in.
    let mut crews: Vec<String> = p.crews();
    crews.push("none".into());
    let scope_of = |crew: &str| crews.iter().position(|c| c == crew).map_or(crews.len(), |i| i + 1);

    let ns = crews.len() + 1;
    let mut acc: Vec<Acc> = vec![Acc::default(); ns];
    let mut key_counts: Vec<u32> = vec![0; ns * keys.len()];
    let mut chatter: Vec<bool> = vec![false; ns * keys.len()];
    let mut prev: Vec<[i64; 2]> = vec![[i64::MIN; 2]; keys.len()];
    let mut stale_spans: Vec<(i64, i64)> = Vec::new();
    // One pass over the windows in time order, each with its alarms; memory is per line, not per window.
    // Operators per line and the crew are sampled at a window's start and change only at roster cuts.
    let cuts = coverage::cuts(p, from, to);
    let mut qual = Qualified::new(inp);
    let (mut seg, mut ops, mut scope, mut band) = (usize::MAX, vec![0u32; nl], crews.len(), 0);
    let mut covered = vec![false; lines.needed.len()];
    let mut counts = vec![0u32; nl];
    // Per line: the hour's sum of alarms per operator, and whether it had an operator; the hour's crew.
    let (mut hour, mut hour_scope) = (vec![(0.0f64, false); nl], scope);
    let mut next = alarms.partition_point(|a| a.raised_ms < from);
    for w in 0..nw {
        let ws = from + w as i64 * WINDOW_MS;
        let sg = cuts.partition_point(|c| *c <= ws).saturating_sub(1);
        if sg != seg {
            seg = sg;
            let on = p.on_shift(ws);
            ops.iter_mut().for_each(|n| *n = 0);
            covered.iter_mut().for_each(|c| *c = false);
            for o in &on {
                let flags = qual.at(inp, o.person, &lines, ws);
                for (n, q) in ops.iter_mut().zip(flags) {
                    *n += u32::from(*q);
                }
                for (c, q) in covered.iter_mut().zip(flags.get(nl..).unwrap_or_default()) {
                    *c |= *q;
                }
            }
            band = usize::from(!covered.iter().all(|c| *c));
            let scheduled = p.slots_at(ws).into_iter().map(|(s, _)| s.crew).min();
            let crew = scheduled.or_else(|| on.iter().find_map(|o| o.crew.map(str::to_string)));
            scope = scope_of(crew.as_deref().unwrap_or("none"));
        }
        if w % 6 == 0 {
            hour_scope = scope;
        }
        let we = (ws + WINDOW_MS).min(to);
        while let Some(a) = alarms.get(next).filter(|a| a.raised_ms < we) {
            next += 1;
            let (k, line) = (a.key as usize, lines.of_key[a.key as usize]);
            counts[line] += 1;
            let chattering = prev[k][0] != i64::MIN && a.raised_ms - prev[k][0] <= CHATTER_SPAN_MS;
            prev[k] = [prev[k][1], a.raised_ms];
            let end = a.cleared_ms.unwrap_or(to);
            if end - a.raised_ms > STALE_MS {
                stale_spans.push((a.raised_ms + STALE_MS, end));
            }
            for s in [0, scope] {
                let x = &mut acc[s];
                x.alarms += 1;
                x.unstaffed_alarms += u64::from(ops[line] == 0);
                x.stale += u64::from(end - a.raised_ms > STALE_MS);
                x.shelved += u64::from(a.shelved);
                x.suppressed += u64::from(a.suppressed);
                x.priority[prio_index(a.priority)] += 1;
                if let Some(t) = a.acked_ms {
                    x.acked += 1;
                    x.ack_s.push((t - a.raised_ms) as f64 / 1000.0);
                }
                key_counts[s * keys.len() + k] += 1;
                chatter[s * keys.len() + k] |= chattering;
            }
        }
        // Rates per (line, window) and per (line, hour).
        for l in 0..nl {
            let (n, k) = (counts[l], ops[l]);
            counts[l] = 0;
            for s in [0, scope] {
                let x = &mut acc[s];
                x.line_windows += 1;
                x.flood += u64::from(n > FLOOD_ABOVE);
                if k > 0 {
                    let r = f64::from(n) / f64::from(k);
                    x.staffed_windows += 1;
                    x.operators += u64::from(k);
                    x.rate_sum += r;
                    x.band_sum[band] += r;
                    x.band_windows[band] += 1;
                    x.rate_peak = x.rate_peak.max(r);
                }
            }
            if k > 0 {
                hour[l].0 += f64::from(n) / f64::from(k);
                hour[l].1 = true;
            }
        }
        if w % 6 == 5 || w + 1 == nw {
            for h in &mut hour {
                if h.1 {
                    for s in [0, hour_scope] {
                        acc[s].staffed_hours += 1;
                        acc[s].hour_sum += h.0;
                        acc[s].hour_peak = acc[s].hour_peak.max(h.0);
                    }
                }
                *h = (0.0, false);
            }
        }
    }
    // Stale alarms standing on each day of the window (the standard's "fewer than 5 present on any day").
    let stale_day_max = (0..(to - from + DAY_MS - 1) / DAY_MS)
        .map(|d| {
            let (ds, de) = (from + d * DAY_MS, from + (d + 1) * DAY_MS);
            stale_spans.iter().filter(|(s, e)| *s < de && *e > ds).count()
        })
        .max()
        .unwrap_or(0);

    let mut out = Vec::new();
    for (s, x) in acc.iter_mut().enumerate() {
        let crew = if s == 0 { "all".to_string() } else { crews[s - 1].clone() };
        if s > 0 && x.alarms == 0 && x.line_windows == 0 {
            continue;
        }
        let kc = &key_counts[s * keys.len()..(s + 1) * keys.len()];
        let mut f = |figure: &'static str, detail: String, actual: Option<f64>, target: Option<Target>| {
            out.push(Figure { crew: crew.clone(), figure, detail, actual, target })
        };
        let ratio = |a: f64, b: u64| (b > 0).then(|| a / b as f64);
        let pct = |a: u64, b: u64| (b > 0).then(|| 100.0 * a as f64 / b as f64);
        f("alarms", String::new(), Some(x.alarms as f64), None);
        f(
            "operators_mean",
            format!("{nl} lines with alarms, {} line-windows with an operator", x.staffed_windows),
            ratio(x.operators as f64, x.staffed_windows),
            None,
        );
        f(
            "per_operator_10min_mean",
            "manageable up to 2".into(),
            ratio(x.rate_sum, x.staffed_windows),
            Some(Target::AtMost(1.0)),
        );
        f("per_operator_10min_peak", String::new(), Some(x.rate_peak), Some(Target::AtMost(10.0)));
        for (b, name) in
            ["per_operator_10min_mean_all_covered", "per_operator_10min_mean_skills_missing"].into_iter().enumerate()
        {
            f(
                name,
                format!("{} line-windows", x.band_windows[b]),
                ratio(x.band_sum[b], x.band_windows[b]),
                Some(Target::AtMost(1.0)),
            );
        }
        f(
            "per_operator_hour_mean",
            "manageable up to 12".into(),
            ratio(x.hour_sum, x.staffed_hours),
            Some(Target::AtMost(6.0)),
        );
        f("per_operator_hour_peak", String::new(), Some(x.hour_peak), None);
        f(
            "flood_windows_pct",
            format!("{} of {} line-windows over {FLOOD_ABOVE} alarms", x.flood, x.line_windows),
            pct(x.flood, x.line_windows),
            Some(Target::AtMost(1.0)),
        );
        f(
            "alarms_without_operator",
            "raised while nobody on shift was qualified for the line".into(),
            Some(x.unstaffed_alarms as f64),
            Some(Target::AtMost(0.0)),
        );
        let mut top: Vec<(u32, usize)> = kc.iter().enumerate().filter(|(_, n)| **n > 0).map(|(k, n)| (*n, k)).collect();
        top.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| keys[a.1].cmp(&keys[b.1])));
        top.truncate(TOP);
        let top_n: u64 = top.iter().map(|(n, _)| u64::from(*n)).sum();
        f(
            "top10_share_pct",
            format!("the {} most frequent alarms", top.len()),
            pct(top_n, x.alarms),
            Some(Target::AtMost(5.0)),
        );
        for (n, k) in &top {
            let key = &keys[*k];
            f("bad_actor", format!("{}/{}/{}", key.site, key.asset, key.alarm), Some(f64::from(*n)), None);
        }
        let mut ch: Vec<&AlarmKey> =
            (0..keys.len()).filter(|k| chatter[s * keys.len() + k]).map(|k| &keys[k]).collect();
        ch.sort();
        let named: Vec<String> = ch.iter().take(5).map(|k| format!("{}/{}/{}", k.site, k.asset, k.alarm)).collect();
        let more = if ch.len() > 5 { format!(" and {} more", ch.len() - 5) } else { String::new() };
        f("chattering_alarms", format!("{}{more}", named.join(", ")), Some(ch.len() as f64), Some(Target::AtMost(0.0)));
        f("stale_alarms", "activations active over 24 h".into(), Some(x.stale as f64), None);
        if s == 0 {
            f(
                "stale_standing_max_per_day",
                "fewer than 5 on any day".into(),
                Some(stale_day_max as f64),
                Some(Target::AtMost(4.0)),
            );
        }
        f("shelved", String::new(), Some(x.shelved as f64), None);
        f("suppressed", String::new(), Some(x.suppressed as f64), None);
        let known = x.priority[..3].iter().sum::<u64>();
        for (i, (name, target)) in
            [("priority_high_pct", 5.0), ("priority_medium_pct", 15.0), ("priority_low_pct", 80.0)]
                .into_iter()
                .enumerate()
        {
            f(name, String::new(), pct(x.priority[i], known), Some(Target::About(target, 5.0)));
        }
        f(
            "priority_unknown_pct",
            "no priority from the source (Modbus alarm points)".into(),
            pct(x.priority[3], x.alarms),
            None,
        );
        f(
            "acked_pct",
            "alarms without acknowledgement data count as not acknowledged".into(),
            pct(x.acked, x.alarms),
            None,
        );
        x.ack_s.sort_by(f64::total_cmp);
        f("ack_time_median_s", String::new(), stats::quantile(&x.ack_s, 0.5), None);
        f("ack_time_p90_s", String::new(), stats::quantile(&x.ack_s, 0.9), None);
    }
    out
}

/// As a [`Report`]; crews below `min_group_size` are left out.
pub fn report(inp: &Input, alarms: &[AlarmRecord], figures: &[Figure]) -> Report {
    let mut r = Report::new("alarm-load", ["crew", "figure", "detail", "actual", "target", "status"]);
    r.notes.push(
        "per operator: alarms raised at a line in a 10-minute window ÷ people on shift then who are qualified for a \
         skill the line's assets require (everyone on shift where they require none); targets per ISA-18.2 / EEMUA 191"
            .into(),
    );
    if inp.people.rotations.is_empty() && inp.people.roster.is_empty() {
        r.notes.push("no shifts to count operators on: import rotation.csv (crew rotations) and people.csv".into());
    }
    if alarms.is_empty() {
        r.notes.push(
            "all zeros: no alarm became active on the assets in scope in this window. Alarm activations come from \
             the agents' alarm points (meaning alarm, alarm_word or threshold in the agent config) or OPC UA alarms \
             and conditions; a plant whose agents map no alarm points shows zeros here"
                .into(),
        );
    }
    let unknown = alarms.iter().filter(|a| a.priority == Priority::Unknown).count();
    if unknown > 0 {
        r.notes.push(format!(
            "{unknown} of {} activations carry no priority or acknowledgement (Modbus alarm points, or agents before \
             OPC UA alarms and conditions): counted as unknown priority and not acknowledged",
            alarms.len()
        ));
    }
    let mut left_out: Vec<&str> = Vec::new();
    for x in figures {
        if x.crew != "all" && x.crew != "none" && !privacy::group_allowed(inp.people, &x.crew, inp.to_ms) {
            if !left_out.contains(&x.crew.as_str()) {
                left_out.push(&x.crew);
            }
            continue;
        }
        r.rows.push(vec![
            x.crew.clone().into(),
            x.figure.into(),
            x.detail.clone().into(),
            x.actual.map_or(Value::Null, |a| num(a, 3)),
            x.target.map_or(Value::Null, |t| t.text().into()),
            x.status().into(),
        ]);
    }
    for c in left_out {
        r.notes.push(format!("crew {c} left out: fewer than {} people", inp.people.settings.min_group_size));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::people::{Personnel, Settings};

    fn rec(key: u32, raised_ms: i64) -> AlarmRecord {
        AlarmRecord {
            key,
            raised_ms,
            cleared_ms: Some(raised_ms + 1),
            acked_ms: None,
            priority: Priority::Unknown,
            shelved: false,
            suppressed: false,
        }
    }

    fn figure(figs: &[Figure], name: &str) -> Option<f64> {
        figs.iter().find(|f| f.crew == "all" && f.figure == name).and_then(|f| f.actual)
    }

    /// Boundaries: 10 alarms in a window are no flood, 11 are; three raises exactly 60 s apart end to end
    /// chatter, 60.001 s do not; without a roster every alarm is raised with no operator.
    #[test]
    fn flood_is_above_ten_and_chattering_is_three_within_sixty_seconds() {
        let p = Personnel::new(Settings::default()).rebuilt();
        let inp = Input { people: &p, events: &[], from_ms: 0, to_ms: 3 * WINDOW_MS };
        let k = |a: &str| AlarmKey { site: "s".into(), asset: "x".into(), alarm: a.into() };
        let keys = [k("A"), k("B"), k("C")];
        let mut a: Vec<AlarmRecord> = (0..10).map(|i| rec(0, i * 1_000)).collect();
        a.extend((0..11).map(|i| rec(0, WINDOW_MS + i * 1_000)));
        a.extend([rec(1, 2 * WINDOW_MS), rec(1, 2 * WINDOW_MS + 30_000), rec(1, 2 * WINDOW_MS + 60_000)]);
        a.extend([rec(2, 2 * WINDOW_MS), rec(2, 2 * WINDOW_MS + 30_000), rec(2, 2 * WINDOW_MS + 60_001)]);
        a.sort_by_key(|r| r.raised_ms);
        let figs = alarm_load(&inp, &keys, &a);
        assert_eq!(figure(&figs, "flood_windows_pct"), Some(100.0 / 3.0));
        // A chatters too: its raises are a second apart.
        assert_eq!(figure(&figs, "chattering_alarms"), Some(2.0));
        let ch = figs.iter().find(|f| f.figure == "chattering_alarms").map(|f| f.detail.clone());
        assert_eq!(ch.as_deref(), Some("s/x/A, s/x/B"));
        assert_eq!(figure(&figs, "alarms_without_operator"), Some(27.0));
        assert_eq!(figure(&figs, "per_operator_10min_mean"), None, "no window had an operator");
        let mean = figs.iter().find(|f| f.figure == "per_operator_10min_mean").map(Figure::status);
        assert_eq!(mean, Some("no_data"));
        assert_eq!(figure(&figs, "priority_unknown_pct"), Some(100.0));
        assert_eq!(figure(&figs, "top10_share_pct"), Some(100.0));
    }

    #[test]
    fn targets_are_met_at_their_bound_and_within_their_tolerance() {
        assert!(Target::AtMost(1.0).met(1.0) && !Target::AtMost(1.0).met(1.001));
        assert!(Target::About(80.0, 5.0).met(75.0) && !Target::About(80.0, 5.0).met(74.9));
        assert_eq!(Target::About(5.0, 5.0).text(), "≈ 5 (± 5)");
        assert_eq!(Target::AtMost(10.0).text(), "≤ 10");
    }
}
