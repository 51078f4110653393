//! app-gateway: the HTTP face of ticketmesh. Verifies PETZI webhooks and hands
//! them to the event service over gRPC; serves the stored tickets and stats
//! from the storage service; reports health, readiness and metrics.

pub mod error;
mod events;
pub mod render;
pub mod server;
pub mod signature;
pub mod sns;

pub use sns::{SnsAttribute, SnsMessage, parse_sns_message, sns_published_at, sns_topic_name};

use std::{
    future::Future,
    sync::{Arc, LazyLock},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Json, Router,
    body::Body,
    extract::{MatchedPath, Path, Query, Request, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use clap::Parser;
use prometheus::{Histogram, HistogramVec, IntCounterVec, IntGauge};
use serde::Deserialize;
use serde_json::{Value, json};
use ticketmesh_proto::v1::{
    GetStatsRequest, GetTicketRequest, HelloRequest, IngestWebhookRequest, ListSnsNotificationsRequest,
    ListTicketsRequest, event_service_client::EventServiceClient,
    notifier_service_client::NotifierServiceClient, storage_service_client::StorageServiceClient,
};
use ticketmesh_runtime::{
    Faults, admin,
    faults::Targets,
    grpc::{self, Channel},
    metrics, telemetry,
};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tracing::{Instrument, field::Empty};

use crate::{
    error::AppError,
    signature::{Signature, SignatureError},
};

#[derive(Debug, Clone, Parser)]
#[command(name = "app-gateway", version, about = "ticketmesh HTTP gateway", after_help = ticketmesh_runtime::environment_help!())]
pub struct Args {
    /// Address of the HTTP server.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: String,
    /// The event service's gRPC URL.
    #[arg(long, env = "EVENT_URL", default_value = "http://127.0.0.1:50051")]
    pub event_url: String,
    /// The storage service's gRPC URL (for the /api reads).
    #[arg(long, env = "STORAGE_URL", default_value = "http://127.0.0.1:50053")]
    pub storage_url: String,
    /// The notifier service's gRPC URL (for the live /events stream).
    #[arg(long, env = "NOTIFIER_URL", default_value = "http://127.0.0.1:50052")]
    pub notifier_url: String,
    /// The secrets PETZI may sign webhooks with (HMAC-SHA256), comma-separated:
    /// one, or during a rotation the old and the new. Each at least 32 bytes.
    #[arg(
        long = "webhook-secret",
        env = "WEBHOOK_SECRET",
        hide_env_values = true,
        value_delimiter = ',',
        required = true
    )]
    pub webhook_secrets: Vec<String>,
    /// Accept secrets shorter than 32 bytes, such as the demo value `secret`
    /// that PETZI's simulator signs with. For local demos only.
    #[arg(long, env = "ALLOW_DEMO_SECRET")]
    pub allow_demo_secret: bool,
    /// Largest accepted distance between a signature's timestamp and now.
    #[arg(long, env = "SIGNATURE_TOLERANCE", default_value = "30s", value_parser = ticketmesh_runtime::parse_duration)]
    pub signature_tolerance: Duration,
    /// Largest accepted webhook body, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,
    /// Where SNS signing certificates may be fetched besides AWS's SNS hosts
    /// (https://sns.<region>.amazonaws.com), as `scheme://host:port`,
    /// comma-separated: the SNS endpoint of a LocalStack, e.g. http://127.0.0.1:4566.
    #[arg(long, env = "SNS_CERT_ORIGINS", value_delimiter = ',')]
    pub sns_cert_origins: Vec<String>,
    /// SNS topic names whose messages `POST /sns` accepts (the TopicArn's last
    /// part; the whole ARN must also be one the notifier created).
    #[arg(
        long,
        env = "SNS_TOPICS",
        value_delimiter = ',',
        default_value = "hello-world-topic,ticket-events"
    )]
    pub sns_topics: Vec<String>,
    /// Deadline of each gRPC call to the event and storage services.
    #[arg(long, env = "GRPC_TIMEOUT", default_value = "10s", value_parser = ticketmesh_runtime::parse_duration)]
    pub grpc_timeout: Duration,
    /// Deadline of the reads (/api/stats, /api/tickets): past it, 504. The
    /// mesh's per-try timeout on the storage read routes (they answer in ms).
    #[arg(long, env = "READ_TIMEOUT", default_value = "250ms", value_parser = ticketmesh_runtime::parse_duration)]
    pub read_timeout: Duration,
    /// Address of the admin HTTP server (/faults, /metrics, /health); unset means none.
    #[arg(long, env = "ADMIN_ADDR")]
    pub admin_addr: Option<String>,
    #[command(flatten)]
    pub limits: server::Limits,
    #[command(flatten)]
    pub fault: ticketmesh_runtime::FaultArgs,
}

