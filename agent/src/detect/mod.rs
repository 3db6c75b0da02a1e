//! Pure detection: raw point values ([`Sample`]) become events ([`crate::Observation`]).
//! No tokio and no I/O here; the source tasks feed samples in and take observations out.
//!
//! Invariants:
//! - an event only on change: a state event when an asset's (state, reason) changes, an alarm event when an
//!   alarm's active flag changes (an alarm first seen inactive makes no event);
//! - debounce: a point's new value counts only once it has held for the meaning's `debounce` (judged on later
//!   samples or on [`Detector::tick`]); it then counts from the time it was first seen. A point's first value
//!   after (re)connect counts at once;
//! - comms loss (`Sample::Link` with `connected = false`) gives a `source` event and the state `unknown` for
//!   every asset the source feeds, and forgets the source's values, so the first poll after the reconnect
//!   reports the current state again. Alarm flags are kept: no alarm is cleared by a lost link, and the first
//!   value after the reconnect makes exactly the alarm edges since the last report (a clear for what cleared,
//!   nothing for what is unchanged);
//! - across restarts the same holds: [`Detector::restore`] starts the alarm flags from what the outbox says was
//!   last reported, so an alarm still active makes no new activation and one that cleared meanwhile a clear.

pub mod meaning;
pub mod state;

pub use meaning::{AlarmInfo, Meaning, Preset, StateMeaning};

use crate::{Observation, Reported};
use shiftlens_common::{Alarm, AssetId, EventBody, MachineState};
use std::collections::{BTreeMap, HashMap};

/// A value read from a PLC point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
}

impl Value {
    /// The value as a whole number: bools are 0/1, floats must be whole.
    pub fn as_int(self) -> Option<i64> {
        match self {
            Value::Bool(b) => Some(i64::from(b)),
            Value::Int(i) => Some(i),
            #[allow(clippy::cast_possible_truncation)]
            Value::Float(f) => (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64),
        }
    }

    #[allow(clippy::cast_precision_loss)]
    pub fn as_f64(self) -> f64 {
        match self {
            Value::Bool(b) => f64::from(u8::from(b)),
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
        }
    }

    fn truthy(self) -> bool {
        self.as_f64() != 0.0
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
        }
    }
}

/// What a source task reports to the detector.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// A point's current value.
    Value { source: String, point: String, asset: AssetId, ts_ms: i64, value: Value },
    /// The connection to a source came up or went down; `assets` are the assets it feeds.
    Link { source: String, assets: Vec<AssetId>, ts_ms: i64, connected: bool, error: Option<String> },
    /// An alarm edge the source decided itself (OPC UA Alarms & Conditions): stored as it is.
    Alarm { source: String, asset: AssetId, ts_ms: i64, alarm: shiftlens_common::Alarm },
    /// The first alarm event from `from`, a source name mapped to no asset (later ones are only counted).
    Unmapped { source: String, from: String },
    /// A ConditionRefresh ended: the conditions now active (asset, alarm) and the unmapped sources with their
    /// event counts, for `probe`.
    Refreshed { source: String, active: Vec<(AssetId, shiftlens_common::Alarm)>, unmapped: Vec<(String, u64)> },
}

/// One configured point as the detector sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PointSpec {
    pub source: String,
    pub point: String,
    pub asset: AssetId,
    pub meaning: Meaning,
}

/// A point as the detector keeps it: its source and asset as indices into `Detector::sources` and
/// `Detector::asset_ids` (a large device has a few assets and one source over thousands of points), and the point
/// name only in `Detector::by_key` (the detector needs neither once a sample has found its point).
#[derive(Debug)]
struct PointState {
    source: u32,
    asset: u32,
    /// Where this point's alarms start in `Detector::slots` (one slot per alarm the meaning defines, in
    /// [`alarm_ids`] order).
    slots: u32,
    /// For a threshold: whether it was last judged active (its hysteresis starts from that).
    threshold_active: bool,
    meaning: Meaning,
    value: Option<Value>,
}

