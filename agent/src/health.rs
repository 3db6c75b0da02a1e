//! Agent health: buffer depth, oldest unsent age, drops, per-source state and clock sanity, published as status.
//!
//! [`Health`] is a cheap shared handle: source tasks report every link change into it (each configured source
//! is registered at start as not yet connected), the uplink reads it for the heartbeat. [`status`] builds the
//! status message from plain data. [`ClockWatch`] is the pure clock check: between two looks it compares how
//! far the wall clock and the monotonic clock advanced; a difference above the threshold is a jump and makes
//! the clock "not ok" for a hold time, and a wall clock before 2024 is unsynchronised. Event order never
//! depends on the wall clock (the outbox seq keeps it).
//!
//! For the engineer at the gateway: [`reporter`] runs every `[health] state_interval`; it looks at the outbox,
//! raises and clears the backlog ERROR ([`backlog`]), writes the state file that `shiftlens-agent status`
//! reads ([`state`]) and hands the same figures to the optional Prometheus endpoint ([`metrics`]).

pub mod backlog;
pub mod metrics;
pub mod state;

use crate::detect::Sample;
use crate::outbox::{Outbox, Stats};
use serde::{Deserialize, Serialize};
use shiftlens_common::status::{SourceHealth, Status};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// `[health]`, validated.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    pub listen: Option<SocketAddr>,
    pub state_file: Option<PathBuf>,
    pub state_interval: Duration,
    pub warn_every: Duration,
    pub outbox_alert_percent: u8,
    pub outbox_alert_age: Duration,
    pub alert_every: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            listen: None,
            state_file: None,
            state_interval: Duration::from_secs(5),
            warn_every: Duration::from_secs(60),
            outbox_alert_percent: 80,
            outbox_alert_age: Duration::from_secs(3600),
            alert_every: Duration::from_secs(900),
        }
    }
}

impl HealthConfig {
    /// Where the state file of the outbox at `outbox` goes.
    pub fn state_file(&self, outbox: &std::path::Path) -> PathBuf {
        self.state_file.clone().unwrap_or_else(|| state::state_path(outbox))
    }

    /// The endpoint's address.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen
    }
}

/// The uplink as the agent sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkHealth {
    pub connected: bool,
    /// When the current state (connected or not) began, Unix ms; `None` before the first attempt ended.
    pub since_ms: Option<i64>,
    /// The last failure, in plain words, and the action to take.
    pub last_error: Option<String>,
    pub last_action: Option<String>,
    /// When the collector last confirmed events, Unix ms.
    pub last_ack_ms: Option<i64>,
    /// Failed connects (and lost connections) since the agent started.
    pub failures: u64,
}

/// 2024-01-01T00:00:00Z in Unix milliseconds: a wall clock before this has not been set since a cold boot.
pub const SANE_WALL_MS: i64 = 1_704_067_200_000;

/// Default jump threshold: wall and monotonic advance may differ by this much between two looks.
pub const CLOCK_JUMP_THRESHOLD: Duration = Duration::from_secs(2);

/// Default time the status keeps `clock_ok = false` after a jump.
pub const CLOCK_JUMP_HOLD: Duration = Duration::from_secs(600);

/// What one look at the clocks found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockCheck {
    /// Whether the status may say `clock_ok = true`.
    pub ok: bool,
    /// Wall advance minus monotonic advance since the previous look, when above the threshold (ms; negative
    /// when the wall clock went back).
    pub jump_ms: Option<i64>,
    /// The wall clock is before [`SANE_WALL_MS`].
    pub unsynced: bool,
}

/// Pure wall-vs-monotonic clock check; feed it `(wall_ms, mono_ms)` at every heartbeat or tick.
#[derive(Debug, Clone)]
pub struct ClockWatch {
    threshold_ms: i64,
    hold_ms: u64,
    last: Option<(i64, u64)>,
    /// Monotonic ms until which the clock counts as not ok after a jump.
    bad_until: Option<u64>,
}

impl Default for ClockWatch {
    fn default() -> Self {
        Self::new(CLOCK_JUMP_THRESHOLD, CLOCK_JUMP_HOLD)
    }
}

impl ClockWatch {
    /// A watch flagging jumps above `threshold` and holding "not ok" for `hold` after each.
    pub fn new(threshold: Duration, hold: Duration) -> Self {
        Self {
            threshold_ms: i64::try_from(threshold.as_millis()).unwrap_or(i64::MAX),
            hold_ms: u64::try_from(hold.as_millis()).unwrap_or(u64::MAX),
            last: None,
            bad_until: None,
        }
    }

