//! Sparkplug B host application (`[sparkplug]`): reads edge nodes ShiftLens did not install (and agents in
//! Sparkplug mode) into the same store, timeline, downtime, join, reports and feed as native events.
//!
//! One MQTT client (to rumqttd's private port with the embedded broker, or to the external broker) publishes
//! the retained `spBv1.0/STATE/{host_id}` birth `{"online":true,...}` as a primary host, with the same
//! message offline as its last will, and subscribes to `spBv1.0/{group}/#` for each configured group.
//! [`host`] tracks each edge node's birth, death, `seq` and aliases, asks for a rebirth on a `seq` gap, an
//! unknown alias or data without a birth, and maps metrics to events: through the `[[sparkplug.map]]`
//! table (metric name → state codes, an alarm, or a stop reason), else by ShiftLens's own metric names
//! (`state`, `reason`, `connected`, `alarm/{id}`). The events go to the store writer as batches, an edge
//! node's birth and death as its gateway's status (online, offline), so its assets turn `unknown` on NDEATH.
//! While a node lives, its status is refreshed every [`HEARTBEAT`] so the heartbeat sweep leaves it alone.
//!
//! The embedded broker's gate lets an authenticated gateway publish only its own edge node's topics
//! ([`acl`]).

pub mod acl;
pub mod host;

use crate::store::events::{DeadLetter, Rows};
use crate::store::WriteOp;
use host::{Host, Output};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde::Deserialize;
use shiftlens_common::config::{ConfigError, ConfigFile, Spanned};
use shiftlens_common::sparkplug::proto::{Metric, Payload};
use shiftlens_common::sparkplug::{self as sp, metric, MessageType, SpTopic};
use shiftlens_common::status::Status;
use shiftlens_common::{Batch, MachineState, SiteId};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use tokio::sync::mpsc;

/// How often a live edge node's status is refreshed.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// `[sparkplug]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSparkplugConfig {
    /// This host application's id: the collector publishes `spBv1.0/STATE/{host_id}`.
    pub host_id: Spanned<String>,
    /// Sparkplug group ids to read (`spBv1.0/{group}/#` each).
    pub groups: Spanned<Vec<Spanned<String>>>,
    /// The ShiftLens site of these groups' edge nodes; default: the group id (which must then be a valid site
    /// id).
    pub site: Option<Spanned<String>>,
    /// Metric name → meaning, first match wins; ShiftLens's own metric names need no entry.
    #[serde(default)]
    pub map: Vec<Spanned<MapEntry>>,
}

/// `[[sparkplug.map]]`: what one metric means, like an agent point's `meaning`. Exactly one of `state`,
/// `alarm` or `reason`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapEntry {
    /// The metric name as in the births (e.g. `Status/State`).
    pub metric: Spanned<String>,
    /// Only for this edge node id.
    pub node: Option<String>,
    /// Only for this device id.
    pub device: Option<String>,
    /// Value (integer code or text) → machine state.
    pub state: Option<BTreeMap<String, MachineState>>,
    /// State for values not in `state` (default: the value is ignored).
    pub default: Option<Spanned<MachineState>>,
    /// Alarm id: active while the value is true (or non-zero).
    pub alarm: Option<Spanned<String>>,
    #[serde(default = "default_severity")]
    pub severity: u16,
    #[serde(default)]
    pub text: String,
    pub class: Option<String>,
    /// Stop reason: value → text (unlisted values as they are; 0 or empty: no reason).
    pub reason: Option<BTreeMap<String, String>>,
}

fn default_severity() -> u16 {
    500
}

/// `[sparkplug]`, validated: what runtime code reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Sparkplug {
    pub host_id: String,
    pub groups: Vec<String>,
    pub site: Option<SiteId>,
    pub map: Vec<Mapping>,
}

/// One `[[sparkplug.map]]` entry, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    pub metric: String,
    pub node: Option<String>,
    pub device: Option<String>,
    pub meaning: Meaning,
}

/// A map entry's meaning.
#[derive(Debug, Clone, PartialEq)]
pub enum Meaning {
    State { codes: BTreeMap<String, MachineState>, default: Option<MachineState> },
    Alarm { id: String, severity: u16, text: String, class: Option<String> },
    Reason { codes: BTreeMap<String, String> },
}

