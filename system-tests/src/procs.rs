//! The real binaries as child processes (built by `cargo build --workspace
//! --bins`, which `make test` runs first), each exporting its spans over
//! OTLP/gRPC to an in-test collector and writing JSON logs the test reads.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, any_value},
    trace::v1::Span as OtlpSpan,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

/// What a test waits for in a trace: a description and a test of a span.
pub type Wanted<'a> = (&'a str, &'a dyn Fn(&Span) -> bool);

/// One span as the collector received it.
#[derive(Debug, Clone)]
pub struct Span {
    pub service: String,
    pub name: String,
    pub kind: i32,
    pub trace_id: String,
    pub span_id: String,
    pub parent_id: String,
    /// 0 unset, 1 ok, 2 error.
    pub status: i32,
    pub attributes: HashMap<String, Value>,
}

pub const SERVER: i32 = 2;
pub const CLIENT: i32 = 3;
pub const PRODUCER: i32 = 4;
pub const CONSUMER: i32 = 5;
pub const ERROR: i32 = 2;

impl Span {
    pub fn attr(&self, key: &str) -> &Value {
        self.attributes.get(key).unwrap_or(&Value::Null)
    }
}

fn value(v: Option<&AnyValue>) -> Value {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => Value::from(s.clone()),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::BoolValue(b)) => Value::from(*b),
        Some(any_value::Value::DoubleValue(d)) => Value::from(*d),
        _ => Value::Null,
    }
}

