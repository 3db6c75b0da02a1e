//! Agent health: buffer depth, oldest unsent age, drops, per-source state and clock sanity, published as status.
//!
//! [`Health`] is a cheap shared handle: source tasks report every link change into it (each configured source
//! is registered at start as not yet connected), the uplink reads it for the heartbeat. [`status`] builds the
//! status message from plain data. [`ClockWatch`] is the pure clock check: between two looks it compares how
//! far the wall clock and the monotonic clock advanced; a difference above the threshold is a jump and makes
//! the clock "not ok" for a hold time, and a wall clock before 2024 is unsynchronised. Event order never
//! depends on the wall clock (the outbox seq keeps it).

use crate::detect::Sample;
use crate::outbox::Stats;
use shiftlens_common::status::{SourceHealth, Status};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
        Self { sources: Arc::default(), clock: Arc::new(Mutex::new((clock, false))), origin: Instant::now() }
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

    /// Every source's state, sorted by id.
    pub fn sources(&self) -> Vec<SourceHealth> {
        self.sources.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }

    /// Looks at the clocks now; warns on a jump and when the clock becomes unsynchronised. Returns `clock_ok`.
    pub fn check_clock(&self) -> bool {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
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
