//! What a load run measured: outcomes by kind, latency in an HDR histogram,
//! a one-line progress view and the final report (text or JSON).

use std::{collections::BTreeMap, time::Duration};

use hdrhistogram::Histogram;
use serde::Serialize;

/// What the gateway answered one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx, stored now.
    Accepted,
    /// 2xx with `"duplicate": true`: stored before.
    Duplicate,
    /// Any other HTTP status.
    Rejected(u16),
    /// No answer: connection refused, reset, or past the request timeout.
    Failed(String),
}

/// What the sender meant to happen, so the report can tell a forged
/// delivery's 401 (expected) from a good delivery's 401 (a bug).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    Fresh,
    Replay,
    BadSignature,
}

impl Intent {
    pub fn expects(self, outcome: &Outcome) -> bool {
        matches!(
            (self, outcome),
            (Intent::Fresh, Outcome::Accepted)
                | (Intent::Replay, Outcome::Duplicate)
                | (Intent::BadSignature, Outcome::Rejected(401))
        )
    }
}

#[derive(Debug)]
pub struct Stats {
    pub sent: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: BTreeMap<u16, u64>,
    pub failed: u64,
    pub unexpected: u64,
    pub last_unexpected: Option<String>,
    latency: Histogram<u64>,
    /// Of the fresh deliveries accepted, and of the 503s (refused past capacity).
    accepted_latency: Histogram<u64>,
    refused_latency: Histogram<u64>,
}

/// Microseconds from 1 µs to 10 min, 3 significant figures.
fn histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static histogram bounds are valid")
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            sent: 0,
            accepted: 0,
            duplicates: 0,
            rejected: BTreeMap::new(),
            failed: 0,
            unexpected: 0,
            last_unexpected: None,
            latency: histogram(),
            accepted_latency: histogram(),
            refused_latency: histogram(),
        }
    }
}

impl Stats {
    pub fn record(&mut self, intent: Intent, outcome: &Outcome, latency: Duration) {
        self.sent += 1;
        match outcome {
            Outcome::Accepted => self.accepted += 1,
            Outcome::Duplicate => self.duplicates += 1,
            Outcome::Rejected(status) => *self.rejected.entry(*status).or_default() += 1,
            Outcome::Failed(_) => self.failed += 1,
        }
        let micros = latency.as_micros().max(1) as u64;
        match outcome {
            Outcome::Failed(_) => {}
            Outcome::Accepted => {
                self.latency.saturating_record(micros);
                self.accepted_latency.saturating_record(micros);
            }
            Outcome::Rejected(503) => {
                self.latency.saturating_record(micros);
                self.refused_latency.saturating_record(micros);
            }
            _ => self.latency.saturating_record(micros),
        }
        if !intent.expects(outcome) {
            self.unexpected += 1;
            self.last_unexpected = Some(format!("{intent:?} delivery got {outcome:?}"));
        }
    }

    pub fn report(&self, elapsed: Duration) -> Report {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Report {
            sent: self.sent,
            accepted: self.accepted,
            duplicates: self.duplicates,
            rejected: self.rejected.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            failed: self.failed,
            unexpected: self.unexpected,
            elapsed_s: round(secs, 3),
            throughput_per_s: round(self.sent as f64 / secs, 1),
            latency_ms: Latency::of(&self.latency),
            accepted_latency_ms: Latency::of(&self.accepted_latency),
            refused_latency_ms: Latency::of(&self.refused_latency),
        }
    }

    /// One line for the terminal while the run goes on.
    pub fn progress(&self, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let rejected: u64 = self.rejected.values().sum();
        format!(
            "[{secs:6.1}s] sent {} · accepted {} · duplicates {} · rejected {rejected} · failed {} · unexpected {} · {:.0}/s · p99 {:.1} ms",
            self.sent,
            self.accepted,
            self.duplicates,
            self.failed,
            self.unexpected,
            self.sent as f64 / secs,
            Latency::of(&self.latency).p99,
        )
    }
}

