//! Sparkplug B v1.0 uplink (`[uplink] protocol = "sparkplug"`): the agent as an edge node.
//!
//! The gateway is the edge node (`spBv1.0/{group}/.../{gateway}`), each asset a device. On every MQTT
//! session the agent publishes NBIRTH (with the session's `bdSeq`, kept in the outbox database so it
//! continues across restarts, see `outbox::sparkplug`) and one DBIRTH per asset declaring `state`, `reason`,
//! `connected` and one `alarm/{id}` per alarm, each with an alias; then DDATA by alias as events arrive. Its
//! MQTT last will is the NDEATH of the same `bdSeq`. An NCMD `Node Control/Rebirth` is answered with a new
//! birth; a new asset or alarm id also brings a new birth before its first data.
//!
//! Primary host awareness (`host_id`): the agent publishes nothing while `spBv1.0/STATE/{host_id}` says
//! offline (or has not been seen); events stay in the outbox. When the host comes back online it publishes a
//! new birth (carrying each asset's latest state), then the backlog in seq order with `is_historical`.
//!
//! Delivery: every message is QoS 1, and outbox rows are deleted when the broker's PUBACK for the message
//! carrying them arrives (PubAcks are matched through the order of `Outgoing::Publish`, see PITFALLS.md).
//! That is weaker than the native protocol's collector-confirmed delete: see docs/sparkplug.md.

pub mod edge;

use super::failure::{self, Failure, FailureLog};
use super::mqtt::{Params, UplinkError};
use super::window::Window;
use super::{Backoff, Broker, Pending, UplinkConfig};
use crate::health::Health;
use crate::{Config, Reported};
use edge::{Edge, Message};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, NetworkOptions, Outgoing, Packet, QoS};
use serde::Deserialize;
use shiftlens_common::clock::now_ms;
use shiftlens_common::config::{ConfigError, ConfigFile, Spanned};
use shiftlens_common::sparkplug::{self as sp, SpTopic};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// `[uplink] protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// ShiftLens CBOR batches, deleted on the collector's ack.
    #[default]
    Native,
    /// Sparkplug B v1.0.
    Sparkplug,
}

pub fn default_protocol() -> Spanned<Protocol> {
    Spanned::new(0..0, Protocol::Native)
}

/// `[uplink.sparkplug]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSparkplugConfig {
    /// The Sparkplug group id; default: the site id.
    pub group_id: Option<Spanned<String>>,
    /// The primary host application's id: while `spBv1.0/STATE/{host_id}` says offline, events stay in the
    /// outbox. Unset: publish whenever connected.
    pub host_id: Option<Spanned<String>>,
}

/// `[uplink.sparkplug]`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sparkplug {
    pub group_id: Option<String>,
    pub host_id: Option<String>,
}

impl RawSparkplugConfig {
    pub fn validated(self) -> Sparkplug {
        Sparkplug { group_id: self.group_id.map(Spanned::into_inner), host_id: self.host_id.map(Spanned::into_inner) }
    }
}

/// Checks `protocol` and `[uplink.sparkplug]` of the raw `[uplink]`.
pub fn validate(c: &crate::config::sections::RawUplinkConfig, file: &ConfigFile, errors: &mut Vec<ConfigError>) {
    let Some(s) = &c.sparkplug else { return };
    if *c.protocol.get_ref() != Protocol::Sparkplug {
        errors.push(file.error_at(s.span(), "[uplink.sparkplug] is only used with protocol = \"sparkplug\""));
    }
    let s = s.get_ref();
    for id in [&s.group_id, &s.host_id].into_iter().flatten() {
        if let Err(e) = sp::check_id(id.get_ref()) {
            errors.push(file.error_at(id.span(), e.to_string()));
        }
    }
}

/// Every asset the config feeds, with the alarm ids its points can raise (declared in its DBIRTH).
pub fn catalogue(config: &Config) -> Vec<(String, Vec<String>)> {
    use crate::detect::meaning::Meaning;
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let points = config
        .modbus
        .iter()
        .flat_map(|d| d.points.iter().map(|p| (p.asset.clone(), p.meaning.clone())))
        .chain(config.opcua.iter().flat_map(|e| e.points.iter().map(|p| (p.asset.clone(), p.meaning.clone()))));
    for (asset, meaning) in points {
        let alarms = out.entry(asset.to_string()).or_default();
        match meaning {
            Meaning::Alarm(a) => {
                alarms.insert(a.id);
            }
            Meaning::Threshold(t) => {
                alarms.insert(t.id);
            }
            Meaning::AlarmWord(w) => alarms.extend(w.bits.into_values().map(|a| a.id)),
            _ => {}
        }
    }
    out.into_iter().map(|(a, s)| (a, s.into_iter().collect())).collect()
}

