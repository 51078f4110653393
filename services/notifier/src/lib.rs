//! app-notifier: will publish ticket events to RabbitMQ and SNS. For now it
//! serves gRPC health and reflection only; NotifierService calls answer
//! UNIMPLEMENTED.

use std::{future::Future, time::Duration};

use clap::Parser;
use ticketmesh_runtime::{admin, grpc::GrpcServer};
use tokio::net::TcpListener;

#[derive(Debug, Clone, Parser)]
#[command(name = "app-notifier", version, about = "ticketmesh notifier service (gRPC)")]
pub struct Args {
    /// Address of the gRPC server.
    #[arg(long, env = "GRPC_ADDR", default_value = "0.0.0.0:50052")]
    pub grpc_addr: String,
    /// Address of the admin HTTP server (/health, /ready, /metrics).
    #[arg(long, env = "ADMIN_ADDR", default_value = "0.0.0.0:9002")]
    pub admin_addr: String,
}

/// Serves the notifier on already bound listeners until `shutdown`.
pub async fn serve(
    _args: Args,
    grpc_listener: TcpListener,
    admin_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // No dependency yet, so the overall status is SERVING from the start.
    let server = GrpcServer::new(&[]).await?;
    let health = server.health();
    health.set_serving(true).await;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let admin = tokio::spawn(admin::serve(admin_listener, health.readiness(), async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    }));
    let result = server.serve(grpc_listener, shutdown).await;
    let _ = stop_tx.send(true);
    tokio::time::timeout(Duration::from_secs(5), admin).await???;
    result
}
