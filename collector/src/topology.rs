//! Wires the collector together and owns shutdown. The only module that spawns tasks.
//!
//! ```text
//! gateways ──MQTT──► gate ──► rumqttd ──► MQTT loop ──Inbox (fair, per sender)──► decoder ─┐
//!                     └── refused publishes (dead letters) ─────────────────────────────────┤ WriteOp
//!                                          retention tick (hourly), heartbeat sweep ────────┤ (bounded)
//!                                                                                           ▼
//! gateways ◄──acks── rumqttd ◄── confirmer ◄──Committed── store writer thread ──commit──► SQLite ◄── HTTP
//! central IT ◄──downtime feed──┘                                      watchdog ──ping──┘
//! ```
//!
//! Start ([`start`]): the store writer (it rebuilds the timeline from stored events), then the embedded
//! broker (unless `[broker] mode = "external"`), the MQTT loop, the writer's feeders (gate dead letters,
//! decoder, hourly retention, heartbeat sweep) and the confirmer; it returns once ingest's subscriptions
//! are acknowledged, so nothing published from then on is dropped for want of a subscriber. [`run`] adds
//! the HTTP server and the systemd watchdog, then waits for SIGTERM or Ctrl-C.
//!
//! Shutdown order ([`run`], then [`Collector::shutdown`]): the watchdog stops; the feeders stop (no new
//! messages are taken); the writer commits everything already queued and ends; the confirmer publishes the
//! acks and feed records of those commits and ends; then the MQTT connection closes. Nothing queued is
//! dropped on a clean stop. The embedded broker's rumqttd thread and gate, and the HTTP server, end with the
//! process (rumqttd has no shutdown).
//!
//! Below the components started here, three keep short-lived workers of their own, by design: the HTTP
//! server and the gate one task per connection, and the read side's cache (`query::Source`) one thread per
//! background reload and join-snapshot save, so no page waits for a rebuild. None outlives a request's
//! purpose or holds state that shutdown must drain (the snapshot is rewritten from stored events).

use crate::broker::{self, Mode};
use crate::feed::{self, LineOf};
use crate::ingest::{self, Inbox, Uplink};
use crate::metrics::Metrics;
use crate::store::{StoreError, WriteOp, Writer};
use crate::{http, Config};
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long [`start`] waits for ingest's subscriptions on the embedded broker.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(30);

/// A running collector core (store writer, broker, ingest): what [`run`] drives and tests start directly.
pub struct Collector {
    /// Where gateways connect, when the broker is embedded.
    pub broker: Option<SocketAddr>,
    /// The embedded broker's private loopback port (behind the gate; it requires a per-start secret).
    pub broker_internal: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    writer_tx: mpsc::Sender<WriteOp>,
    writer: std::thread::JoinHandle<()>,
    /// Tasks that feed the writer: aborted first on shutdown.
    feeders: Vec<JoinHandle<()>>,
    mqtt: JoinHandle<()>,
    confirmer: JoinHandle<()>,
    uplink: Uplink,
    /// Changes when a downtime change is committed: escalation wakes on it.
    downtime_changes: tokio::sync::watch::Receiver<u64>,
    /// PostgreSQL: the sites this collector's writer owns (escalation runs their ladders).
    owned: Option<crate::store::pg::owner::OwnedSites>,
}

/// Why the collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
}

/// Why [`Collector::shutdown`] was not clean.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    #[error("the store writer did not finish within {0:?}")]
    WriterTimeout(Duration),
    #[error("the store writer thread panicked")]
    WriterPanicked,
}

/// Starts the store writer, the embedded broker (unless external) and ingest. Returns once all are up
/// (with the embedded broker: once ingest's subscriptions are acknowledged, so nothing published from
/// then on is dropped for want of a subscriber). `line_of` names each downtime's line in the feed.
///
/// # Errors
/// The store cannot be opened or the broker cannot start.
pub async fn start(config: &Config, line_of: LineOf) -> Result<Collector, StartError> {
    let metrics = Arc::new(Metrics::default());
    let (committed_tx, committed_rx) = mpsc::channel(4096);
    let writer = Writer::spawn(&config.store, committed_tx)?;
    let (rejected_tx, rejected_rx) = mpsc::channel(1024);
    let (embedded, local) = match config.broker.mode {
        Mode::Embedded => {
            let (e, link, gate) = broker::start_embedded(&config.broker, rejected_tx).await?;
            tokio::spawn(gate);
            (Some(e), Some(link))
        }
        Mode::External => (None, None),
    };
    let inbox = Arc::new(Inbox::new());
    let (subscribed_tx, mut subscribed) = tokio::sync::watch::channel(false);
    let (uplink, mqtt) = ingest::connect(&config.broker, local, subscribed_tx, metrics.clone(), inbox.clone())?;
    let mqtt = tokio::spawn(mqtt);
    let mut feeders = vec![
        tokio::spawn(ingest::forward_dead_letters(rejected_rx, writer.tx.clone())),
        tokio::spawn(ingest::decode(
            inbox,
            writer.tx.clone(),
            ingest::limits(&config.broker),
            uplink.clone(),
            metrics.clone(),
        )),
        tokio::spawn(ingest::retention(writer.tx.clone())),
        tokio::spawn(ingest::heartbeat_sweep(writer.tx.clone(), config.ingest.heartbeat_overdue)),
    ];
    if let Some(sp) = &config.sparkplug {
        let options = match &embedded {
            Some(e) => e.internal_client(&format!("sparkplug-host:{}", sp.host_id)),
            None => crate::sparkplug::external_options(&config.broker, sp)?,
        };
        feeders.push(crate::sparkplug::spawn(sp, options, writer.tx.clone()));
    }
    let (changes_tx, downtime_changes) = tokio::sync::watch::channel(0u64);
    let confirmer = tokio::spawn(ingest::confirm(committed_rx, uplink.clone(), metrics.clone(), line_of, changes_tx));

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
        owned: writer.owned,
        feeders,
        mqtt,
        confirmer,
        uplink,
        downtime_changes,
    })
}

