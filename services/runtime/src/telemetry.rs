//! Telemetry setup shared by all binaries, and the W3C trace-context helpers
//! the services use to carry one trace across HTTP, gRPC, AMQP and SNS.
//!
//! - Logs: one JSON object per line with `service`, `trace_id` and `span_id`
//!   (pretty when stdout is a terminal or `LOG_FORMAT=pretty`), filtered by
//!   `RUST_LOG`.
//! - Traces: every INFO span is an OpenTelemetry span. They are exported over
//!   OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (service name from
//!   `OTEL_SERVICE_NAME`, sampler from `OTEL_TRACES_SAMPLER`, batch timing from
//!   `OTEL_BSP_*`); without it spans still get ids, so logs, responses and
//!   propagated headers carry real trace ids.
//! - Work that runs outside any trace (polls, health checks) makes no spans:
//!   see [`in_trace`] and [`unsampled`].

use std::{
    collections::HashMap,
    io::{IsTerminal, Write},
    sync::OnceLock,
};

use opentelemetry::{
    Context, KeyValue,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{SpanContext, TraceContextExt, TraceFlags, TraceState, TracerProvider as _},
};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::{Event, Subscriber, field::Field, level_filters::LevelFilter};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer, fmt, layer::Context as LayerContext, prelude::*, registry::LookupSpan,
};

static PROPAGATOR: OnceLock<TraceContextPropagator> = OnceLock::new();

fn propagator() -> &'static TraceContextPropagator {
    PROPAGATOR.get_or_init(TraceContextPropagator::new)
}

/// Flushes and stops the trace exporter when dropped (or on [`Telemetry::shutdown`]).
#[must_use = "spans are flushed when this is dropped: keep it until the process ends"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered, then stops the exporter.
    pub fn shutdown(mut self) {
        self.flush();
    }

    fn flush(&mut self) {
        crate::sentry::flush();
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("flushing spans failed: {error}");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Installs logging and tracing for `service` (the default `service.name`).
/// Must run inside the tokio runtime (the OTLP exporter needs it). A second
/// call in one process (tests) installs nothing and returns an inert guard.
pub fn init(service: &'static str) -> Telemetry {
    install(service, true)
}

/// Like [`init`] but writes no logs: spans, ids and propagation only, for
/// servers run inside a test process.
pub fn init_without_logs(service: &'static str) -> Telemetry {
    install(service, false)
}

fn install(service: &'static str, logs: bool) -> Telemetry {
    let service_name = std::env::var("OTEL_SERVICE_NAME").ok().filter(|s| !s.is_empty());
    let service_name = service_name.unwrap_or_else(|| service.to_owned());
    let environment = std::env::var("DEPLOYMENT_ENVIRONMENT").unwrap_or_else(|_| "local".to_owned());
    let resource = Resource::builder()
        .with_service_name(service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("deployment.environment", environment.clone()),
        ])
        .build();
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().filter(|s| !s.is_empty());
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    let mut export_error = None;
    if let Some(endpoint) = &endpoint {
        use opentelemetry_otlp::WithExportConfig;
        match opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint).build() {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(error) => export_error = Some(error.to_string()),
        }
    }
    let provider = builder.build();
    let tracer = provider.tracer(service);

    let filter = if logs {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
    } else {
        EnvFilter::new("off")
    };
    let pretty = match std::env::var("LOG_FORMAT").ok().as_deref() {
        Some("pretty") => true,
        Some("json") => false,
        _ => std::io::stdout().is_terminal(),
    };
    let logs = if pretty {
        fmt::layer().compact().with_filter(filter).boxed()
    } else {
        JsonLines { service: service_name.clone(), dispatch: OnceLock::new() }.with_filter(filter).boxed()
    };
    // Spans are traced at INFO and above whatever RUST_LOG says about logs.
    let traces = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_error_records_to_exceptions(true)
        .with_filter(LevelFilter::INFO);
    let sentry = crate::sentry::init(service);
    let errors = matches!(sentry, Ok(true)).then(crate::sentry::layer);
    let installed = tracing_subscriber::registry().with(logs).with(traces).with(errors).try_init().is_ok();
    if !installed {
        let _ = provider.shutdown();
        return Telemetry { provider: None };
    }
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    tracing::info!(
        service = %service_name,
        version = env!("CARGO_PKG_VERSION"),
        environment = %environment,
        otlp_endpoint = endpoint.as_deref().unwrap_or("none"),
        sentry = matches!(sentry, Ok(true)),
        "telemetry started"
    );
    if let Err(error) = sentry {
        tracing::warn!(%error, "SENTRY_DSN ignored");
    }
    if let Some(error) = export_error {
        tracing::error!(%error, "the OTLP exporter could not be built; spans are not exported");
    }
    Telemetry { provider: Some(provider) }
}

