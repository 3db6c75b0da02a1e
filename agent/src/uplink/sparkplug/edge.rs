//! The edge node's protocol state, apart from I/O: the device catalogue with its aliases and current
//! values, the message `seq` (0-255, wrapping) and the payloads of births, data and death.
//!
//! Invariants: NBIRTH carries `seq` 0 and the session's `bdSeq`; every later message takes the next `seq`
//! modulo 256; aliases are unique across the edge node and never change while the process runs (new metrics
//! get new aliases and are declared by a new birth before their first data); every metric carries its
//! datatype, so a decoder needs no birth to read a value.

use shiftlens_common::sparkplug::proto::{Metric, Payload};
use shiftlens_common::sparkplug::{self as sp, metric, MessageType, SpTopic};
use shiftlens_common::{Event, EventBody};
use std::collections::BTreeMap;

/// The asset id of the outbox's gap events, which belong to the edge node rather than to a device.
const NODE_ASSET: &str = crate::outbox::GAP_ASSET;

/// One message to publish, with the outbox seqs it carries (deleted once the broker acknowledged it).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub seqs: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq)]
enum Val {
    Str(Option<String>),
    Bool(Option<bool>),
}

#[derive(Debug, Clone)]
struct Current {
    alias: u64,
    value: Val,
    ts_ms: i64,
}

impl Current {
    fn metric(&self, name: Option<&str>) -> Metric {
        match &self.value {
            Val::Str(v) => Metric::string(name, Some(self.alias), self.ts_ms, v.as_deref()),
            Val::Bool(v) => Metric::boolean(name, Some(self.alias), self.ts_ms, *v),
        }
    }
}

/// The edge node.
#[derive(Debug)]
pub struct Edge {
    group: String,
    node: String,
    bd_seq: u64,
    seq: u64,
    /// Device id → metric name → alias and current value.
    devices: BTreeMap<String, BTreeMap<String, Current>>,
    next_alias: u64,
    /// Events dropped by the outbox since this process started, for the node's birth.
    dropped: u64,
}

/// Alias of `Node Control/Rebirth` and of `Outbox/Dropped Events`.
const REBIRTH_ALIAS: u64 = 1;
const DROPPED_ALIAS: u64 = 2;

impl Edge {
    /// An edge node with one device per `(asset, alarm ids)`; states are null and alarms clear until
    /// [`Edge::observe`] says otherwise.
    pub fn new(group: &str, node: &str, catalogue: impl IntoIterator<Item = (String, Vec<String>)>) -> Self {
        let mut edge = Self {
            group: group.into(),
            node: node.into(),
            bd_seq: 0,
            seq: 0,
            devices: BTreeMap::new(),
            next_alias: DROPPED_ALIAS + 1,
            dropped: 0,
        };
        for (device, alarms) in catalogue {
            edge.device(&device);
            for a in alarms {
                edge.metric(&device, &format!("{}{a}", metric::ALARM_PREFIX), Val::Bool(Some(false)));
            }
        }
        edge
    }

    pub fn set_bd_seq(&mut self, bd_seq: u64) {
        self.bd_seq = bd_seq % 256;
    }

    pub fn bd_seq(&self) -> u64 {
        self.bd_seq
    }

    /// Every device and its metric names, in birth order.
    pub fn declared(&self) -> Vec<(String, Vec<String>)> {
        self.devices.iter().map(|(d, m)| (d.clone(), m.keys().cloned().collect())).collect()
    }

    fn device(&mut self, device: &str) -> bool {
        if self.devices.contains_key(device) {
            return false;
        }
        self.devices.insert(device.to_string(), BTreeMap::new());
        self.metric(device, metric::STATE, Val::Str(None));
        self.metric(device, metric::REASON, Val::Str(None));
        self.metric(device, metric::CONNECTED, Val::Bool(None));
        true
    }

    /// Declares a metric if new; true when it was.
    fn metric(&mut self, device: &str, name: &str, initial: Val) -> bool {
        let alias = self.next_alias;
        let metrics = self.devices.entry(device.to_string()).or_default();
        if metrics.contains_key(name) {
            return false;
        }
        metrics.insert(name.to_string(), Current { alias, value: initial, ts_ms: 0 });
        self.next_alias += 1;
        true
    }

