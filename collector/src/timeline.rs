//! Pure timeline: events → per-asset state intervals → downtime events, as DESIGN.md defines them.
//!
//! Definitions held here:
//! - A **downtime event** is a maximal interval in which an asset is `down`. It starts at the first `down`
//!   state after a state that is not `down`, and ends at the next *known* state that is not `down`
//!   (`running`, `idle`, `planned`). `unknown` inside it does not end it but sets `data_gap`. An event with
//!   no end yet is open (ongoing).
//! - `unknown` comes from a `state: unknown` event, a `source` event with `connected: false`, and a
//!   gateway's last will (its assets become `unknown` from the moment the collector saw the will).
//! - A `source` event from [`AGENT_SOURCE`] (`connected: false`) says the agent itself was not running from
//!   then on (it stores one per asset when it starts after an unclean stop). It is `unknown` that also
//!   **breaks** a stop: the downtime event ends there with `data_gap`, and a `down` after it (the first state of
//!   the new run) opens a new event, also with `data_gap`. Nobody watched, so a stop is neither stretched across
//!   the dead time nor merged with the next one.
//! - The **first-out alarm** is the alarm that became active nearest before (or at) the stop, within
//!   `first_out_window_ms`.
//!
//! Invariants: per asset, entries are keyed by `(ts_ms, gateway, epoch, seq)`; an entry with a key already
//! present is ignored, so the result depends only on the *set* of events, never on their arrival order or
//! duplication. Since `unknown` neither opens nor ends a downtime, the downtimes are exactly the maximal runs
//! of `down` in the sequence of *known* states, and `data_gap` says whether an `unknown` lies between a
//! run's start and end. A break is kept among the known states (it ends a run like any state that is not
//! `down`), and a run's `data_gap` is also set when a break ends it or is the known entry just before it. Known states, unknown marks, alarms and downtimes are each kept in an ordered map,
//! so an insert anywhere (late or in order) looks only at its two known neighbours and the downtimes they
//! belong to: O(log n) per event, whatever the arrival order (a gateway sending descending timestamps
//! costs no more than one sending ascending ones). An alarm re-examines only the downtimes starting within
//! its first-out window and before the next alarm.

use serde::{Deserialize, Serialize};
use shiftlens_common::{AssetId, Event, EventBody, GatewayId, MachineState, SiteId, AGENT_SOURCE};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound::{Excluded, Unbounded};

/// The alarm that became active nearest before a stop, within the attribution window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstOut {
    pub id: String,
    pub text: String,
    pub class: Option<String>,
    pub ts_ms: i64,
}

/// A maximal interval in which an asset is `down`. `end_ms` is `None` while it is ongoing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Downtime {
    pub site: SiteId,
    pub gateway: GatewayId,
    pub asset: AssetId,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
    /// The reason code of the state event that started it, if the PLC gave one.
    pub reason: Option<String>,
    pub first_out: Option<FirstOut>,
    /// `unknown` was seen inside the interval.
    pub data_gap: bool,
}

impl Downtime {
    /// Time to repair in milliseconds, for closed events (saturating: never overflows, whatever the times).
    pub fn ttr_ms(&self) -> Option<i64> {
        self.end_ms.map(|e| e.saturating_sub(self.start_ms))
    }

    /// Down and up again within the same millisecond: an empty interval, so not a downtime event. The
    /// timeline keeps it internally (it orders late events) but never reports it; it would also share its
    /// key (site, asset, start) with the stop that follows at the same millisecond.
    fn is_empty(&self) -> bool {
        self.end_ms == Some(self.start_ms)
    }
}

/// One interval of constant state; `end_ms` is `None` for the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateInterval {
    pub state: MachineState,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
}

