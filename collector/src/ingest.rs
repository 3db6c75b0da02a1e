//! Ingest: subscribe, decode, validate, hand to the store, ack after commit.
//!
//! Tasks (wired by [`start`]):
//! - the MQTT loop reads the collector's connection to the broker (rumqttd's in-process link with the
//!   embedded broker, an MQTT client with an external one) and never blocks: publishes go to a fair queue with one
//!   bounded queue per sender (topic prefix `shiftlens/v1/{site}/{gateway}`), served round-robin; when a
//!   sender's queue is full its message is dropped with a warning (its agent resends it because it was
//!   never acked; dedup makes the resend harmless), so a flooding gateway overflows only its own queue;
//! - the decoder strictly decodes batches (`decode_batch` with limits), checks that the topic's site and
//!   gateway are the payload's, and hands batches and status messages to the store writer; anything
//!   that fails goes to the dead-letter table (topic, time, reason, size, first bytes), is counted and
//!   logged with its topic (at most one line per sender per [`LOG_EVERY`], saying how many were
//!   suppressed; the metric counts every one), and ingest carries on. It hands over one op at a time
//!   into the writer's short queue, so another gateway's batch waits behind at most one op of each sender
//!   plus that queue;
//! - the confirmer reads what the writer committed and only then publishes the ack
//!   (`shiftlens/v1/{site}/{gateway}/ack`, all seqs of the batch including duplicates already stored)
//!   and the downtime feed records;
//! - the heartbeat sweep marks offline every gateway whose last status is older than
//!   `[ingest] heartbeat_overdue` (a gateway that went silent without a last will), as a last will does.
//!
//! [`Collector::shutdown`] stops taking new messages, lets the writer commit everything already queued,
//! lets the confirmer publish the acks and feed records of those commits, then disconnects. A
//! [`WriterProbe`] proves the writer still commits (the systemd watchdog).

use crate::broker::{self, Mode};
use crate::fairness::{FairQueue, LogLimiter};
use crate::feed::{self, LineOf};
use crate::store::events::{DeadLetter, Rows};
use crate::store::{Committed, StoreError, WriteOp, Writer};
use crate::Config;
use rumqttc::{AsyncClient, Event, Incoming, QoS};
use serde::Deserialize;
use shiftlens_common::config::{ConfigError, ConfigFile, HumanDuration, Spanned};
use shiftlens_common::status::Status;
use shiftlens_common::wire::{decode_batch, encode_ack};
use shiftlens_common::{Ack, Limits, SiteId, Topic, SCHEMA_VERSION};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// `[ingest]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// A gateway whose last status (birth or heartbeat) is older than this is marked offline: its assets
    /// are `unknown` from then on, as after its last will. Set it to a few times the agents' `heartbeat`.
    #[serde(default = "default_heartbeat_overdue")]
    pub heartbeat_overdue: Spanned<HumanDuration>,
}

fn default_heartbeat_overdue() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(Duration::from_secs(90)))
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self { heartbeat_overdue: default_heartbeat_overdue() }
    }
}

impl IngestConfig {
    pub fn validate(&self, file: &ConfigFile, errors: &mut Vec<ConfigError>) {
        let d = self.heartbeat_overdue.get_ref().0;
        if d < Duration::from_secs(1) || d > Duration::from_secs(86_400) {
            errors.push(file.error_at(self.heartbeat_overdue.span(), "heartbeat_overdue must be between 1s and 1d"));
        }
    }
}

/// Counters, readable while running.
#[derive(Debug, Default)]
pub struct Metrics {
    pub batches: AtomicU64,
    pub events_new: AtomicU64,
    pub events_duplicate: AtomicU64,
    pub dead_letters: AtomicU64,
    pub dropped_overload: AtomicU64,
    pub acks: AtomicU64,
    pub feed_records: AtomicU64,
}

impl Metrics {
    pub fn get(v: &AtomicU64) -> u64 {
        v.load(Ordering::Relaxed)
    }
}

fn inc(v: &AtomicU64, n: u64) {
    v.fetch_add(n, Ordering::Relaxed);
}

/// A running collector core (broker, ingest, store).
pub struct Collector {
    /// Where gateways connect, when the broker is embedded.
    pub broker: Option<SocketAddr>,
    /// The embedded broker's private loopback port (behind the gate; it requires a per-start secret).
    pub broker_internal: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    writer_tx: mpsc::Sender<WriteOp>,
    writer: std::thread::JoinHandle<()>,
    /// Tasks that feed the writer: aborted first on shutdown.
    feeders: Vec<tokio::task::JoinHandle<()>>,
    mqtt: tokio::task::JoinHandle<()>,
    confirmer: tokio::task::JoinHandle<()>,
    uplink: Uplink,
}