/// Everything the Sparkplug uplink needs besides its channels.
pub struct SparkplugParams {
    pub mqtt: Params,
    pub group: String,
    pub host: Option<String>,
    /// Assets and their alarm ids, from the config.
    pub catalogue: Vec<(String, Vec<String>)>,
    /// Alarm flags last reported (the births start from them).
    pub reported: Reported,
}

impl SparkplugParams {
    /// From the agent config.
    pub fn new(config: &Config, reported: Reported) -> Self {
        let s = config.uplink.sparkplug.clone().unwrap_or_default();
        Self {
            mqtt: Params { config: config.uplink.clone(), site: config.site.clone(), gateway: config.gateway.clone() },
            group: s.group_id.unwrap_or_else(|| config.site.to_string()),
            host: s.host_id,
            catalogue: catalogue(config),
            reported,
        }
    }
}

/// What the poller tells the uplink task.
enum Link {
    /// Connected with this bdSeq in the last will.
    Up(u64),
    Down(Failure),
    /// The primary host's STATE (None: unreadable).
    Host(Option<bool>),
    Rebirth,
    /// The broker acknowledged a message carrying these outbox seqs.
    Acked(Vec<u64>),
}

/// Outbox seqs of each publish request, in request order (None for births and deaths), with the number of
/// lost connections the uplink task had seen when it made the request. A request made before the task learnt
/// of a loss may still go out on the next connection, before its birth: its PUBACK deletes nothing (the
/// events are sent again after the birth).
type Tags = Arc<Mutex<VecDeque<(u64, Option<Vec<u64>>)>>>;

fn will(topic: &str, bd_seq: u64) -> LastWill {
    LastWill::new(topic, Edge::death(bd_seq, now_ms()), QoS::AtLeastOnce, false)
}

