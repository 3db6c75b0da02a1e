//! Wires the components together and owns shutdown. The only module that spawns tasks.
//!
//! ```text
//! sources ──Observation (bounded)──► outbox writer thread ──commit──► SQLite ◄── uplink task ──MQTT──►
//!                                              └──committed seq (watch)──────────┘
//! ```
//!
//! Start: the outbox records the run before anything else is stored (after an unclean stop it first stores the
//! "agent was not running" events, see [`crate::outbox::runs`]), and the detectors start from the alarm flags
//! last reported. Shutdown order: sources stop, the writer commits everything queued, the run is marked clean,
//! then the uplink publishes the offline status and disconnects. Nothing in memory is dropped on a clean stop.
//!
//! The uplink reads the outbox only through [`crate::uplink::Pending`], implemented for the outbox here, so
//! neither imports the other.

use crate::health::{self, Health};
use crate::outbox::{writer, Outbox};
use crate::uplink::mqtt::{self, Params};
use crate::uplink::sparkplug::{self, Protocol};
use crate::{source, Config, Observation, Reported};
use anyhow::Context;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Capacity of the observation channel in front of the outbox writer.
pub const OBSERVATION_CHANNEL: usize = 10_000;

/// A started outbox and uplink, without sources: the core that `run` drives and tests feed directly.
pub struct Agent {
    /// Where observations go; the outbox gives them seqs.
    pub observations: mpsc::Sender<Observation>,
    /// The highest seq committed so far.
    pub committed: watch::Receiver<u64>,
    /// The outbox epoch.
    pub epoch: u64,
    pub outbox: Arc<Mutex<Outbox>>,
    pub health: Health,
    /// The alarm flags last reported before this run, for the detectors.
    pub reported: Reported,
    writer: std::thread::JoinHandle<()>,
    uplink: JoinHandle<()>,
    /// State file and metrics endpoint.
    reporter: JoinHandle<()>,
    metrics: Option<JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
}

impl Agent {
    /// Opens the outbox and starts the writer and the uplink.
    ///
    /// # Errors
    /// An outbox that cannot be opened (unwritable, corrupt) or unreadable TLS files.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        mqtt::install_crypto_provider();
        let params =
            Params { config: config.uplink.clone(), site: config.site.clone(), gateway: config.gateway.clone() };
        let options = params.mqtt_options().context("uplink")?;
        let outbox_config = config.outbox.clone();
        let assets = fed_assets(config);
        let (outbox, run) = tokio::task::spawn_blocking(move || {
            let mut outbox = Outbox::open(&outbox_config)?;
            // A full disk must not keep the agent from starting: the writer holds events in memory meanwhile.
            let run = outbox.begin_run(shiftlens_common::clock::now_ms(), &assets).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot record this run in the outbox: a crash of this run will leave no gap mark");
                crate::outbox::runs::RunStart {
                    reported: outbox.last_reported().unwrap_or_default(),
                    ..Default::default()
                }
            });
            anyhow::Ok((outbox, run))
        })
        .await??;
        let epoch = outbox.epoch();
        let clean = run.previous.map(|p| p.stopped_ms.is_some());
        tracing::info!(path = %outbox.path().display(), epoch, previous_run_clean = ?clean, "outbox open");
        let outbox = Arc::new(Mutex::new(outbox));
        let (tx, rx) = mpsc::channel(OBSERVATION_CHANNEL);
        let (committed_tx, committed) = watch::channel(0);
        let writer = writer::spawn(outbox.clone(), rx, config.outbox.memory_bytes.0, committed_tx)
            .context("cannot start the outbox writer")?;
        let health = Health::default();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (figures_tx, figures) = watch::channel(health::state::AgentState::default());
        let metrics = match config.health.listen_addr() {
            Some(addr) => {
                let listener = health::metrics::bind(addr)
                    .await
                    .with_context(|| format!("[health] listen: cannot serve metrics on {addr}"))?;
                tracing::info!(%addr, "metrics endpoint on http://{addr}/metrics");
                Some(tokio::spawn(health::metrics::serve(listener, figures, shutdown_rx.clone())))
            }
            None => None,
        };
        let reporter = tokio::spawn(health::reporter(
            health::ReporterParams {
                config: config.health.clone(),
                outbox_path: config.outbox.path.clone(),
                max_bytes: config.outbox.max_bytes.0,
                site: config.site.to_string(),
                gateway: config.gateway.to_string(),
                broker: config.uplink.broker.clone(),
            },
            health.clone(),
            outbox.clone(),
            figures_tx,
            shutdown_rx.clone(),
        ));
        let warn_every = config.health.warn_every;
        let uplink = match config.uplink.protocol {
            Protocol::Native => tokio::spawn(mqtt::run(
                params,
                options,
                outbox.clone(),
                committed.clone(),
                health.clone(),
                warn_every,
                shutdown_rx,
            )),
            Protocol::Sparkplug => {
                let sp = sparkplug::SparkplugParams::new(config, run.reported.clone());
                let task =
                    sparkplug::run(sp, outbox.clone(), committed.clone(), health.clone(), warn_every, shutdown_rx);
                tokio::spawn(async move {
                    if let Err(e) = task.await {
                        tracing::error!(error = %e, "Sparkplug uplink stopped");
                    }
                })
            }
        };
        let reported = run.reported;
        Ok(Self {
            observations: tx,
            committed,
            epoch,
            outbox,
            health,
            reported,
            writer,
            uplink,
            reporter,
            metrics,
            shutdown,
        })
    }

    /// Whether the writer and the uplink still run (for the watchdog).
    pub fn is_alive(&self) -> bool {
        !self.writer.is_finished() && !self.uplink.is_finished()
    }

    /// Commits everything queued, then stops the uplink. Other senders of `observations` must be gone.
    ///
    /// # Errors
    /// When the writer thread panicked.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        drop(self.observations);
        let writer = self.writer;
        tokio::task::spawn_blocking(move || writer.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the outbox writer panicked"))?;
        let outbox = self.outbox.clone();
        let ended = tokio::task::spawn_blocking(move || {
            outbox.lock().unwrap_or_else(std::sync::PoisonError::into_inner).end_run(shiftlens_common::clock::now_ms())
        })
        .await?;
        if let Err(e) = ended {
            tracing::warn!(error = %e, "cannot record the clean stop; the next start will report a gap");
        }
        let _ = self.shutdown.send(true);
        let _ = self.uplink.await;
        let _ = self.reporter.await;
        if let Some(m) = self.metrics {
            let _ = m.await;
        }
        Ok(())
    }
}

