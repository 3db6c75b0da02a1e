//! The agent's record of its own runs and of the alarm flags it last reported, in the outbox database.
//!
//! Invariants:
//! - every start adds a `runs` row ([`Outbox::begin_run`]); a clean stop sets its `stopped_ms`
//!   ([`Outbox::end_run`]); every commit and the writer's idle tick ([`Outbox::touch_run`]) move its
//!   `last_ms` forward to the latest moment the agent is known to have been observing;
//! - a start after an unclean stop (the latest run has no `stopped_ms`) stores, before anything of the new run,
//!   one `source` event per asset it feeds, with source [`AGENT_SOURCE`] and `connected: false`, stamped at the
//!   previous run's `last_ms`: the collector shows the asset `unknown` from then until its next state (the
//!   first observation of the new run) and ends a stop there instead of stretching it across the dead time;
//! - no event of a run is stored with a time before the previous run's `last_ms` (the floor): a wall clock set
//!   back at boot, or an OPC UA source timestamp of a value that has not changed since before the crash, cannot
//!   put the new run's events before the gap;
//! - `last_reported` holds each alarm's last stored flag per (asset, alarm id), written in the transaction that
//!   stores the alarm event, so a crash cannot leave one without the other.

use super::{Outbox, OutboxError};
use crate::{Observation, Reported};
use rusqlite::{params, OptionalExtension, Transaction};
use shiftlens_common::{AssetId, EventBody, AGENT_SOURCE};

/// Rows kept in `runs` (the current run and the ones before it).
pub const KEEP_RUNS: i64 = 100;

/// The run before this one, as the outbox recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviousRun {
    pub started_ms: i64,
    /// The last moment it is known to have been observing.
    pub last_ms: i64,
    /// Set when it stopped cleanly.
    pub stopped_ms: Option<i64>,
}

/// What [`Outbox::begin_run`] found and stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStart {
    pub previous: Option<PreviousRun>,
    /// `source` events stored for the time the agent was not running (one per asset; 0 after a clean stop).
    pub gap_events: usize,
    /// The alarm flags last reported.
    pub reported: Reported,
}

impl Outbox {
    /// Records the start of a run at `now_ms`. After an unclean stop it first stores the "agent was not running"
    /// `source` event for each of `assets` (see the module note). Returns the previous run and the alarm flags
    /// last reported, for the detectors.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn begin_run(&mut self, now_ms: i64, assets: &[AssetId]) -> Result<RunStart, OutboxError> {
        let previous = self
            .conn
            .query_row("SELECT started_ms, last_ms, stopped_ms FROM runs ORDER BY id DESC LIMIT 1", [], |r| {
                Ok(PreviousRun { started_ms: r.get(0)?, last_ms: r.get(1)?, stopped_ms: r.get(2)? })
            })
            .optional()?;
        let mut gap_events = 0;
        if let Some(p) = previous.filter(|p| p.stopped_ms.is_none()) {
            let error = "the agent was not running (unclean stop): nothing observed from its last observation \
                         until it started again";
            let gap: Vec<Observation> = assets
                .iter()
                .map(|a| Observation {
                    ts_ms: p.last_ms,
                    asset: a.clone(),
                    body: EventBody::Source {
                        source: AGENT_SOURCE.into(),
                        connected: false,
                        error: Some(error.into()),
                    },
                })
                .collect();
            self.append(&gap, 0)?;
            gap_events = gap.len();
            tracing::warn!(
                since_ms = p.last_ms,
                assets = gap_events,
                "the previous run did not stop cleanly; its assets are reported unknown since its last observation"
            );
        }
        self.floor_ms = previous.map_or(i64::MIN, |p| p.last_ms);
        self.conn.execute(
            "INSERT INTO runs(started_ms, last_ms) VALUES (?1, ?2)",
            params![now_ms, now_ms.max(self.floor_ms)],
        )?;
        let run = self.conn.last_insert_rowid();
        self.run = Some(run);
        // Only the latest runs matter; keep a short history for diagnosis.
        self.conn.execute("DELETE FROM runs WHERE id <= ?1", [run - KEEP_RUNS])?;
        Ok(RunStart { previous, gap_events, reported: self.last_reported()? })
    }

    /// Marks the current run as stopped cleanly at `now_ms` (after everything queued was committed).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn end_run(&mut self, now_ms: i64) -> Result<(), OutboxError> {
        if let Some(run) = self.run {
            self.conn.execute(
                "UPDATE runs SET stopped_ms = ?2, last_ms = MAX(last_ms, ?2) WHERE id = ?1",
                params![run, now_ms],
            )?;
        }
        Ok(())
    }

    /// Records that the current run was still observing at `now_ms`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn touch_run(&mut self, now_ms: i64) -> Result<(), OutboxError> {
        if let Some(run) = self.run {
            self.conn.execute("UPDATE runs SET last_ms = MAX(last_ms, ?2) WHERE id = ?1", params![run, now_ms])?;
        }
        Ok(())
    }

    /// The alarm flags last stored, by asset and alarm id (rows whose asset id no longer parses are skipped).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn last_reported(&self) -> Result<Reported, OutboxError> {
        let mut stmt = self.conn.prepare("SELECT asset, alarm, active FROM last_reported")?;
        let mut rows = stmt.query([])?;
        let mut out = Reported::new();
        while let Some(r) = rows.next()? {
            let Ok(asset) = AssetId::parse(r.get::<_, String>(0)?) else { continue };
            out.entry(asset).or_default().insert(r.get(1)?, r.get::<_, i64>(2)? != 0);
        }
        Ok(out)
    }
}