/// Runs the Sparkplug uplink until `shutdown` turns true (or its sender is dropped), then publishes NDEATH
/// and disconnects.
///
/// # Errors
/// The MQTT options cannot be made (unreadable TLS files) or the outbox cannot be read.
pub async fn run<P: Pending>(
    params: SparkplugParams,
    outbox: Arc<Mutex<P>>,
    committed: watch::Receiver<u64>,
    health: Health,
    warn_every: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), UplinkError> {
    let mut options: MqttOptions = params.mqtt.mqtt_options()?;
    let config = params.mqtt.config.clone();
    let broker = config.broker().unwrap_or(Broker { tls: false, host: String::new(), port: 0 });
    let o = outbox.clone();
    let last_bd =
        tokio::task::spawn_blocking(move || o.lock().unwrap_or_else(PoisonError::into_inner).sparkplug_bd_seq())
            .await
            .map_err(|e| UplinkError::Config(e.to_string()))?
            .map_err(|e| UplinkError::Config(format!("cannot read the Sparkplug bdSeq from the outbox: {e}")))?;
    let bd_seq = last_bd.map_or(0, |b| (b + 1) % 256);
    let mut edge = Edge::new(&params.group, params.mqtt.gateway.as_str(), params.catalogue.clone());
    // The alarm flags last reported are the births' starting values.
    for (asset, alarms) in &params.reported {
        let events: Vec<_> = alarms
            .iter()
            .map(|(id, active)| shiftlens_common::Event {
                seq: 0,
                ts_ms: 0,
                asset: asset.clone(),
                body: shiftlens_common::EventBody::Alarm(shiftlens_common::Alarm {
                    id: id.clone(),
                    active: *active,
                    severity: 0,
                    text: String::new(),
                    class: None,
                    ..Default::default()
                }),
            })
            .collect();
        edge.learn(&events);
        edge.observe(&events);
    }
    edge.set_bd_seq(bd_seq);
    let death_topic = edge.death_topic();
    options.set_last_will(will(&death_topic, bd_seq));
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    net.set_connection_timeout(5);
    eventloop.set_network_options(net);
    let (link_tx, mut link_rx) = mpsc::channel(256);
    let tags: Tags = Arc::default();
    let state_topic = params.host.as_ref().map(|h| SpTopic::State { host: h.clone() }.to_string());
    let poller = tokio::spawn(poll(Poller {
        eventloop,
        tx: link_tx,
        tags: tags.clone(),
        bd_seq,
        death_topic,
        command_topic: edge.command_topic(),
        state_topic: state_topic.clone(),
        backoff: Backoff::new(config.reconnect_min, config.reconnect_max),
        broker,
    }));
    let mut up = Uplink {
        window: Window::new(config.inflight_batches * config.batch_events, config.ack_timeout),
        config,
        edge,
        client,
        tags,
        outbox,
        health,
        committed,
        state_topic,
        connected: false,
        host_online: false,
        need_birth: false,
        born: false,
        historical_upto: 0,
        losses: 0,
        failures: FailureLog::new(warn_every),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut committed = up.committed.clone();
    let mut writer_alive = true;
    loop {
        tokio::select! {
            biased;
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { break },
            link = link_rx.recv() => match link {
                Some(Link::Up(bd)) => up.on_connect(bd).await,
                Some(Link::Down(f)) => up.on_failure(&f),
                Some(Link::Host(online)) => up.on_host(online),
                Some(Link::Rebirth) => {
                    tracing::info!("rebirth requested by a host");
                    up.need_birth = up.born || up.need_birth;
                }
                Some(Link::Acked(seqs)) => up.on_acked(seqs).await,
                None => break,
            },
            r = committed.changed(), if writer_alive => writer_alive = r.is_ok(),
            _ = tick.tick() => {
                if up.connected && up.window.expired(Instant::now()) {
                    tracing::warn!(in_flight = up.window.in_flight(), "no PUBACK from the broker in time; sending again");
                    up.window.go_back();
                }
            }
        }
        up.fill().await;
    }
    let _ =
        up.client.try_publish(up.edge.death_topic(), QoS::AtLeastOnce, false, Edge::death(up.edge.bd_seq(), now_ms()));
    let _ = up.client.try_disconnect();
    if tokio::time::timeout(Duration::from_secs(2), poller).await.is_err() {
        tracing::debug!("MQTT event loop did not finish in time");
    }
    Ok(())
}

struct Poller {
    eventloop: EventLoop,
    tx: mpsc::Sender<Link>,
    tags: Tags,
    bd_seq: u64,
    death_topic: String,
    command_topic: String,
    state_topic: Option<String>,
    backoff: Backoff,
    broker: Broker,
}

/// Polls rumqttc only. A session that was up and is lost takes the next bdSeq into the last will of the
/// next connect (a failed connect keeps it: that session never began).
async fn poll(mut p: Poller) {
    let mut connected = false;
    let mut inflight: HashMap<u16, Vec<u64>> = HashMap::new();
    let mut losses = 0u64;
    loop {
        let link = match p.eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                p.backoff.reset();
                connected = true;
                Some(Link::Up(p.bd_seq))
            }
            Ok(Event::Incoming(Packet::Publish(m))) if m.topic == p.command_topic => {
                edge::asks_rebirth(&m.payload).then_some(Link::Rebirth)
            }
            Ok(Event::Incoming(Packet::Publish(m))) if Some(&m.topic) == p.state_topic.as_ref() => {
                Some(Link::Host(sp::parse_state(&m.payload)))
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let tag = p.tags.lock().unwrap_or_else(PoisonError::into_inner).pop_front();
                if let Some((seen, Some(seqs))) = tag {
                    if pkid != 0 && seen == losses {
                        inflight.insert(pkid, seqs);
                    }
                }
                None
            }
            Ok(Event::Incoming(Packet::PubAck(a))) => inflight.remove(&a.pkid).map(Link::Acked),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => None,
            Err(e) => {
                let delay = p.backoff.next_delay();
                tracing::debug!(error = %e, delay_ms = delay.as_millis() as u64, "MQTT connection failed; retrying");
                let f = failure::classify(&e, &p.broker.host, p.broker.port, connected);
                if connected {
                    p.bd_seq = (p.bd_seq + 1) % 256;
                    p.eventloop.mqtt_options.set_last_will(will(&p.death_topic, p.bd_seq));
                }
                connected = false;
                inflight.clear();
                losses += 1;
                {
                    // The outbox resends; rumqttc need not replay its own copies. Requests still queued are
                    // dropped with their tags, under the lock the uplink holds while it queues one, so the
                    // tags stay in step with the requests.
                    let mut tags = p.tags.lock().unwrap_or_else(PoisonError::into_inner);
                    p.eventloop.clean();
                    p.eventloop.pending.clear();
                    tags.clear();
                }
                if p.tx.send(Link::Down(f)).await.is_err() {
                    return;
                }
                tokio::time::sleep(delay).await;
                None
            }
        };
        if let Some(link) = link {
            if p.tx.send(link).await.is_err() {
                return;
            }
        }
    }
}

