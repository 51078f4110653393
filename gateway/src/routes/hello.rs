//! Hello world through SNS, and the SNS notifications that came back.

use std::time::Duration;

use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};
use ticketmesh_proto::v1::{HelloRequest, ListSnsNotificationsRequest};
use ticketmesh_runtime::{grpc, telemetry};

use crate::{
    error::AppError,
    state::{AppState, answer},
};

/// Hello world: the event service has the notifier publish "Hello World!" to
/// SNS `hello-world-topic`; the trace continues into the SNS message.
pub(super) async fn hello(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
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
pub(super) async fn sns_notifications(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    let list = answer(
        "the event service",
        state
            .0
            .event
            .clone()
            .list_sns_notifications(grpc::with_deadline(ListSnsNotificationsRequest {}, state.0.timeout))
            .await,
    )?;
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
