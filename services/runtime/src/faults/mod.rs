//! Fault injection, switched on and off at run time: an error rate with a
//! chosen status, added latency, or a failing dependency, per gRPC method (per
//! route on the gateway). One [`Faults`] per process, shared by the tower
//! layer in front of the gRPC server ([`FaultLayer`]), the gateway's HTTP
//! middleware, and the calls to a dependency ([`Faults::dependency`]).
//!
//! Rules are set at start (`--faults` / `FAULTS`) and changed live on the
//! admin port (`GET`/`PUT`/`DELETE /faults`, see [`crate::admin`]). With no
//! rule set, a call costs one atomic load.
//!
//! The grammar, one rule or several separated by `;`:
//!
//! ```text
//! rule   = target "=" fault [ "@" rate ]
//! target = "*" | Service/Method | Method | "GET /route" | db | amqp | sns
//! fault  = unavailable | internal | deadline_exceeded | resource_exhausted
//!        | delay:DURATION | delay:P50/P99
//! rate   = 0..1 or a percentage (default 1: every call)
//! ```
//!
//! e.g. `StorageService/GetStats=unavailable@0.3`, `*=delay:300ms`,
//! `*=delay:50ms/800ms` (log-normal: half the calls over 50 ms, 1 % over
//! 800 ms), `amqp=unavailable`, `POST /webhook=unavailable@10%`. On the
//! gateway an error is HTTP 503 with `Retry-After`; on a dependency it is
//! that dependency failing (the caller's usual handling applies).
//!
//! Here are the rules and the registry; the text grammar, the JSON form of
//! `/faults`, the tower layer, the random draws and the errors a bad rule
//! gets ([`RuleError`]) each have a file of their own.

mod error;
mod grammar;
mod json;
mod layer;
mod random;

use std::{
    fmt,
    sync::{
        Arc, LazyLock, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use prometheus::IntCounterVec;
use tonic::Code;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use self::random::Random;
pub use self::{
    error::RuleError,
    grammar::{parse_rule, parse_rules},
    json::{parse_json, rule_json},
    layer::{FaultFuture, FaultLayer, FaultService},
};
use crate::metrics;

static INJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    metrics::counter_vec(
        "faults_injected_total",
        "Faults injected on purpose (fault rules), by method or dependency and kind",
        &["service", "method", "kind"],
    )
});

/// What a rule does to a call it hits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// Fail with this status (HTTP 503 on the gateway).
    Error(Code),
    /// Wait before the call: `p50` for a fixed delay, or log-normally
    /// spread with these median and 99th percentile.
    Delay { p50: Duration, p99: Duration },
}

/// One rule: which calls, what happens, how often.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// As written (`*`, a method, a route, a dependency); matched by [`Targets`].
    pub target: String,
    pub fault: Fault,
    /// The share of matching calls hit, 0..=1.
    pub rate: f64,
}

impl Fault {
    /// The `kind` label and the grammar's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Error(code) => grammar::code_name(*code),
            Self::Delay { .. } => "delay",
        }
    }
}

/// What a process's rules may name: its gRPC methods (`Service/Method`, the
/// package left out), its HTTP routes (`GET /path`), its dependencies.
#[derive(Clone, Debug, Default)]
pub struct Targets {
    pub methods: Vec<String>,
    pub dependencies: Vec<&'static str>,
    /// Whether errors are HTTP (the gateway): only `unavailable` (503) then.
    pub http: bool,
}

impl Targets {
    /// The methods of these fully qualified gRPC services, from the
    /// project's descriptor set.
    pub fn grpc(services: &[&str], dependencies: &[&'static str]) -> Self {
        let methods = crate::grpc::observe::methods_of(services);
        Self { methods, dependencies: dependencies.to_vec(), http: false }
    }

    /// The full name (`StorageService/GetStats`, `GET /api/stats`, `db`) a
    /// target stands for, or an error naming it and what there is.
    fn resolve(&self, target: &str) -> Result<String, RuleError> {
        if target == "*" || self.dependencies.contains(&target) {
            return Ok(target.to_owned());
        }
        let found: Vec<&String> = self
            .methods
            .iter()
            .filter(|m| m.as_str() == target || m.rsplit_once('/').is_some_and(|(_, name)| name == target))
            .collect();
        match found.as_slice() {
            [one] => Ok((*one).clone()),
            [] => {
                let kind = if self.http { "route" } else { "method" };
                let mut known = self.methods.clone();
                known.extend(self.dependencies.iter().map(|d| (*d).to_owned()));
                Err(RuleError::UnknownTarget { kind, target: target.to_owned(), known })
            }
            many => Err(RuleError::AmbiguousTarget {
                target: target.to_owned(),
                matches: many.iter().map(|s| (*s).clone()).collect(),
            }),
        }
    }
}

/// A fault that hit a call: the rule (for the span and the error message).
#[derive(Clone, Debug)]
pub struct Injected {
    pub rule: String,
    pub code: Code,
}

impl fmt::Display for Injected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fault injected ({})", self.rule)
    }
}

/// The process's fault rules. Cheap to clone; every clone sees changes.
#[derive(Clone)]
pub struct Faults(Arc<Inner>);

struct Inner {
    service: &'static str,
    targets: Targets,
    any: AtomicBool,
    rules: RwLock<Arc<Vec<Rule>>>,
    random: Random,
}

impl Faults {
    pub fn new(service: &'static str, targets: Targets) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Self::seeded(service, targets, seed)
    }