    /// The metric values an event sets, by metric name.
    fn values(body: &EventBody) -> Vec<(String, Val)> {
        match body {
            EventBody::State { state, reason } => vec![
                (metric::STATE.into(), Val::Str(Some(state.as_str().into()))),
                (metric::REASON.into(), Val::Str(Some(reason.clone().unwrap_or_default()))),
            ],
            EventBody::Alarm(a) => vec![(format!("{}{}", metric::ALARM_PREFIX, a.id), Val::Bool(Some(a.active)))],
            EventBody::Source { connected, .. } => vec![(metric::CONNECTED.into(), Val::Bool(Some(*connected)))],
            EventBody::Gap { .. } => Vec::new(),
        }
    }

    /// Declares the devices and metrics `events` need; true when something was new (a birth must then
    /// declare it before data uses it).
    pub fn learn(&mut self, events: &[Event]) -> bool {
        let mut new = false;
        for e in events.iter().filter(|e| e.asset.as_str() != NODE_ASSET) {
            new |= self.device(e.asset.as_str());
            for (name, v) in Self::values(&e.body) {
                let initial = match v {
                    Val::Str(_) => Val::Str(None),
                    Val::Bool(_) => Val::Bool(None),
                };
                new |= self.metric(e.asset.as_str(), &name, initial);
            }
        }
        new
    }

    /// Takes the values of `events` as current (for the next birth) without publishing them; the events must
    /// be [`Edge::learn`]ed.
    pub fn observe(&mut self, events: &[Event]) {
        for e in events {
            self.apply(e);
        }
    }

    /// Applies an event to the current values; returns its metrics (by alias) for a DDATA.
    fn apply(&mut self, e: &Event) -> Vec<Metric> {
        let Some(metrics) = self.devices.get_mut(e.asset.as_str()) else { return Vec::new() };
        let mut out = Vec::new();
        for (name, v) in Self::values(&e.body) {
            if let Some(c) = metrics.get_mut(&name) {
                if c.ts_ms <= e.ts_ms {
                    (c.value, c.ts_ms) = (v.clone(), e.ts_ms);
                }
                out.push(Current { alias: c.alias, value: v, ts_ms: e.ts_ms }.metric(None));
            }
        }
        out
    }

