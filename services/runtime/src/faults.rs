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

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc, LazyLock, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use prometheus::IntCounterVec;
use serde_json::{Value, json};
use tonic::Code;
use tracing_opentelemetry::OpenTelemetrySpanExt;

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

const ERRORS: [(&str, Code); 4] = [
    ("unavailable", Code::Unavailable),
    ("internal", Code::Internal),
    ("deadline_exceeded", Code::DeadlineExceeded),
    ("resource_exhausted", Code::ResourceExhausted),
];

fn code_name(code: Code) -> &'static str {
    ERRORS.iter().find(|(_, c)| *c == code).map_or("unknown", |(n, _)| n)
}

impl Fault {
    /// The `kind` label and the grammar's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Error(code) => code_name(*code),
            Self::Delay { .. } => "delay",
        }
    }
}

fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=", self.target)?;
        match self.fault {
            Fault::Error(code) => write!(f, "{}", code_name(code))?,
            Fault::Delay { p50, p99 } if p50 == p99 => write!(f, "delay:{}", fmt_duration(p50))?,
            Fault::Delay { p50, p99 } => write!(f, "delay:{}/{}", fmt_duration(p50), fmt_duration(p99))?,
        }
        if self.rate < 1.0 { write!(f, "@{}", self.rate) } else { Ok(()) }
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
        let methods = crate::rpc::methods_of(services);
        Self { methods, dependencies: dependencies.to_vec(), http: false }
    }

    /// The full name (`StorageService/GetStats`, `GET /api/stats`, `db`) a
    /// target stands for, or an error naming it and what there is.
    fn resolve(&self, target: &str) -> Result<String, String> {
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
                let what = if self.http { "route" } else { "method" };
                let mut known: Vec<&str> = self.methods.iter().map(String::as_str).collect();
                known.extend(&self.dependencies);
                Err(format!("unknown {what} {target:?} (known: *, {})", known.join(", ")))
            }
            many => Err(format!(
                "{target:?} is ambiguous: {}",
                many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

fn parse_duration(text: &str, what: &str) -> Result<Duration, String> {
    if text.trim_start().starts_with('-') {
        return Err(format!("{what} {text:?} is negative"));
    }
    humantime::parse_duration(text.trim()).map_err(|e| format!("{what} {text:?} is not a duration ({e})"))
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let (number, scale) = match text.strip_suffix('%') {
        Some(n) => (n, 100.0),
        None => (text, 1.0),
    };
    let rate = number.trim().parse::<f64>().map_err(|_| format!("rate {text:?} is not a number"))? / scale;
    if !(0.0..=1.0).contains(&rate) {
        return Err(format!("rate {text:?} is outside 0..1"));
    }
    Ok(rate)
}

fn parse_fault(text: &str, targets: &Targets) -> Result<Fault, String> {
    let text = text.trim();
    if let Some(spec) = text.strip_prefix("delay:") {
        let (p50, p99) = match spec.split_once('/') {
            Some((a, b)) => (parse_duration(a, "delay")?, parse_duration(b, "delay p99")?),
            None => {
                let d = parse_duration(spec, "delay")?;
                (d, d)
            }
        };
        if p99 < p50 {
            return Err(format!("delay p99 {} is below its p50 {}", fmt_duration(p99), fmt_duration(p50)));
        }
        return Ok(Fault::Delay { p50, p99 });
    }
    let code = ERRORS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|(_, code)| *code)
        .ok_or_else(|| {
            format!("unknown fault {text:?} (known: unavailable, internal, deadline_exceeded, resource_exhausted, delay:DURATION, delay:P50/P99)")
        })?;
    if targets.http && code != Code::Unavailable {
        return Err(format!("fault {text:?}: an HTTP route fails with unavailable (503) only"));
    }
    Ok(Fault::Error(code))
}

/// One rule in the grammar (`target=fault[@rate]`).
pub fn parse_rule(text: &str, targets: &Targets) -> Result<Rule, String> {
    let (target, rest) =
        text.split_once('=').ok_or_else(|| format!("{text:?} is not target=fault[@rate]"))?;
    let (fault, rate) = match rest.rsplit_once('@') {
        Some((fault, rate)) => (fault, parse_rate(rate)?),
        None => (rest, 1.0),
    };
    let target = targets.resolve(target.trim())?;
    Ok(Rule { fault: parse_fault(fault, targets)?, target, rate })
}

/// Rules in the grammar, separated by `;` (empty: none). The first bad rule
/// is named with its position.
pub fn parse_rules(text: &str, targets: &Targets) -> Result<Vec<Rule>, String> {
    text.split(';')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .enumerate()
        .map(|(i, r)| parse_rule(r, targets).map_err(|e| format!("rule {} ({r:?}): {e}", i + 1)))
        .collect()
}

/// A rule as JSON: `{"target", "fault", "rate", "delay", "delay_p99", "rule"}`.
pub fn rule_json(rule: &Rule) -> Value {
    let mut v = json!({"target": rule.target, "fault": rule.fault.kind(), "rate": rule.rate, "rule": rule.to_string()});
    if let Fault::Delay { p50, p99 } = rule.fault {
        v["delay"] = json!(fmt_duration(p50));
        v["delay_p99"] = json!(fmt_duration(p99));
    }
    v
}

/// The body of `PUT /faults`: `{"rules": [...]}`, each rule either a string
/// in the grammar or an object `{"target", "fault", "rate"?, "delay"?,
/// "delay_p99"?}` (`fault` is an error name or `delay`).
pub fn parse_json(body: &[u8], targets: &Targets) -> Result<Vec<Rule>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let rules = value
        .get("rules")
        .and_then(Value::as_array)
        .ok_or("the body must be an object with a \"rules\" array")?;
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| rule_from_json(r, targets).map_err(|e| format!("rules[{i}]: {e}")))
        .collect()
}

