//! Ingest: subscribe, decode, validate, hand to the store, ack after commit.
//!
//! The tasks below are started by [`crate::topology`], which also owns their shutdown order:
//! - [`connect`]'s MQTT loop reads the collector's connection to the broker (rumqttd's in-process link with
//!   the embedded broker, an MQTT client with an external one) and never blocks: publishes go to a fair
//!   queue ([`Inbox`]) with one bounded queue per sender (topic prefix `shiftlens/v1/{site}/{gateway}`),
//!   served round-robin; when a sender's queue is full its message is dropped with a warning (its agent
//!   resends it because it was never acked; dedup makes the resend harmless), so a flooding gateway
//!   overflows only its own queue;
//! - the [`decode`]r strictly decodes batches (versions 1-3 with limits; the dictionaries of version 3
//!   batches are bounded soft state of this task, [`Dictionaries`]), checks that the topic's site and
//!   gateway are the payload's, and hands batches and status messages to the store writer. A version 3
//!   batch whose dictionary it does not hold is neither stored nor dead-lettered: it answers on the ack
//!   topic with "dictionary unknown" and the agent resends with a new dictionary; anything
//!   that fails goes to the dead-letter table (topic, time, reason, size, first bytes), is counted and
//!   logged with its topic (at most one line per sender per [`LOG_EVERY`], saying how many were
//!   suppressed; the metric counts every one), and ingest carries on. It hands over one op at a time
//!   into the writer's short queue, so another gateway's batch waits behind at most one op of each sender
//!   plus that queue;
//! - the [`confirm`]er reads what the writer committed and only then publishes the ack
//!   (`shiftlens/v1/{site}/{gateway}/ack`, all seqs of the batch including duplicates already stored)
//!   and the downtime feed records;
//! - the [`heartbeat_sweep`] marks offline every gateway whose last status is older than
//!   `[ingest] heartbeat_overdue` (a gateway that went silent without a last will), as a last will does;
//! - [`retention`] asks the writer to prune hourly; [`forward_dead_letters`] stores the broker gate's
//!   rejections.

use crate::broker::{self, BrokerConfig};
use crate::fairness::{FairQueue, LogLimiter};
use crate::feed::{self, LineOf};
use crate::metrics::Metrics;
use crate::store::events::{DeadLetter, Rows};
use crate::store::{Committed, WriteOp};
use rumqttc::{AsyncClient, Event, Incoming, QoS};
use serde::Deserialize;
use shiftlens_common::config::{ConfigError, ConfigFile, HumanDuration, Spanned};
use shiftlens_common::status::Status;
use shiftlens_common::wire::encode_ack;
use shiftlens_common::wire_dict::{DictLimits, Dictionaries};
use shiftlens_common::DecodeError;
use shiftlens_common::{Ack, Limits, SiteId, Topic, SCHEMA_VERSION};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// `[ingest]` as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIngestConfig {
    /// A gateway whose last status (birth or heartbeat) is older than this is marked offline: its assets
    /// are `unknown` from then on, as after its last will. Set it to a few times the agents' `heartbeat`.
    #[serde(default = "default_heartbeat_overdue")]
    pub heartbeat_overdue: Spanned<HumanDuration>,
}

fn default_heartbeat_overdue() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(Duration::from_secs(90)))
}

impl Default for RawIngestConfig {
    fn default() -> Self {
        Self { heartbeat_overdue: default_heartbeat_overdue() }
    }
}

impl RawIngestConfig {
    /// Checks the section, adding every problem to `errors`, and gives the validated config.
    pub fn validate(&self, file: &ConfigFile, errors: &mut Vec<ConfigError>) -> IngestConfig {
        let d = self.heartbeat_overdue.get_ref().0;
        if d < Duration::from_secs(1) || d > Duration::from_secs(86_400) {
            errors.push(file.error_at(self.heartbeat_overdue.span(), "heartbeat_overdue must be between 1s and 1d"));
        }
        IngestConfig { heartbeat_overdue: d }
    }
}

/// `[ingest]`, validated.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// When a silent gateway is marked offline.
    pub heartbeat_overdue: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self { heartbeat_overdue: default_heartbeat_overdue().get_ref().0 }
    }
}

fn inc(v: &AtomicU64, n: u64) {
    Metrics::add(v, n);
}

/// How the collector publishes acks and feed records: rumqttd's in-process link (embedded broker) or its
/// MQTT client (external broker).
#[derive(Clone)]
pub enum Uplink {
    Client(AsyncClient),
    /// `LinkTx::publish` waits only for room in the router's channel (the router thread never waits on
    /// its links), so calling it from a task is brief.
    Local(Arc<std::sync::Mutex<rumqttd::local::LinkTx>>),
}

