//! The client side: channels to a peer that connect lazily and bound every
//! call, the deadline a request carries, and a peer's health as seen from
//! here.

use std::time::Duration;

use tokio::sync::watch;
use tonic::transport::Endpoint;
use tower::Layer as _;

use super::{
    observe::{ClientLayer, Observed},
    server::Health,
};
use crate::backoff::Backoff;

/// A client channel with every call observed (trace context, span, metrics).
pub type Channel = Observed<tonic::transport::Channel>;

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

/// Keeps `health` in step with a peer's health until `stop` turns true:
/// this service serves exactly while the one it needs does. The peer is
/// asked every 2 s while it serves, every 500 ms while it does not.
pub async fn follow_dependency(
    channel: Channel,
    service: &'static str,
    health: Health,
    stop: watch::Receiver<bool>,
) {
    let retry = Duration::from_millis(500);
    let check = || is_serving(channel.clone(), service, Duration::from_secs(1));
    health.follow(check, Duration::from_secs(2), Backoff::new(retry, retry), stop).await;
}
