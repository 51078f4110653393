//! The request's trace id: taken from an incoming W3C `traceparent`, else a
//! fresh one, kept for the request's task so every response (errors too)
//! can carry it.

use std::{
    hash::{BuildHasher, Hasher, RandomState},
    sync::atomic::{AtomicU64, Ordering},
};

use axum::{extract::Request, middleware::Next, response::Response};

tokio::task_local! {
    static TRACE_ID: String;
}

/// The current request's trace id, or "" outside a request.
pub fn current() -> String {
    TRACE_ID.try_with(Clone::clone).unwrap_or_default()
}

/// A W3C `traceparent` for an outgoing call that continues this request's
/// trace (a fresh span id; sampled).
pub fn traceparent() -> String {
    format!("00-{}-{}-01", current(), &fresh()[..16])
}

/// The trace id of a `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`), if valid.
pub fn from_traceparent(header: &str) -> Option<&str> {
    let mut parts = header.split('-');
    let (_version, trace_id) = (parts.next()?, parts.next()?);
    let valid = trace_id.len() == 32
        && trace_id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && trace_id.bytes().any(|b| b != b'0');
    valid.then_some(trace_id)
}

fn fresh() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let state = RandomState::new();
    let mut id = [0u64; 2];
    for half in &mut id {
        let mut h = state.build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        *half = h.finish();
    }
    format!("{:016x}{:016x}", id[0], id[1])
}

pub async fn layer(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(from_traceparent)
        .map_or_else(fresh, str::to_owned);
    TRACE_ID.scope(id, next.run(request)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_gives_its_trace_id_only_when_valid() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(from_traceparent(tp), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(from_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), None);
        assert_eq!(from_traceparent("00-XYZ-00f067aa0ba902b7-01"), None);
        assert_ne!(fresh(), fresh());
        assert_eq!(fresh().len(), 32);
    }
}
