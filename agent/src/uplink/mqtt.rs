//! The MQTT side of the uplink (rumqttc): connection, TLS, birth and last will, batches, acks, heartbeat.
//!
//! Two tasks: the event-loop poller only polls rumqttc (never blocked by SQLite) and hands connection
//! changes and ack payloads on through a bounded channel; the uplink task reads the outbox (on the blocking
//! pool), publishes and applies acks. On every (re)connect it subscribes to its ack topic, publishes the
//! retained birth status and sends again from the oldest unconfirmed event; during a backlog the latest
//! state of each asset is sent first.
//!
//! A failed connect is explained in plain words ([`super::failure`]) and logged at WARN: the first of an outage
//! at once, then at most once per `[health] warn_every` with the count of attempts since; an INFO closes each
//! outage (`connected to broker` again, with the attempts and the time it took).

use super::failure::{self, Failure, FailureLog};
use super::window::Window;
use super::{Backoff, Broker, Encoding, Pending, UplinkConfig};
use crate::health::Health;
use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, NetworkOptions, Packet, QoS, TlsConfiguration, Transport,
};
use shiftlens_common::clock::now_ms;
use shiftlens_common::status::Status;
use shiftlens_common::wire_dict::DictEncoder;
use shiftlens_common::{wire, Batch, GatewayId, SiteId, Topic};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Start-up failures of the uplink.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("invalid uplink config: {0}")]
    Config(String),
    #[error(transparent)]
    Pem(#[from] shiftlens_common::pem::PemError),
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// Installs rustls' ring provider as the process default (once; later calls do nothing).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Everything the uplink needs besides its channels.
pub struct Params {
    pub config: UplinkConfig,
    pub site: SiteId,
    pub gateway: GatewayId,
}

impl Params {
    fn topic(&self, f: fn(SiteId, GatewayId) -> Topic) -> String {
        f(self.site.clone(), self.gateway.clone()).to_string()
    }
    pub fn events_topic(&self) -> String {
        self.topic(|site, gateway| Topic::Events { site, gateway })
    }
    pub fn status_topic(&self) -> String {
        self.topic(|site, gateway| Topic::Status { site, gateway })
    }
    pub fn ack_topic(&self) -> String {
        self.topic(|site, gateway| Topic::Ack { site, gateway })
    }

    /// MQTT options with TLS material loaded, so unreadable files fail at start-up.
    ///
    /// # Errors
    /// Unreadable or invalid PEM files, a bad broker address.
    pub fn mqtt_options(&self) -> Result<MqttOptions, UplinkError> {
        let c = &self.config;
        let broker = c.broker().map_err(UplinkError::Config)?;
        let id = c.client_id.clone().unwrap_or_else(|| format!("shiftlens-{}-{}", self.site, self.gateway));
        let mut o = MqttOptions::new(id, broker.host.clone(), broker.port);
        o.set_keep_alive(c.keep_alive.max(Duration::from_secs(1)))
            .set_clean_session(true)
            .set_max_packet_size(2 << 20, 2 << 20)
            .set_last_will(LastWill::new(
                self.status_topic(),
                status_json(&Status::offline(now_ms())),
                QoS::AtLeastOnce,
                true,
            ));
        if let (Some(u), Some(p)) = (&c.username, &c.password) {
            o.set_credentials(u.clone(), p.0.clone());
        } else if let Some(u) = &c.username {
            o.set_credentials(u.clone(), "");
        }
        if broker.tls {
            o.set_transport(Transport::tls_with_config(tls_config(c, &broker)?));
        }
        Ok(o)
    }
}

fn tls_config(c: &UplinkConfig, _broker: &Broker) -> Result<TlsConfiguration, UplinkError> {
    use shiftlens_common::pem;
    install_crypto_provider();
    let ca_path = c.ca.as_deref().ok_or_else(|| UplinkError::Config("mqtts:// needs `ca`".into()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in pem::certificates("CA file", ca_path)? {
        roots.add(cert)?;
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match (&c.cert, &c.key) {
        (Some(cert_path), Some(key_path)) => builder.with_client_auth_cert(
            pem::certificates("client certificate", cert_path)?,
            pem::private_key("client key", key_path)?,
        )?,
        _ => builder.with_no_client_auth(),
    };
    Ok(TlsConfiguration::Rustls(Arc::new(config)))
}

fn status_json(s: &Status) -> Vec<u8> {
    serde_json::to_vec(s).unwrap_or_default()
}

/// What the poller tells the uplink task.
enum Link {
    Up,
    Down(Failure),
    Ack(Vec<u8>),
}

/// Runs the uplink until `shutdown` turns true (or its sender is dropped), then publishes the offline status
/// and disconnects.
pub async fn run<P: Pending>(
    params: Params,
    options: MqttOptions,
    outbox: Arc<Mutex<P>>,
    mut committed: watch::Receiver<u64>,
    health: Health,
    warn_every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let broker = params.config.broker().unwrap_or(Broker { tls: false, host: String::new(), port: 0 });
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    net.set_connection_timeout(5);
    eventloop.set_network_options(net);
    let (link_tx, mut link_rx) = mpsc::channel(64);
    let backoff = Backoff::new(params.config.reconnect_min, params.config.reconnect_max);
    let poller = tokio::spawn(poll(eventloop, link_tx, params.ack_topic(), backoff, broker));
    let epoch = outbox.lock().unwrap_or_else(PoisonError::into_inner).epoch();
    let dict = (params.config.encoding == Encoding::Dictionary).then(|| DictEncoder::new(rand::random()));
    let mut up = Uplink {
        dict,
        dict_asks: Vec::new(),
        window: Window::new(params.config.inflight_batches * params.config.batch_events, params.config.ack_timeout),
        params,
        client,
        outbox,
        health,
        epoch,
        connected: false,
        states_first: false,
        failures: FailureLog::new(warn_every),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut last_heartbeat = Instant::now();
    let mut writer_alive = true;
    loop {
        tokio::select! {
            biased;
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { break },
            link = link_rx.recv() => match link {
                Some(Link::Up) => up.on_connect(),
                Some(Link::Down(f)) => up.on_failure(&f),
                Some(Link::Ack(payload)) => up.on_ack(&payload).await,
                None => break,
            },
            r = committed.changed(), if writer_alive => writer_alive = r.is_ok(),
            _ = tick.tick() => {
                if up.connected && up.window.expired(Instant::now()) {
                    tracing::warn!(in_flight = up.window.in_flight(), "no ack from the collector in time; sending again");
                    up.window.go_back();
                    up.states_first = true;
                }
                if up.connected && last_heartbeat.elapsed() >= up.params.config.heartbeat {
                    last_heartbeat = Instant::now();
                    up.publish_status().await;
                }
            }
        }
        if up.connected {
            up.fill().await;
        }
    }
    let _ = up.client.try_publish(
        up.params.status_topic(),
        QoS::AtLeastOnce,
        true,
        status_json(&Status::offline(now_ms())),
    );
    let _ = up.client.try_disconnect();
    if tokio::time::timeout(Duration::from_secs(2), poller).await.is_err() {
        tracing::debug!("MQTT event loop did not finish in time");
    }
}

async fn poll(
    mut eventloop: EventLoop,
    tx: mpsc::Sender<Link>,
    ack_topic: String,
    mut backoff: Backoff,
    broker: Broker,
) {
    let mut connected = false;
    loop {
        let link = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                connected = true;
                Some(Link::Up)
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == ack_topic => Some(Link::Ack(p.payload.to_vec())),
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(_) => None,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::debug!(error = %e, delay_ms = delay.as_millis() as u64, "MQTT connection failed; retrying");
                let f = failure::classify(&e, &broker.host, broker.port, connected);
                connected = false;
                if tx.send(Link::Down(f)).await.is_err() {
                    return;
                }
                // The outbox resends; rumqttc need not replay its own copies.
                eventloop.pending.clear();
                tokio::time::sleep(delay).await;
                None
            }
        };
        if let Some(link) = link {
            if tx.send(link).await.is_err() {
                return;
            }
        }
    }
}

struct Uplink<P> {
    params: Params,
    client: AsyncClient,
    outbox: Arc<Mutex<P>>,
    health: Health,
    window: Window,
    epoch: u64,
    connected: bool,
    /// Send each asset's latest state before the backlog.
    states_first: bool,
    /// Rate limit of the delivery WARN.
    failures: FailureLog,
    /// The dictionary of batch version 3, unless `encoding = "plain"` (or the fallback below).
    dict: Option<DictEncoder>,
    /// When the dictionary requests acted on lately came (at most [`DICT_ASKS`]).
    dict_asks: Vec<Instant>,
}

/// This many dictionary requests within [`DICT_ASK_WINDOW`] make the uplink send plain batches until it
/// restarts: the collectors cannot keep a dictionary (several collectors of one shared subscription
/// splitting this gateway's batches, or a collector evicting dictionaries). One restart of the collector,
/// or batches lost with a connection, cost one request.
const DICT_ASKS: usize = 3;
const DICT_ASK_WINDOW: Duration = Duration::from_secs(60);

impl<P: Pending> Uplink<P> {
    fn on_connect(&mut self) {
        let broker = &self.params.config.broker;
        match self.failures.connected(Instant::now()) {
            Some((attempts, outage)) => tracing::info!(
                broker = %broker,
                failed_attempts = attempts,
                outage_s = outage.as_secs(),
                "connected to broker again; delivery resumes"
            ),
            None => tracing::info!(broker = %broker, "connected to broker"),
        }
        self.health.uplink_up();
        self.connected = true;
        self.window.go_back();
        self.states_first = true;
        // The dictionary outlives the session (a reconnect over a flaky link costs no entries again): if
        // batches that carried entries were lost with the connection, the collector asks for it.
        if let Err(e) = self.client.try_subscribe(self.params.ack_topic(), QoS::AtLeastOnce) {
            tracing::warn!(error = %e, "cannot subscribe to the ack topic");
        }
    }

    /// A failed connect or a lost connection: WARN (rate-limited) in plain words, and send again after the
    /// next connect.
    fn on_failure(&mut self, f: &Failure) {
        let broker = &self.params.config.broker;
        self.health.uplink_failed(&f.reason, f.action());
        if self.connected {
            tracing::warn!(broker = %broker, reason = %f.reason, action = f.action(), "broker connection lost; events stay in the outbox");
            let _ = self.failures.failed(Instant::now(), f.kind);
        } else if let Some(w) = self.failures.failed(Instant::now(), f.kind) {
            tracing::warn!(
                broker = %broker,
                reason = %f.reason,
                action = f.action(),
                failed_attempts = w.failures,
                outage_s = w.outage.as_secs(),
                detail = %f.detail,
                "cannot connect to the broker; events stay in the outbox"
            );
        }
        self.connected = false;
        self.window.go_back();
    }

    /// Runs a read on the outbox on the blocking pool.
    async fn with_outbox<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut P) -> Result<T, P::Error> + Send + 'static,
    ) -> Option<T> {
        super::with_outbox(&self.outbox, f).await
    }

    async fn publish_status(&mut self) {
        let sources = self.health.sources();
        let Some(mut status) = self.with_outbox(move |o| o.status(sources, now_ms())).await else { return };
        status.clock_ok = self.health.check_clock();
        if let Err(e) =
            self.client.try_publish(self.params.status_topic(), QoS::AtLeastOnce, true, status_json(&status))
        {
            tracing::debug!(error = %e, "status not published");
        }
    }

    async fn on_ack(&mut self, payload: &[u8]) {
        let ack = match wire::decode_ack(payload) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a malformed ack");
                return;
            }
        };
        if ack.epoch != self.epoch {
            tracing::debug!(epoch = ack.epoch, "ignoring an ack for another outbox epoch");
            return;
        }
        if let (Some(asked), Some(d)) = (ack.dictionary_unknown, &mut self.dict) {
            // Answers to batches of an earlier dictionary are stale: those events are being sent again.
            if asked == d.dictionary() {
                tracing::info!(
                    dictionary = asked,
                    "the collector does not know the dictionary; sending unconfirmed events again with a new one"
                );
                d.restart();
                self.window.go_back();
                let now = Instant::now();
                self.dict_asks.retain(|t| now.duration_since(*t) < DICT_ASK_WINDOW);
                self.dict_asks.push(now);
                if self.dict_asks.len() >= DICT_ASKS {
                    tracing::warn!(
                        requests = self.dict_asks.len(),
                        window_s = DICT_ASK_WINDOW.as_secs(),
                        "the collectors keep asking for the dictionary (several collectors sharing this gateway's batches?); sending plain batches (version 2) until the agent restarts; set [uplink] encoding = \"plain\" to make it so"
                    );
                    self.dict = None;
                }
            }
        }
        if ack.ranges.is_empty() {
            return;
        }
        let ranges = ack.ranges.clone();
        if self.with_outbox(move |o| o.delete(&ranges)).await.is_some() {
            self.health.uplink_acked();
            self.window.acked(&ack.ranges);
        }
    }

    /// Publishes batches while the window has room and the outbox has events after the cursor.
    async fn fill(&mut self) {
        let max_events = self.params.config.batch_events;
        let max_bytes = self.params.config.batch_bytes;
        if self.states_first {
            self.states_first = false;
            // Birth first, so the status shows the backlog at once.
            self.publish_status().await;
            let backlog = self.with_outbox(|o| o.depth()).await.unwrap_or(0);
            if backlog > max_events as u64 {
                if let Some(states) = self.with_outbox(move |o| o.latest_states(max_events)).await {
                    // Untracked: these events are sent again in order with the backlog.
                    self.publish(states);
                }
            }
        }
        while self.window.has_room() {
            let after = self.window.cursor();
            let Some(events) = self.with_outbox(move |o| o.read_after(after, max_events, max_bytes)).await else {
                return;
            };
            if events.is_empty() {
                return;
            }
            let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
            if !self.publish(events) {
                return;
            }
            self.window.sent(&seqs, Instant::now());
        }
    }

    fn publish(&mut self, events: Vec<shiftlens_common::Event>) -> bool {
        if events.is_empty() {
            return true;
        }
        let batch = Batch::new(self.params.site.clone(), self.params.gateway.clone(), self.epoch, events);
        let before = self.dict.as_ref().map(|d| (d.dictionary(), d.len()));
        let payload = match &mut self.dict {
            Some(d) => d.encode(&batch),
            None => wire::encode_batch(&batch),
        };
        match self.client.try_publish(self.params.events_topic(), QoS::AtLeastOnce, false, payload) {
            Ok(()) => true,
            Err(e) => {
                // Not sent: the entries it added must travel with the next batch instead.
                if let (Some(d), Some((id, len))) = (&mut self.dict, before) {
                    // (A full table started a new dictionary while encoding: none of it was sent.)
                    d.rollback(if d.dictionary() == id { len } else { 0 });
                }
                tracing::debug!(error = %e, "MQTT request queue full; publishing later");
                false
            }
        }
    }
}
