//! Tower layers that observe every gRPC call, on the server and on the
//! client side alike: W3C trace context in the metadata, one span per call
//! named and attributed by the OTel RPC conventions, and the usual RED
//! metrics (`grpc_{server,client}_{started,handled}_total`,
//! `grpc_{server,client}_handling_seconds`).
//!
//! A call ends when its status is known: from the headers of a
//! trailers-only answer, else from the trailers at the end of the body (so a
//! server stream is timed to its end); a body dropped before then counts as
//! CANCELLED. Labels come from the methods the descriptor sets declare, so a
//! stray path cannot grow the label set.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::LazyLock,
    task::{Context, Poll},
    time::Instant,
};

use http_body::{Body, Frame};
use prometheus::{HistogramVec, IntCounterVec};
use prost::Message as _;
use tonic::Code;
use tracing::{Instrument, Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{metrics, telemetry};

/// What the labels and span say about one method.
#[derive(Debug)]
struct Method {
    service: String,
    method: String,
    /// `service/method`, the span name.
    name: String,
    kind: &'static str,
    /// Health and reflection calls (probes, grpcurl) make no spans.
    traced: bool,
}

static METHODS: LazyLock<HashMap<String, Method>> = LazyLock::new(|| {
    let sets = [
        ticketmesh_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut methods = HashMap::new();
    for set in sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else { continue };
        for file in set.file {
            for service in &file.service {
                let service_name = format!("{}.{}", file.package(), service.name());
                for m in &service.method {
                    let kind = match (m.client_streaming(), m.server_streaming()) {
                        (false, false) => "unary",
                        (false, true) => "server_stream",
                        (true, false) => "client_stream",
                        (true, true) => "bidi_stream",
                    };
                    let name = format!("{service_name}/{}", m.name());
                    methods.insert(
                        format!("/{name}"),
                        Method {
                            service: service_name.clone(),
                            method: m.name().to_owned(),
                            name,
                            kind,
                            traced: !service_name.starts_with("grpc."),
                        },
                    );
                }
            }
        }
    }
    methods
});

static UNKNOWN: LazyLock<Method> = LazyLock::new(|| Method {
    service: "unknown".into(),
    method: "unknown".into(),
    name: "unknown".into(),
    kind: "unknown",
    traced: true,
});

/// `Service/Method` (the package left out) of every method of these fully
/// qualified services, sorted: what fault rules may name.
pub fn methods_of(services: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = METHODS
        .values()
        .filter(|m| services.contains(&m.service.as_str()))
        .map(|m| format!("{}/{}", m.service.rsplit('.').next().unwrap_or(&m.service), m.method))
        .collect();
    names.sort();
    names
}

fn method(path: &str) -> &'static Method {
    METHODS.get(path).unwrap_or(&UNKNOWN)
}

const BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const CALL: &[&str] = &["grpc_type", "grpc_service", "grpc_method"];
const HANDLED: &[&str] = &["grpc_type", "grpc_service", "grpc_method", "grpc_code"];

struct Metrics {
    started: IntCounterVec,
    handled: IntCounterVec,
    seconds: HistogramVec,
}

static SERVER: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    started: metrics::counter_vec("grpc_server_started_total", "gRPC calls started on the server", CALL),
    handled: metrics::counter_vec(
        "grpc_server_handled_total",
        "gRPC calls completed on the server, by status code",
        HANDLED,
    ),
    seconds: metrics::histogram_vec(
        "grpc_server_handling_seconds",
        "Time from a call's arrival to its status, on the server",
        CALL,
        BUCKETS.to_vec(),
    ),
});

static CLIENT: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    started: metrics::counter_vec("grpc_client_started_total", "gRPC calls started by this client", CALL),
    handled: metrics::counter_vec(
        "grpc_client_handled_total",
        "gRPC calls completed by this client, by status code",
        HANDLED,
    ),
    seconds: metrics::histogram_vec(
        "grpc_client_handling_seconds",
        "Time from sending a call to receiving its status, on the client",
        CALL,
        BUCKETS.to_vec(),
    ),
});

/// The status code names Prometheus users know from grpc-go.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

impl Side {
    /// The span kind, as OpenTelemetry names it.
    fn kind(self) -> &'static str {
        match self {
            Side::Server => "server",
            Side::Client => "client",
        }
    }

    fn metrics(self) -> &'static Metrics {
        match self {
            Self::Server => &SERVER,
            Self::Client => &CLIENT,
        }
    }

    /// Per the OTel RPC conventions a server span fails only on codes that
    /// mean the server failed; a client span on any code but OK.
    fn is_error(self, code: Code) -> bool {
        match self {
            Self::Client => code != Code::Ok,
            Self::Server => matches!(
                code,
                Code::Unknown
                    | Code::DeadlineExceeded
                    | Code::Unimplemented
                    | Code::Internal
                    | Code::Unavailable
                    | Code::DataLoss
            ),
        }
    }
}

/// Observes the calls a tonic server answers (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerLayer;

/// Observes the calls a client channel makes; the span is made, and the
/// trace context sent, only when the call is part of a trace.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientLayer;

impl<S> tower::Layer<S> for ServerLayer {
    type Service = Observed<S>;
    fn layer(&self, inner: S) -> Observed<S> {
        Observed { inner, side: Side::Server }
    }
}