impl Uplink {
    /// Stops publishing: an MQTT client disconnects (true: its event loop then ends by itself once it has
    /// sent what was queued); the in-process link has nothing to flush (false: stop its loop).
    pub async fn disconnect(&self) -> bool {
        match self {
            Uplink::Client(client) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), client.disconnect()).await;
                true
            }
            // What the confirmer published is already in the router.
            Uplink::Local(_) => false,
        }
    }

    /// Publishes one message (QoS 1 with an external broker).
    ///
    /// # Errors
    /// The client's request queue or the in-process link refused it.
    pub async fn publish(&self, topic: String, payload: Vec<u8>) -> Result<(), String> {
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

use shiftlens_common::clock::now_ms;

/// The collector's connection to the broker and the task that reads it: rumqttd's in-process link with
/// the embedded broker, an MQTT client with an external one. The task subscribes to `filters` and says on
/// `subscribed` when every subscription of the current connection is acknowledged; it never blocks, it
/// queues publishes in `inbox` (counting those dropped for a full sender queue).
///
/// # Errors
/// Unreadable TLS files for the external broker.
pub fn connect(
    config: &BrokerConfig,
    local: Option<broker::LocalLink>,
    subscribed: tokio::sync::watch::Sender<bool>,
    metrics: Arc<Metrics>,
    inbox: Arc<Inbox>,
) -> Result<(Uplink, BoxFuture), broker::BrokerError> {
    let filters = config.filters();
    Ok(match local {
        Some(broker::LocalLink { tx, rx }) => {
            let tx = Arc::new(std::sync::Mutex::new(tx));
            let task = local_loop(tx.clone(), rx, filters, subscribed, metrics, inbox);
            (Uplink::Local(tx), Box::pin(task))
        }
        None => {
            let (client, eventloop) = AsyncClient::new(broker::client_options(config)?, 10_000);
            let task = client_loop(client.clone(), eventloop, filters, subscribed, metrics, inbox);
            (Uplink::Client(client), Box::pin(task))
        }
    })
}

/// A task's future, for `topology` to spawn.
pub type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;

/// The decoder: takes publishes from `inbox` round-robin by sender, [`classify`]s them and hands each op to
/// the writer (waiting for room: another gateway's batch waits behind at most one op of each sender).
/// Dictionary-unknown answers go out through `uplink`.
pub async fn decode(
    inbox: Arc<Inbox>,
    writer: mpsc::Sender<WriteOp>,
    limits: Limits,
    uplink: Uplink,
    metrics: Arc<Metrics>,
) {
    let mut logs = LogLimiter::new(LOG_EVERY, LOG_SENDERS);
    let mut dicts = Dictionaries::new(DictLimits::default());
    loop {
        let Some((sender, p)) = inbox.pop() else {
            inbox.ready.notified().await;
            continue;
        };
        let op = match classify(&p.topic, &p.payload, &limits, &mut dicts, now_ms()) {
            Ok(op) => op,
            Err(ask) => {
                inc(&metrics.dictionary_requests, 1);
                tracing::debug!(topic = %ask.topic, "dictionary unknown: asking the agent to resend with a new one");
                if let Err(e) = uplink.publish(ask.topic, ask.payload).await {
                    tracing::warn!(error = %e, "dictionary request not sent; the agent resends after its ack timeout");
                }
                continue;
            }
        };
        if let WriteOp::DeadLetter(d) = &op {
            if let Some(suppressed) = logs.check(sender, std::time::Instant::now()) {
                tracing::warn!(topic = %d.topic, kind = %d.kind, reason = %d.reason, size = d.size, suppressed, "payload dead-lettered");
            }
        }
        if writer.send(op).await.is_err() {
            return;
        }
    }
}

/// The decode limits for a broker config: the batch limit is at most the largest packet the broker takes.
pub fn limits(config: &BrokerConfig) -> Limits {
    Limits { max_batch_bytes: config.max_packet_bytes.min(Limits::default().max_batch_bytes), ..Limits::default() }
}

/// Hands the broker gate's rejections to the writer as dead letters.
pub async fn forward_dead_letters(mut rejected: mpsc::Receiver<DeadLetter>, writer: mpsc::Sender<WriteOp>) {
    while let Some(d) = rejected.recv().await {
        if writer.send(WriteOp::DeadLetter(d)).await.is_err() {
            return;
        }
    }
}

/// Asks the writer to apply retention, hourly (the first time at once).
pub async fn retention(writer: mpsc::Sender<WriteOp>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        if writer.send(WriteOp::Prune { now_ms: now_ms() }).await.is_err() {
            return;
        }
    }
}