struct Uplink<P> {
    config: UplinkConfig,
    edge: Edge,
    client: AsyncClient,
    tags: Tags,
    outbox: Arc<Mutex<P>>,
    health: Health,
    committed: watch::Receiver<u64>,
    window: Window,
    state_topic: Option<String>,
    connected: bool,
    /// No host configured, or its STATE says online.
    host_online: bool,
    need_birth: bool,
    /// A birth was published in this session and the host has not gone offline since.
    born: bool,
    /// Events up to this seq were stored before the current birth: sent with `is_historical`.
    historical_upto: u64,
    /// Lost connections seen (see [`Tags`]).
    losses: u64,
    failures: FailureLog,
}

impl<P: Pending> Uplink<P> {
    async fn on_connect(&mut self, bd_seq: u64) {
        let broker = &self.config.broker;
        match self.failures.connected(Instant::now()) {
            Some((attempts, outage)) => tracing::info!(
                broker = %broker, failed_attempts = attempts, outage_s = outage.as_secs(),
                "connected to broker again; delivery resumes"
            ),
            None => tracing::info!(broker = %broker, bd_seq, "connected to broker (Sparkplug)"),
        }
        self.health.uplink_up();
        self.connected = true;
        self.born = false;
        self.edge.set_bd_seq(bd_seq);
        self.window.go_back();
        let _ = self.with_outbox(move |o| o.set_sparkplug_bd_seq(bd_seq)).await;
        if let Err(e) = self.client.try_subscribe(self.edge.command_topic(), QoS::AtLeastOnce) {
            tracing::warn!(error = %e, "cannot subscribe to the NCMD topic");
        }
        match &self.state_topic {
            Some(t) => {
                // The retained STATE says whether the host is there; until then, nothing is published.
                self.host_online = false;
                if let Err(e) = self.client.try_subscribe(t.clone(), QoS::AtLeastOnce) {
                    tracing::warn!(error = %e, "cannot subscribe to the primary host's STATE");
                }
            }
            None => {
                self.host_online = true;
                self.need_birth = true;
            }
        }
    }

    fn on_failure(&mut self, f: &Failure) {
        let broker = &self.config.broker;
        self.health.uplink_failed(&f.reason, f.action());
        if self.connected {
            tracing::warn!(broker = %broker, reason = %f.reason, action = f.action(), "broker connection lost; events stay in the outbox");
            let _ = self.failures.failed(Instant::now(), f.kind);
        } else if let Some(w) = self.failures.failed(Instant::now(), f.kind) {
            tracing::warn!(
                broker = %broker, reason = %f.reason, action = f.action(), failed_attempts = w.failures,
                outage_s = w.outage.as_secs(), detail = %f.detail,
                "cannot connect to the broker; events stay in the outbox"
            );
        }
        self.connected = false;
        self.born = false;
        self.losses += 1;
        self.window.go_back();
    }

    fn on_host(&mut self, online: Option<bool>) {
        match online {
            None => tracing::warn!("unreadable STATE of the primary host ignored"),
            Some(true) if !self.host_online => {
                tracing::info!("primary host online: publishing a birth, then the backlog");
                self.host_online = true;
                self.need_birth = true;
                self.window.go_back();
            }
            Some(false) if self.host_online => {
                tracing::warn!("primary host offline: events stay in the outbox until it is back");
                self.host_online = false;
                self.born = false;
                self.window.go_back();
            }
            Some(_) => {}
        }
    }

    async fn on_acked(&mut self, seqs: Vec<u64>) {
        let ranges = ranges(&seqs);
        let r = ranges.clone();
        if self.with_outbox(move |o| o.delete(&r)).await.is_some() {
            self.health.uplink_acked();
            self.window.acked(&ranges);
        }
    }

