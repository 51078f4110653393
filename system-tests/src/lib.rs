//! The rig every system test uses, compiled once for all the suites in
//! `tests/`: the four services started in-process on port 0 and talking gRPC
//! over loopback ([`Stack`]), or the real binaries as child processes
//! ([`procs`]); each test with its own database (a fresh PostgreSQL database
//! or SQLite file), its own Redis key prefix and its own exchange, so the
//! suites run in parallel. A test rig fails loudly: it unwraps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod amqp;
pub mod load;
pub mod metrics;
pub mod procs;

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;
use sqlx::Connection;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

/// The webhook secret of every test stack (32 bytes: no demo allowance needed).
pub const SECRET: &str = "test-secret-0123456789abcdef0123";

/// Where PostgreSQL is; each test creates its own database there.
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn sns_endpoint() -> String {
    std::env::var("TEST_SNS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4566".into())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A free port on loopback, picked before a process binds it (so a process
/// killed and started again comes back on it). Below the kernel's ephemeral
/// range (32768 and up on Linux): a port from there could be handed to some
/// outgoing connection between this pick and the process's bind. Successive
/// picks in one test process walk the range, from a start that differs per
/// process.
pub fn free_addr() -> String {
    const FIRST: u32 = 12_000;
    const PORTS: u32 = 8_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7_919);
    for _ in 0..PORTS {
        let port = FIRST + start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % PORTS;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port as u16)) {
            return listener.local_addr().unwrap().to_string();
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + PORTS)
}

/// The host:port of a URL such as `postgres://user@host:5432/db`.
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap().to_owned()
}

/// `url` with its host:port replaced by `addr` (a proxy's).
pub fn through(url: &str, addr: &str) -> String {
    url.replacen(&host_port(url), addr, 1)
}

/// A name no other test (in this run or a parallel one) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}_{}_{}_{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A test's own database (and cache prefix).
pub struct Backend {
    pub database_url: String,
    pub redis_url: Option<String>,
    pub cache_prefix: String,
    pg_name: Option<String>,
    sqlite_dir: Option<std::path::PathBuf>,
}

