//! The collector's counters, shared by ingest (which counts) and HTTP's `/metrics` (which reads).
//!
//! Plain atomics, relaxed ordering: each counter only ever grows and none is read together with another.

use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Dictionary-form batches answered with "dictionary unknown" (not stored, not acked; the agent resends).
    pub dictionary_requests: AtomicU64,
}

impl Metrics {
    pub fn get(v: &AtomicU64) -> u64 {
        v.load(Ordering::Relaxed)
    }

    /// Adds `n` to a counter.
    pub fn add(v: &AtomicU64, n: u64) {
        v.fetch_add(n, Ordering::Relaxed);
    }
}
