//! gRPC, shared by the services and the gateway: the server every service
//! runs ([`server`]: health and reflection mounted, limits, the admin server
//! beside it), the client side ([`channel`]: lazily connecting channels,
//! deadlines, a peer's health), and the observation of every call on both
//! sides ([`observe`]: trace context, spans, metrics).

pub mod channel;
pub mod observe;
pub mod server;

pub use channel::{Channel, channel, follow_dependency, is_serving, until_true, with_deadline};
pub use server::{GrpcServer, Health, MAX_CALLS_PER_CONNECTION, MAX_STREAMS_PER_CONNECTION};