impl Backend {
    pub fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(unique("ticketmesh-test"));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            database_url: format!("sqlite:{}?mode=rwc", dir.join("tm.db").display()),
            redis_url: None,
            cache_prefix: unique("tm"),
            pg_name: None,
            sqlite_dir: Some(dir),
        }
    }

    pub async fn postgres(with_redis: bool) -> Self {
        let name = unique("tm_test");
        let admin = postgres_admin_url();
        let mut conn =
            sqlx::PgConnection::connect(&admin).await.expect("PostgreSQL reachable (TEST_POSTGRES_URL)");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.unwrap();
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap();
        Self {
            database_url: format!("{base}/{name}"),
            redis_url: with_redis.then(redis_url),
            cache_prefix: unique("tm"),
            pg_name: Some(name),
            sqlite_dir: None,
        }
    }

    /// Counts rows straight from the database, bypassing the services.
    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&self.database_url).await.unwrap();
        let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&mut conn).await.unwrap();
        n
    }

    /// Nothing half-written: one outbox row per event (none pruned in a
    /// test), a ticket row for each event's ticket, and none without one.
    pub async fn assert_whole(&self) {
        let events = self.count("SELECT COUNT(*) FROM events").await;
        let outbox = self.count("SELECT COUNT(*) FROM outbox").await;
        let orphans = self
            .count("SELECT COUNT(*) FROM tickets WHERE number NOT IN (SELECT ticket_number FROM events)")
            .await;
        let missing = self
            .count("SELECT COUNT(DISTINCT ticket_number) FROM events WHERE ticket_number NOT IN (SELECT number FROM tickets)")
            .await;
        assert!(
            events == outbox && orphans == 0 && missing == 0,
            "partial rows: {events} events, {outbox} outbox rows, {orphans} tickets without an event, \
             {missing} events' tickets without a row"
        );
    }

    pub async fn drop_database(self) {
        if let Some(name) = &self.pg_name {
            let mut conn = sqlx::PgConnection::connect(&postgres_admin_url()).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        if let Some(dir) = &self.sqlite_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The in-process [`Stack`]s of one test binary share one metrics registry:
/// a test asserting a figure that another stack would move too
/// (`sse_clients`, `outbox_backlog`) holds this turn while it runs.
pub async fn registry_turn() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

/// The four services, running until `stop`.
pub struct Stack {
    pub base: String,
    pub event_grpc: String,
    pub storage_grpc: String,
    pub notifier_grpc: String,
    pub storage_admin: String,
    pub event_admin: String,
    pub notifier_admin: String,
    pub gateway_admin: String,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

fn stopped(rx: &watch::Receiver<bool>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// What to start; `storage_url` overrides where event and gateway find
/// storage; `amqp` = (URL, exchange) points the notifier at RabbitMQ; `sns`
/// is an SNS endpoint, to which the notifier subscribes this stack's `/sns`.
#[derive(Default)]
pub struct Options {
    pub storage_url: Option<String>,
    /// Fault rules at start, per service: (storage, event, notifier, gateway).
    pub faults: [&'static str; 4],
    /// The gateway's READ_TIMEOUT (default 1 s: debug builds on a busy machine).
    pub read_timeout: Option<Duration>,
    pub amqp: Option<(String, String)>,
    pub sns: Option<String>,
    /// The gateway's server limits (default: the flags' defaults).
    pub limits: Option<app_gateway::server::Limits>,
    /// Where SNS delivers (default: this stack's own POST /sns), e.g. a test's recorder in front of it.
    pub sns_subscribe_url: Option<String>,
    /// The gateway's webhook secrets (default: [`SECRET`] alone).
    pub secrets: Option<Vec<String>>,
}

impl Stack {
    pub async fn start(backend: &Backend) -> Self {
        Self::start_with(backend, Options::default()).await
    }

    pub async fn start_with(backend: &Backend, options: Options) -> Self {
        // Spans (and so trace ids and propagation) as in the binaries.
        static TELEMETRY: std::sync::OnceLock<ticketmesh_runtime::telemetry::Telemetry> =
            std::sync::OnceLock::new();
        TELEMETRY.get_or_init(|| ticketmesh_runtime::telemetry::init_without_logs("ticketmesh-tests"));
        let (stop, rx) = watch::channel(false);
        let ((sg, sg_addr), (sa, sa_addr)) = (bind().await, bind().await);
        let ((eg, eg_addr), (ea, ea_addr)) = (bind().await, bind().await);
        let ((ng, ng_addr), (na, na_addr)) = (bind().await, bind().await);
        let ((http, http_addr), (ga, ga_addr)) = (bind().await, bind().await);
        let fault = |i: usize| ticketmesh_runtime::FaultArgs { faults: options.faults[i].into() };
        let storage_url = options.storage_url.unwrap_or_else(|| format!("http://{sg_addr}"));
        let timeout = Duration::from_secs(5);

        let storage = app_storage::Args {
            grpc_addr: sg_addr.to_string(),
            admin_addr: sa_addr.to_string(),
            database_url: backend.database_url.clone(),
            database_timeout: Duration::from_secs(3),
            max_batch: 256,
            writers: 4,
            outbox_retention: Duration::from_secs(7 * 24 * 3600),
            events_retention: Duration::from_secs(30 * 24 * 3600),
            prune_interval: Duration::from_secs(600),
            redis_url: backend.redis_url.clone(),
            cache_prefix: backend.cache_prefix.clone(),
            cache_ttl: Duration::from_secs(30),
            cache_timeout: Duration::from_millis(250),
            fault: fault(0),
        };
        let event = app_event::Args {
            grpc_addr: eg_addr.to_string(),
            admin_addr: ea_addr.to_string(),
            storage_url: storage_url.clone(),
            storage_timeout: timeout,
            notifier_timeout: timeout,
            outbox_max_attempts: 5,
            outbox_relay_concurrency: 32,
            notifier_url: format!("http://{ng_addr}"),
            fault: fault(1),
        };
        let (amqp_url, amqp_exchange) = options.amqp.unzip();
        let notifier = app_notifier::Args {
            grpc_addr: ng_addr.to_string(),
            admin_addr: na_addr.to_string(),
            amqp_url,
            amqp_exchange: amqp_exchange.unwrap_or_else(|| "ticketmesh.events".into()),
            publish_timeout: Duration::from_secs(2),
            sns_subscribe_url: options.sns.as_ref().map(|_| {
                options.sns_subscribe_url.clone().unwrap_or_else(|| format!("http://{http_addr}/sns"))
            }),
            sns_endpoint_url: options.sns.clone(),
            fault: fault(2),
        };
        let gateway = app_gateway::Args {
            http_addr: http_addr.to_string(),
            event_url: format!("http://{eg_addr}"),
            storage_url,
            notifier_url: format!("http://{ng_addr}"),
            webhook_secrets: options.secrets.unwrap_or_else(|| vec![SECRET.into()]),
            allow_demo_secret: false,
            limits: options.limits.unwrap_or_default(),
            sns_topics: vec!["hello-world-topic".into(), "ticket-events".into()],
            sns_cert_origins: options.sns.iter().cloned().collect(),
            signature_tolerance: Duration::from_secs(30),
            max_body_bytes: 256 * 1024,
            grpc_timeout: timeout,
            read_timeout: options.read_timeout.unwrap_or(Duration::from_secs(1)),
            admin_addr: None,
            fault: fault(3),
        };
        let tasks = vec![
            tokio::spawn(app_storage::serve(storage, sg, sa, stopped(&rx))),
            tokio::spawn(app_event::serve(event, eg, ea, stopped(&rx))),
            tokio::spawn(app_notifier::serve(notifier, ng, na, stopped(&rx))),
            tokio::spawn(app_gateway::serve(gateway, http, Some(ga), stopped(&rx))),
        ];
        Self {
            base: format!("http://{http_addr}"),
            event_grpc: format!("http://{eg_addr}"),
            storage_grpc: format!("http://{sg_addr}"),
            notifier_grpc: format!("http://{ng_addr}"),
            storage_admin: format!("http://{sa_addr}"),
            event_admin: format!("http://{ea_addr}"),
            notifier_admin: format!("http://{na_addr}"),
            gateway_admin: format!("http://{ga_addr}"),
            stop,
            tasks,
        }
    }

    /// Waits until the gateway reports ready (both services SERVING).
    pub async fn ready(self) -> Self {
        let deadline = Instant::now() + Duration::from_secs(20);
        // No idle connection is kept: a test of the connection cap starts
        // with every slot free.
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        loop {
            if let Ok(r) = client.get(format!("{}/ready", self.base)).send().await
                && r.status() == 200
            {
                return self;
            }
            assert!(Instant::now() < deadline, "stack did not become ready in 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops every service and checks each shut down cleanly.
    pub async fn stop(self) {
        self.stop.send(true).unwrap();
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("service stops within 10 s")
                .unwrap()
                .expect("service exits without error");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A Petzi-Signature for `body` signed now with the test secret.
pub fn sign(body: &[u8]) -> String {
    petzi::sign(SECRET.as_bytes(), now(), body)
}

/// PETZI's example delivery with this event, ticket number, category, amount
/// ("42.50") and cancellation reason, written as PETZI's sender writes it
/// (so it is signed exactly as sent).
pub fn delivery(event: &str, number: &str, category: &str, amount: &str, reason: &str) -> String {
    let mut d = petzi::Delivery::example();
    d.event = match event {
        "ticket_created" => petzi::EventKind::TicketCreated,
        "ticket_updated" => petzi::EventKind::TicketUpdated,
        other => panic!("no PETZI event {other:?}"),
    };
    let ticket = &mut d.details.ticket;
    ticket.number = number.into();
    ticket.category = category.into();
    ticket.price.amount = petzi::Amount::parse(amount).expect("a valid amount such as 42.50");
    ticket.cancellation_reason = reason.into();
    d.to_body()
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

/// Something with a gateway to send to: the in-process [`Stack`] or the
/// binaries of [`procs::Procs`].
pub trait Gateway {
    fn url(&self, path: &str) -> String;
}

impl Gateway for Stack {
    fn url(&self, path: &str) -> String {
        Stack::url(self, path)
    }
}

impl<T: Gateway> Gateway for std::sync::Arc<T> {
    fn url(&self, path: &str) -> String {
        T::url(self, path)
    }
}

/// A gateway's base URL, e.g. `http://127.0.0.1:8080` (a replica's).
impl Gateway for String {
    fn url(&self, path: &str) -> String {
        format!("{self}{path}")
    }
}

impl Gateway for procs::Procs {
    fn url(&self, path: &str) -> String {
        procs::Procs::url(self, path)
    }
}

/// POSTs a signed delivery.
pub async fn post_signed(client: &reqwest::Client, stack: &impl Gateway, body: &str) -> Answer {
    post(
        client,
        stack,
        body.as_bytes().to_vec(),
        &[("content-type", "application/json"), ("petzi-signature", &sign(body.as_bytes()))],
    )
    .await
}

pub async fn post(
    client: &reqwest::Client,
    stack: &impl Gateway,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = client.post(stack.url("/webhook")).body(body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    send(request).await
}

pub async fn get(client: &reqwest::Client, url: String) -> Answer {
    send(client.get(url)).await
}

/// Sends a request and reads its answer (JSON if it parses, else the text).
pub async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("gateway answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer { status, body, headers }
}

/// Reads `/events` until a ticket event with `id` comes (or `within` passes).
pub async fn sse_until(response: &mut reqwest::Response, id: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut seen = String::new();
    while !(seen.contains(&format!("id: {id}")) && seen.contains("event: ticket_created")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, response.chunk()).await {
            Ok(Ok(Some(bytes))) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            _ => panic!("no event {id} within {within:?}; got {seen:?}"),
        }
    }
    seen
}

/// A TCP proxy on loopback that a test can cut (every connection dropped,
/// new ones refused at once) and restore: a dependency outage without
/// touching the shared server.
pub struct Proxy {
    pub addr: SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: &str) -> Self {
        let (listener, addr) = bind().await;
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (target, gate, held) = (target.to_owned(), open.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !gate.load(Ordering::SeqCst) {
                    continue; // dropped: the peer sees the connection closed
                }
                let target = target.clone();
                held.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        Self { addr, open, connections, accept }
    }

    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
