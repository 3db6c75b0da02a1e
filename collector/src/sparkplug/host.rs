//! The host application's protocol state, apart from I/O: per edge node its birth, `bdSeq`, `seq` and
//! aliases; Sparkplug messages in, ShiftLens events and gateway status out.
//!
//! Invariants:
//! - data is taken only from a node whose NBIRTH was seen in this run, with `seq` following on (modulo 256);
//!   data from a node without a birth, a `seq` gap or an alias no birth declared asks for a rebirth (NCMD
//!   `Node Control/Rebirth`, at most once per [`REBIRTH_EVERY_MS`] per node) and is not used; a node first
//!   seen without a birth is marked offline (its assets `unknown`) until its birth;
//! - an NDEATH whose `bdSeq` matches the birth's marks the node offline; a stale one (another `bdSeq`) is
//!   ignored; a DDEATH makes the device's asset `unknown` (a `source` event, not connected);
//! - each birth starts an epoch (a hash of group, node, `bdSeq` and the birth's timestamp) and numbers its
//!   events from 1, so the store's key `(gateway, epoch, seq)` never collides, and the same messages read
//!   twice (a broker redelivering after a collector crash) give the same keys;
//! - edge node ids become gateway ids and device ids asset ids by [`gateway_id`] and [`asset_id`].

use super::{Mapping, Meaning, Sparkplug};
use shiftlens_common::sparkplug::metric;
use shiftlens_common::sparkplug::proto::{Metric, Payload};
use shiftlens_common::sparkplug::MessageType;
use shiftlens_common::{Alarm, AssetId, Event, EventBody, GatewayId, MachineState, SiteId, TS_RANGE_MS};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// Least time between two rebirth requests to one node.
pub const REBIRTH_EVERY_MS: i64 = 5_000;

/// The `source` of events the host application makes (DDEATH).
pub const SOURCE: &str = "sparkplug";

/// Severity of an alarm metric with no mapping that names one (the agent's default).
const DEFAULT_SEVERITY: u16 = 500;

/// What the host makes of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Events to store, under the node's current epoch.
    Events {
        site: SiteId,
        gateway: GatewayId,
        epoch: u64,
        events: Vec<Event>,
    },
    Online {
        site: SiteId,
        gateway: GatewayId,
        ts_ms: i64,
    },
    Offline {
        site: SiteId,
        gateway: GatewayId,
        ts_ms: i64,
    },
    /// Publish an NCMD rebirth request to this node.
    Rebirth {
        group: String,
        node: String,
        why: String,
    },
    /// A message that could not be used (logged).
    Ignored {
        why: String,
    },
}

#[derive(Debug, Clone)]
struct Known {
    device: Option<String>,
    name: String,
    datatype: Option<u32>,
}

#[derive(Debug)]
struct Node {
    site: SiteId,
    gateway: GatewayId,
    born: bool,
    bd_seq: Option<u64>,
    seq: u64,
    epoch: u64,
    next: u64,
    aliases: HashMap<u64, Known>,
    /// Datatype by (device, metric name), for data that names a metric without its type.
    types: HashMap<(Option<String>, String), Option<u32>>,
    rebirth_at: Option<i64>,
    /// Reason metrics seen before their state, by asset.
    reasons: HashMap<AssetId, String>,
}

/// The host application's state.
#[derive(Debug)]
pub struct Host {
    site: Option<SiteId>,
    map: Vec<Mapping>,
    nodes: HashMap<(String, String), Node>,
}

/// An edge node id as a gateway id: lower case, other characters than `a-z 0-9 _ -` become `-`, at most 64.
pub fn gateway_id(node: &str) -> Option<GatewayId> {
    let s: String = node
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' { c } else { '-' })
        .take(64)
        .collect();
    GatewayId::parse(s).ok()
}

/// A device (or node) id as an asset id: other characters than `a-z A-Z 0-9 _ - .` become `-`, at most 64.
pub fn asset_id(device: &str) -> Option<AssetId> {
    let s: String = device
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') { c } else { '-' })
        .take(64)
        .collect();
    AssetId::parse(s).ok()
}

/// What one metric means.
enum Mapped {
    Body(EventBody),
    Reason(String),
}

impl Host {
    pub fn new(config: &Sparkplug) -> Self {
        Self { site: config.site.clone(), map: config.map.clone(), nodes: HashMap::new() }
    }

    /// The nodes with a birth and no death since: (site, gateway).
    pub fn live(&self) -> Vec<(SiteId, GatewayId)> {
        self.nodes.values().filter(|n| n.born).map(|n| (n.site.clone(), n.gateway.clone())).collect()
    }

