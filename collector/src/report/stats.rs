//! Small statistics: mean, quantiles, a seeded bootstrap confidence interval and shrinkage toward a
//! prior mean. Deterministic: the bootstrap uses a fixed-seed SplitMix64, so a report is reproducible.

/// Mean, or `None` for no values.
pub fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Quantile `q` of sorted values with linear interpolation.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
}

/// SplitMix64: tiny, fast, good enough for resampling.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)`.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * n as f64) as usize % n.max(1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Fixed seed of every bootstrap.
pub const SEED: u64 = 0x5348_4946_544C_454E;
/// Resamples per bootstrap.
pub const RESAMPLES: usize = 1000;
/// Above this many values the CI uses the normal approximation (the bootstrap converges to it).
pub const BOOTSTRAP_MAX_N: usize = 400;

/// 95 % confidence interval of the mean: percentile bootstrap (fixed seed) for small samples, normal
/// approximation for large ones. `None` for fewer than 2 values.
pub fn mean_ci(v: &[f64]) -> Option<(f64, f64)> {
    let n = v.len();
    if n < 2 {
        return None;
    }
    let m = mean(v)?;
    if n > BOOTSTRAP_MAX_N {
        let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64;
        let h = 1.96 * (var / n as f64).sqrt();
        return Some((m - h, m + h));
    }
    let mut rng = Rng::new(SEED);
    let mut means: Vec<f64> = (0..RESAMPLES).map(|_| (0..n).map(|_| v[rng.below(n)]).sum::<f64>() / n as f64).collect();
    means.sort_by(f64::total_cmp);
    Some((quantile(&means, 0.025)?, quantile(&means, 0.975)?))
}

/// Shrinks a group mean toward `prior` with the weight of `k` pseudo-events: (n·m + k·prior) / (n + k).
pub fn shrink(m: f64, n: usize, prior: f64, k: f64) -> f64 {
    if n == 0 && k == 0.0 {
        return prior;
    }
    (n as f64 * m + k * prior) / (n as f64 + k)
}

/// Count, mean, median, p90, CI and shrunk mean of a group.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    pub median: f64,
    pub p90: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub shrunk: f64,
}

/// Summarizes `v` (any order); `None` when empty.
pub fn summarize(v: &mut [f64], prior: f64, k: f64) -> Option<Summary> {
    v.sort_by(f64::total_cmp);
    let m = mean(v)?;
    let (ci_low, ci_high) = mean_ci(v).unwrap_or((m, m));
    Some(Summary {
        n: v.len(),
        mean: m,
        median: quantile(v, 0.5)?,
        p90: quantile(v, 0.9)?,
        ci_low,
        ci_high,
        shrunk: shrink(m, v.len(), prior, k),
    })
}