/// How the collector publishes acks and feed records: rumqttd's in-process link (embedded broker) or its
/// MQTT client (external broker).
#[derive(Clone)]
enum Uplink {
    Client(AsyncClient),
    /// `LinkTx::publish` waits only for room in the router's channel (the router thread never waits on
    /// its links), so calling it from a task is brief.
    Local(Arc<std::sync::Mutex<rumqttd::local::LinkTx>>),
}

impl Uplink {
    async fn publish(&self, topic: String, payload: Vec<u8>) -> Result<(), String> {
        match self {
            Uplink::Client(c) => c.publish(topic, QoS::AtLeastOnce, false, payload).await.map_err(|e| e.to_string()),
            Uplink::Local(tx) => tx
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .publish(topic, payload)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }
}

/// Asks the store writer whether it still commits (see [`WriteOp::Ping`]).
#[derive(Clone)]
pub struct WriterProbe {
    tx: mpsc::Sender<WriteOp>,
}

impl WriterProbe {
    /// True when the writer committed a transaction carrying this probe within `timeout`.
    pub async fn alive(&self, timeout: Duration) -> bool {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let asked = async { self.tx.send(WriteOp::Ping(reply)).await.is_ok() && answer.await.is_ok() };
        tokio::time::timeout(timeout, asked).await.unwrap_or(false)
    }
}

impl Collector {
    /// A handle for liveness checks. Drop it before [`Collector::shutdown`]: it keeps the writer open.
    pub fn probe(&self) -> WriterProbe {
        WriterProbe { tx: self.writer_tx.clone() }
    }

    /// Stops cleanly: no new messages are taken, everything already queued for the writer is committed,
    /// the acks and feed records of those commits are published, then the MQTT client disconnects.
    /// Waits at most `deadline` for the writer (it then keeps running detached: SQLite stays consistent).
    ///
    /// # Errors
    /// The writer did not finish within `deadline`, or it panicked.
    pub async fn shutdown(self, deadline: Duration) -> Result<(), ShutdownError> {
        for t in &self.feeders {
            t.abort();
        }
        for t in self.feeders {
            let _ = t.await;
        }
        drop(self.writer_tx);
        let writer = self.writer;
        let joined = tokio::time::timeout(deadline, tokio::task::spawn_blocking(move || writer.join())).await;
        let result = match joined {
            Err(_) => Err(ShutdownError::WriterTimeout(deadline)),
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(_) => Err(ShutdownError::WriterPanicked),
        };
        // The writer is gone, so the confirmer ends once it has published what was committed.
        if tokio::time::timeout(Duration::from_secs(2), self.confirmer).await.is_err() {
            tracing::warn!("acks of the last commits not all published; their agents will resend");
        }
        match &self.uplink {
            Uplink::Client(client) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), client.disconnect()).await;
                // Let the event loop send what the confirmer queued and the disconnect.
                let _ = tokio::time::timeout(Duration::from_secs(1), self.mqtt).await;
            }
            // What the confirmer published is already in the router.
            Uplink::Local(_) => self.mqtt.abort(),
        }
        result
    }
}

/// Why [`Collector::shutdown`] was not clean.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    #[error("the store writer did not finish within {0:?}")]
    WriterTimeout(Duration),
    #[error("the store writer thread panicked")]
    WriterPanicked,
}

