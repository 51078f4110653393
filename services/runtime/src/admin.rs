//! The admin HTTP server every service runs beside its own port:
//! `/health` (alive), `/ready` (dependencies answer), `/metrics` (Prometheus),
//! `/faults` (the fault rules: GET, PUT to replace, DELETE to clear).

use std::{
    future::Future,
    sync::{
        Arc, LazyLock,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Json, Router, body::Bytes, extract::State, http::StatusCode, response::IntoResponse, routing::get,
};
use serde_json::{Value, json};

use crate::faults::{self, Faults};
use prometheus::{Encoder, TextEncoder};
use tokio::net::TcpListener;

/// Whether the process can do its work now. Cheap to clone and to read.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

static PROCESS_METRICS: LazyLock<()> = LazyLock::new(|| {
    #[cfg(target_os = "linux")]
    {
        // Already registered is the only possible error; nothing to do then.
        let _ = prometheus::register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
    }
});

/// The process's metrics in the Prometheus text format.
pub fn render_metrics() -> String {
    LazyLock::force(&PROCESS_METRICS);
    let mut buf = Vec::with_capacity(16 * 1024);
    if let Err(error) = TextEncoder::new().encode(&prometheus::gather(), &mut buf) {
        tracing::warn!(%error, "encoding metrics failed");
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// `GET /metrics` as an axum handler, for the gateway's own router too.
pub async fn metrics_handler() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], render_metrics())
}

fn faults_body(faults: &Faults) -> Json<Value> {
    let targets = faults.targets();
    Json(json!({
        "rules": faults.rules().iter().map(faults::rule_json).collect::<Vec<_>>(),
        "targets": {"methods": targets.methods, "dependencies": targets.dependencies},
    }))
}

async fn get_faults(State(faults): State<Faults>) -> Json<Value> {
    faults_body(&faults)
}

/// Replaces every rule, or (on any bad rule) none: 400 naming the bad part.
async fn put_faults(
    State(faults): State<Faults>,
    body: Bytes,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    match faults::parse_json(&body, faults.targets()) {
        Ok(rules) => {
            faults.set(rules);
            Ok(faults_body(&faults))
        }
        Err(error) => Err((
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_fault_rules", "message": error.to_string()})),
        )),
    }
}

async fn delete_faults(State(faults): State<Faults>) -> Json<Value> {
    faults.set(Vec::new());
    faults_body(&faults)
}

/// `/faults` (GET, PUT, DELETE) over these rules.
pub fn faults_router(faults: Faults) -> Router {
    Router::new().route("/faults", get(get_faults).put(put_faults).delete(delete_faults)).with_state(faults)
}

pub fn router(ready: Readiness) -> Router {
    Router::new()
        .route("/health", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }))
        .route(
            "/ready",
            get(move || {
                let ready = ready.get();
                async move {
                    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                    let body = serde_json::json!({"ready": ready});
                    (status, axum::Json(body))
                }
            }),
        )
        .route("/metrics", get(metrics_handler))
}

/// Serves an admin router (`router`, with `/faults` merged in where the
/// process has rules) until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}