/// Inside an append transaction: moves the current run's `last_ms` to `now_ms` (or the latest event time, if
/// later) and records the alarm flags of `observations` (times already raised to the floor) in `last_reported`.
pub(super) fn record(
    tx: &Transaction<'_>,
    run: Option<i64>,
    observations: &[Observation],
    floor_ms: i64,
    now_ms: i64,
) -> Result<(), OutboxError> {
    let mut latest = now_ms;
    // Only each alarm's last edge in the group is written.
    let mut last: std::collections::HashMap<(&str, &str), (bool, i64)> = std::collections::HashMap::new();
    for o in observations {
        let ts = o.ts_ms.max(floor_ms);
        latest = latest.max(ts);
        if let EventBody::Alarm(a) = &o.body {
            last.insert((o.asset.as_str(), a.id.as_str()), (a.active, ts));
        }
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO last_reported(asset, alarm, active, ts_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(asset, alarm) DO UPDATE SET active = excluded.active, ts_ms = excluded.ts_ms",
    )?;
    for ((asset, id), (active, ts)) in last {
        stmt.execute(params![asset, id, i64::from(active), ts])?;
    }
    if let Some(run) = run {
        tx.execute("UPDATE runs SET last_ms = MAX(last_ms, ?2) WHERE id = ?1", params![run, latest])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::OutboxConfig;
    use shiftlens_common::{Alarm, MachineState};

    fn asset(s: &str) -> AssetId {
        AssetId::parse(s).unwrap()
    }

    fn alarm(ts_ms: i64, id: &str, active: bool) -> Observation {
        let body = EventBody::Alarm(Alarm {
            id: id.into(),
            active,
            severity: 500,
            text: String::new(),
            class: None,
            ..Default::default()
        });
        Observation { ts_ms, asset: asset("press-1"), body }
    }

    fn state(ts_ms: i64, state: MachineState) -> Observation {
        Observation { ts_ms, asset: asset("press-1"), body: EventBody::State { state, reason: None } }
    }

    /// (ts_ms, asset, body) of every stored event.
    fn stored(o: &Outbox) -> Vec<(i64, String, EventBody)> {
        o.read_after(0, 1000, u64::MAX).unwrap().into_iter().map(|e| (e.ts_ms, e.asset.to_string(), e.body)).collect()
    }

    #[test]
    fn a_start_after_an_unclean_stop_stores_the_gap_first_and_keeps_later_times_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = OutboxConfig::at(dir.path().join("outbox.db"));
        let assets = [asset("press-1"), asset("press-2")];
        let t = crate::outbox::now_ms() + 60_000; // event times ahead of the wall clock, to see last_ms follow them
        {
            let mut o = Outbox::open(&config).unwrap();
            let first = o.begin_run(t, &assets).unwrap();
            assert_eq!((first.previous, first.gap_events, first.reported.is_empty()), (None, 0, true));
            o.append(&[state(t + 100, MachineState::Down), alarm(t + 100, "A", true), alarm(t + 100, "B", true)], 0)
                .unwrap();
            o.append(&[alarm(t + 200, "B", false)], 0).unwrap();
            o.touch_run(t + 500).unwrap();
            // Dropped without end_run: a crash.
        }
        let mut o = Outbox::open(&config).unwrap();
        let before = stored(&o).len();
        let start = o.begin_run(t - 100, &assets).unwrap(); // the wall clock went back at boot
        let previous = start.previous.unwrap();
        assert_eq!((previous.started_ms, previous.last_ms, previous.stopped_ms), (t, t + 500, None));
        assert_eq!(start.gap_events, 2);
        let flags = &start.reported[&asset("press-1")];
        assert_eq!((flags["A"], flags["B"]), (true, false));
        let gap = stored(&o).split_off(before);
        let unclean = |a: &str| {
            let EventBody::Source { source, connected: false, error: Some(_) } = &gap[usize::from(a == "press-2")].2
            else {
                panic!("not a lost source: {gap:?}")
            };
            (gap[usize::from(a == "press-2")].0, gap[usize::from(a == "press-2")].1.clone(), source.clone())
        };
        assert_eq!(unclean("press-1"), (t + 500, "press-1".into(), AGENT_SOURCE.into()));
        assert_eq!(unclean("press-2"), (t + 500, "press-2".into(), AGENT_SOURCE.into()));
        // An event of this run stamped before the gap (clock set back, old source timestamp) lands at the gap.
        o.append(&[state(t - 50, MachineState::Running)], 0).unwrap();
        assert_eq!(stored(&o).last().unwrap().0, t + 500);
    }

    #[test]
    fn a_start_after_a_clean_stop_stores_no_gap() {
        let dir = tempfile::tempdir().unwrap();
        let config = OutboxConfig::at(dir.path().join("outbox.db"));
        {
            let mut o = Outbox::open(&config).unwrap();
            o.begin_run(1_000, &[asset("press-1")]).unwrap();
            o.append(&[alarm(1_100, "A", true)], 0).unwrap();
            o.end_run(2_000).unwrap();
        }
        let mut o = Outbox::open(&config).unwrap();
        let start = o.begin_run(3_000, &[asset("press-1")]).unwrap();
        assert_eq!(start.previous.unwrap().stopped_ms, Some(2_000));
        assert_eq!(start.gap_events, 0);
        assert!(start.reported[&asset("press-1")]["A"]);
        assert_eq!(stored(&o).len(), 1);
    }
}
