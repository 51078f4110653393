//! app-notifier: parse the flags, start logging, serve until SIGTERM/SIGINT.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = app_notifier::Args::parse();
    ticketmesh_runtime::logging::init("app-notifier");
    let grpc = tokio::net::TcpListener::bind(&args.grpc_addr).await?;
    let admin = tokio::net::TcpListener::bind(&args.admin_addr).await?;
    tracing::info!(grpc = %args.grpc_addr, admin = %args.admin_addr, "listening");
    app_notifier::serve(args, grpc, admin, ticketmesh_runtime::shutdown::signal()).await
}
