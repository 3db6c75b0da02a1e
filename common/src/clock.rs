//! One clock and one retry backoff for both programs.
//!
//! - [`now_ms`]: the wall clock as UTC milliseconds, the unit of every timestamp on the wire.
//! - [`Backoff`]: reconnect and retry delays, doubling from a minimum to a maximum, each drawn from the upper
//!   half of its step (jitter), so clients that failed together do not come back in step.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall clock, UTC milliseconds (0 before 1970, `i64::MAX` past year 292 million).
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Delays doubling from `min` to `max`, each drawn uniformly from its upper half.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `min`; `max` below `min` is taken as `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { min, max: max.max(min), next: min }
    }

    /// After a success: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// The next delay, with jitter from a fresh random fraction.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(random_fraction())
    }

    /// The next delay, given a random fraction in [0, 1) (table tests pass their own).
    pub fn next_delay_with(&mut self, random: f64) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d.mul_f64(0.5 + 0.5 * random.clamp(0.0, 1.0))
    }
}

/// A random fraction in [0, 1) from the standard library's per-map random hash keys (no RNG crate needed).
fn random_fraction() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms().unsigned_abs());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_in_the_upper_half() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let ds: Vec<u128> = (0..6).map(|_| b.next_delay_with(1.0).as_millis()).collect();
        assert_eq!(ds, [1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(b.next_delay_with(0.0), Duration::from_secs(4));
        b.reset();
        assert_eq!(b.next_delay_with(0.5), Duration::from_millis(750));
        for _ in 0..100 {
            let d = Backoff::new(Duration::from_secs(2), Duration::from_secs(2)).next_delay();
            assert!((Duration::from_secs(1)..=Duration::from_secs(2)).contains(&d), "{d:?}");
        }
    }

    #[test]
    fn the_clock_reads_utc_milliseconds() {
        // 2020-01-01 and 2100-01-01: a clock in milliseconds, not seconds or microseconds.
        assert!((1_577_836_800_000..4_102_444_800_000).contains(&now_ms()));
    }
}