/// The shortest secret accepted without ALLOW_DEMO_SECRET: 256 bits, the
/// HMAC-SHA256 key size.
pub const MIN_SECRET_BYTES: usize = 32;

/// The secrets, checked: at least one, none empty, none short unless allowed
/// (and then said loudly).
fn secrets(args: &Args) -> anyhow::Result<Vec<Vec<u8>>> {
    let secrets: Vec<Vec<u8>> = args.webhook_secrets.iter().map(|s| s.trim().as_bytes().to_vec()).collect();
    if secrets.is_empty() || secrets.iter().any(Vec::is_empty) {
        anyhow::bail!("WEBHOOK_SECRET must hold one or more non-empty secrets, comma-separated");
    }
    let short = secrets.iter().filter(|s| s.len() < MIN_SECRET_BYTES).count();
    if short > 0 && !args.allow_demo_secret {
        anyhow::bail!(
            "WEBHOOK_SECRET: {short} of {} secrets are shorter than {MIN_SECRET_BYTES} bytes; use a random one \
             (e.g. `openssl rand -hex 32`), or set ALLOW_DEMO_SECRET=true for a local demo",
            secrets.len()
        );
    }
    if short > 0 {
        tracing::warn!(
            short,
            "ALLOW_DEMO_SECRET is set: webhooks signed with a short, guessable secret are accepted. \
             Never run this way where the webhook endpoint is reachable by anyone else"
        );
    }
    Ok(secrets)
}

/// The routes fault rules may name (probes and /metrics are left out, so a
/// rule never takes the gateway out of its load balancer).
pub const FAULT_ROUTES: &[&str] = &[
    "GET /",
    "POST /webhook",
    "POST /sns",
    "GET /api/sns/notifications",
    "GET /api/tickets",
    "GET /api/tickets/{number}",
    "GET /api/stats",
    "GET /events",
    "GET /ui",
];

struct Inner {
    event: EventServiceClient<Channel>,
    storage: StorageServiceClient<Channel>,
    notifier: NotifierServiceClient<Channel>,
    event_channel: Channel,
    storage_channel: Channel,
    secrets: Vec<Vec<u8>>,
    sns_topics: Vec<String>,
    sns_verifier: sns::Verifier,
    sns_known: sns::Topics,
    tolerance_secs: u64,
    max_body_bytes: usize,
    body_read_timeout: Duration,
    webhooks: server::Gate,
    reads: server::Gate,
    sse: events::Streams,
    timeout: Duration,
    read_timeout: Duration,
    faults: Faults,
    /// Turns true when shutdown starts: ends the open `/events` streams, which
    /// would otherwise hold graceful shutdown open for as long as a browser watches.
    stopping: tokio::sync::watch::Sender<bool>,
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    pub fn new(args: &Args) -> anyhow::Result<Self> {
        let event_channel = grpc::channel(&args.event_url, args.grpc_timeout)?;
        let storage_channel = grpc::channel(&args.storage_url, args.grpc_timeout)?;
        let notifier = NotifierServiceClient::new(grpc::channel(&args.notifier_url, args.grpc_timeout)?);
        Ok(Self(Arc::new(Inner {
            event: EventServiceClient::new(event_channel.clone()),
            storage: StorageServiceClient::new(storage_channel.clone()),
            notifier: notifier.clone(),
            event_channel,
            storage_channel,
            secrets: secrets(args)?,
            sns_topics: args.sns_topics.clone(),
            sns_verifier: sns::Verifier::new(args.sns_cert_origins.clone(), args.grpc_timeout)?,
            sns_known: sns::Topics::new(notifier, args.grpc_timeout),
            tolerance_secs: args.signature_tolerance.as_secs(),
            max_body_bytes: args.max_body_bytes,
            body_read_timeout: args.limits.body_read_timeout,
            webhooks: server::Gate::new("webhooks", args.limits.webhook_concurrency),
            reads: server::Gate::new("reads", args.limits.read_concurrency),
            sse: events::Streams::new(
                args.limits.max_sse_clients,
                args.limits.sse_buffer,
                args.limits.sse_buffer_bytes,
            ),
            timeout: args.grpc_timeout,
            read_timeout: args.read_timeout,
            faults: Faults::from_spec(
                "app-gateway",
                Targets {
                    methods: FAULT_ROUTES.iter().map(|r| (*r).to_owned()).collect(),
                    dependencies: vec![],
                    http: true,
                },
                &args.fault.faults,
            )?,
            stopping: tokio::sync::watch::Sender::new(false),
        })))
    }

