//! Log setup shared by all binaries: one JSON object per line (pretty when
//! stdout is a terminal or `LOG_FORMAT=pretty`), filtered by `RUST_LOG`.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber. `service` is written on every JSON line.
/// Safe to call more than once (later calls are ignored), so tests can call it.
pub fn init(service: &'static str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let pretty = match std::env::var("LOG_FORMAT").ok().as_deref() {
        Some("pretty") => true,
        Some("json") => false,
        _ => std::io::stdout().is_terminal(),
    };
    let registry = tracing_subscriber::registry().with(filter);
    let result = if pretty {
        registry.with(fmt::layer().compact()).try_init()
    } else {
        registry
            .with(fmt::layer().json().flatten_event(true).with_current_span(true).with_span_list(false))
            .try_init()
    };
    if result.is_ok() {
        tracing::info!(service, version = env!("CARGO_PKG_VERSION"), "logging started");
    }
}
