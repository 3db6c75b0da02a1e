//! Bounds that keep one gateway from crowding out the others: a fair queue between the MQTT loop and the
//! decoder, and a rate limit for repeated log lines. Both are plain structs (no I/O, no clock of their
//! own); `ingest` wraps them.
//!
//! Invariants: [`FairQueue`] holds at most `per_key` items of one key and `total` items in all, and
//! [`FairQueue::pop`] serves the keys round-robin, so an item waits behind at most one item of each other
//! key that was queued when it arrived. [`LogLimiter`] lets at most one line per key through per window
//! and counts the rest, so the next line can say how many were suppressed.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Per-key FIFO queues served round-robin, bounded per key and in total.
#[derive(Debug)]
pub struct FairQueue<K, T> {
    per_key: usize,
    total: usize,
    len: usize,
    queues: HashMap<K, VecDeque<T>>,
    /// Keys with a non-empty queue, in serving order.
    ready: VecDeque<K>,
}

impl<K: Hash + Eq + Clone, T> FairQueue<K, T> {
    pub fn new(per_key: usize, total: usize) -> Self {
        Self { per_key, total, len: 0, queues: HashMap::new(), ready: VecDeque::new() }
    }

    /// Queues `item` under `key`.
    ///
    /// # Errors
    /// Gives the item back when its key's queue or the whole queue is full.
    pub fn push(&mut self, key: K, item: T) -> Result<(), T> {
        if self.len >= self.total {
            return Err(item);
        }
        let q = self.queues.entry(key.clone()).or_default();
        if q.len() >= self.per_key {
            return Err(item);
        }
        if q.is_empty() {
            self.ready.push_back(key);
        }
        q.push_back(item);
        self.len += 1;
        Ok(())
    }

    /// The oldest item of the next key in turn.
    pub fn pop(&mut self) -> Option<(K, T)> {
        let key = self.ready.pop_front()?;
        let q = self.queues.get_mut(&key)?;
        let item = q.pop_front()?;
        self.len -= 1;
        if q.is_empty() {
            self.queues.remove(&key);
        } else {
            self.ready.push_back(key.clone());
        }
        Some((key, item))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    since: Instant,
    suppressed: u64,
}

/// At most one log line per key per `every`; counts what it holds back.
#[derive(Debug)]
pub struct LogLimiter<K> {
    every: Duration,
    max_keys: usize,
    windows: HashMap<K, Window>,
    /// Shared by keys that find the table full (a flood of distinct keys is limited as one key).
    overflow: Option<Window>,
}

impl<K: Hash + Eq> LogLimiter<K> {
    /// One line per key per `every`, tracking at most `max_keys` keys.
    pub fn new(every: Duration, max_keys: usize) -> Self {
        Self { every, max_keys, windows: HashMap::new(), overflow: None }
    }

    /// `Some(n)` when a line for `key` may be written at `now` (`n` lines of that key were suppressed since
    /// the last one), `None` when this one is to be suppressed (and counted).
    pub fn check(&mut self, key: K, now: Instant) -> Option<u64> {
        let every = self.every;
        let fresh = Window { since: now, suppressed: 0 };
        if !self.windows.contains_key(&key) && self.windows.len() >= self.max_keys {
            self.windows.retain(|_, w| w.suppressed > 0 || now.duration_since(w.since) < every);
        }
        let w = if self.windows.contains_key(&key) || self.windows.len() < self.max_keys {
            match self.windows.entry(key) {
                Entry::Vacant(v) => {
                    v.insert(fresh);
                    return Some(0);
                }
                Entry::Occupied(o) => o.into_mut(),
            }
        } else {
            if self.overflow.is_none() {
                self.overflow = Some(fresh);
                return Some(0);
            }
            let Some(w) = self.overflow.as_mut() else { return Some(0) };
            w
        };
        if now.duration_since(w.since) >= every {
            let n = w.suppressed;
            *w = fresh;
            Some(n)
        } else {
            w.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_serves_keys_round_robin_within_its_bounds() {
        let mut q = FairQueue::new(3, 5);
        for i in 0..3 {
            assert_eq!(q.push("flood", i), Ok(()));
        }
        // The flooding key is at its own bound; others still get in.
        assert_eq!(q.push("flood", 3), Err(3));
        assert_eq!(q.push("good", 10), Ok(()));
        assert_eq!(q.push("other", 20), Ok(()));
        // The total bound holds too.
        assert_eq!(q.push("late", 30), Err(30));
        assert_eq!(q.len(), 5);
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, [("flood", 0), ("good", 10), ("other", 20), ("flood", 1), ("flood", 2)]);
        assert!(q.is_empty());
        // A key that emptied joins the end of the turn when it comes back.
        q.push("flood", 4).unwrap();
        q.push("flood", 5).unwrap();
        assert_eq!(q.pop(), Some(("flood", 4)));
        q.push("good", 11).unwrap();
        assert_eq!(q.pop(), Some(("flood", 5)));
        assert_eq!(q.pop(), Some(("good", 11)));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn the_log_limiter_lets_one_line_per_key_per_window_and_counts_the_rest() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut l = LogLimiter::new(Duration::from_secs(10), 2);
        assert_eq!(l.check("a", t0), Some(0));
        assert_eq!(l.check("a", t0), None);
        assert_eq!(l.check("a", t0 + 9 * s), None);
        assert_eq!(l.check("b", t0 + 5 * s), Some(0));
        assert_eq!(l.check("a", t0 + 10 * s), Some(2));
        assert_eq!(l.check("a", t0 + 11 * s), None);
        // The table is full: a third key shares the overflow window with any further ones.
        assert_eq!(l.check("c", t0 + 12 * s), Some(0));
        assert_eq!(l.check("d", t0 + 12 * s), None);
        // Once "b" has been quiet for a window it is forgotten and its slot reused; the overflow window
        // still reports what it held back.
        assert_eq!(l.check("c", t0 + 22 * s), Some(0));
        assert_eq!(l.check("d", t0 + 22 * s), Some(1));
        assert_eq!(l.check("e", t0 + 40 * s), Some(0));
        assert_eq!(l.check("e", t0 + 41 * s), None);
    }
}
