//! `GET /events`: live ticket events as Server-Sent Events, bounded end to
//! end. At most MAX_SSE_CLIENTS streams; each has a buffer of SSE_BUFFER
//! events and SSE_BUFFER_BYTES of payload; a client that falls that far
//! behind gets a final `cutoff` event and its stream ends (a browser's
//! EventSource then reconnects).

use std::{
    convert::Infallible,
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
use tokio_stream::{StreamExt, wrappers::ReceiverStream};

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
    let mut notifications = state.notifier().subscribe(request).await?;
    let (buffer, buffer_bytes) = (inner.sse.buffer, inner.sse.buffer_bytes);
    // One slot more than the buffer: the cut-off notice always fits.
    let (tx, rx) = mpsc::channel(buffer + 1);
    // Payload bytes in the buffer: added here, taken off as the client's stream takes them.
    let waiting = Arc::new(AtomicUsize::new(0));
    let taken = waiting.clone();
    let mut stopping = inner.stopping.subscribe();
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = notifications.message() => next,
                () = tx.closed() => break,
                _ = stopping.wait_for(|stopping| *stopping) => break,
            };
            let Ok(Some(notification)) = next else { break };
            let size = notification.payload.len();
            let bytes = waiting.fetch_add(size, Ordering::Relaxed) + size;
            if tx.capacity() <= 1 || bytes > buffer_bytes {
                SSE_ENDED.with_label_values(&["too_far_behind"]).inc();
                let events = buffer + 1 - tx.capacity();
                let _ = tx.try_send(Item::CutOff { events, bytes: bytes - size });
                break;
            }
            let _ = tx.try_send(Item::Event(notification));
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