/// Why the collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Starts the store writer, the embedded broker (unless external) and ingest. Returns once all are up
/// (with the embedded broker: once ingest's subscriptions are acknowledged, so nothing published from
/// then on is dropped for want of a subscriber).
///
/// # Errors
/// The store cannot be opened or the broker cannot start.
pub async fn start(config: &Config, line_of: LineOf) -> Result<Collector, StartError> {
    let metrics = Arc::new(Metrics::default());
    let (committed_tx, committed_rx) = mpsc::channel(4096);
    let writer = Writer::spawn(&config.store, committed_tx)?;
    let (dead_tx, mut dead_rx) = mpsc::channel::<DeadLetter>(1024);
    let (embedded, local) = match config.broker.mode {
        Mode::Embedded => {
            let (e, link) = broker::start_embedded(&config.broker, dead_tx.clone()).await?;
            (Some(e), Some(link))
        }
        Mode::External => (None, None),
    };
    let inbox = Arc::new(Inbox::new());

    // MQTT loop: never blocks. Says when every subscription of the current connection is acknowledged.
    let filters = config.broker.filters();
    let (subscribed_tx, mut subscribed) = tokio::sync::watch::channel(false);
    let (uplink, mqtt) = match local {
        Some(broker::LocalLink { tx, rx }) => {
            let tx = Arc::new(std::sync::Mutex::new(tx));
            let task = local_loop(tx.clone(), rx, filters, subscribed_tx, metrics.clone(), inbox.clone());
            (Uplink::Local(tx), tokio::spawn(task))
        }
        None => {
            let (client, eventloop) = AsyncClient::new(broker::client_options(&config.broker)?, 10_000);
            let task = client_loop(client.clone(), eventloop, filters, subscribed_tx, metrics.clone(), inbox.clone());
            (Uplink::Client(client), tokio::spawn(task))
        }
    };

    // Rejections by the broker's gate become dead letters too.
    let mut feeders = Vec::new();
    let wtx = writer.tx.clone();
    feeders.push(tokio::spawn(async move {
        while let Some(d) = dead_rx.recv().await {
            if wtx.send(WriteOp::DeadLetter(d)).await.is_err() {
                return;
            }
        }
    }));

    // Decoder.
    let limits = Limits {
        max_batch_bytes: config.broker.max_packet_bytes().min(Limits::default().max_batch_bytes),
        ..Limits::default()
    };
    let wtx = writer.tx.clone();
    feeders.push(tokio::spawn(async move {
        let mut logs = LogLimiter::new(LOG_EVERY, LOG_SENDERS);
        loop {
            let Some((sender, p)) = inbox.pop() else {
                inbox.ready.notified().await;
                continue;
            };
            let op = classify(&p.topic, &p.payload, &limits, now_ms());
            if let WriteOp::DeadLetter(d) = &op {
                if let Some(suppressed) = logs.check(sender, std::time::Instant::now()) {
                    tracing::warn!(topic = %d.topic, kind = %d.kind, reason = %d.reason, size = d.size, suppressed, "payload dead-lettered");
                }
            }
            if wtx.send(op).await.is_err() {
                return;
            }
        }
    }));

    // Retention, hourly.
    let wtx = writer.tx.clone();
    feeders.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            if wtx.send(WriteOp::Prune { now_ms: now_ms() }).await.is_err() {
                return;
            }
        }
    }));

    // Heartbeat sweep: not before `overdue` has passed since start, so gateways have time to report after
    // a collector restart.
    let wtx = writer.tx.clone();
    let overdue = config.ingest.heartbeat_overdue.get_ref().0;
    feeders.push(tokio::spawn(async move {
        let overdue_ms = i64::try_from(overdue.as_millis()).unwrap_or(i64::MAX);
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + overdue,
            (overdue / 4).clamp(Duration::from_millis(250), Duration::from_secs(15)),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now_ms = now_ms();
            if wtx.send(WriteOp::Overdue { cutoff_ms: now_ms.saturating_sub(overdue_ms), now_ms }).await.is_err() {
                return;
            }
        }
    }));

    // Sparkplug host application.
    if let Some(sp) = &config.sparkplug {
        let options = match &embedded {
            Some(e) => e.internal_client(&format!("sparkplug-host:{}", sp.host_id.get_ref())),
            None => crate::sparkplug::external_options(&config.broker, sp)?,
        };
        feeders.push(crate::sparkplug::spawn(sp, options, writer.tx.clone()));
    }

    // Confirmer.
    let confirmer = tokio::spawn(confirm(committed_rx, uplink.clone(), metrics.clone(), line_of));

    // Gateways may connect to the embedded broker once this returns (and READY=1 is sent): until ingest's
    // subscriptions exist, the broker would drop what they publish (they resend after their ack timeout).
    if embedded.is_some() {
        let waited = tokio::time::timeout(SUBSCRIBE_WAIT, subscribed.wait_for(|s| *s)).await;
        if !matches!(waited, Ok(Ok(_))) {
            tracing::warn!(wait = ?SUBSCRIBE_WAIT, "ingest not subscribed to the embedded broker yet; gateways resend what is lost meanwhile");
        }
    }
    Ok(Collector {
        broker: embedded.as_ref().map(|e| e.listen),
        broker_internal: embedded.as_ref().map(|e| e.internal),
        metrics,
        writer_tx: writer.tx,
        writer: writer.thread,
        feeders,
        mqtt,
        confirmer,
        uplink,
    })
}