    async fn with_outbox<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut P) -> Result<T, P::Error> + Send + 'static,
    ) -> Option<T> {
        crate::uplink::with_outbox(&self.outbox, f).await
    }

    /// Publishes one message, tagged with its seqs; false when the request queue is full.
    fn publish(&self, m: &Message) -> bool {
        let tag = (!m.seqs.is_empty()).then(|| m.seqs.clone());
        let mut tags = self.tags.lock().unwrap_or_else(PoisonError::into_inner);
        match self.client.try_publish(m.topic.clone(), QoS::AtLeastOnce, false, m.payload.clone()) {
            Ok(()) => {
                tags.push_back((self.losses, tag));
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "MQTT request queue full; publishing later");
                false
            }
        }
    }

    /// NBIRTH and every DBIRTH, with each asset's latest stored state.
    async fn birth(&mut self) -> bool {
        let max = self.config.batch_events;
        let latest = self.with_outbox(move |o| o.latest_states(max)).await.unwrap_or_default();
        self.edge.learn(&latest);
        self.edge.observe(&latest);
        self.historical_upto = *self.committed.borrow();
        for m in self.edge.birth(now_ms()) {
            if !self.publish(&m) {
                return false;
            }
        }
        self.need_birth = false;
        self.born = true;
        true
    }

    /// Publishes births when due, then data while the window has room.
    async fn fill(&mut self) {
        if !self.connected || !self.host_online {
            return;
        }
        if self.need_birth && !self.birth().await {
            return;
        }
        let max_events = self.config.batch_events;
        let max_bytes = self.config.batch_bytes;
        while self.born && self.window.has_room() {
            let after = self.window.cursor();
            let Some(events) = self.with_outbox(move |o| o.read_after(after, max_events, max_bytes)).await else {
                return;
            };
            if events.is_empty() {
                return;
            }
            if self.edge.learn(&events) && !self.birth().await {
                return;
            }
            let mut sent = Vec::new();
            for m in self.edge.data(&events, self.historical_upto, now_ms()) {
                if !self.publish(&m) {
                    break;
                }
                sent.extend(m.seqs);
            }
            if sent.is_empty() {
                return;
            }
            self.window.sent(&sent, Instant::now());
            if sent.len() < events.len() {
                return;
            }
        }
    }
}

/// Ascending seqs as inclusive ranges.
fn ranges(seqs: &[u64]) -> Vec<(u64, u64)> {
    let mut sorted = seqs.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for s in sorted {
        match out.last_mut() {
            Some((_, z)) if *z + 1 >= s => *z = (*z).max(s),
            _ => out.push((s, s)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqs_become_ranges() {
        assert_eq!(ranges(&[5, 1, 2, 3, 9, 9, 10]), [(1, 3), (5, 5), (9, 10)]);
        assert!(ranges(&[]).is_empty());
    }

    #[test]
    fn the_sparkplug_section_needs_the_protocol_and_valid_ids() {
        #[derive(Deserialize)]
        struct T {
            uplink: crate::config::sections::RawUplinkConfig,
        }
        let check = |text: &str| {
            let file = ConfigFile::from_text("agent.toml", text);
            let t: T = file.parse().unwrap();
            let mut errors = Vec::new();
            t.uplink.validate(&file, &mut errors);
            errors.iter().map(ToString::to_string).collect::<Vec<_>>()
        };
        let ok = "[uplink]\nbroker = \"mqtt://localhost\"\nprotocol = \"sparkplug\"\n[uplink.sparkplug]\ngroup_id = \"plant\"\nhost_id = \"scada\"\n";
        assert!(check(ok).is_empty(), "{:?}", check(ok));
        let e = check("[uplink]\nbroker = \"mqtt://localhost\"\nprotocol = \"sparkplug\"\n[uplink.sparkplug]\ngroup_id = \"a/b\"\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("agent.toml:5:12: "), "{e:?}");
        let e = check("[uplink]\nbroker = \"mqtt://localhost\"\n[uplink.sparkplug]\nhost_id = \"h\"\n");
        assert!(e[0].contains("only used with protocol = \"sparkplug\""), "{e:?}");
    }
}

#[cfg(test)]
mod catalogue_tests {
    use super::*;

    #[test]
    fn the_catalogue_names_each_asset_and_every_alarm_its_points_can_raise() {
        let text = "site = \"plant-a\"\ngateway = \"gw-1\"\n[uplink]\nbroker = \"mqtt://localhost\"\n\
            protocol = \"sparkplug\"\n[[modbus]]\nid = \"plc\"\naddress = \"127.0.0.1:502\"\n\
            [[modbus.points]]\nname = \"st\"\nasset = \"press-1\"\ntable = \"holding\"\naddress = 0\ntype = \"u16\"\n\
            meaning = { state = { codes = { 1 = \"running\" } } }\n\
            [[modbus.points]]\nname = \"e\"\nasset = \"press-1\"\ntable = \"coil\"\naddress = 1\ntype = \"bool\"\n\
            meaning = { alarm = { id = \"ESTOP\" } }\n\
            [[modbus.points]]\nname = \"w\"\nasset = \"oven-1\"\ntable = \"holding\"\naddress = 2\ntype = \"u16\"\n\
            meaning = { alarm_word = { bits = { 0 = { id = \"E1\" }, 3 = { id = \"E4\" } } } }\n";
        let config = Config::from_file(&ConfigFile::from_text("agent.toml", text)).unwrap();
        assert_eq!(
            catalogue(&config),
            [
                ("oven-1".to_string(), vec!["E1".to_string(), "E4".to_string()]),
                ("press-1".to_string(), vec!["ESTOP".to_string()])
            ]
        );
    }
}
