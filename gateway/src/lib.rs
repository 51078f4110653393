//! app-gateway: the HTTP face of ticketmesh. Verifies PETZI webhooks and hands
//! them to the event service over gRPC; serves the stored tickets and stats
//! from the storage service, the live stream from the notifier, and the SNS
//! subscription endpoint; reports health, readiness and metrics.
//!
//! `config` (flags) → `state` (`clients`, gates) → `routes` (the router and a
//! module per concern) behind `middleware` (span, metrics, faults), served by
//! `server` (connection and time limits); the admin port is the runtime's.

mod body;
mod clients;
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

use ticketmesh_runtime::{admin, grpc};
use tokio::{net::TcpListener, sync::watch};

/// Serves the gateway on an already bound listener until `shutdown`; requests
/// in flight then finish (within the request deadline) before this returns.
/// `admin`, when given, serves the runtime's admin router (`/health`, `/ready`,
/// `/metrics`, `/faults`) until the gateway has stopped.
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
    let (stop, stopped) = watch::channel(false);
    let admin = admin.map(|listener| {
        tokio::spawn(routes::ready::follow(state.clone()));
        let router = admin::router(state.0.ready.clone()).merge(admin::faults_router(state.0.faults.clone()));
        tokio::spawn(admin::serve(listener, router, grpc::until_true(stopped)))
    });
    let served =
        server::serve(listener, app(state, args.limits.request_timeout), &args.limits, shutdown).await;
    let _ = stop.send(true);
    if let Some(admin) = admin {
        admin.await??;
    }
    served
}
