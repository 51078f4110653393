//! app-gateway: parse the flags, start telemetry, serve until SIGTERM/SIGINT.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = app_gateway::Args::parse();
    let telemetry = ticketmesh_runtime::telemetry::init("app-gateway");
    let listener = tokio::net::TcpListener::bind(&args.http_addr).await?;
    tracing::info!(http = %listener.local_addr()?, event = %args.event_url, storage = %args.storage_url, "listening");
    let admin = match &args.admin_addr {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await?),
        None => None,
    };
    if let Some(admin) = &admin {
        tracing::info!(admin = %admin.local_addr()?, "admin listening (/faults, /metrics, /health, /ready)");
    }
    let served = app_gateway::serve(args, listener, admin, ticketmesh_runtime::shutdown::signal()).await;
    telemetry.shutdown();
    served
}