impl MapEntry {
    pub fn meaning(&self) -> Meaning {
        if let Some(id) = &self.alarm {
            Meaning::Alarm {
                id: id.get_ref().clone(),
                severity: self.severity,
                text: self.text.clone(),
                class: self.class.clone(),
            }
        } else if let Some(codes) = &self.reason {
            Meaning::Reason { codes: codes.clone() }
        } else {
            Meaning::State {
                codes: self.state.clone().unwrap_or_default(),
                default: self.default.as_ref().map(|d| *d.get_ref()),
            }
        }
    }
}

impl RawSparkplugConfig {
    /// The validated section (after [`Self::validate`] found nothing).
    pub fn validated(self) -> Sparkplug {
        Sparkplug {
            host_id: self.host_id.into_inner(),
            groups: self.groups.into_inner().into_iter().map(Spanned::into_inner).collect(),
            site: self.site.and_then(|s| SiteId::parse(s.into_inner()).ok()),
            map: self
                .map
                .into_iter()
                .map(Spanned::into_inner)
                .map(|m| Mapping {
                    meaning: m.meaning(),
                    metric: m.metric.into_inner(),
                    node: m.node,
                    device: m.device,
                })
                .collect(),
        }
    }

    pub fn validate(&self, file: &ConfigFile, errors: &mut Vec<ConfigError>) {
        let mut err = |span: std::ops::Range<usize>, msg: String| errors.push(file.error_at(span, msg));
        if let Err(e) = sp::check_id(self.host_id.get_ref()) {
            err(self.host_id.span(), e.to_string());
        }
        if self.groups.get_ref().is_empty() {
            err(self.groups.span(), "[sparkplug] groups must name at least one Sparkplug group id".into());
        }
        let site = self.site.as_ref().map(|s| (s, SiteId::parse(s.get_ref().clone())));
        if let Some((s, Err(e))) = &site {
            err(s.span(), e.to_string());
        }
        for g in self.groups.get_ref() {
            if let Err(e) = sp::check_id(g.get_ref()) {
                err(g.span(), e.to_string());
            } else if site.is_none() && SiteId::parse(g.get_ref().clone()).is_err() {
                err(
                    g.span(),
                    format!("group {:?} is not a valid site id (a-z 0-9 _ -): set [sparkplug] site", g.get_ref()),
                );
            }
        }
        let mut seen = HashSet::new();
        for e in &self.map {
            let m = e.get_ref();
            let kinds = [m.state.is_some(), m.alarm.is_some(), m.reason.is_some()].iter().filter(|k| **k).count();
            if kinds != 1 {
                err(
                    e.span(),
                    format!("map entry for {:?} needs exactly one of `state`, `alarm` or `reason`", m.metric.get_ref()),
                );
            }
            if m.metric.get_ref().is_empty() {
                err(m.metric.span(), "metric must not be empty".into());
            }
            if let Some(d) = &m.default {
                if m.state.is_none() {
                    err(d.span(), "`default` belongs to a `state` entry".into());
                }
            }
            if let Some(a) = &m.alarm {
                if a.get_ref().is_empty() || a.get_ref().len() > 256 {
                    err(a.span(), "alarm id must be 1-256 characters".into());
                }
            }
            if !seen.insert((m.metric.get_ref().clone(), m.node.clone(), m.device.clone())) {
                err(
                    m.metric.span(),
                    format!("metric {:?} is mapped twice for the same node and device", m.metric.get_ref()),
                );
            }
        }
    }
}