    /// Ends every open `/events` stream (their clients reconnect elsewhere or later).
    fn close_streams(&self) {
        self.0.stopping.send_replace(true);
    }
}

static HTTP_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    metrics::counter_vec(
        "http_requests_total",
        "HTTP requests by method, route and status",
        &["method", "route", "status_code"],
    )
});
static HTTP_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    metrics::histogram_vec(
        "http_request_duration_seconds",
        "HTTP request latency by method and route",
        &["method", "route"],
        prometheus::DEFAULT_BUCKETS.to_vec(),
    )
});
static ACTIVE: LazyLock<IntGauge> = LazyLock::new(|| {
    metrics::gauge("active_connections", "HTTP requests in flight (an SSE stream counts until it ends)")
});
static WEBHOOKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    metrics::counter_vec(
        "webhook_requests_total",
        "Webhooks by outcome: accepted, duplicate, or the error code",
        &["status"],
    )
});
static WEBHOOK_TIME: LazyLock<Histogram> = LazyLock::new(|| {
    metrics::histogram(
        "webhook_processing_time_seconds",
        "Time from receiving a webhook to answering it",
        prometheus::DEFAULT_BUCKETS.to_vec(),
    )
});
static WEBHOOK_SIZE: LazyLock<Histogram> = LazyLock::new(|| {
    metrics::histogram(
        "webhook_payload_size_bytes",
        "Size of verified webhook bodies",
        prometheus::exponential_buckets(256.0, 2.0, 11).unwrap_or_default(),
    )
});

