//! What every ticketmesh binary does the same way: telemetry (logs, traces,
//! metrics, error tracking), the admin server
//! (`/health`, `/ready`, `/metrics`), graceful shutdown, reconnect backoff, and
//! the gRPC server and client plumbing (health, reflection, deadlines).

pub mod admin;
pub mod backoff;
pub mod errors;
pub mod faults;
pub mod grpc;
pub mod metrics;
pub mod rpc;
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

/// How much of a client's value an error message quotes.
pub const QUOTED_CHARS: usize = 64;

/// A client's value as an error message quotes it: Rust-escaped (a NUL shows
/// as `\0`), and past [`QUOTED_CHARS`] characters cut short with its length,
/// so no error grows with its input (a gRPC status travels in an HTTP/2
/// header, whose budget a long echo would overflow).
pub fn quoted(value: &str) -> String {
    let chars = value.chars().count();
    if chars <= QUOTED_CHARS {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(QUOTED_CHARS).collect();
    format!("{head:?}… ({chars} characters)")
}

/// An error text that may hold a client's value (serde's "invalid type:
/// string \"…\"" does), cut to a few lines' worth with its length.
pub fn clipped(text: &str) -> String {
    const KEPT: usize = 4 * QUOTED_CHARS;
    let chars = text.chars().count();
    if chars <= KEPT {
        return text.to_owned();
    }
    let head: String = text.chars().take(KEPT).collect();
    format!("{head}… ({chars} characters)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_value_is_quoted_short_with_its_length() {
        assert_eq!(quoted("CHF"), "\"CHF\"");
        assert_eq!(quoted("a\0b"), "\"a\\0b\"");
        let long = "é".repeat(7_000);
        let shown = quoted(&long);
        assert_eq!(shown, format!("{:?}… (7000 characters)", "é".repeat(QUOTED_CHARS)));
        assert!(shown.len() < 200);
    }

    #[test]
    fn a_long_error_text_is_clipped_with_its_length() {
        assert_eq!(clipped("short"), "short");
        let long = "x".repeat(70_000);
        let shown = clipped(&long);
        assert!(shown.ends_with("… (70000 characters)") && shown.len() < 300, "{}", shown.len());
    }
}