    /// Looks at the clocks: `wall_ms` is Unix ms from the wall clock, `mono_ms` a monotonic reading (any
    /// origin, never going back).
    pub fn observe(&mut self, wall_ms: i64, mono_ms: u64) -> ClockCheck {
        let unsynced = wall_ms < SANE_WALL_MS;
        let mut jump_ms = None;
        if let Some((w0, m0)) = self.last {
            let wall = wall_ms.saturating_sub(w0);
            let mono = i64::try_from(mono_ms.saturating_sub(m0)).unwrap_or(i64::MAX);
            let drift = wall.saturating_sub(mono);
            if drift.saturating_abs() > self.threshold_ms {
                jump_ms = Some(drift);
                self.bad_until = Some(mono_ms.saturating_add(self.hold_ms));
            }
        }
        self.last = Some((wall_ms, mono_ms));
        let held = self.bad_until.is_some_and(|until| mono_ms < until);
        ClockCheck { ok: !unsynced && !held, jump_ms, unsynced }
    }
}

/// Shared per-source state and the clock watch.
#[derive(Debug, Clone)]
pub struct Health {
    sources: Arc<Mutex<BTreeMap<String, SourceHealth>>>,
    uplink: Arc<Mutex<UplinkHealth>>,
    clock: Arc<Mutex<(ClockWatch, bool)>>,
    origin: Instant,
}

impl Default for Health {
    fn default() -> Self {
        Self::with_clock(ClockWatch::default())
    }
}

impl Health {
    /// A handle using `clock` for the clock check.
    pub fn with_clock(clock: ClockWatch) -> Self {
        Self {
            sources: Arc::default(),
            uplink: Arc::default(),
            clock: Arc::new(Mutex::new((clock, false))),
            origin: Instant::now(),
        }
    }

    /// Records whether source `id` is connected, and why not.
    pub fn set_source(&self, id: &str, connected: bool, error: Option<String>) {
        let mut m = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        m.insert(id.to_string(), SourceHealth { id: id.to_string(), connected, error });
    }

    /// Lists source `id` as not yet connected, unless it already reported.
    pub fn register_source(&self, id: &str) {
        let mut m = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        m.entry(id.to_string()).or_insert_with(|| SourceHealth { id: id.to_string(), connected: false, error: None });
    }

    /// Records every link change among `samples` (the samples a source hands to its detector).
    pub fn record(&self, samples: &[Sample]) {
        for s in samples {
            if let Sample::Link { source, connected, error, .. } = s {
                self.set_source(source, *connected, error.clone());
            }
        }
    }

    /// The uplink is connected.
    pub fn uplink_up(&self) {
        let mut u = self.uplink.lock().unwrap_or_else(PoisonError::into_inner);
        u.connected = true;
        u.since_ms = Some(shiftlens_common::clock::now_ms());
    }

    /// A connect failed, or the connection was lost: `reason` and `action` in plain words.
    pub fn uplink_failed(&self, reason: &str, action: &str) {
        let mut u = self.uplink.lock().unwrap_or_else(PoisonError::into_inner);
        if u.connected || u.since_ms.is_none() {
            u.since_ms = Some(shiftlens_common::clock::now_ms());
        }
        u.connected = false;
        u.last_error = Some(reason.to_string());
        u.last_action = Some(action.to_string());
        u.failures += 1;
    }

    /// The collector confirmed events.
    pub fn uplink_acked(&self) {
        self.uplink.lock().unwrap_or_else(PoisonError::into_inner).last_ack_ms =
            Some(shiftlens_common::clock::now_ms());
    }