    fn next_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq = (self.seq + 1) % 256;
        s
    }

    fn topic(&self, kind: MessageType, device: Option<&str>) -> String {
        match device {
            Some(d) => SpTopic::device(&self.group, kind, &self.node, d),
            None => SpTopic::node(&self.group, kind, &self.node),
        }
        .to_string()
    }

    /// NBIRTH (seq 0, bdSeq, rebirth control, drop counter) and one DBIRTH per device declaring every metric
    /// with its alias and current value.
    pub fn birth(&mut self, now_ms: i64) -> Vec<Message> {
        self.seq = 0;
        let node = Payload {
            timestamp: u64::try_from(now_ms).ok(),
            metrics: vec![
                Metric::uint64(Some(metric::BD_SEQ), None, now_ms, self.bd_seq),
                Metric::boolean(Some(metric::REBIRTH), Some(REBIRTH_ALIAS), now_ms, Some(false)),
                Metric::uint64(Some(metric::DROPPED), Some(DROPPED_ALIAS), now_ms, self.dropped),
            ],
            seq: Some(self.next_seq()),
            uuid: None,
            body: None,
        };
        let mut out =
            vec![Message { topic: self.topic(MessageType::NBirth, None), payload: sp::encode(&node), seqs: vec![] }];
        let devices: Vec<(String, Vec<Metric>)> = self
            .devices
            .iter()
            .map(|(d, m)| {
                let metrics = m
                    .iter()
                    .map(|(name, c)| {
                        let mut metric = c.metric(Some(name));
                        if c.ts_ms == 0 {
                            metric.timestamp = u64::try_from(now_ms).ok();
                        }
                        metric
                    })
                    .collect();
                (d.clone(), metrics)
            })
            .collect();
        for (d, metrics) in devices {
            let p = Payload {
                timestamp: u64::try_from(now_ms).ok(),
                metrics,
                seq: Some(self.next_seq()),
                uuid: None,
                body: None,
            };
            out.push(Message {
                topic: self.topic(MessageType::DBirth, Some(&d)),
                payload: sp::encode(&p),
                seqs: vec![],
            });
        }
        out
    }

    /// The NDEATH payload of session `bd_seq` (the MQTT last will, and the message of a clean stop).
    pub fn death(bd_seq: u64, now_ms: i64) -> Vec<u8> {
        sp::encode(&Payload {
            timestamp: u64::try_from(now_ms).ok(),
            metrics: vec![Metric::uint64(Some(metric::BD_SEQ), None, now_ms, bd_seq % 256)],
            seq: None,
            uuid: None,
            body: None,
        })
    }

    /// The NDEATH topic.
    pub fn death_topic(&self) -> String {
        self.topic(MessageType::NDeath, None)
    }

    /// The NCMD topic this node listens on.
    pub fn command_topic(&self) -> String {
        self.topic(MessageType::NCmd, None)
    }

    /// DDATA (and NDATA for outbox gaps) for `events` in seq order: one message per run of events of the same
    /// device, metrics by alias. Events with seq at most `historical_upto` are marked `is_historical`. The
    /// events must be [`Edge::learn`]ed first.
    pub fn data(&mut self, events: &[Event], historical_upto: u64, now_ms: i64) -> Vec<Message> {
        let mut out: Vec<Message> = Vec::new();
        let mut run: Option<(String, Vec<Metric>, Vec<u64>)> = None;
        for e in events {
            let historical = e.seq <= historical_upto;
            if e.asset.as_str() == NODE_ASSET {
                if let Some((d, m, s)) = run.take() {
                    out.push(self.ddata(&d, m, s, now_ms));
                }
                let count = match &e.body {
                    EventBody::Gap { first, last, .. } => last.saturating_sub(*first) + 1,
                    _ => 0,
                };
                self.dropped += count;
                let metric = Metric::uint64(None, Some(DROPPED_ALIAS), e.ts_ms, count).historical(historical);
                let p = Payload {
                    timestamp: u64::try_from(now_ms).ok(),
                    metrics: vec![metric],
                    seq: Some(self.next_seq()),
                    uuid: None,
                    body: None,
                };
                out.push(Message {
                    topic: self.topic(MessageType::NData, None),
                    payload: sp::encode(&p),
                    seqs: vec![e.seq],
                });
                continue;
            }
            let metrics: Vec<Metric> = self.apply(e).into_iter().map(|m| m.historical(historical)).collect();
            match &mut run {
                Some((d, m, s)) if d == e.asset.as_str() => {
                    m.extend(metrics);
                    s.push(e.seq);
                }
                _ => {
                    if let Some((d, m, s)) = run.take() {
                        out.push(self.ddata(&d, m, s, now_ms));
                    }
                    run = Some((e.asset.as_str().to_string(), metrics, vec![e.seq]));
                }
            }
        }
        if let Some((d, m, s)) = run.take() {
            out.push(self.ddata(&d, m, s, now_ms));
        }
        out
    }

    fn ddata(&mut self, device: &str, metrics: Vec<Metric>, seqs: Vec<u64>, now_ms: i64) -> Message {
        let p = Payload {
            timestamp: u64::try_from(now_ms).ok(),
            metrics,
            seq: Some(self.next_seq()),
            uuid: None,
            body: None,
        };
        Message { topic: self.topic(MessageType::DData, Some(device)), payload: sp::encode(&p), seqs }
    }
}

