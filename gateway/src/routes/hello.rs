//! Hello world through SNS, and the SNS notifications that came back.

use std::time::Duration;

use axum::{Json, extract::State};
use serde_json::{Value, json};
use ticketmesh_runtime::telemetry;

use crate::{error::AppError, state::AppState};

/// Hello world: the event service has the notifier publish "Hello World!" to
/// SNS `hello-world-topic`; the trace continues into the SNS message.
pub(super) async fn hello(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    let hello = state.event().hello().await?;
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
pub(super) async fn sns_notifications(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    let list = state.event().list_sns_notifications().await?;
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