/// An OTLP/gRPC trace receiver on a port of its own.
#[derive(Clone, Default)]
pub struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let attributes = resource.resource.map(|r| r.attributes).unwrap_or_default();
            let service = attributes
                .iter()
                .find(|kv| kv.key == "service.name")
                .map(|kv| value(kv.value.as_ref()).as_str().unwrap_or_default().to_owned())
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for s in scope.spans {
                    spans.push(convert(&service, s));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

fn convert(service: &str, s: OtlpSpan) -> Span {
    Span {
        service: service.to_owned(),
        name: s.name,
        kind: s.kind,
        trace_id: hex::encode(&s.trace_id),
        span_id: hex::encode(&s.span_id),
        parent_id: hex::encode(&s.parent_span_id),
        status: s.status.map_or(0, |st| st.code),
        attributes: s.attributes.iter().map(|kv| (kv.key.clone(), value(kv.value.as_ref()))).collect(),
    }
}

impl Collector {
    /// Starts the receiver; returns it and its endpoint URL.
    pub async fn start() -> (Self, String) {
        let collector = Self::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (collector, format!("http://{addr}"))
    }

    /// Every span received so far.
    pub fn all(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    pub fn trace(&self, trace_id: &str) -> Vec<Span> {
        self.spans.lock().unwrap().iter().filter(|s| s.trace_id == trace_id).cloned().collect()
    }

    /// Waits until the trace holds a span matching each predicate; panics
    /// with what arrived after `within`.
    pub async fn wait_for(&self, trace_id: &str, wanted: &[Wanted<'_>], within: Duration) -> Vec<Span> {
        let deadline = Instant::now() + within;
        loop {
            let spans = self.trace(trace_id);
            let missing: Vec<&str> =
                wanted.iter().filter(|(_, p)| !spans.iter().any(p)).map(|(what, _)| *what).collect();
            if missing.is_empty() {
                return spans;
            }
            if Instant::now() > deadline {
                let seen: Vec<String> = spans.iter().map(|s| format!("{}: {}", s.service, s.name)).collect();
                panic!("trace {trace_id} lacks {missing:?}; it has {seen:#?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The chain of span names from `span` up to its trace's root.
pub fn ancestry(spans: &[Span], span: &Span) -> Vec<String> {
    let by_id: HashMap<&str, &Span> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut chain = vec![span.name.clone()];
    let mut current = span;
    while let Some(parent) = by_id.get(current.parent_id.as_str()) {
        chain.push(parent.name.clone());
        current = parent;
    }
    chain
}

/// One binary of the local topology.
struct Service {
    name: &'static str,
    /// The variables of its listeners' addresses (HTTP_ADDR, GRPC_ADDR, ADMIN_ADDR).
    addrs: Vec<&'static str>,
    /// (variable, binary) for each service it calls: the variable is passed
    /// the URL of that binary's grpc listener.
    calls: Vec<(&'static str, &'static str)>,
}

/// The local topology, scripts/topology.txt (the format is described
/// there), which `make run` starts on fixed ports; the tests take the names
/// and the wiring, and free ports.
fn topology() -> Vec<Service> {
    include_str!("../../scripts/topology.txt")
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let columns: Vec<&'static str> = line.split_whitespace().collect();
            let [name, http, grpc, admin, calls] = columns[..] else {
                panic!("scripts/topology.txt: not 5 columns: {line:?}")
            };
            let addrs = [("HTTP_ADDR", http), ("GRPC_ADDR", grpc), ("ADMIN_ADDR", admin)]
                .into_iter()
                .filter(|(_, port)| *port != "-")
                .map(|(variable, _)| variable)
                .collect();
            let calls = calls
                .split(',')
                .filter(|call| *call != "-")
                .map(|call| {
                    call.split_once('=').unwrap_or_else(|| panic!("scripts/topology.txt: bad call {call:?}"))
                })
                .collect();
            Service { name, addrs, calls }
        })
        .collect()
}

/// Where the workspace's binaries are: target/<profile>, the parent of the
/// `deps/` directory that holds the running test executable.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(|deps| deps.parent()).unwrap().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (make test does)",
        path.display()
    );
    path
}

/// One running binary and the JSON lines it has logged.
pub struct Proc {
    pub name: &'static str,
    child: tokio::process::Child,
    pub lines: Arc<Mutex<Vec<Value>>>,
    /// The fields of its "listening" line (actual addresses).
    pub listening: Value,
}

impl Proc {
    /// Starts `name` with `env` (plus JSON logs and the OTLP endpoint) and
    /// waits for its "listening" line.
    pub async fn start(name: &'static str, env: &[(&str, String)]) -> Self {
        let mut command = tokio::process::Command::new(binary(name));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let keep = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let parsed: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("{name} logged a line that is not JSON ({e}): {line}"));
                if parsed["message"] == "listening" {
                    let _ = tx.send(parsed.clone());
                }
                keep.lock().unwrap().push(parsed);
            }
        });
        let listening = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{name} did not log \"listening\" within 20 s"))
            .unwrap_or_else(|| panic!("{name} exited before listening"));
        Self { name, child, lines, listening }
    }

    pub fn addr(&self, field: &str) -> String {
        self.listening[field]
            .as_str()
            .unwrap_or_else(|| panic!("{} logged no {field} address", self.name))
            .to_owned()
    }

    /// The log lines carrying `trace_id`.
    pub fn lines_of(&self, trace_id: &str) -> Vec<Value> {
        self.lines.lock().unwrap().iter().filter(|l| l["trace_id"] == trace_id).cloned().collect()
    }

    /// SIGKILL, as a crash would; waits until it is gone.
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    /// SIGTERM, then the exit status (which must come within 10 s).
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("still running").to_string();
        let killed = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
        assert!(killed.success());
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit within 10 s of SIGTERM", self.name))
            .unwrap()
    }
}

/// How a process stack is wired beyond the topology: its backends (their
/// URLs may go through a test's [`crate::Proxy`]), where spans go, and any
/// further environment.
#[derive(Default)]
pub struct Setup {
    pub database_url: String,
    /// (REDIS_URL, CACHE_PREFIX).
    pub redis: Option<(String, String)>,
    /// (AMQP_URL, AMQP_EXCHANGE).
    pub amqp: Option<(String, String)>,
    pub sns: Option<String>,
    /// The OTLP endpoint every binary exports its spans to.
    pub otlp: Option<String>,
    /// OTEL_BSP_SCHEDULE_DELAY in ms.
    pub export_delay_ms: u64,
    /// FAULTS of the storage service.
    pub storage_faults: String,
    /// (binary, variable, value) set last, so it overrides the rest: e.g. a
    /// shorter timeout for a test that cuts a backend.
    pub extra: Vec<(&'static str, &'static str, String)>,
}

