//! Optional error tracking: with `SENTRY_DSN` set, ERROR events and panics
//! go to Sentry (WARN and INFO events ride along as breadcrumbs); without it
//! no client is made and the Sentry layer does nothing.

use std::sync::OnceLock;

static GUARD: OnceLock<::sentry::ClientInitGuard> = OnceLock::new();

/// The tracing layer that forwards events to Sentry; inert until [`init`]
/// binds a client.
pub fn layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use ::sentry::integrations::tracing::{BreadcrumbLayer, ErrorLayer};
    use tracing::Level;
    use tracing_subscriber::{
        Layer,
        filter::{LevelFilter, filter_fn},
    };
    let breadcrumbs = filter_fn(|metadata| matches!(*metadata.level(), Level::WARN | Level::INFO));
    ErrorLayer::new()
        .with_filter(LevelFilter::ERROR)
        .and_then(BreadcrumbLayer::new().with_filter(breadcrumbs))
}

/// Starts the Sentry client when `SENTRY_DSN` is set: Ok(true) when it
/// did, Ok(false) without a DSN, Err when the DSN is not one.
pub fn init(service: &'static str) -> Result<bool, String> {
    start(service, std::env::var("SENTRY_DSN").ok().as_deref())
}

/// Starts the Sentry client for `dsn` (none or blank: nothing is started).
pub fn start(service: &'static str, dsn: Option<&str>) -> Result<bool, String> {
    let Some(dsn) = dsn.filter(|s| !s.trim().is_empty()) else {
        return Ok(false);
    };
    let dsn = dsn
        .parse::<::sentry::types::Dsn>()
        .map_err(|e| format!("SENTRY_DSN is not a Sentry DSN ({e}); error tracking is off"))?;
    let environment = std::env::var("DEPLOYMENT_ENVIRONMENT").unwrap_or_else(|_| "local".to_owned());
    let mut options = ::sentry::ClientOptions::default();
    options.dsn = Some(dsn);
    options.release = Some(format!("{service}@{}", env!("CARGO_PKG_VERSION")).into());
    options.environment = Some(environment.into());
    options.server_name = Some(service.into());
    let guard = ::sentry::init(options);
    let started = guard.is_enabled();
    let _ = GUARD.set(guard);
    Ok(started)
}

/// Sends what Sentry still holds, waiting at most two seconds.
pub fn flush() {
    if let Some(guard) = GUARD.get() {
        guard.flush(Some(std::time::Duration::from_secs(2)));
    }
}