/// Writes each event as one JSON object per line: time, level, target,
/// message and fields, `service`, the span's name and its OpenTelemetry
/// `trace_id` and `span_id`.
struct JsonLines {
    service: String,
    dispatch: OnceLock<tracing::dispatcher::WeakDispatch>,
}

impl<S> Layer<S> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_event(&self, event: &Event<'_>, ctx: LayerContext<'_, S>) {
        let mut line = serde_json::Map::with_capacity(12);
        line.insert("target".into(), event.metadata().target().into());
        event.record(&mut JsonFields(&mut line));
        line.insert("service".into(), self.service.as_str().into());
        if let Some(span) = ctx.event_span(event) {
            line.insert("span".into(), span.name().into());
            let context = self
                .dispatch
                .get()
                .and_then(tracing::dispatcher::WeakDispatch::upgrade)
                .and_then(|dispatch| tracing_opentelemetry::get_otel_context(&span.id(), &dispatch));
            if let Some(context) = context {
                let span = context.span();
                let ids = span.span_context();
                if ids.is_valid() {
                    line.insert("trace_id".into(), ids.trace_id().to_string().into());
                    line.insert("span_id".into(), ids.span_id().to_string().into());
                }
            }
        }
        // Time and level first (neither needs escaping), then the rest; the
        // map always holds `target` and `service`, so it is never empty.
        let rest = serde_json::Value::Object(line).to_string();
        let text = format!(
            "{{\"timestamp\":\"{}\",\"level\":\"{}\",{}\n",
            humantime::format_rfc3339_micros(std::time::SystemTime::now()),
            event.metadata().level(),
            rest.strip_prefix('{').unwrap_or(&rest),
        );
        // A closed stdout is not worth crashing over.
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
    }
}

struct JsonFields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}

/// Whether the current span belongs to a trace. Client calls and database
/// or cache spans are made only then, so background work (polls, health
/// checks) does not start a trace of its own every second.
pub fn in_trace() -> bool {
    tracing::Span::current().context().span().span_context().is_valid()
}

/// The current trace id as 32 hex digits, or "" outside a trace.
pub fn trace_id() -> String {
    let context = tracing::Span::current().context();
    let span = context.span();
    let ids = span.span_context();
    if ids.is_valid() { ids.trace_id().to_string() } else { String::new() }
}

/// A context that is valid but not sampled: a span given it as parent, and
/// everything that span calls, is neither recorded nor exported (with the
/// default parent-based sampler). For background loops.
pub fn unsampled() -> Context {
    use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
    let ids = RandomIdGenerator::default();
    let ids = SpanContext::new(
        ids.new_trace_id(),
        ids.new_span_id(),
        TraceFlags::NOT_SAMPLED,
        true,
        TraceState::NONE,
    );
    Context::new().with_remote_span_context(ids)
}

/// What a messaging span does with its message.
#[derive(Clone, Copy, Debug)]
pub enum Messaging {
    /// A producer span; the message carries its context.
    Publish,
    /// A consumer span, a child of the span that published the message.
    Process,
}

