//! Metric constructors over the process-wide Prometheus registry that
//! `/metrics` renders. Names and labels are static, so a failure here is a
//! programming error that the first test run shows; registering a name twice
//! (two servers in one test process) reuses the collector already there.
#![allow(clippy::expect_used)]

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, core::Collector,
};

fn register<C: Collector + Clone + 'static>(collector: C) -> C {
    match prometheus::register(Box::new(collector.clone())) {
        Ok(()) | Err(prometheus::Error::AlreadyReg) => collector,
        Err(error) => panic!("invalid metric definition: {error}"),
    }
}

pub fn counter(name: &str, help: &str) -> IntCounter {
    register(IntCounter::new(name, help).expect("valid counter"))
}

pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"))
}

pub fn gauge(name: &str, help: &str) -> IntGauge {
    register(IntGauge::new(name, help).expect("valid gauge"))
}

pub fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    register(Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid histogram"))
}

pub fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    register(
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("valid histogram"),
    )
}

/// Counts one open thing (a stream, a client) in a gauge for as long as it
/// lives: incremented on creation, decremented on drop.
#[derive(Debug)]
pub struct Held(IntGauge);

impl Held {
    pub fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Label values taken from input (a ticket's category, a cancellation
/// reason), kept bounded: the first `max` distinct values are used as they
/// are, any later one is counted as `other`, an empty one as `none`. Values
/// longer than 48 bytes or with characters outside letters, digits, space and
/// `_-.` are `other` too, so a sender cannot grow the series count.
#[derive(Debug)]
pub struct BoundedLabel {
    max: usize,
    seen: std::sync::RwLock<std::collections::HashSet<String>>,
}

impl BoundedLabel {
    pub fn new(max: usize) -> Self {
        Self { max, seen: std::sync::RwLock::default() }
    }

    pub fn get<'a>(&self, value: &'a str) -> &'a str {
        if value.is_empty() {
            return "none";
        }
        let plain = value.len() <= 48
            && value.chars().all(|c| c.is_alphanumeric() || matches!(c, ' ' | '_' | '-' | '.'));
        if !plain {
            return "other";
        }
        if self.seen.read().unwrap_or_else(|e| e.into_inner()).contains(value) {
            return value;
        }
        let mut seen = self.seen.write().unwrap_or_else(|e| e.into_inner());
        if seen.len() < self.max {
            seen.insert(value.to_owned());
            value
        } else if seen.contains(value) {
            value
        } else {
            "other"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BoundedLabel;

    #[test]
    fn bounded_label_keeps_the_first_values_and_folds_the_rest() {
        let label = BoundedLabel::new(2);
        assert_eq!(label.get("Concert"), "Concert");
        assert_eq!(label.get("Theater"), "Theater");
        assert_eq!(label.get("Comedy Show"), "other");
        assert_eq!(label.get("Concert"), "Concert");
        assert_eq!(label.get(""), "none");
    }

    #[test]
    fn bounded_label_refuses_long_or_unusual_values() {
        let label = BoundedLabel::new(10);
        assert_eq!(label.get(&"x".repeat(49)), "other");
        assert_eq!(label.get("a\"b"), "other");
        assert_eq!(label.get("line\nbreak"), "other");
        assert_eq!(label.get("Art Exhibition"), "Art Exhibition");
    }
}
