//! The server every service runs: tonic with `grpc.health.v1.Health` and
//! reflection (v1 and v1alpha) mounted, per-connection limits, its calls
//! observed ([`super::observe`]) and checked against the fault rules, and the
//! admin HTTP server beside it. [`Health`] keeps the gRPC health and `/ready`
//! in step, and follows a dependency ([`Health::follow`]).

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::watch};
use tonic::{
    body::Body,
    server::NamedService,
    service::RoutesBuilder,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::{ServingStatus, server::HealthReporter};

use super::{channel::until_true, observe::ServerLayer};
use crate::{
    Readiness, admin,
    backoff::Backoff,
    faults::{FaultLayer, Faults, Targets},
};

/// HTTP/2 streams one client connection may have open (a live Subscribe
/// stream holds one for as long as it lasts).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 512;

/// Calls one client connection may have in progress before further ones are
/// refused; the gateway's own admission limits stay well below it.
pub const MAX_CALLS_PER_CONNECTION: usize = 256;

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

    /// Keeps this status in step with a dependency until `stop` turns true:
    /// SERVING exactly while `check` says the dependency answers. While it
    /// does, `check` runs again after `every`; while it does not, after
    /// `retry`'s next delay (which starts over once it answers again).
    pub async fn follow<F: Future<Output = bool>>(
        self,
        mut check: impl FnMut() -> F,
        every: Duration,
        mut retry: Backoff,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let up = check().await;
            self.set_serving(up).await;
            let pause = if up {
                retry.reset();
                every
            } else {
                retry.next_delay()
            };
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
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
                tonic_health::pb::health_server::SERVICE_NAME,
                tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME,
                tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME,
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use ticketmesh_proto::v1::{
        HelloRequest, event_service_client::EventServiceClient, event_service_server::SERVICE_NAME,
    };

    use super::*;
    use crate::faults::Targets;

    /// One client connection with more calls in progress than the server
    /// takes: the excess is refused at once with RESOURCE_EXHAUSTED, and
    /// the calls within the limit go on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_past_the_per_connection_limit_are_refused_at_once() {
        // Every call waits 4 s in the server (past the limit check, before
        // routing: this server has no EventService, so those that go on end
        // UNIMPLEMENTED), so all of them are in progress together.
        let faults =
            Faults::from_spec("test", Targets::grpc(&[SERVICE_NAME], &[]), "Hello=delay:4s").unwrap();
        let server = GrpcServer::new(&[SERVICE_NAME]).await.unwrap().with_faults(faults);
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = grpc.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(grpc, admin, async {
            let _ = stopped.await;
        }));
        // One channel: one HTTP/2 connection.
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let excess = 20;
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..MAX_CALLS_PER_CONNECTION + excess {
            let mut client = EventServiceClient::new(channel.clone());
            calls.spawn(async move {
                let started = Instant::now();
                let code = client.hello(HelloRequest {}).await.map_or_else(|s| s.code(), |_| tonic::Code::Ok);
                (code, started.elapsed())
            });
        }
        let answers = calls.join_all().await;
        let refused: Vec<_> = answers.iter().filter(|(c, _)| *c == tonic::Code::ResourceExhausted).collect();
        let went_on = answers.iter().filter(|(c, _)| *c == tonic::Code::Unimplemented).count();
        assert_eq!((went_on, refused.len()), (MAX_CALLS_PER_CONNECTION, excess), "{answers:?}");
        for (_, took) in refused {
            assert!(*took < Duration::from_secs(2), "a refusal waited {took:?}, as if queued");
        }
        let _ = stop.send(());
        serving.await.unwrap().unwrap();
    }
}