    fn rebirth(node: &mut Node, group: &str, name: &str, now_ms: i64, why: String) -> Option<Output> {
        if node.rebirth_at.is_some_and(|at| now_ms - at < REBIRTH_EVERY_MS && now_ms >= at) {
            return None;
        }
        node.rebirth_at = Some(now_ms);
        Some(Output::Rebirth { group: group.into(), node: name.into(), why })
    }

    /// Applies one edge node message (`kind` from the topic; NCMD and DCMD are ignored).
    pub fn apply(
        &mut self,
        group: &str,
        kind: MessageType,
        node_id: &str,
        device: Option<&str>,
        payload: &Payload,
        now_ms: i64,
    ) -> Vec<Output> {
        if !kind.from_edge() {
            return Vec::new();
        }
        let Some(site) = self.site.clone().or_else(|| SiteId::parse(group).ok()) else {
            return vec![Output::Ignored {
                why: format!("group {group:?} is not a site id and [sparkplug] site is unset"),
            }];
        };
        let Some(gateway) = gateway_id(node_id) else {
            return vec![Output::Ignored { why: format!("edge node id {node_id:?} cannot be a gateway id") }];
        };
        let key = (group.to_string(), node_id.to_string());
        let mut out = Vec::new();
        let first_sight = !self.nodes.contains_key(&key);
        let node = self.nodes.entry(key).or_insert_with(|| Node {
            site: site.clone(),
            gateway: gateway.clone(),
            born: false,
            bd_seq: None,
            seq: 0,
            epoch: 0,
            next: 1,
            aliases: HashMap::new(),
            types: HashMap::new(),
            rebirth_at: None,
            reasons: HashMap::new(),
        });
        let ts = |m: Option<&Metric>| {
            let t = m.and_then(|m| m.timestamp).or(payload.timestamp).and_then(|t| i64::try_from(t).ok());
            t.filter(|t| TS_RANGE_MS.contains(t)).unwrap_or(now_ms)
        };
        match kind {
            MessageType::NBirth => {
                let bd_seq =
                    payload.metrics.iter().find(|m| m.name.as_deref() == Some(metric::BD_SEQ)).and_then(Metric::as_i64);
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (group, node_id, bd_seq, payload.timestamp).hash(&mut h);
                node.epoch = h.finish() | 1;
                node.next = 1;
                node.born = true;
                node.bd_seq = bd_seq.map(|b| b as u64);
                node.seq = payload.seq.unwrap_or(0) % 256;
                node.aliases.clear();
                node.types.clear();
                node.rebirth_at = None;
                out.push(Output::Online { site: node.site.clone(), gateway: node.gateway.clone(), ts_ms: ts(None) });
            }
            MessageType::NDeath => {
                let bd_seq =
                    payload.metrics.iter().find(|m| m.name.as_deref() == Some(metric::BD_SEQ)).and_then(Metric::as_i64);
                let stale = matches!((bd_seq, node.bd_seq), (Some(a), Some(b)) if a as u64 % 256 != b % 256);
                if stale || !node.born {
                    return vec![Output::Ignored { why: format!("stale NDEATH of {node_id} (bdSeq {bd_seq:?})") }];
                }
                node.born = false;
                return vec![Output::Offline { site: node.site.clone(), gateway: node.gateway.clone(), ts_ms: now_ms }];
            }
            _ => {
                if !node.born {
                    if first_sight {
                        out.push(Output::Offline { site: site.clone(), gateway: gateway.clone(), ts_ms: now_ms });
                    }
                    out.extend(Self::rebirth(
                        node,
                        group,
                        node_id,
                        now_ms,
                        format!("{} before any NBIRTH", kind.as_str()),
                    ));
                    return out;
                }
                let expected = (node.seq + 1) % 256;
                match payload.seq {
                    Some(s) if s == expected => node.seq = s,
                    s => {
                        node.born = false;
                        let why = format!("seq gap: {s:?} after {} ({})", node.seq, kind.as_str());
                        out.extend(Self::rebirth(node, group, node_id, now_ms, why));
                        return out;
                    }
                }
            }
        }
        let asset = match device.or(Some(node_id)).and_then(asset_id) {
            Some(a) => a,
            None => return vec![Output::Ignored { why: format!("device id {device:?} cannot be an asset id") }],
        };
        if kind == MessageType::DDeath {
            let body = EventBody::Source { source: SOURCE.into(), connected: false, error: Some("DDEATH".into()) };
            let event = Event { seq: node.next, ts_ms: ts(None), asset, body };
            node.next += 1;
            out.push(Output::Events {
                site: node.site.clone(),
                gateway: node.gateway.clone(),
                epoch: node.epoch,
                events: vec![event],
            });
            return out;
        }
        let birth = matches!(kind, MessageType::NBirth | MessageType::DBirth);
        let dev = device.map(str::to_string);
        let mut events: Vec<Event> = Vec::new();
        let max_string = shiftlens_common::Limits::default().max_string_len;
        for m in &payload.metrics {
            // The native codec's bound on strings holds here too: longer names and texts are not used.
            if m.name.as_ref().is_some_and(|n| n.len() > max_string) || m.as_str().is_some_and(|v| v.len() > max_string)
            {
                continue;
            }
            let known = match (&m.name, m.alias) {
                (Some(name), alias) => {
                    let datatype =
                        m.datatype.or_else(|| node.types.get(&(dev.clone(), name.clone())).copied().flatten());
                    if birth {
                        node.types.insert((dev.clone(), name.clone()), m.datatype);
                        if let Some(a) = alias {
                            node.aliases
                                .insert(a, Known { device: dev.clone(), name: name.clone(), datatype: m.datatype });
                        }
                    }
                    Known { device: dev.clone(), name: name.clone(), datatype }
                }
                (None, Some(alias)) => match node.aliases.get(&alias) {
                    Some(k) if k.device == dev => k.clone(),
                    _ => {
                        node.born = false;
                        out.extend(Self::rebirth(node, group, node_id, now_ms, format!("unknown alias {alias}")));
                        return out;
                    }
                },
                (None, None) => continue,
            };
            if known.name == metric::BD_SEQ || known.name.starts_with("Node Control/") {
                continue;
            }
            let mut m = m.clone();
            m.datatype = m.datatype.or(known.datatype);
            let Some(mapped) = self_map(&self.map, node_id, device, &known.name, &m) else { continue };
            let ts_ms = ts(Some(&m));
            match mapped {
                Mapped::Reason(text) => {
                    let last = events.iter_mut().rev().find(|e| e.asset == asset);
                    match last {
                        Some(Event { ts_ms: t, body: EventBody::State { reason: r @ None, .. }, .. })
                            if *t == ts_ms =>
                        {
                            *r = (!text.is_empty()).then_some(text);
                        }
                        _ => {
                            node.reasons.insert(asset.clone(), text);
                        }
                    }
                }
                Mapped::Body(mut body) => {
                    if let EventBody::State { state, reason: r @ None } = &mut body {
                        if *state != MachineState::Running {
                            *r = node.reasons.remove(&asset).filter(|t| !t.is_empty());
                        }
                    }
                    events.push(Event { seq: node.next, ts_ms, asset: asset.clone(), body });
                    node.next += 1;
                }
            }
        }
        if !events.is_empty() {
            out.push(Output::Events {
                site: node.site.clone(),
                gateway: node.gateway.clone(),
                epoch: node.epoch,
                events,
            });
        }
        out
    }
}

