//! app-notifier: will publish ticket events to RabbitMQ and SNS. For now it
//! serves gRPC health and reflection only; NotifierService calls answer
//! UNIMPLEMENTED.

use std::future::Future;

use clap::Parser;
use ticketmesh_runtime::grpc::GrpcServer;
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
    server.health().set_serving(true).await;
    server.serve(grpc_listener, admin_listener, shutdown).await
}
