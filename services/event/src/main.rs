//! app-event: parse the flags, start telemetry, serve until SIGTERM/SIGINT.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = app_event::Args::parse();
    let telemetry = ticketmesh_runtime::telemetry::init("app-event");
    let grpc = tokio::net::TcpListener::bind(&args.grpc_addr).await?;
    let admin = tokio::net::TcpListener::bind(&args.admin_addr).await?;
    tracing::info!(grpc = %grpc.local_addr()?, admin = %admin.local_addr()?, storage = %args.storage_url, "listening");
    let served = app_event::serve(args, grpc, admin, ticketmesh_runtime::shutdown::signal()).await;
    telemetry.shutdown();
    served
}
