//! Readiness: the gateway can do its work while both services it calls, event
//! and storage, answer SERVING. Its own `/ready` asks them on each request;
//! the admin port's `/ready` (the runtime's, which reads a flag) answers with
//! the last probe's result, kept current by [`follow`].

use std::time::Duration;

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use serde_json::json;

use crate::{error, state::AppState};

/// How long a probe waits for each service's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether event and storage answer SERVING now; the result is kept for the
/// admin port's `/ready` too.
async fn probe(state: &AppState) -> (bool, bool) {
    let (event, storage) =
        tokio::join!(state.event().serving(PROBE_TIMEOUT), state.storage().serving(PROBE_TIMEOUT));
    state.0.ready.set(event && storage);
    (event, storage)
}

/// Ready only while both services this gateway calls answer SERVING.
pub(super) async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let (event, storage) = probe(&state).await;
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

/// Probes until shutdown starts, so that the admin port's `/ready` follows
/// the services even when no one asks the public one: every 2 s while ready,
/// every 500 ms while not (as a service follows the peer it needs).
pub(crate) async fn follow(state: AppState) {
    let mut stopping = state.0.stopping.subscribe();
    loop {
        let (event, storage) = probe(&state).await;
        let pause = if event && storage { Duration::from_secs(2) } else { Duration::from_millis(500) };
        tokio::select! {
            _ = stopping.wait_for(|stopping| *stopping) => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}