impl Collector {
    /// The collector's own broker connection, to publish on (escalation's MQTT channel).
    pub fn publisher(&self) -> Uplink {
        self.uplink.clone()
    }

    /// Changes when a downtime change is committed (a wake-up; the store holds the changes).
    pub fn downtime_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.downtime_changes.clone()
    }

    /// PostgreSQL: the sites this collector owns, as its store writer publishes them (`None` with SQLite,
    /// where this collector owns every site).
    pub fn owned_sites(&self) -> Option<crate::store::pg::owner::OwnedSites> {
        self.owned.clone()
    }

    /// A handle for liveness checks. Drop it before [`Collector::shutdown`]: it keeps the writer open.
    pub fn probe(&self) -> WriterProbe {
        WriterProbe { tx: self.writer_tx.clone() }
    }

    /// Stops cleanly: no new messages are taken, everything already queued for the writer is committed,
    /// the acks and feed records of those commits are published, then the MQTT connection closes.
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
        if self.uplink.disconnect().await {
            // Let the event loop send what the confirmer queued and the disconnect.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.mqtt).await;
        } else {
            self.mqtt.abort();
        }
        result
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

/// Runs the collector until SIGTERM or Ctrl-C: the core, the HTTP server, the systemd watchdog. Prints
/// `broker listening on ADDR` and `http listening on ADDR` to stdout (tests and operators read them).
///
/// # Errors
/// Start-up failures (store, broker, TLS files, HTTP bind) and an unclean stop of the store writer.
pub async fn run(config: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Installed first, so a SIGTERM during startup is not fatal either.
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    // The dashboard and API read the PostgreSQL store when it is the backend.
    crate::store::reads::serve_from_postgres(&config.store)?;
    let lines = match config.store.backend {
        crate::store::Backend::Sqlite => feed::AssetLines::line_of(&config.store.path),
        crate::store::Backend::Postgres => {
            crate::store::pg::read::line_of(&crate::store::pg::Target::from_store(&config.store)?)
        }
    };
    let collector = start(&config, lines).await.context("starting the collector")?;
    if let Some(addr) = collector.broker {
        println!("broker listening on {addr}");
    }
    // Escalation of uncovered stops while they happen (docs/escalation.md), when configured.
    let escalation = match &config.escalation {
        Some(e) => Some(
            crate::escalate::start(
                e.clone(),
                &config.store,
                config.people_settings.clone(),
                Some(collector.publisher()),
                collector.downtime_changes(),
                collector.owned_sites(),
            )
            .await
            .context("starting escalation")?,
        ),
        None => None,
    };
    let state = http::AppState::new(&config, Some(collector.metrics.clone())).context("HTTP setup")?;
    let addr = http::serve_with(&config.http.bind.to_string(), http::router(state), config.http.limits)
        .await
        .with_context(|| format!("cannot listen on {}", config.http.bind))?;
    println!("http listening on {addr}");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let watchdog = tokio::spawn(watchdog(collector.probe()));
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: committing what is queued");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    watchdog.abort();
    let _ = watchdog.await;
    if let Some(e) = escalation {
        // Deliveries in flight stay `pending` in the store and are sent after the next start.
        e.abort();
    }
    collector.shutdown(Duration::from_secs(10)).await.context("stopping the store writer")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Pets the systemd watchdog (WatchdogSec) at half its period, but only while the store writer still
/// commits: a wedged writer stops the pets and systemd restarts the collector.
async fn watchdog(probe: WriterProbe) {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) {
        return;
    }
    let period = Duration::from_micros(usec / 2).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if probe.alive(period).await {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
        } else {
            tracing::warn!("store writer did not answer the watchdog probe");
        }
    }
}
