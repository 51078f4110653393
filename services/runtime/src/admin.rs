//! The admin HTTP server every gRPC service runs beside its gRPC port:
//! `/health` (alive), `/ready` (dependencies answer), `/metrics` (Prometheus).

use std::{
    future::Future,
    sync::{
        Arc, LazyLock,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, http::StatusCode, response::IntoResponse, routing::get};
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

/// Serves the admin router until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    ready: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(ready)).with_graceful_shutdown(shutdown).await
}
