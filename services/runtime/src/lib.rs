//! What every ticketmesh binary does the same way: telemetry (logs, traces,
//! metrics, error tracking), the admin server
//! (`/health`, `/ready`, `/metrics`), graceful shutdown, reconnect backoff, and
//! the gRPC server and client plumbing (health, reflection, deadlines).

pub mod admin;
pub mod backoff;
pub mod errors;
pub mod grpc;
pub mod metrics;
pub mod rpc;
pub mod shutdown;
pub mod telemetry;

pub use admin::Readiness;

/// Parses a duration flag such as `5s`, `250ms` or `1m 30s`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 5s or 250ms: {e}"))
}
