//! The router, and the routes too small for a file of their own: the page,
//! and the span of a received message.

pub mod events;
mod hello;
pub(crate) mod ready;
pub mod sns;
mod tickets;
mod webhook;

use std::time::Duration;

use axum::{
    Json, Router,
    http::{StatusCode, header},
    middleware,
    response::{Html, IntoResponse},
    routing::{get, post},
};
use serde_json::json;
use ticketmesh_runtime::{admin, telemetry};

use crate::{
    error::AppError,
    middleware::{inject_faults, observe},
    server,
    state::AppState,
};
use hello::{hello, sns_notifications};
use ready::ready;
use tickets::{get_ticket, list_tickets, stats};
use webhook::webhook;

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

/// The live dashboard page, compiled into the binary (no CDN, no build step).
async fn ui() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-cache")], Html(include_str!("../ui.html")))
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
