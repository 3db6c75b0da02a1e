//! Agent health: buffer depth, oldest unsent age, drops and per-source state, published as status.
//!
//! [`Health`] is a cheap shared handle: sources report their link state into it, the uplink reads it for the
//! heartbeat. [`status`] builds the status message from plain data.

use crate::outbox::Stats;
use shiftlens_common::status::{SourceHealth, Status};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Shared per-source state.
#[derive(Debug, Clone, Default)]
pub struct Health {
    sources: Arc<Mutex<BTreeMap<String, SourceHealth>>>,
}

impl Health {
    /// Records whether source `id` is connected, and why not.
    pub fn set_source(&self, id: &str, connected: bool, error: Option<String>) {
        let mut m = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        m.insert(id.to_string(), SourceHealth { id: id.to_string(), connected, error });
    }

    /// Every source's state, sorted by id.
    pub fn sources(&self) -> Vec<SourceHealth> {
        self.sources.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
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
}
