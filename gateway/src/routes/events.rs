//! `GET /events`: live ticket events as Server-Sent Events, bounded end to
//! end. At most MAX_SSE_CLIENTS streams; each has a buffer of SSE_BUFFER
//! events and SSE_BUFFER_BYTES of payload; a client that falls that far
//! behind gets a final `cutoff` event and its stream ends (a browser's
//! EventSource then reconnects).

use std::{
    convert::Infallible,
    future::Future,
    sync::{
        Arc, LazyLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response, sse},
};
use prometheus::{IntCounterVec, IntGauge};
use prost::Message;
use serde_json::json;
use ticketmesh_proto::v1::{Notification, StoredTicket, SubscribeRequest, TicketEvent};
use ticketmesh_runtime::metrics;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};

use crate::{error::AppError, render, state::AppState};

static SSE_CLIENTS: LazyLock<IntGauge> =
    LazyLock::new(|| metrics::gauge("sse_clients", "Clients connected to GET /events"));
static SSE_ENDED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    metrics::counter_vec(
        "sse_streams_refused_total",
        "GET /events streams refused or cut off: at_capacity (MAX_SSE_CLIENTS reached), too_far_behind (SSE_BUFFER events waiting)",
        &["reason"],
    )
});

/// The live streams' bounds.
pub struct Streams {
    slots: Arc<Semaphore>,
    buffer: usize,
    buffer_bytes: usize,
}

impl Streams {
    pub fn new(max_clients: usize, buffer: usize, buffer_bytes: usize) -> Self {
        Self { slots: Arc::new(Semaphore::new(max_clients)), buffer: buffer.max(1), buffer_bytes }
    }
}

/// What the forwarder hands a client's stream.
enum Item {
    Event(Notification),
    /// The client fell this many events (of that many payload bytes) behind; nothing follows.
    CutOff {
        events: usize,
        bytes: usize,
    },
}

/// Live ticket events: `event:` the event type, `id:` the message id,
/// `data:` the ticket as JSON; a heartbeat comment every 15 s.
///
/// A forwarder task reads the notifier's stream as fast as it comes, so a
/// slow browser never holds back the HTTP/2 connection that every stream
/// shares, and hands each event to the client's bounded buffer. When that is
/// full, the client is cut off. When the client leaves, the buffer closes,
/// the forwarder ends, and with it the Subscribe call and the notifier's
/// queue. Shutdown ends every stream.
pub async fn events(State(state): State<AppState>) -> Result<Response, AppError> {
    let inner = &state.0;
    let slot = inner.sse.slots.clone().try_acquire_owned().map_err(|_| {
        SSE_ENDED.with_label_values(&["at_capacity"]).inc();
        AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            "the live stream has as many clients as it serves; retry later",
        )
    })?;
    let request = SubscribeRequest { routing_keys: vec!["ticket.*".into()] };
    let notifications = state.notifier().subscribe(request).await?;
    let buffer = inner.sse.buffer;
    // One slot more than the buffer: the cut-off notice always fits.
    let (tx, rx) = mpsc::channel(buffer + 1);
    // Payload bytes in the buffer: added by the forwarder, taken off as the client's stream takes them.
    let waiting = Arc::new(AtomicUsize::new(0));
    let taken = waiting.clone();
    let forwarder = Forwarder { tx, waiting, buffer, buffer_bytes: inner.sse.buffer_bytes };
    let mut stopping = inner.stopping.subscribe();
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        };
        if forwarder.run(notifications, stopped).await {
            SSE_ENDED.with_label_values(&["too_far_behind"]).inc();
        }
    });
    let client = (slot, metrics::Held::new(&SSE_CLIENTS));
    let events = ReceiverStream::new(rx).map(move |item| {
        let _counted = &client;
        Ok::<_, Infallible>(match item {
            Item::Event(n) => {
                taken.fetch_sub(n.payload.len(), Ordering::Relaxed);
                event(&n)
            }
            Item::CutOff { events, bytes } => sse::Event::default().event("cutoff").data(
                json!({
                    "reason": "too_far_behind",
                    "message": format!(
                        "this client fell {events} events ({bytes} bytes) behind and was cut off; \
                         reconnect to resume"
                    ),
                })
                .to_string(),
            ),
        })
    });
    let keep_alive = sse::KeepAlive::new().interval(Duration::from_secs(15)).text("heartbeat");
    Ok(sse::Sse::new(events).keep_alive(keep_alive).into_response())
}