    pub fn uplink(&self) -> UplinkHealth {
        self.uplink.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Every source's state, sorted by id.
    pub fn sources(&self) -> Vec<SourceHealth> {
        self.sources.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }

    /// Looks at the clocks now; warns on a jump and when the clock becomes unsynchronised. Returns `clock_ok`.
    pub fn check_clock(&self) -> bool {
        let wall_ms = shiftlens_common::clock::now_ms();
        let mono_ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut guard = self.clock.lock().unwrap_or_else(PoisonError::into_inner);
        let (watch, was_unsynced) = &mut *guard;
        let c = watch.observe(wall_ms, mono_ms);
        if let Some(jump_ms) = c.jump_ms {
            tracing::warn!(jump_ms, wall_ms, "wall clock jumped; status says clock_ok = false for a while");
        }
        if c.unsynced && !*was_unsynced {
            tracing::warn!(wall_ms, "wall clock is before 2024: not synchronised; status says clock_ok = false");
        }
        *was_unsynced = c.unsynced;
        c.ok
    }
}

/// What [`reporter`] needs besides the shared handles.
#[derive(Debug, Clone)]
pub struct ReporterParams {
    pub config: HealthConfig,
    pub outbox_path: PathBuf,
    pub max_bytes: u64,
    pub site: String,
    pub gateway: String,
    pub broker: String,
}

/// Every `state_interval`: reads the outbox figures, logs the backlog ERROR (or its clearing), writes the state
/// file and publishes the figures on `figures` (for the endpoint). On `shutdown` writes the file once more with
/// `running = false`.
pub async fn reporter(
    params: ReporterParams,
    health: Health,
    outbox: Arc<Mutex<Outbox>>,
    figures: watch::Sender<state::AgentState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let path = params.config.state_file(&params.outbox_path);
    let mut alert = backlog::BacklogAlert::new(
        params.config.outbox_alert_percent,
        params.config.outbox_alert_age,
        params.config.alert_every,
    );
    let mut tick = tokio::time::interval(params.config.state_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stats = Stats::default();
    let mut write_failed = false;
    loop {
        let running = tokio::select! {
            r = shutdown.changed() => r.is_ok() && !*shutdown.borrow(),
            _ = tick.tick() => true,
        };
        if let Some(s) = read_stats(&outbox).await {
            stats = s;
        }
        let now = now_wall_ms();
        let oldest_age = stats.oldest_ts_ms.map(|t| Duration::from_millis(u64::try_from(now - t).unwrap_or(0)));
        let problem = match alert.check(Instant::now(), stats.bytes, params.max_bytes, oldest_age) {
            backlog::Verdict::Raise(why) | backlog::Verdict::Repeat(why) => {
                tracing::error!(
                    outbox = %params.outbox_path.display(),
                    depth = stats.depth,
                    problem = %why,
                    action = "events are not being confirmed by the collector: see the uplink warnings or run `shiftlens-agent status`",
                    "outbox backlog over the alert threshold"
                );
                Some(why)
            }
            backlog::Verdict::Firing(why) => Some(why),
            backlog::Verdict::Clear => {
                tracing::info!(depth = stats.depth, "outbox backlog back under the alert thresholds");
                None
            }
            backlog::Verdict::Quiet => None,
        };
        let st = state::AgentState {
            version: state::STATE_VERSION,
            running,
            pid: std::process::id(),
            written_ms: now,
            interval_ms: u64::try_from(params.config.state_interval.as_millis()).unwrap_or(u64::MAX),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            site: params.site.clone(),
            gateway: params.gateway.clone(),
            broker: params.broker.clone(),
            uplink: health.uplink(),
            outbox: state::OutboxFigures {
                path: params.outbox_path.clone(),
                depth: stats.depth,
                bytes: stats.bytes,
                max_bytes: params.max_bytes,
                oldest_ts_ms: stats.oldest_ts_ms,
                dropped: stats.dropped,
            },
            backlog_alert: problem,
            sources: health.sources(),
            clock_ok: health.check_clock(),
            metrics: params.config.listen_addr().map(|a| a.to_string()),
        };
        let (p, s) = (path.clone(), st.clone());
        match tokio::task::spawn_blocking(move || state::write(&p, &s)).await {
            Ok(Ok(())) => write_failed = false,
            Ok(Err(e)) if !write_failed => {
                write_failed = true;
                tracing::warn!(path = %path.display(), error = %e, "cannot write the state file; `shiftlens-agent status` will say the agent is not running");
            }
            _ => {}
        }
        figures.send_replace(st);
        if !running {
            return;
        }
    }
}

/// The outbox figures, without waiting long for the writer (a stalled disk must not stop the state file).
async fn read_stats(outbox: &Arc<Mutex<Outbox>>) -> Option<Stats> {
    let outbox = outbox.clone();
    let r = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            match outbox.try_lock() {
                Ok(o) => return Some(o.stats()),
                Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner().stats()),
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(std::sync::TryLockError::WouldBlock) => return None,
            }
        }
    })
    .await;
    match r {
        Ok(Some(Ok(s))) => Some(s),
        Ok(Some(Err(e))) => {
            tracing::debug!(error = %e, "outbox figures not read");
            None
        }
        _ => None,
    }
}

fn now_wall_ms() -> i64 {
    shiftlens_common::clock::now_ms()
}