impl PointState {
    /// The meaning's debounce in ms (not kept apart: only a changed value needs it).
    fn debounce_ms(&self) -> i64 {
        i64::try_from(self.meaning.debounce().as_millis()).unwrap_or(i64::MAX)
    }
}

#[derive(Debug, Default)]
struct AssetState {
    points: Vec<u32>,
    state: Option<(MachineState, Option<String>)>,
}

/// The detector for one or more sources: feed it samples, take observations.
///
/// Alarm flags (whether each alarm was last reported active) are kept per (asset, alarm id) as one entry of
/// `flags`, found by index: each point's alarms have slots in `slots` that hold the flag's index, so two points
/// of one asset that name the same alarm share its flag, and no alarm id is copied per flag.
#[derive(Debug, Default)]
pub struct Detector {
    points: Vec<PointState>,
    slots: Vec<u32>,
    flags: Vec<bool>,
    /// (asset index, alarm id) → index in `flags`, only while points are added.
    flag_of: HashMap<(u32, String), u32>,
    /// Point index → a new value waiting out its debounce, with the time it was first seen (rare, so not a
    /// field of every point).
    pending: BTreeMap<u32, (Value, i64)>,
    /// Each distinct source id and asset id of `points`, once.
    sources: Vec<String>,
    asset_ids: Vec<AssetId>,
    /// (source, point) → index in `points`; empty for a detector made with [`Detector::indexed`].
    by_key: HashMap<(String, String), usize>,
    assets: BTreeMap<AssetId, AssetState>,
    links: HashMap<String, bool>,
}

impl Detector {
    pub fn new(specs: impl IntoIterator<Item = PointSpec>) -> Self {
        let mut d = Self::default();
        for spec in specs {
            d.by_key.insert((spec.source.clone(), spec.point.clone()), d.points.len());
            d.push(&spec.source, spec.asset, spec.meaning);
        }
        d.finish();
        d
    }

    /// A detector for one source whose samples come by index ([`Detector::apply_values`]): the point names
    /// are not kept, so a large Modbus device costs no name lookup per value and no name copies.
    /// `points` are (asset, meaning) in index order. `Sample::Value`s given to [`Detector::apply`] are ignored.
    pub fn indexed(source: &str, points: impl IntoIterator<Item = (AssetId, Meaning)>) -> Self {
        let mut d = Self::default();
        let points = points.into_iter();
        d.points.reserve_exact(points.size_hint().0);
        for (asset, meaning) in points {
            d.push(source, asset, meaning);
        }
        d.finish();
        d
    }

    /// Ends adding points: drops the alarm id index and trims every list to its length.
    fn finish(&mut self) {
        self.flag_of = HashMap::new();
        self.points.shrink_to_fit();
        self.slots.shrink_to_fit();
        self.flags.shrink_to_fit();
    }

    fn push(&mut self, source: &str, asset: AssetId, meaning: Meaning) {
        #[allow(clippy::cast_possible_truncation)]
        let i = self.points.len() as u32;
        let source = index_of(&mut self.sources, source, |s| s == source, str::to_string);
        let asset_ix = index_of(&mut self.asset_ids, &asset, |a| *a == asset, AssetId::clone);
        self.assets.entry(asset).or_default().points.push(i);
        #[allow(clippy::cast_possible_truncation)]
        let slots = self.slots.len() as u32;
        for id in alarm_ids(&meaning) {
            let flags = &mut self.flags;
            let flag = *self.flag_of.entry((asset_ix, id.to_string())).or_insert_with(|| {
                flags.push(false);
                #[allow(clippy::cast_possible_truncation)]
                let f = (flags.len() - 1) as u32;
                f
            });
            self.slots.push(flag);
        }
        self.points.push(PointState { source, asset: asset_ix, slots, threshold_active: false, meaning, value: None });
    }

    /// The index in `flags` of the `k`th alarm of point `i`.
    fn flag(&self, i: usize, k: usize) -> usize {
        self.slots[self.points[i].slots as usize + k] as usize
    }