/// The NCMD payload asking an edge node for a rebirth.
pub fn rebirth_command(now_ms: i64) -> Vec<u8> {
    sp::encode(&Payload {
        timestamp: u64::try_from(now_ms).ok(),
        metrics: vec![Metric::boolean(Some(metric::REBIRTH), None, now_ms, Some(true))],
        ..Default::default()
    })
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn status(online: bool, ts_ms: i64) -> Status {
    let mut s = Status::offline(ts_ms);
    s.online = online;
    s.agent_version = "sparkplug".into();
    s
}

/// MQTT options for the host application's own client of an external broker: the collector's client
/// options with the client id `{client_id}-sparkplug-host`.
///
/// # Errors
/// Unreadable TLS files.
pub fn external_options(
    broker: &crate::broker::BrokerConfig,
    _config: &Sparkplug,
) -> Result<MqttOptions, crate::broker::BrokerError> {
    let mut o = crate::broker::client_options(broker)?;
    o.set_client_id(format!("{}-sparkplug-host", broker.client_id));
    Ok(o)
}

/// Starts the host application on `options` (its client id and login; the last will is set here). It feeds
/// `writer` until aborted.
pub fn spawn(
    config: &Sparkplug,
    mut options: MqttOptions,
    writer: mpsc::Sender<WriteOp>,
) -> tokio::task::JoinHandle<()> {
    let host_id = config.host_id.clone();
    let state_topic = SpTopic::State { host: host_id }.to_string();
    options.set_last_will(LastWill::new(&state_topic, sp::state_json(false, now_ms()), QoS::AtLeastOnce, true));
    options.set_keep_alive(Duration::from_secs(5));
    options.set_clean_session(true);
    let filters: Vec<String> = config.groups.iter().map(|g| sp::group_filter(g)).collect();
    let mut host = Host::new(config);
    tokio::spawn(async move {
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        eventloop.set_network_options(crate::broker::network_options());
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        loop {
            let polled = tokio::select! {
                p = eventloop.poll() => p,
                _ = heartbeat.tick() => {
                    for (site, gateway) in host.live() {
                        let op = WriteOp::Status { site, gateway, status: status(true, now_ms()), received_ms: now_ms() };
                        if writer.send(op).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
            };
            match polled {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    tracing::info!(state = %state_topic, "Sparkplug host application connected; publishing STATE online");
                    for f in &filters {
                        let _ = client.try_subscribe(f.clone(), QoS::AtLeastOnce);
                    }
                    let _ = client.try_publish(&state_topic, QoS::AtLeastOnce, true, sp::state_json(true, now_ms()));
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let dead = |kind: &str, why: String| {
                        WriteOp::DeadLetter(DeadLetter::new(&p.topic, now_ms(), kind, why, &p.payload))
                    };
                    let outputs = match SpTopic::parse(&p.topic) {
                        Ok(SpTopic::Message { group, kind, node, device }) => match sp::decode(&p.payload) {
                            Ok(payload) => host.apply(&group, kind, &node, device.as_deref(), &payload, now_ms()),
                            Err(e) => {
                                if writer.send(dead("bad_sparkplug", e.to_string())).await.is_err() {
                                    return;
                                }
                                Vec::new()
                            }
                        },
                        Ok(SpTopic::State { .. }) => Vec::new(),
                        Err(e) => {
                            if writer.send(dead("bad_topic", e.to_string())).await.is_err() {
                                return;
                            }
                            Vec::new()
                        }
                    };
                    for o in outputs {
                        if !handle(o, &client, &writer).await {
                            return;
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "Sparkplug host application: MQTT connection lost; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    })
}

/// Acts on one output; false when the writer is gone.
async fn handle(o: Output, client: &AsyncClient, writer: &mpsc::Sender<WriteOp>) -> bool {
    let received_ms = now_ms();
    let op = match o {
        Output::Events { site, gateway, epoch, events } => match Rows::new(Batch::new(site, gateway, epoch, events)) {
            Ok(rows) => WriteOp::Batch { rows, received_ms },
            Err(e) => {
                tracing::warn!(error = %e, "Sparkplug events cannot be stored");
                return true;
            }
        },
        Output::Online { site, gateway, ts_ms } => {
            tracing::info!(%site, %gateway, "Sparkplug edge node born");
            WriteOp::Status { site, gateway, status: status(true, ts_ms), received_ms }
        }
        Output::Offline { site, gateway, ts_ms } => {
            WriteOp::Status { site, gateway, status: status(false, ts_ms), received_ms }
        }
        Output::Rebirth { group, node, why } => {
            tracing::info!(%group, %node, %why, "asking a Sparkplug edge node for a rebirth");
            let topic = SpTopic::node(&group, MessageType::NCmd, &node).to_string();
            if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, false, rebirth_command(received_ms)) {
                tracing::warn!(error = %e, "rebirth request not sent");
            }
            return true;
        }
        Output::Ignored { why } => {
            tracing::debug!(%why, "Sparkplug message ignored");
            return true;
        }
    };
    writer.send(op).await.is_ok()
}

#[cfg(test)]
mod tests;
