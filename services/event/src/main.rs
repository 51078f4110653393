//! app-event: parse the flags, start logging, serve until SIGTERM/SIGINT.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = app_event::Args::parse();
    ticketmesh_runtime::logging::init("app-event");
    let grpc = tokio::net::TcpListener::bind(&args.grpc_addr).await?;
    let admin = tokio::net::TcpListener::bind(&args.admin_addr).await?;
    tracing::info!(grpc = %args.grpc_addr, admin = %args.admin_addr, storage = %args.storage_url, "listening");
    app_event::serve(args, grpc, admin, ticketmesh_runtime::shutdown::signal()).await
}
