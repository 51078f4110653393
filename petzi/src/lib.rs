//! PETZI's webhooks, with no I/O: the `Petzi-Signature` header
//! ([`signature`]), the delivery as typed structs that parse with the field
//! path in every error and serialise as PETZI's sender writes them
//! ([`payload`]), and the message SNS posts to an HTTP subscription ([`sns`]).
//!
//! The gateway verifies with it, the event service parses with it, and the
//! simulator, the tests and the fuzz targets sign and write deliveries with
//! it; none of them needs a server crate for that.

pub mod payload;
pub mod signature;
pub mod sns;
pub mod text;

pub use payload::{
    Amount, Buyer, Delivery, Details, EventKind, Location, PayloadError, Price, Session, Ticket,
};
pub use signature::{Signature, SignatureError, sign};
pub use text::{clipped, quoted};
