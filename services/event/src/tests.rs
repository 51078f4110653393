//! IngestWebhook called directly, with storage a scripted fake on 127.0.0.1:0
//! (see [`crate::fake`]): no storage service, database or broker needed.

use std::sync::OnceLock;

use ticketmesh_proto::v1::Money;
use tonic_types::StatusExt;
use tracing::Instrument;

use super::*;
use crate::fake::Fake;

const TIMEOUT: Duration = Duration::from_secs(5);

/// PETZI's example delivery, and its SHA-256 (by `sha256sum`).
const BODY: &str = ::petzi::payload::EXAMPLE;
const BODY_SHA256: &str = "38703e3f0305483c6d2174844950aea42a26711cb374d4bff51e5d8c0ff8835c";

/// The service, talking to `url` for storage and the notifier alike.
fn events(url: &str, storage_timeout: Duration) -> Events {
    Events {
        storage: StorageServiceClient::new(grpc::channel(url, storage_timeout).unwrap()),
        notifier: NotifierServiceClient::new(grpc::channel(url, TIMEOUT).unwrap()),
        storage_timeout,
        notifier_timeout: TIMEOUT,
        relay: Arc::new(Notify::new()),
        recent_sns: Arc::default(),
    }
}

fn ingest_request(body: &[u8]) -> Request<IngestWebhookRequest> {
    Request::new(IngestWebhookRequest {
        body: body.to_vec(),
        signed_at: Some(prost_types::Timestamp { seconds: 1_795_000_000, nanos: 0 }),
        received_at: Some(prost_types::Timestamp { seconds: 1_795_000_001, nanos: 0 }),
    })
}

/// Whether the relay has been woken (without waiting for it).
async fn relay_woken(events: &Events) -> bool {
    // A stored permit completes `notified` at its first poll, before the timer.
    tokio::time::timeout(Duration::ZERO, events.relay.notified()).await.is_ok()
}

// A body that is not a PETZI delivery is INVALID_ARGUMENT with a BadRequest
// violation naming the field path (and an ErrorInfo reason), and never
// reaches storage.
#[tokio::test]
async fn a_bad_body_is_invalid_argument_naming_the_field() {
    let fake = Arc::new(Fake::default());
    let events = events(&fake.serve().await, TIMEOUT);
    let wrong_type = BODY.replace(r#""eventId": 4821"#, r#""eventId": "4821""#);
    let cases = [
        ("not json".to_owned(), "body", "INVALID_JSON"),
        (r#"{"event": "ticket_created", "details": {}}"#.to_owned(), "details.ticket", "INVALID_PAYLOAD"),
        (wrong_type, "details.ticket.eventId", "INVALID_PAYLOAD"),
    ];
    for (body, field, reason) in cases {
        let status = events.ingest_webhook(ingest_request(body.as_bytes())).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{body}");
        let details = status.get_error_details();
        let violations = &details.bad_request().expect("a BadRequest detail").field_violations;
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].field, field);
        assert_eq!(violations[0].description, status.message());
        let info = details.error_info().expect("an ErrorInfo detail");
        assert_eq!((info.reason.as_str(), info.domain.as_str()), (reason, ERROR_DOMAIN));
    }
    assert!(fake.saved().is_empty(), "nothing reached storage");
    assert!(!relay_woken(&events).await);
}