/// Whether an NCMD payload asks for a rebirth (`Node Control/Rebirth` = true, by name or by its alias).
pub fn asks_rebirth(payload: &[u8]) -> bool {
    sp::decode(payload).is_ok_and(|p| {
        p.metrics.iter().any(|m| {
            (m.name.as_deref() == Some(metric::REBIRTH) || (m.name.is_none() && m.alias == Some(REBIRTH_ALIAS)))
                && m.as_bool() == Some(true)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shiftlens_common::{Alarm, AssetId, MachineState};

    fn ev(seq: u64, asset: &str, body: EventBody) -> Event {
        Event { seq, ts_ms: 1_700_000_000_000 + seq as i64, asset: AssetId::parse(asset).unwrap(), body }
    }

    fn state(seq: u64, asset: &str, s: MachineState) -> Event {
        ev(seq, asset, EventBody::State { state: s, reason: None })
    }

    #[test]
    fn birth_declares_every_metric_with_an_alias_and_data_uses_only_aliases() {
        let mut edge = Edge::new("plant", "gw", [("press".to_string(), vec!["ESTOP".to_string()])]);
        edge.set_bd_seq(3);
        let births = edge.birth(1_700_000_000_000);
        assert_eq!(births.len(), 2);
        assert_eq!(births[0].topic, "spBv1.0/plant/NBIRTH/gw");
        let nb = sp::decode(&births[0].payload).unwrap();
        assert_eq!(nb.seq, Some(0));
        assert_eq!(nb.metrics[0].as_i64(), Some(3));
        let db = sp::decode(&births[1].payload).unwrap();
        assert_eq!(births[1].topic, "spBv1.0/plant/DBIRTH/gw/press");
        assert_eq!(db.seq, Some(1));
        let names: Vec<&str> = db.metrics.iter().filter_map(|m| m.name.as_deref()).collect();
        assert_eq!(names, ["alarm/ESTOP", "connected", "reason", "state"]);
        assert!(db.metrics.iter().all(|m| m.alias.is_some() && m.datatype.is_some()));
        let alarm = ev(
            9,
            "press",
            EventBody::Alarm(Alarm {
                id: "ESTOP".into(),
                active: true,
                severity: 1,
                text: String::new(),
                class: None,
                ..Default::default()
            }),
        );
        let events = [state(8, "press", MachineState::Down), alarm];
        assert!(!edge.learn(&events));
        let data = edge.data(&events, 8, 0);
        assert_eq!(data.len(), 1, "one DDATA for a run of one device");
        assert_eq!(data[0].seqs, [8, 9]);
        let p = sp::decode(&data[0].payload).unwrap();
        assert_eq!(p.seq, Some(2));
        assert!(p.metrics.iter().all(|m| m.name.is_none() && m.alias.is_some()));
        assert_eq!(p.metrics.iter().map(|m| m.is_historical == Some(true)).collect::<Vec<_>>(), [true, true, false]);
    }

    #[test]
    fn seq_wraps_after_255_and_restarts_at_birth() {
        let mut edge = Edge::new("g", "n", [("a".to_string(), vec![])]);
        let _ = edge.birth(0);
        let mut last = 0;
        for i in 0..300u64 {
            let m = edge.data(&[state(i + 1, "a", MachineState::Idle)], 0, 0);
            last = sp::decode(&m[0].payload).unwrap().seq.unwrap();
            assert!(last < 256);
        }
        assert_eq!(last, (2 + 299) % 256);
        assert_eq!(sp::decode(&edge.birth(0)[0].payload).unwrap().seq, Some(0));
    }

    #[test]
    fn a_new_asset_or_alarm_needs_a_birth_and_gaps_are_node_data() {
        let mut edge = Edge::new("g", "n", []);
        assert!(edge.learn(&[state(1, "new", MachineState::Running)]));
        assert!(!edge.learn(&[state(2, "new", MachineState::Down)]));
        let gap =
            ev(3, NODE_ASSET, EventBody::Gap { first: 1, last: 4, reason: shiftlens_common::GapReason::OutboxFull });
        assert!(!edge.learn(std::slice::from_ref(&gap)));
        let m = edge.data(&[gap], 0, 0);
        assert_eq!(m[0].topic, "spBv1.0/g/NDATA/n");
        assert_eq!(sp::decode(&m[0].payload).unwrap().metrics[0].as_i64(), Some(4));
    }

    #[test]
    fn rebirth_commands_are_recognised_by_name_or_alias() {
        let cmd = |name: Option<&str>, alias, v| {
            sp::encode(&Payload { metrics: vec![Metric::boolean(name, alias, 0, Some(v))], ..Default::default() })
        };
        assert!(asks_rebirth(&cmd(Some(metric::REBIRTH), None, true)));
        assert!(asks_rebirth(&cmd(None, Some(REBIRTH_ALIAS), true)));
        assert!(!asks_rebirth(&cmd(Some(metric::REBIRTH), None, false)));
        assert!(!asks_rebirth(&cmd(Some("other"), None, true)));
        assert!(!asks_rebirth(b"\xff\xff"));
    }
}