/// The heartbeat sweep: marks offline every gateway whose last status is older than `overdue`. Not before
/// `overdue` has passed since start, so gateways have time to report after a collector restart.
pub async fn heartbeat_sweep(writer: mpsc::Sender<WriteOp>, overdue: Duration) {
    let overdue_ms = i64::try_from(overdue.as_millis()).unwrap_or(i64::MAX);
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + overdue,
        (overdue / 4).clamp(Duration::from_millis(250), Duration::from_secs(15)),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now_ms = now_ms();
        if writer.send(WriteOp::Overdue { cutoff_ms: now_ms.saturating_sub(overdue_ms), now_ms }).await.is_err() {
            return;
        }
    }
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

/// At most one log line per sender per this period for the same trouble (dead letters, a full queue).
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// Senders whose log lines are limited one by one; more share one limit.
const LOG_SENDERS: usize = 4096;
/// Publishes queued for the decoder per sender, and in all.
pub const INBOX_PER_SENDER: usize = 64;
const INBOX_TOTAL: usize = 1024;

/// Publishes waiting for the decoder, one queue per sender, served round-robin.
pub struct Inbox {
    queue: std::sync::Mutex<FairQueue<String, rumqttc::Publish>>,
    ready: tokio::sync::Notify,
}

impl Default for Inbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Inbox {
    pub fn new() -> Self {
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

/// An answer to a dictionary-form batch whose dictionary is unknown: an ack naming it, on the agent's ack topic.
#[derive(Debug)]
pub struct AskDictionary {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Decodes and validates one payload: a batch or status to store, or a dead letter; or, for a version 3
/// batch whose dictionary `dicts` lacks, the request to send it.
///
/// # Errors
/// [`AskDictionary`]: the batch is dropped unacknowledged and the agent is asked for its dictionary.
pub fn classify(
    topic: &str,
    payload: &[u8],
    limits: &Limits,
    dicts: &mut Dictionaries,
    received_ms: i64,
) -> Result<WriteOp, AskDictionary> {
    let dead =
        |kind: &str, reason: String| WriteOp::DeadLetter(DeadLetter::new(topic, received_ms, kind, reason, payload));
    Ok(match Topic::parse(topic) {
        Ok(Topic::Events { site, gateway }) => match dicts.decode(payload, limits) {
            Err(DecodeError::DictionaryUnknown { epoch, dictionary }) => {
                let ack = encode_ack(&Ack::dictionary_unknown(epoch, dictionary));
                return Err(AskDictionary { topic: Topic::Ack { site, gateway }.to_string(), payload: ack });
            }
            Err(e) => dead(e.kind(), e.to_string()),
            Ok((b, _)) if b.gateway != gateway => dead(
                "gateway_mismatch",
                format!("batch of gateway {} published on gateway {gateway}'s topic", b.gateway),
            ),
            Ok((b, _)) if b.site != site => {
                dead("site_mismatch", format!("batch of site {} published on site {site}'s topic", b.site))
            }
            // The rows are prepared here, in parallel with the writer thread.
            Ok((batch, update)) => match Rows::new(batch) {
                Ok(rows) => {
                    // Only now, the topic's own gateway checked, are its new dictionary entries kept.
                    dicts.commit(update);
                    WriteOp::Batch { rows, received_ms }
                }
                Err(e) => dead("bad_body", format!("an event body cannot be stored as JSON: {e}")),
            },
        },
        Ok(Topic::Status { site, gateway }) => {
            if payload.len() > 64 << 10 {
                return Ok(dead("too_large", format!("status of {} bytes", payload.len())));
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
    })
}

/// The confirmer: for what the writer committed, publishes the ack and the downtime feed records, and
/// counts. Ends when the writer is gone and everything it committed is published.
/// `changes` counts committed downtime changes (opened, closed, retracted): escalation wakes on it.
pub async fn confirm(
    mut rx: mpsc::Receiver<Committed>,
    uplink: Uplink,
    m: Arc<Metrics>,
    line_of: LineOf,
    changes: tokio::sync::watch::Sender<u64>,
) {
    while let Some(c) = rx.recv().await {
        if matches!(c, Committed::Downtime(_) | Committed::Retracted(_)) {
            changes.send_modify(|n| *n = n.wrapping_add(1));
        }
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