/// The online status (birth message and heartbeat).
pub fn status(stats: &Stats, sources: Vec<SourceHealth>, now_ms: i64) -> Status {
    let mut s = Status::offline(now_ms);
    s.online = true;
    s.agent_version = env!("CARGO_PKG_VERSION").to_string();
    s.epoch = stats.epoch;
    s.buffer_depth = stats.depth;
    s.oldest_unsent_age_ms = stats.oldest_ts_ms.map_or(0, |t| u64::try_from(now_ms.saturating_sub(t)).unwrap_or(0));
    s.dropped = stats.dropped;
    s.sources = sources;
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use shiftlens_common::AssetId;

    #[test]
    fn status_reports_depth_age_drops_and_sources() {
        let h = Health::default();
        h.set_source("plc-2", false, Some("timeout".into()));
        h.set_source("plc-1", true, None);
        let stats = Stats { epoch: 7, depth: 12, bytes: 900, oldest_ts_ms: Some(1_000), dropped: 3 };
        let s = status(&stats, h.sources(), 4_500);
        assert!(s.online);
        assert_eq!((s.epoch, s.buffer_depth, s.oldest_unsent_age_ms, s.dropped), (7, 12, 3_500, 3));
        assert_eq!(s.sources.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["plc-1", "plc-2"]);
        let empty = status(&Stats::default(), vec![], 10);
        assert_eq!(empty.oldest_unsent_age_ms, 0);
    }

    fn link(source: &str, connected: bool, error: Option<&str>) -> Sample {
        Sample::Link {
            source: source.into(),
            assets: vec![AssetId::parse("press-1").unwrap()],
            ts_ms: 1,
            connected,
            error: error.map(String::from),
        }
    }

    #[test]
    fn registered_sources_start_unconnected_and_follow_link_samples() {
        let h = Health::default();
        h.register_source("plc-1");
        h.register_source("opc-1");
        let sh = |id: &str, connected, error: Option<&str>| SourceHealth {
            id: id.into(),
            connected,
            error: error.map(String::from),
        };
        assert_eq!(h.sources(), [sh("opc-1", false, None), sh("plc-1", false, None)]);
        h.record(&[link("plc-1", true, None)]);
        h.register_source("plc-1"); // a late registration does not forget the state
        assert_eq!(h.sources(), [sh("opc-1", false, None), sh("plc-1", true, None)]);
        h.record(&[link("plc-1", false, Some("no answer within 200ms")), link("opc-1", true, None)]);
        assert_eq!(h.sources(), [sh("opc-1", true, None), sh("plc-1", false, Some("no answer within 200ms"))]);
    }

    const T: i64 = 1_750_000_000_000; // mid-2025

    #[test]
    fn clock_watch_table() {
        // (wall_ms, mono_ms, ok, jump_ms, unsynced); threshold 2 s, hold 60 s.
        type Row = (i64, u64, bool, Option<i64>, bool);
        let cases: &[(&str, &[Row])] = &[
            ("steady", &[(T, 0, true, None, false), (T + 1_000, 1_000, true, None, false)]),
            ("slew within threshold", &[(T, 0, true, None, false), (T + 12_000, 10_000, true, None, false)]),
            ("exactly the threshold is no jump", &[(T, 0, true, None, false), (T + 3_000, 1_000, true, None, false)]),
            (
                "forward jump held, then ok",
                &[
                    (T, 0, true, None, false),
                    (T + 3_001, 1_000, false, Some(2_001), false),
                    (T + 33_001, 31_000, false, None, false),
                    (T + 63_001, 61_000, true, None, false),
                ],
            ),
            ("backward jump", &[(T, 0, true, None, false), (T - 5_000, 1_000, false, Some(-6_000), false)]),
            (
                "a second jump extends the hold",
                &[
                    (T, 0, true, None, false),
                    (T + 10_000, 1_000, false, Some(9_000), false),
                    (T + 10_000, 50_000, false, Some(-49_000), false),
                    (T + 69_000, 109_000, false, None, false),
                    (T + 71_000, 111_000, true, None, false),
                ],
            ),
            ("cold boot in 1970", &[(5_000, 0, false, None, true), (6_000, 1_000, false, None, true)]),
            (
                "cold boot, then synchronised: a jump, held",
                &[
                    (5_000, 0, false, None, true),
                    (T, 1_000, false, Some(T - 5_000 - 1_000), false),
                    (T + 60_000, 61_000, true, None, false),
                ],
            ),
            ("just before 2024", &[(SANE_WALL_MS - 1, 0, false, None, true), (SANE_WALL_MS, 1, true, None, false)]),
        ];
        for (name, rows) in cases {
            let mut w = ClockWatch::new(Duration::from_secs(2), Duration::from_secs(60));
            for (i, &(wall, mono, ok, jump_ms, unsynced)) in rows.iter().enumerate() {
                assert_eq!(w.observe(wall, mono), ClockCheck { ok, jump_ms, unsynced }, "{name}, row {i}");
            }
        }
    }

    #[test]
    fn a_real_clock_is_ok() {
        let h = Health::default();
        assert!(h.check_clock());
        assert!(h.check_clock());
    }
}
