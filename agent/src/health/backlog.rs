//! The backlog alert (pure): the outbox has filled past a share of its bound, or its oldest unsent event is
//! older than an age. Raised once (ERROR), repeated at an interval while it holds, cleared (INFO) when both
//! figures are back under.

use std::time::{Duration, Instant};

/// Backlog thresholds and what was last said.
#[derive(Debug, Clone)]
pub struct BacklogAlert {
    percent: u8,
    age: Duration,
    every: Duration,
    /// When the current alert was last logged; `None` while there is no alert.
    logged: Option<Instant>,
}

/// What one look at the outbox asks the caller to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Over a threshold, and it was not before: log an ERROR.
    Raise(String),
    /// Still over, and `every` has passed: log the ERROR again.
    Repeat(String),
    /// Still over; nothing to log now.
    Firing(String),
    /// Back under: log that (INFO).
    Clear,
    /// Under, and it was.
    Quiet,
}

impl BacklogAlert {
    /// Alert above `percent` % of the bound or above `age`; repeat every `every`.
    pub fn new(percent: u8, age: Duration, every: Duration) -> Self {
        Self { percent, age, every, logged: None }
    }

    /// Looks at the outbox: `bytes` used of `max_bytes`, and the age of the oldest unsent event.
    pub fn check(&mut self, now: Instant, bytes: u64, max_bytes: u64, oldest_age: Option<Duration>) -> Verdict {
        let mut why = Vec::new();
        // bytes / max_bytes > percent / 100, in integers.
        if u128::from(bytes) * 100 > u128::from(max_bytes) * u128::from(self.percent) {
            let used = u128::from(bytes) * 100 / u128::from(max_bytes.max(1));
            why.push(format!(
                "the outbox is {used} % full ({} of {}; alert above {} %): when it is full the oldest events are dropped",
                human_bytes(bytes),
                human_bytes(max_bytes),
                self.percent
            ));
        }
        if let Some(age) = oldest_age.filter(|a| *a > self.age) {
            why.push(format!(
                "the oldest unsent event is {} old (alert above {})",
                human_duration(age),
                human_duration(self.age)
            ));
        }
        match (why.is_empty(), self.logged) {
            (true, None) => Verdict::Quiet,
            (true, Some(_)) => {
                self.logged = None;
                Verdict::Clear
            }
            (false, None) => {
                self.logged = Some(now);
                Verdict::Raise(why.join("; "))
            }
            (false, Some(at)) if now.saturating_duration_since(at) >= self.every => {
                self.logged = Some(now);
                Verdict::Repeat(why.join("; "))
            }
            (false, Some(_)) => Verdict::Firing(why.join("; ")),
        }
    }
}

/// `1.5 MiB`, `512 B`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if b >= size {
            return format!("{:.1} {unit}", b as f64 / size as f64);
        }
    }
    format!("{b} B")
}

/// `45s`, `12m 5s`, `3h 20m`, `2d 4h`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raised_once_repeated_at_the_interval_and_cleared() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut a = BacklogAlert::new(80, s(3600), s(900));
        const MIB: u64 = 1 << 20;
        let max = 100 * MIB;
        // (seconds after t0, bytes, oldest age in seconds, expected verdict name, text it contains)
        let rows: &[(u64, u64, Option<u64>, &str, &str)] = &[
            (0, 10 * MIB, Some(60), "quiet", ""),
            (1, 80 * MIB, Some(60), "quiet", ""), // exactly the share is not over it
            (2, 80 * MIB + 1, Some(60), "raise", "the outbox is 80 % full (80.0 MiB of 100.0 MiB; alert above 80 %)"),
            (3, 90 * MIB, Some(60), "firing", "90 % full"),
            (902, 90 * MIB, Some(60), "repeat", "90 % full"),
            (903, 10 * MIB, Some(60), "clear", ""),
            (904, 10 * MIB, Some(60), "quiet", ""),
            (905, 10 * MIB, None, "quiet", ""),
            (906, 10 * MIB, Some(3601), "raise", "the oldest unsent event is 1h 0m old (alert above 1h 0m)"),
            (907, 99 * MIB, Some(7200), "firing", "99 % full ("),
            (908, 0, None, "clear", ""),
        ];
        for (i, &(at, bytes, age, want, text)) in rows.iter().enumerate() {
            let v = a.check(t0 + s(at), bytes, max, age.map(s));
            let (name, got) = match &v {
                Verdict::Raise(w) => ("raise", w.as_str()),
                Verdict::Repeat(w) => ("repeat", w.as_str()),
                Verdict::Firing(w) => ("firing", w.as_str()),
                Verdict::Clear => ("clear", ""),
                Verdict::Quiet => ("quiet", ""),
            };
            assert_eq!(name, want, "row {i}: {v:?}");
            assert!(got.contains(text), "row {i}: {got:?} lacks {text:?}");
        }
    }

    #[test]
    fn human_figures() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(256 << 20), "256.0 MiB");
        assert_eq!(human_duration(Duration::from_secs(45)), "45s");
        assert_eq!(human_duration(Duration::from_secs(725)), "12m 5s");
        assert_eq!(human_duration(Duration::from_secs(12_000)), "3h 20m");
        assert_eq!(human_duration(Duration::from_secs(187_200)), "2d 4h");
    }
}