    /// Starts the alarm flags (and threshold states) of this detector's alarms from `reported`, the flags last
    /// stored before this run; alarms it does not define are ignored.
    pub fn restore(&mut self, reported: &Reported) {
        for i in 0..self.points.len() {
            let p = &self.points[i];
            let Some(flags) = reported.get(&self.asset_ids[p.asset as usize]) else { continue };
            let restored: Vec<(usize, bool)> = alarm_ids(&p.meaning)
                .enumerate()
                .filter_map(|(k, id)| flags.get(id).map(|&active| (self.flag(i, k), active)))
                .collect();
            for (flag, active) in restored {
                self.flags[flag] = active;
                if matches!(self.points[i].meaning, Meaning::Threshold(_)) {
                    self.points[i].threshold_active = active;
                }
            }
        }
    }

    /// The flag of alarm `id` of `asset`, if one of this detector's points defines it.
    fn flag_by_id(&self, asset: &AssetId, id: &str) -> Option<usize> {
        let points = &self.assets.get(asset)?.points;
        points.iter().find_map(|&i| {
            let k = alarm_ids(&self.points[i as usize].meaning).position(|a| a == id)?;
            Some(self.flag(i as usize, k))
        })
    }

    /// Applies samples that belong together (one poll cycle, one notification); states are judged once
    /// after all of them, so a cycle that changes two state points makes one state event.
    pub fn apply(&mut self, samples: impl IntoIterator<Item = Sample>) -> Vec<Observation> {
        let mut out = Vec::new();
        let mut dirty: BTreeMap<AssetId, i64> = BTreeMap::new();
        for sample in samples {
            match sample {
                Sample::Value { source, point, ts_ms, value, .. } => {
                    let Some(&i) = self.by_key.get(&(source, point)) else { continue };
                    self.value(i, value, ts_ms, &mut out, &mut dirty);
                }
                Sample::Alarm { asset, ts_ms, alarm, .. } => {
                    // Stored as it is; a point that defines the same alarm judges its edges from this flag.
                    if let Some(flag) = self.flag_by_id(&asset, &alarm.id) {
                        self.flags[flag] = alarm.active;
                    }
                    out.push(Observation { ts_ms, asset, body: EventBody::Alarm(alarm) });
                }
                Sample::Unmapped { .. } | Sample::Refreshed { .. } => {}
                Sample::Link { source, assets, ts_ms, connected, error } => {
                    if self.links.insert(source.clone(), connected) == Some(connected) {
                        continue;
                    }
                    for asset in &assets {
                        let body = EventBody::Source { source: source.clone(), connected, error: error.clone() };
                        out.push(Observation { ts_ms, asset: asset.clone(), body });
                        if !connected {
                            let a = self.assets.entry(asset.clone()).or_default();
                            if a.state.as_ref().map(|s| s.0) != Some(MachineState::Unknown) {
                                a.state = Some((MachineState::Unknown, None));
                                let body = EventBody::State { state: MachineState::Unknown, reason: None };
                                out.push(Observation { ts_ms, asset: asset.clone(), body });
                            }
                            dirty.remove(asset);
                        }
                    }
                    let ix = self.sources.iter().position(|s| *s == source);
                    if !connected {
                        #[allow(clippy::cast_possible_truncation)]
                        for p in self.points.iter_mut().filter(|p| Some(p.source as usize) == ix) {
                            p.value = None;
                        }
                        let points = &self.points;
                        self.pending.retain(|&i, _| Some(points[i as usize].source as usize) != ix);
                    }
                }
            }
        }
        for (asset, ts_ms) in dirty {
            self.judge_state(&asset, ts_ms, &mut out);
        }
        out
    }