/// What the timeline consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A stored event of `gateway`'s outbox `epoch`.
    Event { site: SiteId, gateway: GatewayId, epoch: u64, event: Event },
    /// The gateway went offline at `ts_ms` (its last will, or its heartbeat overdue): its assets are
    /// `unknown` from then on.
    Offline { site: SiteId, gateway: GatewayId, ts_ms: i64 },
}

/// What changed after an input: downtime events created or modified, and ones that no longer exist
/// (a late event showed that an interval was not what it seemed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub upserted: Vec<Downtime>,
    /// Events whose key (site, asset, start) no longer exists, as they last stood.
    pub removed: Vec<Downtime>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.upserted.is_empty() && self.removed.is_empty()
    }

    fn extend(&mut self, other: Changes) {
        self.upserted.extend(other.upserted);
        self.removed.extend(other.removed);
    }

    /// A downtime that did not exist (or was empty) before.
    fn opened(&mut self, new: &Downtime) {
        if !new.is_empty() {
            self.upserted.push(new.clone());
        }
    }

    /// A downtime that no longer exists under its key.
    fn closed(&mut self, old: Downtime) {
        if !old.is_empty() {
            self.removed.push(old);
        }
    }

    /// A downtime that changed under the same key: upserted, or removed when it became empty.
    fn changed(&mut self, old: Downtime, new: &Downtime) {
        match (old.is_empty(), new.is_empty()) {
            (_, false) if old != *new => self.upserted.push(new.clone()),
            (false, true) => self.removed.push(old),
            _ => {}
        }
    }

    /// A key both removed and upserted (a stop that moved to another entry of the same millisecond) is an
    /// upsert only; an upsert equal to what was removed under that key is no change at all.
    fn settle(mut self) -> Self {
        if self.removed.is_empty() || self.upserted.is_empty() {
            return self;
        }
        let key = |d: &Downtime| (d.site.clone(), d.asset.clone(), d.start_ms);
        let upserted: HashMap<_, Downtime> = self.upserted.iter().map(|d| (key(d), d.clone())).collect();
        let mut unchanged = BTreeSet::new();
        self.removed.retain(|o| match upserted.get(&key(o)) {
            Some(n) => {
                if n == o {
                    unchanged.insert(key(o));
                }
                false
            }
            None => true,
        });
        self.upserted.retain(|n| !unchanged.contains(&key(n)));
        self
    }
}

/// Sort key of an entry: event time, then the outbox identity (gateway as a stable 64-bit hash of its id,
/// so keys are `Copy`), so equal timestamps order deterministically whatever the arrival order.
type Key = (i64, u64, u64, u64);

