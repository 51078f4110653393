//! app-storage: parse the flags, start telemetry, serve until SIGTERM/SIGINT.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = app_storage::Args::parse();
    let telemetry = ticketmesh_runtime::telemetry::init("app-storage");
    let grpc = tokio::net::TcpListener::bind(&args.grpc_addr).await?;
    let admin = tokio::net::TcpListener::bind(&args.admin_addr).await?;
    tracing::info!(
        grpc = %grpc.local_addr()?,
        admin = %admin.local_addr()?,
        database = %redact(&args.database_url),
        cache = args.redis_url.is_some(),
        "listening"
    );
    let served = app_storage::serve(args, grpc, admin, ticketmesh_runtime::shutdown::signal()).await;
    telemetry.shutdown();
    served
}

/// The URL without its password, for the log.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => match url[scheme + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}