    /// Applies one poll cycle's values of a detector made with [`Detector::indexed`]: `(index, value)`, all
    /// read at `ts_ms`. The same as [`Detector::apply`] with the matching `Sample::Value`s.
    pub fn apply_values(&mut self, ts_ms: i64, values: impl IntoIterator<Item = (usize, Value)>) -> Vec<Observation> {
        let mut out = Vec::new();
        let mut dirty: BTreeMap<AssetId, i64> = BTreeMap::new();
        for (i, value) in values {
            if i < self.points.len() {
                self.value(i, value, ts_ms, &mut out, &mut dirty);
            }
        }
        for (asset, ts_ms) in dirty {
            self.judge_state(&asset, ts_ms, &mut out);
        }
        out
    }

    /// One value of point `i`, through its debounce.
    fn value(
        &mut self,
        i: usize,
        value: Value,
        ts_ms: i64,
        out: &mut Vec<Observation>,
        dirty: &mut BTreeMap<AssetId, i64>,
    ) {
        let p = &mut self.points[i];
        #[allow(clippy::cast_possible_truncation)]
        let key = i as u32;
        let commit = match (p.value, self.pending.get(&key).copied()) {
            (None, _) => Some(ts_ms),
            (Some(v), _) if v == value => {
                self.pending.remove(&key);
                None
            }
            (Some(_), Some((pv, since))) if pv == value => (ts_ms - since >= p.debounce_ms()).then_some(since),
            (Some(_), _) if p.debounce_ms() == 0 => Some(ts_ms),
            (Some(_), _) => {
                self.pending.insert(key, (value, ts_ms));
                None
            }
        };
        if let Some(at) = commit {
            self.commit(i, value, at, out, dirty);
        }
    }

