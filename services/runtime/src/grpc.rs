//! gRPC plumbing shared by the services: a server with health and reflection
//! (v1 and v1alpha) already mounted, and lazily connecting client channels
//! with a deadline on every call. Both sides are observed by [`crate::rpc`].

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::watch};
use tonic::{
    body::Body,
    server::NamedService,
    service::RoutesBuilder,
    transport::{Endpoint, Server, server::TcpIncoming},
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::Layer as _;

use crate::{
    Readiness, admin,
    faults::{FaultLayer, Faults, Targets},
    rpc::{ClientLayer, Observed, ServerLayer},
};

/// HTTP/2 streams one client connection may have open (a live Subscribe
/// stream holds one for as long as it lasts).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 512;

/// Calls one client connection may have in progress before further ones are
/// refused; the gateway's own admission limits stay well below it.
pub const MAX_CALLS_PER_CONNECTION: usize = 256;

/// A client channel with every call observed (trace context, span, metrics).
pub type Channel = Observed<tonic::transport::Channel>;

/// Health of a gRPC server, kept in step with its `/ready`: one switch sets
/// the overall status ("") and every named service's.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    services: Arc<[&'static str]>,
    ready: Readiness,
}

impl Health {
    /// Sets SERVING or NOT_SERVING; logs only when the status changes.
    pub async fn set_serving(&self, serving: bool) {
        if self.ready.get() != serving {
            if serving {
                tracing::info!(services = ?self.services, "serving");
            } else {
                tracing::warn!(services = ?self.services, "not serving");
            }
        }
        self.ready.set(serving);
        let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        for name in self.services.iter().copied().chain([""]) {
            self.reporter.set_service_status(name, status).await;
        }
    }

    pub fn readiness(&self) -> Readiness {
        self.ready.clone()
    }
}

/// A tonic server with `grpc.health.v1.Health` and reflection mounted, served
/// beside its admin HTTP server (`/health`, `/ready`, `/metrics`).
pub struct GrpcServer {
    routes: RoutesBuilder,
    health: Health,
    faults: Faults,
    stopped: (watch::Sender<bool>, watch::Receiver<bool>),
}

impl GrpcServer {
    /// `services` are the fully qualified names health reports on; all start
    /// NOT_SERVING until the caller says otherwise.
    pub async fn new(services: &[&'static str]) -> anyhow::Result<Self> {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let mut routes = RoutesBuilder::default();
        routes.add_service(health_service);
        // Every descriptor is there to describe (messages are shared), but
        // only what this server serves is listed.
        let reflection = || {
            let listed = services.iter().copied().chain([
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
            ]);
            listed.fold(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(ticketmesh_proto::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
                |builder, name| builder.with_service_name(name),
            )
        };
        routes.add_service(reflection().build_v1()?);
        routes.add_service(reflection().build_v1alpha()?);
        let health = Health { reporter, services: services.into(), ready: Readiness::default() };
        health.set_serving(false).await;
        let faults =
            Faults::new(services.first().copied().unwrap_or("unknown"), Targets::grpc(services, &[]));
        Ok(Self { routes, health, faults, stopped: watch::channel(false) })
    }

    /// The fault rules checked before each call (and listed on `/faults`);
    /// by default a set with no rules that names only `services`' methods.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Turns true once the server has stopped: background tasks (dependency
    /// watchers) end on it.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopped.1.clone()
    }

    pub fn health(&self) -> Health {
        self.health.clone()
    }

    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<axum::http::Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.routes.add_service(service);
        self
    }

    /// Serves gRPC and the admin server until `shutdown` resolves, lets
    /// in-flight calls finish, then stops the admin server and `stopping()`.
    pub async fn serve(
        self,
        grpc: TcpListener,
        admin: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let (stop, stopped) = self.stopped;
        let router = admin::router(self.health.readiness()).merge(admin::faults_router(self.faults.clone()));
        let admin = tokio::spawn(admin::serve(admin, router, until_true(stopped)));
        let served = Server::builder()
            // Bounds on what one client connection can ask at once: past
            // MAX_CALLS_PER_CONNECTION a call is refused at once with
            // RESOURCE_EXHAUSTED (load shed) rather than queued.
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            .concurrency_limit_per_connection(MAX_CALLS_PER_CONNECTION)
            .load_shed(true)
            .layer(ServerLayer)
            .layer(FaultLayer(self.faults))
            .add_routes(self.routes.routes())
            // TCP_NODELAY: a unary answer is several small writes (headers, data,
            // trailers); with Nagle on, the last one waits for the peer's
            // delayed ACK, which put ~40 ms on the p99 of every call.
            .serve_with_incoming_shutdown(TcpIncoming::from(grpc).with_nodelay(Some(true)), shutdown)
            .await;
        let _ = stop.send(true);
        admin.await??;
        Ok(served?)
    }
}

/// A client channel that connects on first use (so a peer that is not up yet
/// does not stop the caller from starting) and reconnects by itself. Every
/// call on it is bounded by `deadline`.
pub fn channel(uri: &str, deadline: Duration) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(uri.to_owned())
        .map_err(|e| anyhow::anyhow!("invalid gRPC address {uri:?}: {e}"))?
        .connect_timeout(Duration::from_secs(2).min(deadline))
        .timeout(deadline)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10));
    Ok(ClientLayer.layer(endpoint.connect_lazy()))
}

/// Sets the gRPC deadline header on an outgoing request, so the server
/// stops working on it when the caller has given up.
pub fn with_deadline<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    request
}

/// Asks a peer's `grpc.health.v1.Health` whether `service` is SERVING.
/// Any error, NOT_SERVING or no answer within `timeout` counts as no.
pub async fn is_serving(channel: Channel, service: &str, timeout: Duration) -> bool {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let request = with_deadline(HealthCheckRequest { service: service.to_owned() }, timeout);
    let answer = tokio::time::timeout(timeout, HealthClient::new(channel).check(request)).await;
    matches!(answer, Ok(Ok(r)) if r.get_ref().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
}

/// Resolves once the flag turns true (or its sender is gone).
pub async fn until_true(mut flag: watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}

/// Keeps `health` in step with a dependency's health until `stop` turns true:
/// this service serves exactly while the one it needs does.
pub async fn follow_dependency(
    channel: Channel,
    service: &'static str,
    health: Health,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let serving = is_serving(channel.clone(), service, Duration::from_secs(1)).await;
        health.set_serving(serving).await;
        let pause = if serving { Duration::from_secs(2) } else { Duration::from_millis(500) };
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}
