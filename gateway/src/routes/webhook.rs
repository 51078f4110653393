//! `POST /webhook`: a PETZI delivery, checked cheapest first, then handed to
//! the event service.

use std::{
    sync::LazyLock,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Json,
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode, header},
};
use petzi::{Signature, SignatureError};
use prometheus::{Histogram, IntCounterVec};
use serde_json::{Value, json};
use ticketmesh_proto::v1::IngestWebhookRequest;
use ticketmesh_runtime::{metrics, telemetry};

use crate::{body::read_body, error::AppError, state::AppState};

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

pub(super) async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, AppError> {
    let started = Instant::now();
    let result = accept_webhook(&state, &headers, body).await;
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

/// The webhook contract, checked cheapest first: media type, version, the
/// signature header and its timestamp before the body is read; size and time
/// while reading; the HMAC over the raw bytes; then the event service parses
/// and stores.
async fn accept_webhook(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Value, AppError> {
    let inner = &state.0;
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
    signature.check_time(unix_now(), inner.tolerance_secs).map_err(|e| signature_error(&e))?;
    let body = read_body(headers, body, inner.max_body_bytes, inner.body_read_timeout).await?;
    tracing::info_span!("webhook.verify_signature", http.request.body.size = body.len()).in_scope(|| {
        signature.check_tags(&inner.secrets, &body).map_err(|e| {
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
    let accepted = state.event().ingest_webhook(request).await?;
    Ok(json!({
        "status": "accepted",
        "delivery_id": accepted.delivery_id,
        "duplicate": accepted.duplicate,
        "ticket_number": accepted.ticket_number,
        "event": accepted.event_type().petzi_name(),
        "trace_id": telemetry::trace_id(),
    }))
}