// A good body reaches SaveEvent as the mapped TicketEvent, its delivery id
// the SHA-256 of the body, with the body and the caller's trace context;
// the answer says what was stored and the relay is woken. The same body
// again is storage's duplicate, and wakes nobody.
#[tokio::test]
async fn a_delivery_reaches_storage_with_its_id_ticket_and_trace_context() {
    static TELEMETRY: OnceLock<telemetry::Telemetry> = OnceLock::new();
    TELEMETRY.get_or_init(|| telemetry::init_without_logs("app-event-tests"));
    let fake = Arc::new(Fake::default());
    let events = events(&fake.serve().await, TIMEOUT);
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let span = tracing::info_span!("webhook");
    let carrier = [("traceparent".to_owned(), format!("00-{trace}-b7ad6b7169203331-01"))].into();
    telemetry::set_parent(&span, telemetry::extract_map(&carrier));

    let answer = events.ingest_webhook(ingest_request(BODY.as_bytes())).instrument(span).await.unwrap();
    let answer = answer.into_inner();
    assert_eq!(answer.delivery_id, BODY_SHA256);
    assert!(!answer.duplicate);
    assert_eq!(
        (answer.ticket_number.as_str(), answer.event_type()),
        ("PETZI48213577", EventType::TicketCreated)
    );
    assert!(relay_woken(&events).await, "a new delivery wakes the relay");

    let saved = fake.saved();
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0].payload, BODY.as_bytes(), "the body is kept as received");
    let parts: Vec<&str> = saved[0].traceparent.split('-').collect();
    assert_eq!(
        (parts.len(), parts[1]),
        (4, trace),
        "the caller's trace continues: {:?}",
        saved[0].traceparent
    );
    let event = saved[0].event.as_ref().unwrap();
    assert_eq!((event.delivery_id.as_str(), event.r#type()), (BODY_SHA256, EventType::TicketCreated));
    assert_eq!(event.signed_at.as_ref().map(|t| t.seconds), Some(1_795_000_000));
    assert_eq!(event.received_at.as_ref().map(|t| t.seconds), Some(1_795_000_001));
    let ticket = event.ticket.as_ref().unwrap();
    assert_eq!(
        (ticket.number.as_str(), ticket.category.as_str(), ticket.event_id),
        ("PETZI48213577", "Concert", 4821)
    );
    assert_eq!(ticket.price.as_ref().map(Money::cents), Some(4250));
    assert_eq!(event.buyer.as_ref().unwrap().last_name, "Doe");

    let again = events.ingest_webhook(ingest_request(BODY.as_bytes())).await.unwrap().into_inner();
    assert_eq!((again.delivery_id.as_str(), again.duplicate), (BODY_SHA256, true));
    assert!(!relay_woken(&events).await, "a duplicate does not wake the relay");
}

// A cancellation is stored as a ticket_updated with its reason.
#[tokio::test]
async fn a_cancellation_reaches_storage_as_an_update() {
    let fake = Arc::new(Fake::default());
    let events = events(&fake.serve().await, TIMEOUT);
    let mut delivery = ::petzi::Delivery::example();
    delivery.event = ::petzi::EventKind::TicketUpdated;
    delivery.details.ticket.cancellation_reason = "event_cancellation".into();
    let answer = events.ingest_webhook(ingest_request(delivery.to_body().as_bytes())).await.unwrap();
    assert_eq!(answer.into_inner().event_type(), EventType::TicketUpdated);
    let event = fake.saved()[0].event.clone().unwrap();
    assert_eq!(event.r#type(), EventType::TicketUpdated);
    assert_eq!(event.ticket.unwrap().cancellation_reason, "event_cancellation");
}

// Storage's failures as `from_storage` maps them: transient ones are
// UNAVAILABLE, a deadline or cancellation DEADLINE_EXCEEDED, and anything
// else passes through.
#[tokio::test]
async fn storage_failures_are_mapped_to_unavailable_or_deadline_exceeded() {
    use tonic::Code::*;
    let fake = Arc::new(Fake::default());
    let events = events(&fake.serve().await, TIMEOUT);
    let cases = [
        (Unavailable, Unavailable),
        (ResourceExhausted, Unavailable),
        (Aborted, Unavailable),
        (Unknown, Unavailable),
        (DeadlineExceeded, DeadlineExceeded),
        (Cancelled, DeadlineExceeded),
        (InvalidArgument, InvalidArgument),
        (Internal, Internal),
    ];
    for (from, to) in cases {
        fake.fail_saves_with(Some(Status::new(from, "scripted")));
        let status = events.ingest_webhook(ingest_request(BODY.as_bytes())).await.unwrap_err();
        assert_eq!(status.code(), to, "storage answered {from:?}");
        assert!(status.message().contains("scripted"), "{}", status.message());
    }
    assert!(!relay_woken(&events).await, "nothing was stored");
}

// Storage that is not there is UNAVAILABLE; storage slower than
// STORAGE_TIMEOUT is DEADLINE_EXCEEDED once that deadline has passed.
#[tokio::test]
async fn unreachable_or_slow_storage_is_unavailable_or_deadline_exceeded() {
    let nobody = events("http://127.0.0.1:1", TIMEOUT);
    let status = nobody.ingest_webhook(ingest_request(BODY.as_bytes())).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().starts_with("storage unavailable"), "{}", status.message());

    let fake = Arc::new(Fake::default());
    *fake.save_delay.lock().unwrap() = Duration::from_secs(30);
    let slow = events(&fake.serve().await, Duration::from_millis(300));
    let started = std::time::Instant::now();
    let status = slow.ingest_webhook(ingest_request(BODY.as_bytes())).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() < TIMEOUT, "the deadline bounded the call: {:?}", started.elapsed());
}
