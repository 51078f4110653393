//! app-storage: parse the flags, start logging, serve until SIGTERM/SIGINT.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = app_storage::Args::parse();
    ticketmesh_runtime::logging::init("app-storage");
    let grpc = tokio::net::TcpListener::bind(&args.grpc_addr).await?;
    let admin = tokio::net::TcpListener::bind(&args.admin_addr).await?;
    tracing::info!(
        grpc = %args.grpc_addr,
        admin = %args.admin_addr,
        database = %redact(&args.database_url),
        cache = args.redis_url.is_some(),
        "listening"
    );
    app_storage::serve(args, grpc, admin, ticketmesh_runtime::shutdown::signal()).await
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