/// The router, with its state: what `serve` runs and what tests drive.
/// Webhooks and reads each pass their admission gate; every route but the
/// live stream runs under the request deadline.
pub fn app(state: AppState, request_timeout: Duration) -> Router {
    let inner = &state.0;
    let webhooks = Router::new()
        .route("/webhook", post(webhook))
        .route("/sns", post(sns::sns))
        .route_layer(middleware::from_fn_with_state(inner.webhooks.clone(), server::admit));
    let reads = Router::new()
        .route("/api/sns/notifications", get(sns_notifications))
        .route("/api/tickets", get(list_tickets))
        .route("/api/tickets/{number}", get(get_ticket))
        .route("/api/stats", get(stats))
        .route_layer(middleware::from_fn_with_state(inner.reads.clone(), server::admit));
    let timed = Router::new()
        .route("/", get(hello))
        .route("/ui", get(ui))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .route("/metrics", get(admin::metrics_handler))
        .merge(webhooks)
        .merge(reads)
        .route_layer(middleware::from_fn_with_state(request_timeout, server::deadline));
    Router::new()
        .merge(timed)
        .route("/events", get(events::events))
        .fallback(|| async { AppError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            AppError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(middleware::from_fn_with_state(inner.faults.clone(), inject_faults))
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

/// The fault rules for this route, inside its span: a delay, or a 503 with
/// `Retry-After` before the handler runs (so nothing is stored).
async fn inject_faults(State(faults): State<Faults>, request: Request, next: Next) -> Response {
    if !faults.active() {
        return next.run(request).await;
    }
    let route =
        request.extensions().get::<MatchedPath>().map(|p| format!("{} {}", request.method(), p.as_str()));
    if let Some(Err(injected)) = match route {
        Some(route) => Some(faults.check(&route).await),
        None => None,
    } {
        return AppError::new(StatusCode::SERVICE_UNAVAILABLE, "fault_injected", injected.to_string())
            .into_response();
    }
    next.run(request).await
}

/// The method label of a method outside HTTP's registered set, as the
/// OpenTelemetry HTTP conventions name it: a client inventing methods must not
/// invent metric series.
const OTHER_METHOD: &str = "_OTHER";

fn known_method(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => OTHER_METHOD,
    }
}

/// Every request: a server span continuing the caller's W3C trace context
/// (named and attributed by the OTel HTTP conventions, by route template),
/// and the HTTP metrics, labelled by route template too.
async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = known_method(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let span = tracing::info_span!(
        "http.server",
        otel.name = %format_args!("{} {route}", if method == OTHER_METHOD { "HTTP" } else { method }),
        otel.kind = "server",
        http.request.method = method,
        http.request.method_original = (method == OTHER_METHOD).then(|| request.method().as_str()),
        http.route = %route,
        url.path = %request.uri().path(),
        http.response.status_code = Empty,
    );
    telemetry::set_parent(&span, telemetry::extract_headers(request.headers()));
    let _active = metrics::Held::new(&ACTIVE);
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        telemetry::set_error(&span, status.to_string());
    }
    HTTP_REQUESTS.with_label_values(&[method, &route, status.as_str()]).inc();
    HTTP_DURATION.with_label_values(&[method, &route]).observe(started.elapsed().as_secs_f64());
    response
}

async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, AppError> {
    let started = Instant::now();
    let result = accept_webhook(&state.0, &headers, body).await;
    let outcome = match &result {
        Ok(v) if v["duplicate"] == true => "duplicate",
        Ok(_) => "accepted",
        Err(e) => e.code,
    };
    WEBHOOKS.with_label_values(&[outcome]).inc();
    WEBHOOK_TIME.observe(started.elapsed().as_secs_f64());
    result.map(Json)
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn signature_error(e: &SignatureError) -> AppError {
    let code = match e {
        SignatureError::Missing => "missing_signature",
        SignatureError::Malformed(_) => "malformed_signature",
        SignatureError::OutsideTolerance { .. } => "timestamp_out_of_tolerance",
        SignatureError::Mismatch => "invalid_signature",
    };
    AppError::new(StatusCode::UNAUTHORIZED, code, e.to_string())
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// How much of an oversized body is read and thrown away before the 413 is
/// sent: enough for a client that writes its whole body before it reads the
/// answer to get that answer, instead of a broken pipe.
const DRAIN_BYTES: usize = 4 * 1024 * 1024;

enum BodyError {
    TooLarge,
    Unreadable(axum::Error),
}

/// Reads a body of at most `limit` bytes within `timeout`: 413 when larger
/// (by its declared length before reading anything, or while reading), after
/// reading and discarding up to [`DRAIN_BYTES`] more in the time left; 408
/// when the client is too slow. Either way the connection is then closed.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<axum::body::Bytes, AppError> {
    let until = tokio::time::Instant::now() + timeout;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let mut chunks = body.into_data_stream();
    let mut read = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    let reading = async {
        if declared.is_some_and(|n| n > limit) {
            return Err(BodyError::TooLarge);
        }
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(BodyError::Unreadable)?;
            if read.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge);
            }
            read.extend_from_slice(&chunk);
        }
        Ok(())
    };
    match tokio::time::timeout_at(until, reading).await {
        Ok(Ok(())) => Ok(read.into()),
        Ok(Err(BodyError::TooLarge)) => {
            let mut drained = 0;
            let drain = async {
                while let Some(Ok(chunk)) = chunks.next().await {
                    drained += chunk.len();
                    if drained > DRAIN_BYTES {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout_at(until, drain).await;
            Err(AppError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than {limit} bytes"),
            )
            .closing())
        }
        Ok(Err(BodyError::Unreadable(e))) => {
            Err(AppError::bad_request("unreadable_body", format!("the body could not be read: {e}"))
                .closing())
        }
        Err(_) => {
            server::body_timed_out();
            Err(AppError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("the body did not arrive within {timeout:?}"),
            )
            .closing())
        }
    }
}