/// FNV-1a: stable across runs and builds (unlike `DefaultHasher`).
fn gateway_hash(g: &GatewayId) -> u64 {
    g.as_str().bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A known (not `unknown`) state entry, or a break.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Known {
    state: MachineState,
    reason: Option<String>,
    /// An `unknown` that ends a stop: the agent was not running from here on (`state` is `Unknown`).
    breaks: bool,
}

/// A downtime with the key of the entry that closes it (`None` while open).
#[derive(Debug)]
struct Span {
    end: Option<Key>,
    dt: Downtime,
}

#[derive(Debug)]
struct AssetTimeline {
    /// The gateway that first reported the asset (named in its downtime events).
    gateway: GatewayId,
    /// Known states by key.
    known: BTreeMap<Key, Known>,
    /// Keys of `unknown` entries.
    unknown: BTreeSet<Key>,
    /// Alarm activations by key.
    alarms: BTreeMap<Key, FirstOut>,
    /// Downtimes by the key of the `down` entry that opened them.
    downtimes: BTreeMap<Key, Span>,
}

/// The per-asset timelines of every asset seen.
#[derive(Debug)]
pub struct Timeline {
    first_out_window_ms: i64,
    assets: HashMap<(SiteId, AssetId), AssetTimeline>,
    /// Offline times per (site, gateway), applied to every asset that gateway reports, whenever it appears.
    offline: HashMap<(SiteId, GatewayId), BTreeSet<i64>>,
    by_gateway: HashMap<(SiteId, GatewayId), BTreeSet<(SiteId, AssetId)>>,
}

impl Timeline {
    pub fn new(first_out_window_ms: i64) -> Self {
        Self { first_out_window_ms, assets: HashMap::new(), offline: HashMap::new(), by_gateway: HashMap::new() }
    }

    pub fn first_out_window_ms(&self) -> i64 {
        self.first_out_window_ms
    }

    /// Applies one input and says which downtime events changed.
    pub fn apply(&mut self, input: Input) -> Changes {
        let changes = match input {
            Input::Event { site, gateway, epoch, event } => {
                let key: Key = (event.ts_ms, gateway_hash(&gateway), epoch, event.seq);
                let id = (site.clone(), event.asset.clone());
                let mut changes = Changes::default();
                if !self.assets.contains_key(&id) {
                    let fresh = AssetTimeline {
                        gateway: gateway.clone(),
                        known: BTreeMap::new(),
                        unknown: BTreeSet::new(),
                        alarms: BTreeMap::new(),
                        downtimes: BTreeMap::new(),
                    };
                    self.assets.insert(id.clone(), fresh);
                    let gw = (site.clone(), gateway.clone());
                    // A new asset of a gateway already known to have gone offline inherits its marks.
                    let marks: Vec<i64> = self.offline.get(&gw).into_iter().flatten().copied().collect();
                    self.by_gateway.entry(gw).or_default().insert(id.clone());
                    for ts in marks {
                        let key = offline_key(ts, &gateway);
                        changes.extend(self.insert_state(&id, key, MachineState::Unknown, None, false));
                    }
                }
                let c = match event.body {
                    EventBody::State { state, reason } => self.insert_state(&id, key, state, reason, false),
                    EventBody::Source { connected: false, source, .. } => {
                        self.insert_state(&id, key, MachineState::Unknown, None, source == AGENT_SOURCE)
                    }
                    EventBody::Alarm(alarm) if alarm.active => {
                        let fo = FirstOut { id: alarm.id, text: alarm.text, class: alarm.class, ts_ms: event.ts_ms };
                        self.insert_alarm(&id, key, fo)
                    }
                    _ => Changes::default(),
                };
                changes.extend(c);
                changes
            }
            Input::Offline { site, gateway, ts_ms } => {
                let gw = (site, gateway);
                if !self.offline.entry(gw.clone()).or_default().insert(ts_ms) {
                    return Changes::default();
                }
                let gateway = gw.1.clone();
                let ids: Vec<_> = self.by_gateway.get(&gw).into_iter().flatten().cloned().collect();
                let mut changes = Changes::default();
                for id in ids {
                    let key = offline_key(ts_ms, &gateway);
                    changes.extend(self.insert_state(&id, key, MachineState::Unknown, None, false));
                }
                changes
            }
        };
        changes.settle()
    }

    /// All downtime events, ordered by site, asset and start.
    pub fn downtimes(&self) -> Vec<Downtime> {
        let mut out: Vec<Downtime> = self
            .assets
            .values()
            .flat_map(|a| a.downtimes.values().map(|s| &s.dt).filter(|d| !d.is_empty()).cloned())
            .collect();
        out.sort_by(|a, b| (&a.site, &a.asset, a.start_ms).cmp(&(&b.site, &b.asset, b.start_ms)));
        out
    }

    /// The state intervals of one asset that overlap `[from_ms, to_ms)`, clipped to it. Time before the
    /// asset's first state is not reported (callers count it as `unknown`).
    pub fn intervals(&self, site: &SiteId, asset: &AssetId, from_ms: i64, to_ms: i64) -> Vec<StateInterval> {
        let Some(a) = self.assets.get(&(site.clone(), asset.clone())) else { return Vec::new() };
        let mut out: Vec<StateInterval> = Vec::new();
        let mut entries = a.entries().peekable();
        while let Some((start, state)) = entries.next() {
            let end = entries.peek().map(|n| n.0);
            if start >= to_ms || end.is_some_and(|e| e <= from_ms) {
                continue;
            }
            let iv =
                StateInterval { state, start_ms: start.max(from_ms), end_ms: Some(end.unwrap_or(to_ms).min(to_ms)) };
            match out.last_mut() {
                Some(last) if last.state == iv.state => last.end_ms = iv.end_ms,
                _ if iv.end_ms == Some(iv.start_ms) => {}
                _ => out.push(iv),
            }
        }
        out
    }

    /// Every (site, asset) seen.
    pub fn assets(&self) -> Vec<(SiteId, AssetId)> {
        let mut v: Vec<_> = self.assets.keys().cloned().collect();
        v.sort();
        v
    }

    fn insert_alarm(&mut self, id: &(SiteId, AssetId), key: Key, fo: FirstOut) -> Changes {
        let window = self.first_out_window_ms;
        let Some(a) = self.assets.get_mut(id) else { return Changes::default() };
        if a.alarms.insert(key, fo.clone()).is_some() {
            return Changes::default();
        }
        // Downtimes starting within [ts, ts + window] may now have a different first-out alarm, but only those
        // before the next alarm's time: from there on that alarm (or a later one) is nearer.
        let mut changes = Changes::default();
        let mut hi_ts = fo.ts_ms.saturating_add(window);
        if let Some((next, _)) = a.alarms.range((Excluded(key), Unbounded)).next() {
            if next.0 <= fo.ts_ms {
                return changes;
            }
            hi_ts = hi_ts.min(next.0 - 1);
        }
        let (lo, hi) = ((fo.ts_ms, 0, 0, 0), (hi_ts, u64::MAX, u64::MAX, u64::MAX));
        for (start, span) in a.downtimes.range_mut(lo..=hi) {
            let new = first_out(&a.alarms, start, window);
            if new != span.dt.first_out {
                let was = span.dt.clone();
                span.dt.first_out = new;
                changes.changed(was, &span.dt);
            }
        }
        changes
    }

    /// Inserts a state entry. Only its known neighbours matter: a `down` after a `down` and a non-`down`
    /// after a non-`down` change no run of `down`; a `down` after a non-`down` opens a run (absorbing the
    /// run its next neighbour opened, if that is `down`); a non-`down` after a `down` ends the run there
    /// (and its next neighbour, if `down`, opens a run up to the old end). `unknown` changes only the
    /// `data_gap` of the downtime around it. A break (`breaks`) is a non-`down` known entry that also gives
    /// the run it ends, and the run that starts right after it, a `data_gap`.
    fn insert_state(
        &mut self,
        id: &(SiteId, AssetId),
        key: Key,
        state: MachineState,
        reason: Option<String>,
        breaks: bool,
    ) -> Changes {
        let window = self.first_out_window_ms;
        let Some(a) = self.assets.get_mut(id) else { return Changes::default() };
        if a.known.contains_key(&key) || a.unknown.contains(&key) {
            return Changes::default();
        }
        let mut changes = Changes::default();
        if state == MachineState::Unknown && !breaks {
            a.unknown.insert(key);
            if let Some((_, span)) = a.downtimes.range_mut(..key).next_back() {
                if span.end.is_none_or(|end| key < end) && !span.dt.data_gap {
                    let was = span.dt.clone();
                    span.dt.data_gap = true;
                    changes.changed(was, &span.dt);
                }
            }
            return changes;
        }
        let down = |k: &Known| k.state == MachineState::Down;
        let prev_down = a.known.range(..key).next_back().is_some_and(|(_, k)| down(k));
        let next = a.known.range((Excluded(key), Unbounded)).next().map(|(k, e)| (*k, down(e)));
        let is_down = state == MachineState::Down;
        a.known.insert(key, Known { state, reason, breaks });
        match (is_down, prev_down) {
            (true, true) => {}
            (false, false) => {
                // The run that starts at the next entry now follows this one: a break before it, or none.
                if let Some((next_key, true)) = next {
                    if let Some(span) = a.downtimes.get(&next_key) {
                        let gap = data_gap(a, next_key, span.end);
                        if let Some(span) = a.downtimes.get_mut(&next_key).filter(|s| s.dt.data_gap != gap) {
                            let was = span.dt.clone();
                            span.dt.data_gap = gap;
                            changes.changed(was, &span.dt);
                        }
                    }
                }
            }
            (true, false) => {
                // Opens a run at `key`; a run that began at the next known entry now begins here.
                let end = match next {
                    Some((next_key, true)) => match a.downtimes.remove(&next_key) {
                        Some(absorbed) => {
                            changes.closed(absorbed.dt);
                            absorbed.end
                        }
                        None => run_end(&a.known, next_key),
                    },
                    Some((next_key, false)) => Some(next_key),
                    None => None,
                };
                let dt = make_downtime(id, a, key, end, window);
                changes.opened(&dt);
                a.downtimes.insert(key, Span { end, dt });
            }
            (false, true) => {
                // Ends the run around `key` here; the rest of it, from the next known entry, is a run of its own.
                let Some((&start, span)) = a.downtimes.range(..key).next_back() else { return changes };
                let old_end = span.end;
                let gap = data_gap(a, start, Some(key));
                let Some(span) = a.downtimes.get_mut(&start) else { return changes };
                let was = span.dt.clone();
                span.end = Some(key);
                span.dt.end_ms = Some(key.0);
                span.dt.data_gap = gap;
                changes.changed(was, &span.dt);
                if let Some((next_key, true)) = next {
                    let dt = make_downtime(id, a, next_key, old_end, window);
                    changes.opened(&dt);
                    a.downtimes.insert(next_key, Span { end: old_end, dt });
                }
            }
        }
        changes
    }
}

impl AssetTimeline {
    /// Every state entry (known and unknown) in key order, as (time, state).
    fn entries(&self) -> impl Iterator<Item = (i64, MachineState)> + '_ {
        let mut known = self.known.iter().map(|(k, e)| (*k, e.state)).peekable();
        let mut unknown = self.unknown.iter().map(|k| (*k, MachineState::Unknown)).peekable();
        std::iter::from_fn(move || {
            let take_known = match (known.peek(), unknown.peek()) {
                (Some(k), Some(u)) => k.0 < u.0,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if take_known { known.next() } else { unknown.next() }.map(|(k, s)| (k.0, s))
        })
    }
}

/// The key of the first known non-`down` entry after `from` (the end of the run `from` is in).
fn run_end(known: &BTreeMap<Key, Known>, from: Key) -> Option<Key> {
    known.range((Excluded(from), Unbounded)).find(|(_, k)| k.state != MachineState::Down).map(|(k, _)| *k)
}

/// Whether an `unknown` entry lies strictly between `start` and `end` (or after `start` when open).
fn has_unknown(unknown: &BTreeSet<Key>, start: Key, end: Option<Key>) -> bool {
    match end {
        Some(end) if end <= start => false,
        Some(end) => unknown.range((Excluded(start), Excluded(end))).next().is_some(),
        None => unknown.range((Excluded(start), Unbounded)).next().is_some(),
    }
}

/// The `data_gap` of the run from `start` to `end`: an `unknown` inside it, a break ending it, or a break as
/// the known entry just before it (the stop may have begun while nobody watched).
fn data_gap(a: &AssetTimeline, start: Key, end: Option<Key>) -> bool {
    let breaks = |k: Option<&Known>| k.is_some_and(|k| k.breaks);
    has_unknown(&a.unknown, start, end)
        || breaks(end.and_then(|e| a.known.get(&e)))
        || breaks(a.known.range(..start).next_back().map(|(_, k)| k))
}

fn offline_key(ts_ms: i64, gateway: &GatewayId) -> Key {
    (ts_ms, gateway_hash(gateway), u64::MAX, u64::MAX)
}

/// The downtime of the run opened by the known entry `start` and ended by `end`.
fn make_downtime(id: &(SiteId, AssetId), a: &AssetTimeline, start: Key, end: Option<Key>, window: i64) -> Downtime {
    Downtime {
        site: id.0.clone(),
        gateway: a.gateway.clone(),
        asset: id.1.clone(),
        start_ms: start.0,
        end_ms: end.map(|k| k.0),
        reason: a.known.get(&start).and_then(|k| k.reason.clone()),
        first_out: first_out(&a.alarms, &start, window),
        data_gap: data_gap(a, start, end),
    }
}

/// The alarm activated nearest before (or at) `stop`, not earlier than `window` before it.
fn first_out(alarms: &BTreeMap<Key, FirstOut>, stop: &Key, window: i64) -> Option<FirstOut> {
    let upper: Key = (stop.0.saturating_add(1), 0, 0, 0);
    alarms.range(..upper).next_back().filter(|(k, _)| stop.0.saturating_sub(k.0) <= window).map(|(_, f)| f.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shiftlens_common::Alarm;

    fn gw() -> GatewayId {
        GatewayId::parse("gw1").unwrap()
    }

    fn state(seq: u64, ts: i64, s: MachineState) -> Input {
        ev(seq, ts, EventBody::State { state: s, reason: (s == MachineState::Down).then(|| format!("r{seq}")) })
    }

    fn alarm(seq: u64, ts: i64, id: &str, active: bool) -> Input {
        let a = Alarm {
            id: id.into(),
            active,
            severity: 500,
            text: format!("{id} text"),
            class: Some("drive".into()),
            ..Default::default()
        };
        ev(seq, ts, EventBody::Alarm(a))
    }

    fn ev(seq: u64, ts_ms: i64, body: EventBody) -> Input {
        let event = Event { seq, ts_ms, asset: AssetId::parse("press1").unwrap(), body };
        Input::Event { site: SiteId::parse("s").unwrap(), gateway: gw(), epoch: 7, event }
    }

    /// (start, end, data_gap, reason, first-out id) of one downtime.
    type Row = (i64, Option<i64>, bool, Option<String>, Option<String>);

    /// The rows of each downtime after applying `inputs`.
    fn run(inputs: Vec<Input>) -> Vec<Row> {
        let mut t = Timeline::new(60_000);
        for i in inputs {
            t.apply(i);
        }
        t.downtimes()
            .into_iter()
            .map(|d| (d.start_ms, d.end_ms, d.data_gap, d.reason, d.first_out.map(|f| f.id)))
            .collect()
    }

    use MachineState::{Down, Idle, Planned, Running, Unknown};

    #[test]
    fn downtime_definitions_hold_for_a_table_of_state_sequences() {
        let r = |s: &str| Some(s.to_string());
        let cases: Vec<(&str, Vec<Input>, Vec<Row>)> = vec![
            ("running only", vec![state(1, 0, Running)], vec![]),
            (
                "down then running closes",
                vec![state(1, 0, Running), state(2, 10, Down), state(3, 25, Running)],
                vec![(10, Some(25), false, r("r2"), None)],
            ),
            (
                "down ends at idle and at planned too",
                vec![state(1, 10, Down), state(2, 20, Idle), state(3, 30, Down), state(4, 40, Planned)],
                vec![(10, Some(20), false, r("r1"), None), (30, Some(40), false, r("r3"), None)],
            ),
            (
                "down down is one event with the first reason",
                vec![state(1, 10, Down), state(2, 15, Down), state(3, 20, Running)],
                vec![(10, Some(20), false, r("r1"), None)],
            ),
            (
                "unknown inside marks a data gap and does not end it",
                vec![state(1, 10, Down), state(2, 15, Unknown), state(3, 18, Down), state(4, 30, Running)],
                vec![(10, Some(30), true, r("r1"), None)],
            ),
            (
                "unknown then running ends it with a gap",
                vec![state(1, 10, Down), state(2, 15, Unknown), state(3, 30, Idle)],
                vec![(10, Some(30), true, r("r1"), None)],
            ),
            (
                "an open event stays open",
                vec![state(1, 0, Running), state(2, 10, Down)],
                vec![(10, None, false, r("r2"), None)],
            ),
            (
                "open with trailing unknown",
                vec![state(1, 10, Down), state(2, 20, Unknown)],
                vec![(10, None, true, r("r1"), None)],
            ),
            (
                "unknown before down is not a gap",
                vec![state(1, 5, Unknown), state(2, 10, Down), state(3, 20, Running)],
                vec![(10, Some(20), false, r("r2"), None)],
            ),
            (
                "source lost is unknown, not down",
                vec![ev(1, 5, EventBody::Source { source: "plc".into(), connected: false, error: None })],
                vec![],
            ),
            (
                "first-out is the nearest activation within 60 s",
                vec![
                    alarm(1, 1_000, "a", true),
                    alarm(2, 5_000, "b", true),
                    alarm(3, 6_000, "b", false),
                    state(4, 10_000, Down),
                ],
                vec![(10_000, None, false, r("r4"), r("b"))],
            ),
            (
                "an alarm older than the window is not first-out",
                vec![alarm(1, 0, "a", true), state(2, 60_001, Down)],
                vec![(60_001, None, false, r("r2"), None)],
            ),
            (
                "an alarm exactly at the window edge counts",
                vec![alarm(1, 0, "a", true), state(2, 60_000, Down)],
                vec![(60_000, None, false, r("r2"), r("a"))],
            ),
            (
                "an alarm after the stop is not first-out",
                vec![state(1, 10, Down), alarm(2, 11, "a", true)],
                vec![(10, None, false, r("r1"), None)],
            ),
            (
                "an alarm at the same ms counts",
                vec![state(1, 10, Down), alarm(2, 10, "a", true)],
                vec![(10, None, false, r("r1"), r("a"))],
            ),
        ];
        for (name, inputs, want) in cases {
            assert_eq!(run(inputs), want, "{name}");
        }
    }

    #[test]
    fn late_events_split_and_merge_downtimes() {
        // A late running in the middle splits one event into two.
        let got = run(vec![state(1, 10, Down), state(3, 30, Down), state(4, 40, Running), state(2, 20, Running)]);
        assert_eq!(got.iter().map(|d| (d.0, d.1)).collect::<Vec<_>>(), vec![(10, Some(20)), (30, Some(40))]);
        // A late down before a running extends nothing but creates an event.
        let got = run(vec![state(1, 10, Running), state(3, 30, Running), state(2, 20, Down)]);
        assert_eq!(got.iter().map(|d| (d.0, d.1)).collect::<Vec<_>>(), vec![(20, Some(30))]);
    }

    #[test]
    fn changes_report_open_close_and_removal() {
        let mut t = Timeline::new(60_000);
        assert!(t.apply(state(1, 0, Running)).is_empty());
        let c = t.apply(state(2, 10, Down));
        assert_eq!(c.upserted.len(), 1);
        assert_eq!(c.upserted[0].end_ms, None);
        let c = t.apply(state(3, 20, Running));
        assert_eq!(c.upserted[0].end_ms, Some(20));
        // A duplicate changes nothing.
        assert!(t.apply(state(3, 20, Running)).is_empty());
        // A late running before the stop makes the stop start later: the old event is removed.
        let c = t.apply(state(4, 5, Down));
        assert_eq!((c.upserted.len(), c.removed.len()), (1, 1));
        assert_eq!(c.upserted[0].start_ms, 5);
        // A late alarm re-attributes the first-out.
        let c = t.apply(alarm(5, 1, "late", true));
        assert_eq!(c.upserted[0].first_out.as_ref().map(|f| f.id.as_str()), Some("late"));
    }

    /// The agent's "I was not running" mark after an unclean stop: unknown that ends a stop (with a data gap)
    /// and makes a down after it a new event (with a data gap), in any arrival order.
    #[test]
    fn an_agent_restart_gap_ends_a_stop_and_is_never_merged_across() {
        let dead =
            |seq, ts| ev(seq, ts, EventBody::Source { source: AGENT_SOURCE.into(), connected: false, error: None });
        let plc_lost = |seq, ts| ev(seq, ts, EventBody::Source { source: "plc".into(), connected: false, error: None });
        let r = |s: &str| Some(s.to_string());
        let cases: Vec<(&str, Vec<Input>, Vec<Row>)> = vec![
            (
                "a stop before the gap ends at it; the stop after it is another event",
                vec![state(1, 10, Down), dead(2, 20), state(3, 50, Down), state(4, 70, Running)],
                vec![(10, Some(20), true, r("r1"), None), (50, Some(70), true, r("r3"), None)],
            ),
            (
                "a stop before the gap, running after it",
                vec![state(1, 0, Running), state(2, 10, Down), dead(3, 20), state(4, 50, Running)],
                vec![(10, Some(20), true, r("r2"), None)],
            ),
            (
                "running before the gap, down after it: the stop may have begun in the gap",
                vec![state(1, 10, Running), dead(2, 20), state(3, 50, Down)],
                vec![(50, None, true, r("r3"), None)],
            ),
            (
                "the new run's first state at the gap's own millisecond still comes after it",
                vec![state(1, 10, Down), dead(2, 20), state(3, 20, Down)],
                vec![(10, Some(20), true, r("r1"), None), (20, None, true, r("r3"), None)],
            ),
            (
                "a PLC link loss after the gap keeps the new stop's data gap",
                vec![state(1, 10, Down), dead(2, 20), plc_lost(3, 30), state(4, 50, Down)],
                vec![(10, Some(20), true, r("r1"), None), (50, None, true, r("r4"), None)],
            ),
            (
                "a PLC link loss alone still does not end a stop",
                vec![state(1, 10, Down), plc_lost(2, 20), state(3, 50, Down)],
                vec![(10, None, true, r("r1"), None)],
            ),
        ];
        for (name, inputs, want) in cases {
            assert_eq!(run(inputs.clone()), want, "{name}");
            assert_eq!(run(inputs.into_iter().rev().collect()), want, "{name}, in reverse arrival order");
        }
    }

    #[test]
    fn a_last_will_makes_assets_unknown_from_that_moment() {
        let mut t = Timeline::new(60_000);
        t.apply(state(1, 10, Down));
        let off = Input::Offline { site: SiteId::parse("s").unwrap(), gateway: gw(), ts_ms: 20 };
        t.apply(off.clone());
        t.apply(state(2, 50, Running));
        let d = t.downtimes();
        assert_eq!((d[0].start_ms, d[0].end_ms, d[0].data_gap), (10, Some(50), true));
        let iv = t.intervals(&SiteId::parse("s").unwrap(), &AssetId::parse("press1").unwrap(), 0, 100);
        let got: Vec<_> = iv.iter().map(|i| (i.state, i.start_ms, i.end_ms)).collect();
        assert_eq!(got, vec![(Down, 10, Some(20)), (Unknown, 20, Some(50)), (Running, 50, Some(100))]);
        // The will arriving before the asset's events gives the same answer.
        let mut t2 = Timeline::new(60_000);
        t2.apply(off);
        t2.apply(state(2, 50, Running));
        t2.apply(state(1, 10, Down));
        assert_eq!(t2.downtimes(), d);
    }
}