    /// Lets pending values whose debounce has run out by `now_ms` count.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Observation> {
        let mut out = Vec::new();
        let mut dirty = BTreeMap::new();
        let due: Vec<(u32, Value, i64)> = (self.pending.iter())
            .filter(|(&i, &(_, since))| now_ms - since >= self.points[i as usize].debounce_ms())
            .map(|(&i, &(v, since))| (i, v, since))
            .collect();
        for (i, v, since) in due {
            self.commit(i as usize, v, since, &mut out, &mut dirty);
        }
        for (asset, ts_ms) in dirty {
            self.judge_state(&asset, ts_ms, &mut out);
        }
        out
    }

    fn commit(
        &mut self,
        i: usize,
        value: Value,
        ts_ms: i64,
        out: &mut Vec<Observation>,
        dirty: &mut BTreeMap<AssetId, i64>,
    ) {
        let p = &mut self.points[i];
        p.value = Some(value);
        #[allow(clippy::cast_possible_truncation)]
        self.pending.remove(&(i as u32));
        let asset_id = self.asset_ids[p.asset as usize].clone();
        let alarm = |info: AlarmInfo, active: bool| (info, active);
        let edges: Vec<(AlarmInfo, bool)> = match &p.meaning {
            Meaning::State(_) | Meaning::Reason(_) | Meaning::OperationMode => {
                let e = dirty.entry(asset_id.clone()).or_insert(ts_ms);
                *e = (*e).max(ts_ms);
                Vec::new()
            }
            Meaning::Info => Vec::new(),
            Meaning::Alarm(m) => {
                let info =
                    AlarmInfo { id: m.id.clone(), text: m.text.clone(), severity: m.severity, class: m.class.clone() };
                vec![alarm(info, value.truthy())]
            }
            Meaning::AlarmWord(m) => {
                let word = value.as_int().unwrap_or(0);
                m.bits
                    .iter()
                    .filter_map(|(bit, info)| bit.parse::<u32>().ok().map(|b| alarm(info.clone(), word >> b & 1 == 1)))
                    .collect()
            }
            Meaning::Threshold(m) => {
                let v = value.as_f64();
                let was = p.threshold_active;
                let active = match (m.above, m.below) {
                    (Some(lim), _) if was => v > lim - m.hysteresis,
                    (Some(lim), _) => v > lim,
                    (None, Some(lim)) if was => v < lim + m.hysteresis,
                    (None, Some(lim)) => v < lim,
                    (None, None) => false,
                };
                p.threshold_active = active;
                let info =
                    AlarmInfo { id: m.id.clone(), text: m.text.clone(), severity: m.severity, class: m.class.clone() };
                vec![alarm(info, active)]
            }
        };
        for (k, (info, active)) in edges.into_iter().enumerate() {
            let flag = self.flag(i, k);
            let before = std::mem::replace(&mut self.flags[flag], active);
            if before != active {
                let body = EventBody::Alarm(Alarm {
                    id: info.id,
                    active,
                    severity: info.severity,
                    text: info.text,
                    class: info.class,
                    ..Default::default()
                });
                out.push(Observation { ts_ms, asset: asset_id.clone(), body });
            }
        }
    }

    fn judge_state(&mut self, asset_id: &AssetId, ts_ms: i64, out: &mut Vec<Observation>) {
        let Some(asset) = self.assets.get_mut(asset_id) else { return };
        let points = || asset.points.iter().map(|&i| &self.points[i as usize]);
        let int_of = |want: fn(&Meaning) -> bool| points().find(|p| want(&p.meaning)).and_then(|p| p.value?.as_int());
        let mode = int_of(|m| matches!(m, Meaning::OperationMode));
        let reason_code = int_of(|m| matches!(m, Meaning::Reason(_)));
        let mut any = false;
        let mut best: Option<MachineState> = None;
        for p in points() {
            let (Meaning::State(m), Some(v)) = (&p.meaning, p.value) else { continue };
            any = true;
            let code = v.as_int().unwrap_or(-1);
            if let Some(c) = state::candidate(m, code, mode) {
                if best.is_none_or(|b| state::strength(c) > state::strength(b)) {
                    best = Some(c);
                }
            }
        }
        if !any {
            return;
        }
        let st = best.unwrap_or(MachineState::Idle);
        let reason = match (st, reason_code) {
            (MachineState::Running | MachineState::Unknown, _) | (_, None | Some(0)) => None,
            (_, Some(code)) => {
                let codes = points().find_map(|p| match &p.meaning {
                    Meaning::Reason(r) => Some(&r.codes),
                    _ => None,
                });
                let text = codes.and_then(|c| c.iter().find(|(k, _)| k.parse::<i64>().ok() == Some(code)));
                Some(text.map_or_else(|| code.to_string(), |(_, t)| t.clone()))
            }
        };
        let now = Some((st, reason.clone()));
        if asset.state != now {
            asset.state = now;
            out.push(Observation { ts_ms, asset: asset_id.clone(), body: EventBody::State { state: st, reason } });
        }
    }
}

/// The ids of the alarms a meaning defines, in slot order (an alarm word's in bit order, as
/// [`Detector::commit`] judges them).
fn alarm_ids(meaning: &Meaning) -> impl Iterator<Item = &str> {
    let (one, bits) = match meaning {
        Meaning::Alarm(m) => (Some(m.id.as_str()), None),
        Meaning::Threshold(m) => (Some(m.id.as_str()), None),
        Meaning::AlarmWord(m) => (None, Some(&m.bits)),
        _ => (None, None),
    };
    let bits = bits.into_iter().flatten().filter(|(bit, _)| bit.parse::<u32>().is_ok()).map(|(_, a)| a.id.as_str());
    one.into_iter().chain(bits)
}

/// The index of the entry of `list` that `is` matches, adding `make()` of `key` at the end if none does.
fn index_of<T, K: ?Sized>(list: &mut Vec<T>, key: &K, is: impl Fn(&T) -> bool, make: impl Fn(&K) -> T) -> u32 {
    // Points come grouped by source and asset, so the last entry is the usual match.
    let i = list.iter().rposition(is).unwrap_or_else(|| {
        list.push(make(key));
        list.len() - 1
    });
    #[allow(clippy::cast_possible_truncation)]
    let i = i as u32;
    i
}

#[cfg(test)]
mod tests;
