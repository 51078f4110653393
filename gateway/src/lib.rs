//! app-gateway: the HTTP face of ticketmesh. Verifies PETZI webhooks and hands
//! them to the event service over gRPC; serves the stored tickets and stats
//! from the storage service, the live stream from the notifier, and the SNS
//! subscription endpoint; reports health, readiness and metrics.
//!
//! `config` (flags) → `state` (clients, gates) → `routes` (the router and a
//! module per concern) behind `middleware` (span, metrics, faults), served by
//! `server` (connection and time limits).

mod body;
mod config;
pub mod error;
mod middleware;
pub mod render;
mod routes;
pub mod server;
mod state;

pub use config::{Args, FAULT_ROUTES, MIN_SECRET_BYTES};
pub use routes::{app, sns};
pub use state::AppState;

use std::future::Future;

use axum::{Json, routing::get};
use serde_json::json;
use ticketmesh_runtime::admin;
use tokio::net::TcpListener;

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
            .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
            .merge(routes::readiness(state.clone()));
        // It ends with the process: it holds no request worth draining.
        tokio::spawn(async move { axum::serve(admin, router).await });
    }
    server::serve(listener, app(state, args.limits.request_timeout), &args.limits, shutdown).await
}
