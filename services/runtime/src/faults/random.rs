//! The chance in the rules: whether a call at a rate is hit, and how long a
//! spread delay lasts.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// Uniform draws shared by every call: splitmix64 over an atomic counter, so
/// no lock, and a fixed seed gives the same draws again (tests).
pub(super) struct Random(AtomicU64);

impl Random {
    pub(super) fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    /// A uniform number in [0, 1).
    pub(super) fn uniform(&self) -> f64 {
        let mut z =
            self.0.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A delay with these median and 99th percentile: `p50` itself when they
    /// are equal, else log-normally spread (capped at an hour).
    pub(super) fn delay(&self, p50: Duration, p99: Duration) -> Duration {
        if p50 == p99 || p50.is_zero() {
            return p50;
        }
        // log-normal: ln X ~ N(ln p50, sigma), sigma from p99 = p50·e^(2.326·sigma)
        let sigma = (p99.as_secs_f64() / p50.as_secs_f64()).ln() / 2.326_347_9;
        let (u1, u2) = (self.uniform().max(f64::MIN_POSITIVE), self.uniform());
        let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        Duration::from_secs_f64((p50.as_secs_f64() * (sigma * normal).exp()).min(3600.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_delay_has_the_asked_median_and_p99() {
        let random = Random::new(7);
        let (p50, p99) = (Duration::from_millis(50), Duration::from_millis(800));
        let mut samples: Vec<Duration> = (0..20_000).map(|_| random.delay(p50, p99)).collect();
        samples.sort();
        let median = samples[samples.len() / 2].as_secs_f64();
        let q99 = samples[samples.len() * 99 / 100].as_secs_f64();
        assert!((median / 0.050 - 1.0).abs() < 0.1, "median {median}");
        assert!((q99 / 0.800 - 1.0).abs() < 0.15, "p99 {q99}");
    }
}