fn round(value: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (value * f).round() / f
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    /// The quantiles of a histogram of microseconds, in milliseconds (0 when empty).
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |micros: u64| round(micros as f64 / 1000.0, 3);
        let at = |q| if h.is_empty() { 0.0 } else { ms(h.value_at_quantile(q)) };
        Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: if h.is_empty() { 0.0 } else { ms(h.max()) },
        }
    }
}

/// The final figures; `--json` prints exactly this.
#[derive(Debug, Serialize)]
pub struct Report {
    pub sent: u64,
    pub accepted: u64,
    pub duplicates: u64,
    /// Count by HTTP status.
    pub rejected: BTreeMap<String, u64>,
    pub failed: u64,
    /// Outcomes the sender did not intend (a good delivery refused, a forged one accepted, no answer).
    pub unexpected: u64,
    pub elapsed_s: f64,
    pub throughput_per_s: f64,
    /// Of every answered delivery.
    pub latency_ms: Latency,
    /// Of the accepted fresh deliveries only, and of the 503s only (past
    /// capacity, a refusal should cost almost nothing).
    pub accepted_latency_ms: Latency,
    pub refused_latency_ms: Latency,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "sent        {} in {:.2} s ({:.1}/s)", self.sent, self.elapsed_s, self.throughput_per_s)?;
        writeln!(f, "accepted    {}", self.accepted)?;
        writeln!(f, "duplicates  {}", self.duplicates)?;
        let rejected: Vec<String> = self.rejected.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        writeln!(
            f,
            "rejected    {}",
            if rejected.is_empty() { "0".to_owned() } else { rejected.join(", ") }
        )?;
        writeln!(f, "failed      {}", self.failed)?;
        writeln!(f, "unexpected  {}", self.unexpected)?;
        let l = &self.latency_ms;
        write!(
            f,
            "latency     p50 {:.1} ms · p90 {:.1} ms · p99 {:.1} ms · max {:.1} ms",
            l.p50, l.p90, l.p99, l.max
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn outcomes_are_counted_by_kind_and_judged_by_intent() {
        let mut stats = Stats::default();
        let ms = Duration::from_millis;
        stats.record(Intent::Fresh, &Outcome::Accepted, ms(10));
        stats.record(Intent::Replay, &Outcome::Duplicate, ms(20));
        stats.record(Intent::BadSignature, &Outcome::Rejected(401), ms(1));
        assert_eq!(stats.unexpected, 0);
        stats.record(Intent::Fresh, &Outcome::Rejected(503), ms(30));
        stats.record(Intent::BadSignature, &Outcome::Accepted, ms(5));
        stats.record(Intent::Fresh, &Outcome::Failed("connection refused".into()), ms(0));
        // What `make rollout-check` reads from the cluster's simulator log.
        let line = stats.progress(Duration::from_secs(2));
        assert!(
            line.contains("sent 6 · accepted 2 · duplicates 1 · rejected 2 · failed 1 · unexpected 3 ·"),
            "{line}"
        );
        let report = stats.report(Duration::from_secs(2));
        assert_eq!((report.sent, report.accepted, report.duplicates, report.failed), (6, 2, 1, 1));
        assert_eq!(report.rejected, BTreeMap::from([("401".into(), 1), ("503".into(), 1)]));
        assert_eq!(report.unexpected, 3);
        assert_eq!(report.throughput_per_s, 3.0);
        // Five answered requests: 1, 5, 10, 20, 30 ms.
        assert!((report.latency_ms.max - 30.0).abs() < 0.1, "{}", report.latency_ms.max);
        assert!((report.latency_ms.p50 - 10.0).abs() < 0.1, "{}", report.latency_ms.p50);
        // Accepted: 10 and 5 ms; refused with 503: the 30 ms one alone.
        assert!((report.accepted_latency_ms.max - 10.0).abs() < 0.1, "{}", report.accepted_latency_ms.max);
        assert!((report.refused_latency_ms.p50 - 30.0).abs() < 0.1, "{}", report.refused_latency_ms.p50);
        let text = report.to_string();
        assert!(text.contains("rejected    401: 1, 503: 1"), "{text}");
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["rejected"]["503"], 1);
    }
}