/// A span by the OTel messaging conventions: `publish <destination>` or
/// `process <destination>`, with `messaging.system` (`rabbitmq`, `aws_sns`…),
/// the destination and the message id. `messaging.message.body.size` is
/// left to record.
pub fn messaging_span(
    operation: Messaging,
    system: &'static str,
    destination: &str,
    message_id: &str,
) -> tracing::Span {
    let (verb, kind, operation_type) = match operation {
        Messaging::Publish => ("publish", "producer", "send"),
        Messaging::Process => ("process", "consumer", "process"),
    };
    tracing::info_span!(
        "messaging",
        otel.name = %format_args!("{verb} {destination}"),
        otel.kind = kind,
        messaging.system = system,
        messaging.operation.type = operation_type,
        messaging.destination.name = %destination,
        messaging.message.id = %message_id,
        messaging.message.body.size = tracing::field::Empty,
    )
}

/// Writes the current span's context (`traceparent`, `tracestate`) into a
/// string map: AMQP headers, SNS message attributes, outbox rows.
pub fn inject_map(map: &mut HashMap<String, String>) {
    inject_context(&tracing::Span::current().context(), map);
}

/// Writes `context` into a string map. An empty `tracestate` is left out:
/// SNS refuses empty attribute values.
pub fn inject_context(context: &Context, map: &mut HashMap<String, String>) {
    struct NonEmpty<'a>(&'a mut HashMap<String, String>);
    impl Injector for NonEmpty<'_> {
        fn set(&mut self, key: &str, value: String) {
            if !value.is_empty() {
                self.0.insert(key.to_owned(), value);
            }
        }
    }
    propagator().inject_context(context, &mut NonEmpty(map));
}

/// The current span's `traceparent`, or "" outside a trace.
pub fn traceparent() -> String {
    let mut map = HashMap::with_capacity(2);
    inject_map(&mut map);
    map.remove("traceparent").unwrap_or_default()
}

/// The trace context carried by a string map (empty if none or invalid).
pub fn extract_map(map: &HashMap<String, String>) -> Context {
    propagator().extract(map)
}

/// The trace context carried by HTTP (or gRPC) headers.
pub fn extract_headers(headers: &http::HeaderMap) -> Context {
    propagator().extract(&HeaderExtractor(headers))
}

/// Writes `context` into HTTP (or gRPC) headers.
pub fn inject_headers(context: &Context, headers: &mut http::HeaderMap) {
    propagator().inject_context(context, &mut HeaderInjector(headers));
}

/// Makes `span` a child of `parent` when that is a valid context (else it
/// keeps its place in the current trace). Call before the span is entered.
pub fn set_parent(span: &tracing::Span, parent: Context) {
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Sets an attribute that not every span of its kind has.
pub fn set_attribute(span: &tracing::Span, key: &'static str, value: String) {
    span.set_attribute(key, value);
}

/// Marks `span` as failed with `description` (OTel status ERROR).
pub fn set_error(span: &tracing::Span, description: impl Into<std::borrow::Cow<'static, str>>) {
    span.set_status(opentelemetry::trace::Status::error(description));
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(key.as_bytes()), http::HeaderValue::from_str(&value))
        {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips_through_a_map_and_headers() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let map: HashMap<String, String> = [("traceparent".to_owned(), tp.to_owned())].into();
        let context = extract_map(&map);
        assert_eq!(context.span().span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let mut headers = http::HeaderMap::new();
        inject_headers(&context, &mut headers);
        assert_eq!(headers.get("traceparent").and_then(|v| v.to_str().ok()), Some(tp));
        let mut map = HashMap::new();
        inject_context(&context, &mut map);
        assert_eq!(map.len(), 1, "no empty tracestate: {map:?}");
        let back = extract_headers(&headers);
        assert_eq!(back.span().span_context().span_id().to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn invalid_traceparents_give_no_context() {
        for bad in
            ["", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "00-XYZ-00f067aa0ba902b7-01"]
        {
            let map: HashMap<String, String> = [("traceparent".to_owned(), bad.to_owned())].into();
            assert!(!extract_map(&map).span().span_context().is_valid(), "{bad:?}");
        }
    }

    #[test]
    fn unsampled_contexts_are_valid_and_not_sampled() {
        let a = unsampled();
        let b = unsampled();
        let (a, b) = (a.span().span_context().clone(), b.span().span_context().clone());
        assert!(a.is_valid() && !a.is_sampled());
        assert_ne!(a.trace_id(), b.trace_id());
    }
}