impl<S> tower::Layer<S> for ClientLayer {
    type Service = Observed<S>;
    fn layer(&self, inner: S) -> Observed<S> {
        Observed { inner, side: Side::Client }
    }
}

#[derive(Clone, Debug)]
pub struct Observed<S> {
    inner: S,
    side: Side,
}

/// Records a call's end once: metrics, the span's status code and status.
struct Finish {
    side: Side,
    method: &'static Method,
    span: Span,
    started: Instant,
}

impl Finish {
    fn done(self, code: Code) {
        let m = self.method;
        let metrics = self.side.metrics();
        metrics.handled.with_label_values(&[m.kind, &m.service, &m.method, code_name(code)]).inc();
        metrics
            .seconds
            .with_label_values(&[m.kind, &m.service, &m.method])
            .observe(self.started.elapsed().as_secs_f64());
        self.span.record("rpc.grpc.status_code", code as i32);
        if self.side.is_error(code) {
            telemetry::set_error(&self.span, code_name(code));
        }
    }
}

fn header_code(headers: &http::HeaderMap) -> Option<Code> {
    headers.get("grpc-status").map(|v| Code::from_bytes(v.as_bytes()))
}

/// The code a transport error stands for: a status carried in it, a
/// deadline, or else the peer could not be reached.
fn error_code(error: &(dyn std::error::Error + 'static)) -> Code {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(status) = e.downcast_ref::<tonic::Status>() {
            return status.code();
        }
        if e.is::<tower::timeout::error::Elapsed>() {
            return Code::DeadlineExceeded;
        }
        source = e.source();
    }
    Code::Unavailable
}

impl<S, B, RB> tower::Service<http::Request<B>> for Observed<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: std::error::Error + 'static,
{
    type Response = http::Response<ObservedBody<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let method = method(request.uri().path());
        // A server call is always traced; a client call only inside a trace
        // (background work such as health checks makes none).
        let traced = method.traced && (self.side == Side::Server || telemetry::in_trace());
        let span = if traced {
            let span = tracing::info_span!(
                "grpc",
                otel.name = %method.name,
                otel.kind = self.side.kind(),
                rpc.system = "grpc",
                rpc.service = %method.service,
                rpc.method = %method.method,
                rpc.grpc.status_code = Empty,
            );
            match self.side {
                Side::Server => telemetry::set_parent(&span, telemetry::extract_headers(request.headers())),
                Side::Client => telemetry::inject_headers(&span.context(), request.headers_mut()),
            }
            span
        } else {
            Span::none()
        };
        self.side.metrics().started.with_label_values(&[method.kind, &method.service, &method.method]).inc();
        let finish = Finish { side: self.side, method, span: span.clone(), started: Instant::now() };
        let call = self.inner.call(request).instrument(span);
        Box::pin(async move {
            match call.await {
                Ok(response) => {
                    let finish = match header_code(response.headers()) {
                        Some(code) => {
                            finish.done(code);
                            None
                        }
                        None => Some(finish),
                    };
                    Ok(response.map(|inner| ObservedBody { inner, finish }))
                }
                Err(error) => {
                    finish.done(error_code(&error));
                    Err(error)
                }
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that ends its call when the status arrives.
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        finish: Option<Finish>,
    }

    impl<B> PinnedDrop for ObservedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(finish) = this.project().finish.take() {
                finish.done(Code::Cancelled);
            }
        }
    }
}

impl<B: Body> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = match this.finish.as_ref() {
            // A server stream's own work (and its logs) belong to the call's span.
            Some(finish) => finish.span.in_scope(|| this.inner.poll_frame(cx)),
            None => return this.inner.poll_frame(cx),
        };
        let code = match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                frame.trailers_ref().map(|t| header_code(t).unwrap_or(Code::Unknown))
            }
            Poll::Ready(Some(Err(_))) => Some(Code::Internal),
            Poll::Ready(None) => Some(Code::Unknown), // ended without a status
            Poll::Pending => None,
        };
        if let Some(code) = code
            && let Some(finish) = this.finish.take()
        {
            finish.done(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_come_from_the_descriptors_with_their_kind() {
        use ticketmesh_proto::v1::{event_service_server, notifier_service_server};
        use tonic_health::pb::health_server;
        use tonic_reflection::pb::v1::server_reflection_server;
        let path = |service: &str, name: &str| method(&format!("/{service}/{name}"));
        let ingest = path(event_service_server::SERVICE_NAME, "IngestWebhook");
        assert_eq!(
            (ingest.service.as_str(), ingest.method.as_str()),
            (event_service_server::SERVICE_NAME, "IngestWebhook")
        );
        assert_eq!(ingest.kind, "unary");
        assert!(ingest.traced);
        assert_eq!(path(notifier_service_server::SERVICE_NAME, "Subscribe").kind, "server_stream");
        assert!(!path(health_server::SERVICE_NAME, "Check").traced);
        assert_eq!(path(server_reflection_server::SERVICE_NAME, "ServerReflectionInfo").kind, "bidi_stream");
        assert_eq!(method("/no.such.Service/Nothing").service, "unknown");
    }

    #[test]
    fn server_spans_fail_only_on_server_faults() {
        assert!(!Side::Server.is_error(Code::InvalidArgument));
        assert!(!Side::Server.is_error(Code::NotFound));
        assert!(Side::Server.is_error(Code::Unavailable));
        assert!(Side::Client.is_error(Code::NotFound));
        assert!(!Side::Client.is_error(Code::Ok));
    }
}
