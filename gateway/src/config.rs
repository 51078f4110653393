//! The gateway's configuration: its flags, each with its environment
//! variable, and the checks on them.

use std::time::Duration;

use clap::Parser;

use crate::server;

#[derive(Debug, Clone, Parser)]
#[command(name = "app-gateway", version, about = "ticketmesh HTTP gateway", after_help = ticketmesh_runtime::environment_help!())]
pub struct Args {
    /// Address of the HTTP server.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: String,
    /// The event service's gRPC URL.
    #[arg(long, env = "EVENT_URL", default_value = "http://127.0.0.1:50051")]
    pub event_url: String,
    /// The storage service's gRPC URL (for the /api reads).
    #[arg(long, env = "STORAGE_URL", default_value = "http://127.0.0.1:50053")]
    pub storage_url: String,
    /// The notifier service's gRPC URL (for the live /events stream).
    #[arg(long, env = "NOTIFIER_URL", default_value = "http://127.0.0.1:50052")]
    pub notifier_url: String,
    /// The secrets PETZI may sign webhooks with (HMAC-SHA256), comma-separated:
    /// one, or during a rotation the old and the new. Each at least 32 bytes.
    #[arg(
        long = "webhook-secret",
        env = "WEBHOOK_SECRET",
        hide_env_values = true,
        value_delimiter = ',',
        required = true
    )]
    pub webhook_secrets: Vec<String>,
    /// Accept secrets shorter than 32 bytes, such as the demo value `secret`
    /// that PETZI's simulator signs with. For local demos only.
    #[arg(long, env = "ALLOW_DEMO_SECRET")]
    pub allow_demo_secret: bool,
    /// Largest accepted distance between a signature's timestamp and now.
    #[arg(long, env = "SIGNATURE_TOLERANCE", default_value = "30s", value_parser = ticketmesh_runtime::parse_duration)]
    pub signature_tolerance: Duration,
    /// Largest accepted webhook body, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,
    /// Where SNS signing certificates may be fetched besides AWS's SNS hosts
    /// (https://sns.<region>.amazonaws.com), as `scheme://host:port`,
    /// comma-separated: the SNS endpoint of a LocalStack, e.g. http://127.0.0.1:4566.
    #[arg(long, env = "SNS_CERT_ORIGINS", value_delimiter = ',')]
    pub sns_cert_origins: Vec<String>,
    /// SNS topic names whose messages `POST /sns` accepts (the TopicArn's last
    /// part; the whole ARN must also be one the notifier created).
    #[arg(
        long,
        env = "SNS_TOPICS",
        value_delimiter = ',',
        default_value = "hello-world-topic,ticket-events"
    )]
    pub sns_topics: Vec<String>,
    /// Deadline of each gRPC call to the event and storage services.
    #[arg(long, env = "GRPC_TIMEOUT", default_value = "10s", value_parser = ticketmesh_runtime::parse_duration)]
    pub grpc_timeout: Duration,
    /// Deadline of the reads (/api/stats, /api/tickets): past it, 504. The
    /// mesh's per-try timeout on the storage read routes (they answer in ms).
    #[arg(long, env = "READ_TIMEOUT", default_value = "250ms", value_parser = ticketmesh_runtime::parse_duration)]
    pub read_timeout: Duration,
    /// Address of the admin HTTP server (/faults, /metrics, /health, /ready); unset means none.
    #[arg(long, env = "ADMIN_ADDR")]
    pub admin_addr: Option<String>,
    #[command(flatten)]
    pub limits: server::Limits,
    #[command(flatten)]
    pub fault: ticketmesh_runtime::FaultArgs,
}

/// The shortest secret accepted without ALLOW_DEMO_SECRET: 256 bits, the
/// HMAC-SHA256 key size.
pub const MIN_SECRET_BYTES: usize = 32;

/// The secrets, checked: at least one, none empty, none short unless allowed
/// (and then said loudly).
pub(crate) fn secrets(args: &Args) -> anyhow::Result<Vec<Vec<u8>>> {
    let secrets: Vec<Vec<u8>> = args.webhook_secrets.iter().map(|s| s.trim().as_bytes().to_vec()).collect();
    if secrets.is_empty() || secrets.iter().any(Vec::is_empty) {
        anyhow::bail!("WEBHOOK_SECRET must hold one or more non-empty secrets, comma-separated");
    }
    let short = secrets.iter().filter(|s| s.len() < MIN_SECRET_BYTES).count();
    if short > 0 && !args.allow_demo_secret {
        anyhow::bail!(
            "WEBHOOK_SECRET: {short} of {} secrets are shorter than {MIN_SECRET_BYTES} bytes; use a random one \
             (e.g. `openssl rand -hex 32`), or set ALLOW_DEMO_SECRET=true for a local demo",
            secrets.len()
        );
    }
    if short > 0 {
        tracing::warn!(
            short,
            "ALLOW_DEMO_SECRET is set: webhooks signed with a short, guessable secret are accepted. \
             Never run this way where the webhook endpoint is reachable by anyone else"
        );
    }
    Ok(secrets)
}

/// The routes fault rules may name (probes and /metrics are left out, so a
/// rule never takes the gateway out of its load balancer).
pub const FAULT_ROUTES: &[&str] = &[
    "GET /",
    "POST /webhook",
    "POST /sns",
    "GET /api/sns/notifications",
    "GET /api/tickets",
    "GET /api/tickets/{number}",
    "GET /api/stats",
    "GET /events",
    "GET /ui",
];