/// The webhook contract, checked cheapest first: media type, version, the
/// signature header and its timestamp before the body is read; size and time
/// while reading; the HMAC over the raw bytes; then the event service parses
/// and stores.
async fn accept_webhook(state: &Inner, headers: &HeaderMap, body: Body) -> Result<Value, AppError> {
    if !is_json(headers) {
        return Err(AppError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be application/json",
        ));
    }
    if let Some(version) = headers.get("petzi-version")
        && version.as_bytes().trim_ascii() != b"2"
    {
        return Err(AppError::bad_request("unsupported_version", "Petzi-Version must be 2"));
    }
    // A header that is not visible ASCII cannot be a signature: "" is malformed.
    let header = headers.get("petzi-signature").map(|v| v.to_str().unwrap_or_default());
    let signature = Signature::from_header(header).map_err(|e| signature_error(&e))?;
    signature.check_time(unix_now(), state.tolerance_secs).map_err(|e| signature_error(&e))?;
    let body = read_body(headers, body, state.max_body_bytes, state.body_read_timeout).await?;
    tracing::info_span!("webhook.verify_signature", http.request.body.size = body.len()).in_scope(|| {
        signature.check_tags(&state.secrets, &body).map_err(|e| {
            telemetry::set_error(&tracing::Span::current(), e.to_string());
            signature_error(&e)
        })
    })?;
    WEBHOOK_SIZE.observe(body.len() as f64);
    let now = SystemTime::now();
    let request = IngestWebhookRequest {
        body: body.to_vec(),
        signed_at: Some(prost_types::Timestamp { seconds: signature.timestamp, nanos: 0 }),
        received_at: Some(now.into()),
    };
    let accepted = state
        .event
        .clone()
        .ingest_webhook(grpc::with_deadline(request, state.timeout))
        .await
        .map_err(|s| AppError::from_grpc("the event service", &s))?
        .into_inner();
    Ok(json!({
        "status": "accepted",
        "delivery_id": accepted.delivery_id,
        "duplicate": accepted.duplicate,
        "ticket_number": accepted.ticket_number,
        "event": accepted.event_type().petzi_name(),
        "trace_id": telemetry::trace_id(),
    }))
}

#[derive(Debug, Deserialize)]
struct ListParams {
    category: Option<String>,
    #[serde(rename = "type")]
    ticket_type: Option<String>,
    event_id: Option<i64>,
    page_size: Option<i32>,
    page_token: Option<String>,
}

async fn list_tickets(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    let Query(p) = params.map_err(|e| AppError::bad_request("invalid_query", e.body_text()))?;
    let request = ListTicketsRequest {
        page_size: p.page_size.unwrap_or(0),
        page_token: p.page_token.unwrap_or_default(),
        category: p.category.unwrap_or_default(),
        r#type: p.ticket_type.unwrap_or_default(),
        event_id: p.event_id,
    };
    if !(0..=500).contains(&request.page_size) {
        return Err(AppError::bad_request("invalid_query", "page_size must be between 1 and 500"));
    }
    let page = state
        .0
        .storage
        .clone()
        .list_tickets(grpc::with_deadline(request, state.0.read_timeout))
        .await
        .map_err(|s| match s.code() {
            tonic::Code::InvalidArgument => AppError::bad_request("invalid_query", s.message()),
            _ => AppError::from_grpc("the storage service", &s),
        })?
        .into_inner();
    Ok(Json(json!({
        "tickets": page.tickets.iter().map(render::ticket).collect::<Vec<_>>(),
        "next_page_token": page.next_page_token,
    })))
}

async fn get_ticket(
    State(state): State<AppState>,
    Path(number): Path<String>,
) -> Result<Json<Value>, AppError> {
    let ticket = state
        .0
        .storage
        .clone()
        .get_ticket(grpc::with_deadline(GetTicketRequest { number }, state.0.read_timeout))
        .await
        .map_err(|s| AppError::from_grpc("the storage service", &s))?
        .into_inner();
    Ok(Json(render::ticket(&ticket)))
}