/// Runs the agent until SIGTERM or ctrl-c.
///
/// # Errors
/// Start-up failures (outbox cannot be opened, TLS files unreadable).
pub async fn run(config: Config) -> anyhow::Result<()> {
    run_with(config, || {}).await
}

/// [`run`], calling `started` once the sources run and the config is dropped (the binary hands the freed
/// heap pages back to the OS there).
///
/// # Errors
/// Start-up failures (outbox cannot be opened, TLS files unreadable).
pub async fn run_with(mut config: Config, started: impl FnOnce()) -> anyhow::Result<()> {
    let agent = Agent::start(&config).await?;
    let sources =
        source::spawn_restored(&mut config, agent.observations.clone(), agent.health.clone(), &agent.reported);
    tracing::info!(site = %config.site, gateway = %config.gateway, sources = sources.len(), "agent running");
    // The source tasks hold their own compact form of their points; with 10,000 points this frees megabytes.
    drop(config);
    started();
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let mut usec = 0;
    let watchdog = sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2));
    let mut ping = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            r = &mut stop => { r?; break; }
            _ = ping.tick(), if watchdog.is_some() => {
                if agent.is_alive() {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                }
            }
        }
    }
    tracing::info!("stopping: committing queued events");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    for s in &sources {
        s.abort();
    }
    for s in sources {
        let _ = s.await;
    }
    agent.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

/// The uplink's view of the outbox (see [`crate::uplink::Pending`]).
impl crate::uplink::Pending for Outbox {
    type Error = crate::outbox::OutboxError;
    fn epoch(&self) -> u64 {
        Outbox::epoch(self)
    }
    fn depth(&mut self) -> Result<u64, Self::Error> {
        Ok(self.stats()?.depth)
    }
    fn status(
        &mut self,
        sources: Vec<shiftlens_common::status::SourceHealth>,
        now_ms: i64,
    ) -> Result<shiftlens_common::status::Status, Self::Error> {
        Ok(health::status(&self.stats()?, sources, now_ms))
    }
    fn read_after(
        &mut self,
        after: u64,
        max_events: usize,
        max_bytes: u64,
    ) -> Result<Vec<shiftlens_common::Event>, Self::Error> {
        Outbox::read_after(self, after, max_events, max_bytes)
    }
    fn latest_states(&mut self, max_events: usize) -> Result<Vec<shiftlens_common::Event>, Self::Error> {
        Outbox::latest_states(self, max_events)
    }
    fn delete(&mut self, ranges: &[(u64, u64)]) -> Result<(), Self::Error> {
        Outbox::delete(self, ranges).map(drop)
    }
    fn sparkplug_bd_seq(&mut self) -> Result<Option<u64>, Self::Error> {
        Outbox::sparkplug_bd_seq(self)
    }
    fn set_sparkplug_bd_seq(&mut self, bd_seq: u64) -> Result<(), Self::Error> {
        Outbox::set_sparkplug_bd_seq(self, bd_seq)
    }
}

/// Every asset a configured source feeds, in config order without repeats.
fn fed_assets(config: &Config) -> Vec<shiftlens_common::AssetId> {
    let mut seen = std::collections::HashSet::new();
    let modbus = config.modbus.iter().flat_map(|d| d.assets());
    let opcua = config.opcua.iter().flat_map(|e| e.assets());
    modbus.chain(opcua).filter(|a| seen.insert(a.clone())).collect()
}

async fn stop_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
        tokio::select! {
            _ = term.recv() => {}
            r = tokio::signal::ctrl_c() => r.context("cannot wait for ctrl-c")?,
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await.context("cannot wait for ctrl-c")?;
    Ok(())
}
