//! What every request passes through: its server span and HTTP metrics
//! (bounded labels: route templates, known methods), then the fault rules.

use std::{sync::LazyLock, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
};
use prometheus::{HistogramVec, IntCounterVec, IntGauge};
use ticketmesh_runtime::{Faults, metrics, telemetry};
use tracing::{Instrument, field::Empty};

use crate::error::AppError;

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

/// The fault rules for this route, inside its span: a delay, or a 503 with
/// `Retry-After` before the handler runs (so nothing is stored).
pub(crate) async fn inject_faults(State(faults): State<Faults>, request: Request, next: Next) -> Response {
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
/// Not tower-http's `TraceLayer`: its `on_response` sees no route or method to label the metrics with.
pub(crate) async fn observe(request: Request, next: Next) -> Response {
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