/// The MQTT loop with an external broker: polls the client, subscribes on every ConnAck.
async fn client_loop(
    client: AsyncClient,
    mut eventloop: rumqttc::EventLoop,
    filters: Vec<String>,
    subscribed: tokio::sync::watch::Sender<bool>,
    m: Arc<Metrics>,
    queue: Arc<Inbox>,
) {
    eventloop.set_network_options(broker::network_options());
    let mut unacked_subscriptions = 0usize;
    let mut logs = LogLimiter::new(LOG_EVERY, LOG_SENDERS);
    loop {
        match eventloop.poll().await {
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                tracing::info!("collector connected to the broker");
                unacked_subscriptions = 0;
                for f in &filters {
                    match client.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                        Ok(()) => unacked_subscriptions += 1,
                        Err(e) => tracing::error!(filter = %f, error = %e, "subscribe failed"),
                    }
                }
            }
            Ok(Event::Incoming(Incoming::SubAck(_))) if unacked_subscriptions > 0 => {
                unacked_subscriptions -= 1;
                if unacked_subscriptions == 0 {
                    subscribed.send_replace(true);
                }
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                if queue.push(p, &mut logs) {
                    inc(&m.dropped_overload, 1);
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "MQTT connection lost; reconnecting");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// The MQTT loop with the embedded broker: subscribes once through rumqttd's in-process link, then reads
/// what the router forwards. The link lives as long as the broker (the same process), so it never
/// reconnects.
async fn local_loop(
    tx: Arc<std::sync::Mutex<rumqttd::local::LinkTx>>,
    mut rx: rumqttd::local::LinkRx,
    filters: Vec<String>,
    subscribed: tokio::sync::watch::Sender<bool>,
    m: Arc<Metrics>,
    queue: Arc<Inbox>,
) {
    use rumqttd::Notification;
    let mut unacked_subscriptions = 0usize;
    for f in &filters {
        match tx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).subscribe(f.clone()) {
            Ok(_) => unacked_subscriptions += 1,
            Err(e) => tracing::error!(filter = %f, error = %e, "subscribe failed"),
        }
    }
    let mut logs = LogLimiter::new(LOG_EVERY, LOG_SENDERS);
    loop {
        match rx.next().await {
            Ok(Some(Notification::Forward(f))) => match String::from_utf8(f.publish.topic.to_vec()) {
                Ok(topic) => {
                    let p = rumqttc::Publish::from_bytes(topic, QoS::AtMostOnce, f.publish.payload);
                    if queue.push(p, &mut logs) {
                        inc(&m.dropped_overload, 1);
                    }
                }
                // The gate lets only well-formed topics of a gateway's own through.
                Err(_) => tracing::warn!("a message with a topic that is not UTF-8 ignored"),
            },
            // The only acks this link gets are SUBACKs (it publishes at QoS 0).
            Ok(Some(Notification::DeviceAck(_))) if unacked_subscriptions > 0 => {
                unacked_subscriptions -= 1;
                if unacked_subscriptions == 0 {
                    subscribed.send_replace(true);
                }
            }
            // The router stopped sending until this link has read what it holds.
            Ok(Some(Notification::Unschedule)) => {
                if let Err(e) = rx.wake().await {
                    tracing::error!(error = %e, "embedded broker link closed: ingest stopped");
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "embedded broker link closed: ingest stopped");
                return;
            }
        }
    }
}

/// How long [`start`] waits for ingest's subscriptions on the embedded broker.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(30);

/// At most one log line per sender per this period for the same trouble (dead letters, a full queue).
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// Senders whose log lines are limited one by one; more share one limit.
const LOG_SENDERS: usize = 4096;
/// Publishes queued for the decoder per sender, and in all.
pub const INBOX_PER_SENDER: usize = 64;
const INBOX_TOTAL: usize = 1024;

/// Publishes waiting for the decoder, one queue per sender, served round-robin.
struct Inbox {
    queue: std::sync::Mutex<FairQueue<String, rumqttc::Publish>>,
    ready: tokio::sync::Notify,
}

impl Inbox {
    fn new() -> Self {
        Self {
            queue: std::sync::Mutex::new(FairQueue::new(INBOX_PER_SENDER, INBOX_TOTAL)),
            ready: tokio::sync::Notify::new(),
        }
    }

    /// Queues a publish without waiting; true when it had to be dropped (its sender's queue is full).
    fn push(&self, p: rumqttc::Publish, logs: &mut LogLimiter<String>) -> bool {
        let sender = sender_of(&p.topic).to_string();
        let pushed = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(sender.clone(), p);
        match pushed {
            Ok(()) => {
                self.ready.notify_one();
                false
            }
            Err(p) => {
                if let Some(suppressed) = logs.check(sender, std::time::Instant::now()) {
                    tracing::warn!(topic = %p.topic, suppressed, "ingest queue full: message dropped, its agent will resend it");
                }
                true
            }
        }
    }

    fn pop(&self) -> Option<(String, rumqttc::Publish)> {
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop()
    }
}

/// Who a topic is from, for fairness and log limits: its first four levels (`shiftlens/v1/{site}/{gateway}`),
/// at most 128 bytes.
fn sender_of(topic: &str) -> &str {
    let mut end = topic.match_indices('/').nth(3).map_or(topic.len(), |(i, _)| i).min(128);
    while !topic.is_char_boundary(end) {
        end -= 1;
    }
    &topic[..end]
}

/// Decodes and validates one payload: a batch or status to store, or a dead letter.
pub fn classify(topic: &str, payload: &[u8], limits: &Limits, received_ms: i64) -> WriteOp {
    let dead =
        |kind: &str, reason: String| WriteOp::DeadLetter(DeadLetter::new(topic, received_ms, kind, reason, payload));
    match Topic::parse(topic) {
        Ok(Topic::Events { site, gateway }) => match decode_batch(payload, limits) {
            Err(e) => dead(e.kind(), e.to_string()),
            Ok(b) if b.gateway != gateway => dead(
                "gateway_mismatch",
                format!("batch of gateway {} published on gateway {gateway}'s topic", b.gateway),
            ),
            Ok(b) if b.site != site => {
                dead("site_mismatch", format!("batch of site {} published on site {site}'s topic", b.site))
            }
            // The rows are prepared here, in parallel with the writer thread.
            Ok(batch) => match Rows::new(batch) {
                Ok(rows) => WriteOp::Batch { rows, received_ms },
                Err(e) => dead("bad_body", format!("an event body cannot be stored as JSON: {e}")),
            },
        },
        Ok(Topic::Status { site, gateway }) => {
            if payload.len() > 64 << 10 {
                return dead("too_large", format!("status of {} bytes", payload.len()));
            }
            match serde_json::from_slice::<Status>(payload) {
                Ok(s) if s.version != SCHEMA_VERSION => {
                    dead("unsupported_version", format!("status version {}", s.version))
                }
                Ok(status) => WriteOp::Status { site, gateway, status, received_ms },
                Err(e) => dead("bad_status", format!("status is not valid JSON: {e}")),
            }
        }
        Ok(_) => dead("unexpected_topic", "not an events or status topic".into()),
        Err(e) => dead("bad_topic", e.to_string()),
    }
}

async fn confirm(mut rx: mpsc::Receiver<Committed>, uplink: Uplink, m: Arc<Metrics>, line_of: LineOf) {
    while let Some(c) = rx.recv().await {
        match c {
            Committed::Stored { site, gateway, epoch, seqs, new } => {
                inc(&m.batches, 1);
                inc(&m.events_new, new as u64);
                inc(&m.events_duplicate, (seqs.len() - new) as u64);
                let ack = encode_ack(&Ack::from_seqs(epoch, seqs));
                let topic = Topic::Ack { site, gateway }.to_string();
                match uplink.publish(topic, ack).await {
                    Ok(()) => inc(&m.acks, 1),
                    Err(e) => tracing::warn!(error = %e, "ack not sent; the agent will resend and be acked then"),
                }
            }
            Committed::Downtime(d) => {
                let record = feed::Record::new(&d, line_of(&d.site, &d.asset));
                publish_record(&uplink, &m, &d.site, &record).await;
            }
            Committed::Retracted(d) => {
                let record = feed::Record::retracted(&d, line_of(&d.site, &d.asset));
                publish_record(&uplink, &m, &d.site, &record).await;
            }
            Committed::DeadLetter { .. } => inc(&m.dead_letters, 1),
        }
    }
}

async fn publish_record(uplink: &Uplink, m: &Metrics, site: &SiteId, record: &feed::Record) {
    let topic = Topic::Downtime { site: site.clone() }.to_string();
    match serde_json::to_vec(record) {
        Ok(json) => match uplink.publish(topic, json).await {
            Ok(()) => inc(&m.feed_records, 1),
            Err(e) => tracing::warn!(error = %e, "downtime feed record not published"),
        },
        Err(e) => tracing::warn!(error = %e, "downtime feed record not encoded"),
    }
}