/// What a metric means: the first `[[sparkplug.map]]` entry for it, else ShiftLens's own metric names.
fn self_map(map: &[Mapping], node: &str, device: Option<&str>, name: &str, m: &Metric) -> Option<Mapped> {
    let entry = map.iter().find(|e| {
        e.metric == name
            && e.node.as_deref().is_none_or(|n| n == node)
            && e.device.as_deref().is_none_or(|d| Some(d) == device)
    });
    if let Some(e) = entry {
        return match &e.meaning {
            Meaning::State { codes, default } => {
                let key = m.as_i64().map(|v| v.to_string()).or_else(|| m.as_str().map(str::to_string))?;
                codes
                    .get(&key)
                    .copied()
                    .or(*default)
                    .map(|state| Mapped::Body(EventBody::State { state, reason: None }))
            }
            Meaning::Alarm { id, severity, text, class } => Some(Mapped::Body(EventBody::Alarm(Alarm {
                id: id.clone(),
                active: m.as_bool()?,
                severity: *severity,
                text: text.clone(),
                class: class.clone(),
                ..Default::default()
            }))),
            Meaning::Reason { codes } => {
                let key = m.as_i64().map(|v| v.to_string()).or_else(|| m.as_str().map(str::to_string))?;
                let text = if key == "0" { String::new() } else { codes.get(&key).cloned().unwrap_or(key) };
                Some(Mapped::Reason(text))
            }
        };
    }
    match name {
        metric::STATE => {
            MachineState::parse(m.as_str()?).map(|state| Mapped::Body(EventBody::State { state, reason: None }))
        }
        metric::REASON => Some(Mapped::Reason(m.as_str()?.to_string())),
        metric::CONNECTED => {
            Some(Mapped::Body(EventBody::Source { source: SOURCE.into(), connected: m.as_bool()?, error: None }))
        }
        _ => {
            let id = name.strip_prefix(metric::ALARM_PREFIX)?;
            Some(Mapped::Body(EventBody::Alarm(Alarm {
                id: id.to_string(),
                active: m.as_bool()?,
                severity: DEFAULT_SEVERITY,
                text: String::new(),
                class: None,
                ..Default::default()
            })))
        }
    }
}
