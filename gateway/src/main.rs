//! app-gateway: parse the flags, start logging, serve until SIGTERM/SIGINT.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = app_gateway::Args::parse();
    ticketmesh_runtime::logging::init("app-gateway");
    let listener = tokio::net::TcpListener::bind(&args.http_addr).await?;
    tracing::info!(http = %args.http_addr, event = %args.event_url, storage = %args.storage_url, "listening");
    app_gateway::serve(args, listener, ticketmesh_runtime::shutdown::signal()).await
}
