//! Metric constructors over the process-wide Prometheus registry that
//! `/metrics` renders. Names and labels are static, so a failure here is a
//! programming error that the first test run shows; registering a name twice
//! (two servers in one test process) reuses the collector already there.
#![allow(clippy::expect_used)]

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, core::Collector};

fn register<C: Collector + Clone + 'static>(collector: C) -> C {
    match prometheus::register(Box::new(collector.clone())) {
        Ok(()) | Err(prometheus::Error::AlreadyReg) => collector,
        Err(error) => panic!("invalid metric definition: {error}"),
    }
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