async fn stats(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    let stats = state
        .0
        .storage
        .clone()
        .get_stats(grpc::with_deadline(GetStatsRequest {}, state.0.read_timeout))
        .await
        .map_err(|s| AppError::from_grpc("the storage service", &s))?
        .into_inner();
    Ok(Json(render::stats(&stats)))
}

/// The live dashboard page, compiled into the binary (no CDN, no build step).
async fn ui() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-cache")], Html(include_str!("ui.html")))
}

/// The span of one received message, a child of the span that published it
/// (from the trace context the message carries).
pub(crate) fn process_span(
    system: &'static str,
    destination: &str,
    message_id: &str,
    headers: &std::collections::HashMap<String, String>,
) -> tracing::Span {
    let span = telemetry::messaging_span(telemetry::Messaging::Process, system, destination, message_id);
    telemetry::set_parent(&span, telemetry::extract_map(headers));
    span
}

/// Hello world: the event service has the notifier publish "Hello World!" to
/// SNS `hello-world-topic`; the trace continues into the SNS message.
async fn hello(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    let hello =
        state.0.event.clone().hello(grpc::with_deadline(HelloRequest {}, state.0.timeout)).await.map_err(
            |s| match s.code() {
                tonic::Code::Unavailable => {
                    AppError::new(StatusCode::SERVICE_UNAVAILABLE, "sns_unavailable", s.message().to_owned())
                }
                _ => AppError::from_grpc("the event service", &s),
            },
        )?;
    let hello = hello.into_inner();
    let duration = hello.duration.and_then(|d| Duration::try_from(d).ok()).unwrap_or_default();
    Ok(Json(json!({
        "message": hello.message,
        "sns": {
            "topic": hello.topic,
            "status": hello.status,
            "message_id": hello.message_id,
            "duration": duration.as_secs_f64(),
        },
        "trace_id": telemetry::trace_id(),
    })))
}

/// The SNS notifications the event service received lately, newest first.
async fn sns_notifications(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    let list = state
        .0
        .event
        .clone()
        .list_sns_notifications(grpc::with_deadline(ListSnsNotificationsRequest {}, state.0.timeout))
        .await
        .map_err(|s| AppError::from_grpc("the event service", &s))?
        .into_inner();
    let items: Vec<Value> = list
        .notifications
        .iter()
        .map(|n| {
            let m = n.notification.clone().unwrap_or_default();
            json!({
                "message_id": m.message_id,
                "topic_arn": m.topic_arn,
                "subject": m.subject,
                "message": m.message,
                "trace_id": n.trace_id,
            })
        })
        .collect();
    Ok(Json(json!({"notifications": items})))
}

/// Ready only while both services this gateway calls answer SERVING.
async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let timeout = Duration::from_secs(1);
    let (event, storage) = tokio::join!(
        grpc::is_serving(state.0.event_channel.clone(), "ticketmesh.v1.EventService", timeout),
        grpc::is_serving(state.0.storage_channel.clone(), "ticketmesh.v1.StorageService", timeout),
    );
    let word = |up: bool| if up { "serving" } else { "not_serving" };
    let status = if event && storage { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body =
        json!({"ready": event && storage, "dependencies": {"event": word(event), "storage": word(storage)}});
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(header::RETRY_AFTER, error::RETRY_AFTER_SECS.into());
    }
    response
}

/// Serves the gateway on an already bound listener until `shutdown`; requests
/// in flight then finish (within the request deadline) before this returns.
pub async fn serve(
    args: Args,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = AppState::new(&args)?;
    let streams = state.clone();
    let shutdown = async move {
        shutdown.await;
        streams.close_streams();
    };
    if let Some(admin) = admin {
        let router = admin::faults_router(state.0.faults.clone())
            .route("/metrics", get(admin::metrics_handler))
            .route("/health", get(|| async { Json(json!({"status": "ok"})) }));
        // It ends with the process: it holds no request worth draining.
        tokio::spawn(async move { axum::serve(admin, router).await });
    }
    server::serve(listener, app(state, args.limits.request_timeout), &args.limits, shutdown).await
}