/// Hands a client's notifications to its buffer, which holds at most
/// `buffer` events and `buffer_bytes` of payload.
struct Forwarder {
    tx: mpsc::Sender<Item>,
    waiting: Arc<AtomicUsize>,
    buffer: usize,
    buffer_bytes: usize,
}

impl Forwarder {
    /// Forwards until the notifications end, the client leaves or `stopped`
    /// resolves; or until the client is too far behind, when its last item is
    /// the cut-off notice and this returns true.
    async fn run(
        self,
        notifications: impl Stream<Item = Result<Notification, tonic::Status>>,
        stopped: impl Future<Output = ()>,
    ) -> bool {
        tokio::pin!(notifications, stopped);
        loop {
            let next = tokio::select! {
                next = notifications.next() => next,
                () = self.tx.closed() => return false,
                () = &mut stopped => return false,
            };
            let Some(Ok(notification)) = next else { return false };
            let size = notification.payload.len();
            let bytes = self.waiting.fetch_add(size, Ordering::Relaxed) + size;
            if self.tx.capacity() <= 1 || bytes > self.buffer_bytes {
                let events = self.buffer + 1 - self.tx.capacity();
                let _ = self.tx.try_send(Item::CutOff { events, bytes: bytes - size });
                return true;
            }
            let _ = self.tx.try_send(Item::Event(notification));
        }
    }
}

/// One notification as its SSE event, inside the span of its processing; a
/// payload that does not decode is sent as a comment rather than dropped
/// silently.
fn event(n: &Notification) -> sse::Event {
    let span = super::process_span("rabbitmq", "ticketmesh.events", &n.message_id, &n.headers);
    let _entered = span.enter();
    let Ok(event) = TicketEvent::decode(n.payload.as_slice()) else {
        return sse::Event::default().comment(format!("undecodable message {}", n.message_id));
    };
    let kind = event.r#type().petzi_name();
    let stored = StoredTicket {
        ticket: event.ticket,
        buyer: event.buyer,
        last_event: event.r#type,
        created_at: event.received_at,
        updated_at: event.received_at,
    };
    sse::Event::default().event(kind).id(n.message_id.clone()).data(render::ticket(&stored).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(n: usize, size: usize) -> Result<Notification, tonic::Status> {
        Ok(Notification { message_id: format!("m{n}"), payload: vec![0; size], ..Notification::default() })
    }

    /// What a client that never reads ends up with, from 100 notifications of
    /// `size` bytes: the events buffered, then the cut-off, if any.
    async fn stalled(
        buffer: usize,
        buffer_bytes: usize,
        size: usize,
    ) -> (usize, Option<(usize, usize)>, bool) {
        let (tx, mut rx) = mpsc::channel(buffer + 1);
        let waiting = Arc::new(AtomicUsize::new(0));
        let forwarder = Forwarder { tx, waiting, buffer, buffer_bytes };
        let notifications = tokio_stream::iter((0..100).map(|n| notification(n, size)));
        let cut = forwarder.run(notifications, std::future::pending()).await;
        let (mut events, mut notice) = (0, None);
        while let Ok(item) = rx.try_recv() {
            match item {
                Item::Event(_) => events += 1,
                Item::CutOff { events, bytes } => notice = Some((events, bytes)),
            }
        }
        (events, notice, cut)
    }

    #[tokio::test]
    async fn a_client_is_cut_off_at_its_event_bound_when_the_events_are_small() {
        assert_eq!(stalled(4, 1 << 20, 10).await, (4, Some((4, 40)), true));
    }

    #[tokio::test]
    async fn a_client_is_cut_off_at_its_byte_bound_when_the_events_are_large() {
        // 1,000 bytes each, 2,500 allowed: the third event would pass the bound.
        assert_eq!(stalled(64, 2_500, 1_000).await, (2, Some((2, 2_000)), true));
    }

    #[tokio::test]
    async fn a_client_within_both_bounds_gets_every_event_and_stays() {
        assert_eq!(stalled(100, 1_000, 10).await, (100, None, false));
    }
}