/// The binaries of the topology wired together on loopback. Every listener
/// is on a port picked at start, so a binary killed and spawned again comes
/// back where its callers look for it.
pub struct Procs {
    procs: HashMap<&'static str, Proc>,
    env: HashMap<&'static str, Vec<(&'static str, String)>>,
    /// The binary of each replica started under a name of its own.
    binaries: HashMap<&'static str, &'static str>,
    admins: HashMap<&'static str, String>,
    pub base: String,
}

impl Procs {
    pub async fn start(setup: Setup) -> Self {
        let topology = topology();
        // Every listener's address first: callers are wired to their callees'
        // addresses, and the notifier subscribes the gateway's to SNS.
        let addrs: HashMap<(&str, &str), String> = topology
            .iter()
            .flat_map(|s| s.addrs.iter().map(move |variable| ((s.name, *variable), crate::free_addr())))
            .collect();
        let http = addrs[&("app-gateway", "HTTP_ADDR")].clone();
        let mut procs = Self {
            procs: HashMap::new(),
            env: HashMap::new(),
            binaries: HashMap::new(),
            admins: HashMap::new(),
            base: format!("http://{http}"),
        };
        // From the topology's last line up: what each calls is already listening.
        for service in topology.into_iter().rev() {
            let mut env = vec![("DEPLOYMENT_ENVIRONMENT", "test".to_owned())];
            if let Some(otlp) = &setup.otlp {
                env.extend([
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.clone()),
                    ("OTEL_SERVICE_NAME", service.name.to_owned()),
                    ("OTEL_BSP_SCHEDULE_DELAY", setup.export_delay_ms.to_string()),
                ]);
            }
            for variable in &service.addrs {
                env.push((variable, addrs[&(service.name, *variable)].clone()));
            }
            for (variable, callee) in &service.calls {
                env.push((variable, format!("http://{}", addrs[&(*callee, "GRPC_ADDR")])));
            }
            match service.name {
                "app-storage" => {
                    env.extend([
                        ("DATABASE_URL", setup.database_url.clone()),
                        ("FAULTS", setup.storage_faults.clone()),
                        // As in the in-process Stack: debug builds on a busy machine.
                        ("CACHE_TIMEOUT", "250ms".into()),
                    ]);
                    if let Some((url, prefix)) = &setup.redis {
                        env.extend([("REDIS_URL", url.clone()), ("CACHE_PREFIX", prefix.clone())]);
                    }
                }
                "app-notifier" => {
                    env.push(("PUBLISH_TIMEOUT", "3s".into()));
                    if let Some((url, exchange)) = &setup.amqp {
                        env.extend([("AMQP_URL", url.clone()), ("AMQP_EXCHANGE", exchange.clone())]);
                    }
                    if let Some(endpoint) = &setup.sns {
                        env.extend([
                            ("SNS_ENDPOINT_URL", endpoint.clone()),
                            ("SNS_SUBSCRIBE_URL", format!("http://{http}/sns")),
                            ("AWS_REGION", "us-east-1".into()),
                            ("AWS_ACCESS_KEY_ID", "test".into()),
                            ("AWS_SECRET_ACCESS_KEY", "test".into()),
                        ]);
                    }
                }
                "app-gateway" => {
                    env.extend([("WEBHOOK_SECRET", crate::SECRET.to_owned()), ("READ_TIMEOUT", "1s".into())]);
                    if let Some(endpoint) = &setup.sns {
                        env.push(("SNS_CERT_ORIGINS", endpoint.clone()));
                    }
                }
                _ => {}
            }
            env.extend(
                setup
                    .extra
                    .iter()
                    .filter(|(name, ..)| *name == service.name)
                    .map(|(_, k, v)| (*k, v.clone())),
            );
            if let Some(admin) = addrs.get(&(service.name, "ADMIN_ADDR")) {
                procs.admins.insert(service.name, format!("http://{admin}"));
            }
            procs.env.insert(service.name, env);
            procs.spawn(service.name).await;
        }
        procs.ready().await;
        procs
    }

    /// Starts `name` (again) with its environment and ports.
    pub async fn spawn(&mut self, name: &'static str) {
        let binary = self.binaries.get(name).copied().unwrap_or(name);
        let proc = Proc::start(binary, &self.env[name]).await;
        self.procs.insert(name, proc);
    }

    /// Starts another replica of `binary`, called `name`: its environment,
    /// with listeners of its own.
    pub async fn spawn_replica(&mut self, binary: &'static str, name: &'static str) {
        self.spawn_replica_with(binary, name, &[]).await;
    }

    /// [`Self::spawn_replica`], with `overrides` set in the replica's
    /// environment before it starts: e.g. its STORAGE_URL pointed at another
    /// replica (`format!("http://{}", procs.addr_of("app-storage-2", "GRPC_ADDR"))`),
    /// which makes a second chain of services.
    pub async fn spawn_replica_with(
        &mut self,
        binary: &'static str,
        name: &'static str,
        overrides: &[(&'static str, String)],
    ) {
        let mut env = self.env[binary].clone();
        for (variable, value) in &mut env {
            if variable.ends_with("_ADDR") {
                *value = crate::free_addr();
                if *variable == "ADMIN_ADDR" {
                    self.admins.insert(name, format!("http://{value}"));
                }
            }
        }
        self.env.insert(name, env);
        self.binaries.insert(name, binary);
        for (variable, value) in overrides {
            self.set_env(name, variable, value.clone());
        }
        self.spawn(name).await;
    }

    /// Sets `variable` for `name`'s next start ([`Self::spawn`]).
    pub fn set_env(&mut self, name: &str, variable: &'static str, value: String) {
        let env = self.env.get_mut(name).unwrap_or_else(|| panic!("no {name}"));
        env.retain(|(v, _)| *v != variable);
        env.push((variable, value));
    }

    /// The address `name` listens on for `variable` (e.g. GRPC_ADDR).
    pub fn addr_of(&self, name: &str, variable: &str) -> String {
        self.env[name].iter().find(|(v, _)| *v == variable).map(|(_, a)| a.clone()).unwrap()
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub async fn kill(&mut self, name: &'static str) {
        self.take(name).kill().await;
    }

    /// The running binary `name`, taken out of the stack (for a test that
    /// stops it itself).
    pub fn take(&mut self, name: &str) -> Proc {
        self.procs.remove(name).unwrap_or_else(|| panic!("{name} is not running"))
    }

    pub fn get(&self, name: &str) -> &Proc {
        self.procs.get(name).unwrap_or_else(|| panic!("{name} is not running"))
    }

    /// Until the gateway and the notifier both report ready.
    pub async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        loop {
            let mut ready = true;
            for url in [self.url("/ready"), self.admin("app-notifier", "/ready")] {
                ready &= client.get(url).send().await.is_ok_and(|r| r.status() == 200);
            }
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "the process stack did not become ready in 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The base URL of gateway `name` (a replica's too): `http://` and its HTTP_ADDR.
    pub fn base_of(&self, name: &str) -> String {
        format!("http://{}", self.addr_of(name, "HTTP_ADDR"))
    }

    /// Until gateway `name` (e.g. a replica wired to a chain of its own)
    /// reports ready.
    pub async fn ready_of(&self, name: &str) {
        let url = format!("{}/ready", self.base_of(name));
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        while !client.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
            assert!(Instant::now() < deadline, "{name} did not become ready in 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A path on binary `name`'s admin port.
    pub fn admin(&self, name: &str, path: &str) -> String {
        let base = self.admins.get(name).unwrap_or_else(|| panic!("{name} has no admin port"));
        format!("{base}{path}")
    }

    /// SIGTERM to each still running, callers first (from the topology's
    /// first line down, each binary's replicas with it); all must exit 0.
    pub async fn terminate(mut self) {
        for service in topology() {
            let mut names: Vec<&'static str> = vec![service.name];
            names.extend(self.binaries.iter().filter(|(_, b)| **b == service.name).map(|(n, _)| *n));
            for name in names {
                if let Some(proc) = self.procs.remove(name) {
                    let status = proc.terminate().await;
                    assert!(status.success(), "{name} exited with {status}");
                }
            }
        }
    }
}
