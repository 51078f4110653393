//! What every ticketmesh binary does the same way, by role:
//!
//! - serving: [`grpc`] (the gRPC server with health and reflection, client
//!   channels with deadlines, and the observation of every call), [`admin`]
//!   (the admin HTTP server: `/health`, `/ready`, `/metrics`, `/faults`),
//!   [`shutdown`] (SIGINT/SIGTERM);
//! - telemetry: [`telemetry`] (logs and traces), [`metrics`] (the Prometheus
//!   registry's helpers), [`sentry`] (error tracking);
//! - resilience: [`backoff`] (reconnect pacing), [`faults`] (fault injection,
//!   switched on and off at run time).

pub mod admin;
pub mod backoff;
pub mod faults;
pub mod grpc;
pub mod metrics;
pub mod sentry;
pub mod shutdown;
pub mod telemetry;

pub use admin::Readiness;
pub use faults::Faults;

/// The variables every binary reads besides its flags' own, as `--help` lists
/// them (a macro, so a binary can `concat!` its own lines after it).
#[macro_export]
macro_rules! environment_help {
    () => {
        "Environment, besides each flag's variable:
  RUST_LOG                       log filter (default info)
  LOG_FORMAT                     json or pretty (default: pretty on a terminal, json otherwise)
  OTEL_EXPORTER_OTLP_ENDPOINT    OTLP/gRPC endpoint for traces; unset means no export
  OTEL_SERVICE_NAME              service.name of traces (default: the binary's name)
  OTEL_TRACES_SAMPLER            sampler, and OTEL_TRACES_SAMPLER_ARG its argument (OpenTelemetry SDK)
  OTEL_TRACES_SAMPLER_ARG
  DEPLOYMENT_ENVIRONMENT         deployment.environment of traces and errors (default local)
  SENTRY_DSN                     report errors and panics to Sentry; unset means off
  FAULTS                         fault rules at start, e.g. \"*=delay:300ms; GetStats=unavailable@0.3\"
                                 (changed live with GET/PUT/DELETE /faults on the admin port; see the README)"
    };
}

/// Parses a duration flag such as `5s`, `250ms` or `1m 30s`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 5s or 250ms: {e}"))
}

/// The fault-injection flag every binary takes (see [`faults`] for the grammar).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct FaultArgs {
    /// Fault rules to start with, `target=fault[@rate]` separated by `;`: e.g.
    /// "StorageService/GetStats=unavailable@0.3", "*=delay:300ms", "*=delay:50ms/800ms" (p50/p99),
    /// "db=unavailable", "amqp=unavailable", "POST /webhook=unavailable@10%". Faults are errors
    /// unavailable, internal, deadline_exceeded, resource_exhausted, or delay:D. Empty: none.
    #[arg(long = "faults", env = "FAULTS", default_value = "")]
    pub faults: String,
}