    /// With a fixed random seed: the same calls hit the same rules (tests).
    pub fn seeded(service: &'static str, targets: Targets, seed: u64) -> Self {
        Self(Arc::new(Inner {
            service,
            targets,
            any: AtomicBool::new(false),
            rules: RwLock::new(Arc::default()),
            random: Random::new(seed),
        }))
    }

    /// Parses and sets the rules given at start (the grammar).
    pub fn from_spec(service: &'static str, targets: Targets, spec: &str) -> anyhow::Result<Self> {
        let faults = Self::new(service, targets);
        let rules = parse_rules(spec, &faults.0.targets).map_err(|e| anyhow::anyhow!("--faults: {e}"))?;
        faults.set(rules);
        Ok(faults)
    }

    /// Whether any rule is set (one atomic load).
    pub fn active(&self) -> bool {
        self.0.any.load(Ordering::Acquire)
    }

    pub fn targets(&self) -> &Targets {
        &self.0.targets
    }

    pub fn rules(&self) -> Arc<Vec<Rule>> {
        self.0.rules.read().map(|r| r.clone()).unwrap_or_default()
    }

    /// Replaces every rule; logs the change once.
    pub fn set(&self, rules: Vec<Rule>) {
        let text: Vec<String> = rules.iter().map(Rule::to_string).collect();
        let empty = rules.is_empty();
        if let Ok(mut current) = self.0.rules.write() {
            if **current == rules {
                return;
            }
            *current = Arc::new(rules);
        }
        self.0.any.store(!empty, Ordering::Release);
        if empty {
            tracing::warn!(service = self.0.service, "fault rules cleared");
        } else {
            tracing::warn!(service = self.0.service, rules = %text.join("; "), "fault rules set");
        }
    }

    /// What happens to one call of `target` (a full method or route name, or
    /// a dependency): waits for the delays that hit, then the first error
    /// that hits, if any. Without rules it returns at once.
    pub async fn check(&self, target: &str) -> Result<(), Injected> {
        if !self.active() {
            return Ok(());
        }
        // "*" is the process's own methods or routes: not health checks,
        // reflection or dependencies.
        let own = || self.0.targets.methods.iter().any(|m| m == target);
        let rules = self.rules();
        for rule in rules.iter() {
            let matches = rule.target == target || (rule.target == "*" && own());
            if !matches || (rule.rate < 1.0 && self.0.random.uniform() >= rule.rate) {
                continue;
            }
            self.record(target, rule);
            match rule.fault {
                Fault::Delay { p50, p99 } => tokio::time::sleep(self.0.random.delay(p50, p99)).await,
                Fault::Error(code) => return Err(Injected { rule: rule.to_string(), code }),
            }
        }
        Ok(())
    }

    /// Before calling a dependency (`db`, `amqp`, `sns`): its faults, if any.
    pub async fn dependency(&self, name: &'static str) -> Result<(), Injected> {
        self.check(name).await
    }

    fn record(&self, target: &str, rule: &Rule) {
        // The label is the rule's target: methods, routes and dependencies a
        // process declares, or "*" (bounded).
        let method = if rule.target == "*" { target } else { rule.target.as_str() };
        INJECTED.with_label_values(&[self.0.service, method, rule.fault.kind()]).inc();
        tracing::Span::current().set_attribute("fault.injected", rule.to_string());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    pub(super) fn storage() -> Targets {
        Targets {
            methods: vec!["StorageService/GetStats".into(), "StorageService/SaveEvent".into()],
            dependencies: vec!["db"],
            http: false,
        }
    }

    pub(super) fn gateway() -> Targets {
        Targets {
            methods: vec!["GET /api/stats".into(), "POST /webhook".into()],
            dependencies: vec![],
            http: true,
        }
    }

    /// 10,000 calls at rate 0.3: the count of errors lies within 4.5 standard
    /// deviations of 3,000 (binomial), with a fixed seed so the test is stable.
    #[tokio::test]
    async fn an_error_rate_is_honoured_within_binomial_tolerance() {
        let faults = Faults::seeded("test", storage(), 42);
        faults.set(parse_rules("GetStats=unavailable@0.3", &storage()).unwrap());
        let (n, p) = (10_000u32, 0.3);
        let mut hits = 0u32;
        for _ in 0..n {
            if let Err(injected) = faults.check("StorageService/GetStats").await {
                assert_eq!(injected.code, Code::Unavailable);
                hits += 1;
            }
        }
        let (mean, sd) = (f64::from(n) * p, (f64::from(n) * p * (1.0 - p)).sqrt());
        assert!((f64::from(hits) - mean).abs() < 4.5 * sd, "{hits} errors in {n} calls at rate {p}");
        assert!(faults.check("StorageService/SaveEvent").await.is_ok(), "another method is untouched");
        assert!(faults.check("db").await.is_ok(), "\"*\" and methods never hit a dependency");
        faults.set(Vec::new());
        for _ in 0..100 {
            assert!(faults.check("StorageService/GetStats").await.is_ok(), "cleared rules hit nothing");
        }
    }

    #[tokio::test]
    async fn a_delay_waits_then_the_call_goes_on() {
        let faults = Faults::seeded("test", storage(), 1);
        faults.set(parse_rules("*=delay:300ms", &storage()).unwrap());
        let started = std::time::Instant::now();
        assert!(faults.check("StorageService/SaveEvent").await.is_ok());
        assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
        let started = std::time::Instant::now();
        assert!(faults.check("Health/Check").await.is_ok());
        assert!(started.elapsed() < Duration::from_millis(100), "\"*\" is the service's own methods only");
    }
}
