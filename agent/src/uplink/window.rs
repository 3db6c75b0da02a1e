//! The send window: which outbox events are published and await the collector's ack. Pure state, no I/O.
//!
//! Batches are read from the outbox in seq order after `cursor`. At most `max_events` events (and at most
//! [`MAX_BATCHES`] batches) await an ack, so small live batches do not wait for the ack round trip while a
//! backlog still drains in a bounded window; a batch leaves the window when acks cover all its seqs. When the oldest batch waited longer than `ack_timeout`, or
//! the connection was lost, the window goes back: the cursor returns to 0 and everything still in the outbox
//! is sent again (the outbox only holds unconfirmed events, and the collector drops duplicates).

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct InFlight {
    seqs: BTreeSet<u64>,
    sent_at: Instant,
}

/// Most batches awaiting an ack, whatever their size.
pub const MAX_BATCHES: usize = 1024;

#[derive(Debug)]
pub struct Window {
    max_events: usize,
    events: usize,
    ack_timeout: Duration,
    cursor: u64,
    inflight: VecDeque<InFlight>,
}

impl Window {
    pub fn new(max_events: usize, ack_timeout: Duration) -> Self {
        Self { max_events: max_events.max(1), events: 0, ack_timeout, cursor: 0, inflight: VecDeque::new() }
    }

    /// The highest seq already sent in order; the next batch starts after it.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    pub fn has_room(&self) -> bool {
        self.events < self.max_events && self.inflight.len() < MAX_BATCHES
    }

    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Records a published batch of ascending `seqs`.
    pub fn sent(&mut self, seqs: &[u64], now: Instant) {
        if let Some(&last) = seqs.last() {
            self.cursor = self.cursor.max(last);
            self.events += seqs.len();
            self.inflight.push_back(InFlight { seqs: seqs.iter().copied().collect(), sent_at: now });
        }
    }

    /// Applies an ack's inclusive ranges; returns how many batches completed.
    pub fn acked(&mut self, ranges: &[(u64, u64)]) -> usize {
        for b in &mut self.inflight {
            for &(a, z) in ranges {
                if a <= z {
                    let covered: Vec<u64> = b.seqs.range(a..=z).copied().collect();
                    for s in covered {
                        b.seqs.remove(&s);
                        self.events -= 1;
                    }
                }
            }
        }
        let before = self.inflight.len();
        self.inflight.retain(|b| !b.seqs.is_empty());
        before - self.inflight.len()
    }

    /// Whether the oldest unconfirmed batch waited longer than the ack timeout.
    pub fn expired(&self, now: Instant) -> bool {
        self.inflight.front().is_some_and(|b| now.duration_since(b.sent_at) >= self.ack_timeout)
    }

    /// Forgets what is in flight and starts again from the oldest event in the outbox.
    pub fn go_back(&mut self) {
        self.cursor = 0;
        self.events = 0;
        self.inflight.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_fills_drains_on_acks_and_goes_back_on_timeout() {
        let t0 = Instant::now();
        let mut w = Window::new(4, Duration::from_secs(5));
        assert!(w.has_room());
        w.sent(&[1, 2, 3], t0);
        assert!(w.has_room());
        w.sent(&[4, 6], t0 + Duration::from_secs(1));
        assert!(!w.has_room());
        assert_eq!(w.cursor(), 6);
        // a partial ack completes nothing; acks may name seqs that are not in flight
        assert_eq!(w.acked(&[(0, 2)]), 0);
        assert!(w.has_room(), "3 events unconfirmed, 4 allowed");
        assert_eq!(w.acked(&[(3, 4), (9, 12)]), 1);
        assert!(w.has_room());
        assert!(!w.expired(t0 + Duration::from_secs(5)));
        assert!(w.expired(t0 + Duration::from_secs(6)));
        w.go_back();
        assert_eq!((w.cursor(), w.in_flight()), (0, 0));
    }

    #[test]
    fn empty_batches_and_reversed_ranges_change_nothing() {
        let mut w = Window::new(1, Duration::from_secs(1));
        w.sent(&[], Instant::now());
        assert_eq!(w.in_flight(), 0);
        w.sent(&[7], Instant::now());
        assert_eq!(w.acked(&[(9, 3)]), 0);
        assert_eq!(w.acked(&[(7, 7)]), 1);
    }
}