fn rule_from_json(value: &Value, targets: &Targets) -> Result<Rule, String> {
    if let Some(text) = value.as_str() {
        return parse_rule(text, targets);
    }
    let obj = value.as_object().ok_or("a rule is a string or an object")?;
    for key in obj.keys() {
        if !["target", "fault", "rate", "delay", "delay_p99", "rule"].contains(&key.as_str()) {
            return Err(format!("unknown field {key:?}"));
        }
    }
    let text = |key: &str| -> Result<Option<&str>, String> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!("{key} must be a string, not {other}")),
        }
    };
    let target = text("target")?.ok_or("target is missing")?;
    let fault = text("fault")?.ok_or("fault is missing")?;
    let rate = match obj.get("rate") {
        None | Some(Value::Null) => 1.0,
        Some(Value::Number(n)) => parse_rate(&n.to_string())?,
        Some(other) => return Err(format!("rate must be a number, not {other}")),
    };
    let fault = if fault == "delay" {
        let p50 = text("delay")?.ok_or("a delay needs \"delay\" (e.g. \"300ms\")")?;
        match text("delay_p99")? {
            Some(p99) => parse_fault(&format!("delay:{p50}/{p99}"), targets)?,
            None => parse_fault(&format!("delay:{p50}"), targets)?,
        }
    } else {
        parse_fault(fault, targets)?
    };
    Ok(Rule { target: targets.resolve(target)?, fault, rate })
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
    rng: AtomicU64,
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
            rng: AtomicU64::new(seed),
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

    /// A uniform number in [0, 1) (splitmix64 over a shared counter).
    fn uniform(&self) -> f64 {
        let mut z = self
            .0
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn delay(&self, p50: Duration, p99: Duration) -> Duration {
        if p50 == p99 || p50.is_zero() {
            return p50;
        }
        // log-normal: ln X ~ N(ln p50, sigma), sigma from p99 = p50·e^(2.326·sigma)
        let sigma = (p99.as_secs_f64() / p50.as_secs_f64()).ln() / 2.326_347_9;
        let (u1, u2) = (self.uniform().max(f64::MIN_POSITIVE), self.uniform());
        let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        Duration::from_secs_f64((p50.as_secs_f64() * (sigma * normal).exp()).min(3600.0))
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
            if !matches || (rule.rate < 1.0 && self.uniform() >= rule.rate) {
                continue;
            }
            self.record(target, rule);
            match rule.fault {
                Fault::Delay { p50, p99 } => tokio::time::sleep(self.delay(p50, p99)).await,
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

/// The tower layer in front of a gRPC server: each call's method is checked
/// against the rules before the handler runs, so an injected error on a write
/// happens before any transaction.
#[derive(Clone)]
pub struct FaultLayer(pub Faults);

impl<S> tower::Layer<S> for FaultLayer {
    type Service = FaultService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FaultService { inner, faults: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct FaultService<S> {
    inner: S,
    faults: Faults,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for FaultService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = FaultFuture<S::Future, BoxFuture<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if !self.faults.active() {
            return FaultFuture::Pass { inner: self.inner.call(request) };
        }
        // The ready service takes the call; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let faults = self.faults.clone();
        let inner = Box::pin(async move {
            // "/ticketmesh.v1.StorageService/GetStats" → "StorageService/GetStats"
            let path = request.uri().path();
            let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or(("", path));
            let name = format!("{}/{method}", service.rsplit('.').next().unwrap_or(service));
            match faults.check(&name).await {
                Ok(()) => inner.call(request).await,
                Err(injected) => Ok(tonic::Status::new(injected.code, injected.to_string()).into_http()),
            }
        });
        FaultFuture::Checked { inner }
    }
}

pin_project_lite::pin_project! {
    /// A call's future: the handler's own when no rule is set (no
    /// allocation), else a boxed one that checks the rules first.
    #[project = CallProj]
    pub enum FaultFuture<F, B> {
        Pass { #[pin] inner: F },
        Checked { #[pin] inner: B },
    }
}

impl<F: Future<Output = T>, B: Future<Output = T>, T> Future for FaultFuture<F, B> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.project() {
            CallProj::Pass { inner } => inner.poll(cx),
            CallProj::Checked { inner } => inner.poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn storage() -> Targets {
        Targets {
            methods: vec!["StorageService/GetStats".into(), "StorageService/SaveEvent".into()],
            dependencies: vec!["db"],
            http: false,
        }
    }

    fn gateway() -> Targets {
        Targets {
            methods: vec!["GET /api/stats".into(), "POST /webhook".into()],
            dependencies: vec![],
            http: true,
        }
    }

    #[test]
    fn valid_rules_parse_and_print_back() {
        let rules = parse_rules(
            "GetStats=unavailable@0.3; *=delay:300ms ;db=internal@25%;SaveEvent=delay:50ms/800ms",
            &storage(),
        )
        .unwrap();
        assert_eq!(
            rules[0],
            Rule {
                target: "StorageService/GetStats".into(),
                fault: Fault::Error(Code::Unavailable),
                rate: 0.3
            }
        );
        assert_eq!(
            rules[1].fault,
            Fault::Delay { p50: Duration::from_millis(300), p99: Duration::from_millis(300) }
        );
        assert_eq!((rules[2].target.as_str(), rules[2].rate), ("db", 0.25));
        assert_eq!(
            rules[3].fault,
            Fault::Delay { p50: Duration::from_millis(50), p99: Duration::from_millis(800) }
        );
        let printed: Vec<String> = rules.iter().map(Rule::to_string).collect();
        assert_eq!(
            printed,
            [
                "StorageService/GetStats=unavailable@0.3",
                "*=delay:300ms",
                "db=internal@0.25",
                "StorageService/SaveEvent=delay:50ms/800ms"
            ]
        );
        let again = parse_rules(&printed.join(";"), &storage()).unwrap();
        assert_eq!(again, rules, "a printed rule parses back to itself");
        assert!(parse_rules(" ; ", &storage()).unwrap().is_empty());
        let http = parse_rules("POST /webhook=unavailable@10%", &gateway()).unwrap();
        assert_eq!((http[0].target.as_str(), http[0].rate), ("POST /webhook", 0.1));
    }

    #[test]
    fn each_bad_rule_is_named_with_its_bad_part() {
        let error = |text: &str, targets: &Targets| parse_rules(text, targets).unwrap_err();
        let cases = [
            ("GetStat=unavailable", "unknown method \"GetStat\""),
            ("GetStats=unavailable@1.5", "rate \"1.5\" is outside 0..1"),
            ("GetStats=unavailable@-0.1", "rate \"-0.1\" is outside 0..1"),
            ("GetStats=unavailable@often", "rate \"often\" is not a number"),
            ("GetStats=delay:-5ms", "delay \"-5ms\" is negative"),
            ("GetStats=delay:soon", "delay \"soon\" is not a duration"),
            ("GetStats=delay:800ms/50ms", "delay p99 50ms is below its p50 800ms"),
            ("GetStats=broken", "unknown fault \"broken\""),
            ("GetStats", "\"GetStats\" is not target=fault[@rate]"),
            ("*=delay:1ms; redis=unavailable", "rule 2 (\"redis=unavailable\"): unknown method \"redis\""),
        ];
        for (text, wanted) in cases {
            let message = error(text, &storage());
            assert!(message.contains(wanted), "{text}: {message:?} does not contain {wanted:?}");
        }
        assert!(error("POST /webhook=internal", &gateway()).contains("unavailable (503) only"));
        assert!(error("GET /nope=unavailable", &gateway()).contains("unknown route \"GET /nope\""));
    }

    #[test]
    fn json_rules_are_checked_the_same_way() {
        let ok = parse_json(
            br#"{"rules": ["GetStats=unavailable@0.5", {"target": "*", "fault": "delay", "delay": "20ms", "delay_p99": "90ms"}, {"target": "db", "fault": "unavailable", "rate": 0.1}]}"#,
            &storage(),
        )
        .unwrap();
        assert_eq!(ok.len(), 3);
        assert_eq!(
            ok[1].fault,
            Fault::Delay { p50: Duration::from_millis(20), p99: Duration::from_millis(90) }
        );
        let cases: [(&[u8], &str); 6] = [
            (b"{not json", "the body is not JSON"),
            (b"{\"rule\": []}", "a \"rules\" array"),
            (
                br#"{"rules": [{"target": "GetStats", "fault": "unavailable", "rate": 2}]}"#,
                "rules[0]: rate \"2\" is outside 0..1",
            ),
            (
                br#"{"rules": [{"target": "Nope", "fault": "unavailable"}]}"#,
                "rules[0]: unknown method \"Nope\"",
            ),
            (
                br#"{"rules": ["*=delay:1ms", {"target": "*", "fault": "delay", "delay": "-1s"}]}"#,
                "rules[1]: delay \"-1s\" is negative",
            ),
            (
                br#"{"rules": [{"target": "*", "fault": "unavailable", "ratio": 1}]}"#,
                "rules[0]: unknown field \"ratio\"",
            ),
        ];
        for (body, wanted) in cases {
            let message = parse_json(body, &storage()).unwrap_err();
            assert!(message.contains(wanted), "{message:?} does not contain {wanted:?}");
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

    #[test]
    fn a_spread_delay_has_the_asked_median_and_p99() {
        let faults = Faults::seeded("test", storage(), 7);
        let (p50, p99) = (Duration::from_millis(50), Duration::from_millis(800));
        let mut samples: Vec<Duration> = (0..20_000).map(|_| faults.delay(p50, p99)).collect();
        samples.sort();
        let median = samples[samples.len() / 2].as_secs_f64();
        let q99 = samples[samples.len() * 99 / 100].as_secs_f64();
        assert!((median / 0.050 - 1.0).abs() < 0.1, "median {median}");
        assert!((q99 / 0.800 - 1.0).abs() < 0.15, "p99 {q99}");
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
