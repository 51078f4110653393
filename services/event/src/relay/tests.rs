//! The outbox relay against a scripted storage and notifier (see
//! [`crate::fake`]): what it publishes, in which order, and what it acks.

use ticketmesh_proto::v1::OutboxMessage;

use super::*;
use crate::fake::Fake;

const TIMEOUT: Duration = Duration::from_secs(5);

fn relay(url: &str) -> Relay {
    Relay {
        id: "relay-under-test".into(),
        storage: StorageServiceClient::new(ticketmesh_runtime::grpc::channel(url, TIMEOUT).unwrap()),
        notifier: NotifierServiceClient::new(ticketmesh_runtime::grpc::channel(url, TIMEOUT).unwrap()),
        wake: Arc::new(Notify::new()),
        storage_timeout: TIMEOUT,
        notifier_timeout: TIMEOUT,
        batch: 200,
        max_attempts: 3,
        unacked: Vec::new(),
    }
}

/// Outbox rows 1..=n, message ids m1..mn.
fn rows(n: i64) -> Vec<OutboxMessage> {
    (1..=n)
        .map(|id| OutboxMessage {
            id,
            message_id: format!("m{id}"),
            routing_key: "ticket.created".into(),
            ticket_number: format!("T{id}"),
            payload: vec![id as u8],
            created_at: None,
            traceparent: String::new(),
        })
        .collect()
}

async fn fake_with_outbox(n: i64) -> (Arc<Fake>, Relay) {
    let fake = Arc::new(Fake::default());
    fake.set_outbox(rows(n));
    let relay = relay(&fake.serve().await);
    (fake, relay)
}

// One round publishes every outbox row oldest first, as ticket events to
// AMQP under the row's id and routing key, then acks them all; the next
// round finds nothing to publish.
#[tokio::test]
async fn a_round_publishes_the_outbox_in_order_then_acks_it() {
    let (fake, mut relay) = fake_with_outbox(3).await;
    assert_eq!(relay.round().await.unwrap(), 3);
    assert_eq!(fake.published_ids(), ["m1", "m2", "m3"]);
    assert_eq!(fake.acked_ids(), [1, 2, 3]);
    let first = fake.published.lock().unwrap()[0].clone();
    assert_eq!((first.routing_key.as_str(), first.payload.as_slice()), ("ticket.created", &[1u8][..]));
    assert_eq!(first.destinations, [Destination::Amqp as i32]);
    assert!(first.content_type.contains("ticketmesh.v1.TicketEvent"), "{}", first.content_type);

    assert_eq!(relay.round().await.unwrap(), 0);
    assert_eq!(fake.published_ids().len(), 3, "nothing is published twice");
}

// A failed publish ends the round at that row: what came before it is
// acked, nothing after it is published; the next round starts again from it.
#[tokio::test]
async fn a_failed_publish_stops_the_round_at_that_row_until_it_goes_through() {
    let (fake, mut relay) = fake_with_outbox(4).await;
    fake.fail_publishes("m2", 1);
    let failed = relay.round().await.unwrap_err();
    assert_eq!(failed.code(), tonic::Code::Unavailable);
    assert_eq!(fake.published_ids(), ["m1", "m2"], "nothing after the failed row");
    assert_eq!(fake.acked_ids(), [1]);

    assert_eq!(relay.round().await.unwrap(), 3);
    assert_eq!(fake.published_ids(), ["m1", "m2", "m2", "m3", "m4"]);
    assert_eq!(fake.acked_ids(), [1, 2, 3, 4]);
}

// A message the notifier refuses as a bad request stops the round like any
// failure, and counts; at its third refusal it becomes a dead letter and the
// messages behind it flow again. An outage never counts.
#[tokio::test]
async fn a_message_refused_three_times_becomes_a_dead_letter_and_the_rest_flows() {
    let (fake, mut relay) = fake_with_outbox(3).await;
    fake.refuse_publishes("m2");
    fake.fail_publishes("m3", 1);
    for attempt in 1..=2 {
        let refused = relay.round().await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "attempt {attempt}");
        assert_eq!(fake.acked_ids(), [1], "nothing behind m2 goes out before it");
    }
    assert!(relay.round().await.is_err(), "m2 given up on, then m3's outage stops the round");
    assert_eq!(fake.dead.lock().unwrap().iter().copied().collect::<Vec<_>>(), [2]);
    assert_eq!(relay.round().await.unwrap(), 1);
    assert_eq!(fake.acked_ids(), [1, 3], "m3 published once its outage passed");
    assert_eq!(fake.published_ids(), ["m1", "m2", "m2", "m2", "m3", "m3"]);
    assert_eq!(fake.attempts.lock().unwrap().get(&3), None, "an outage is not counted");
    assert_eq!(relay.round().await.unwrap(), 0, "the dead letter is not fetched again");
}

// When storage cannot record a refusal, the round stops there, and what
// it published before is still acknowledged (so it goes out once).
#[tokio::test]
async fn an_unrecorded_refusal_stops_the_round_but_keeps_the_acks() {
    let (fake, mut relay) = fake_with_outbox(3).await;
    fake.refuse_publishes("m2");
    *fake.record_failures.lock().unwrap() = 1;
    assert_eq!(relay.round().await.unwrap_err().code(), tonic::Code::Unavailable);
    assert_eq!(fake.published_ids(), ["m1", "m2"]);
    assert_eq!(fake.acked_ids(), [1], "m1 acknowledged though the round failed");
}

// An ack that storage did not take is sent again first next round, and
// the messages it covers are not published again.
#[tokio::test]
async fn a_lost_ack_is_sent_again_without_publishing_again() {
    let (fake, mut relay) = fake_with_outbox(2).await;
    *fake.ack_failures.lock().unwrap() = 1;
    assert!(relay.round().await.is_err());
    assert_eq!((fake.published_ids().len(), fake.acked_ids().len()), (2, 0));

    assert_eq!(relay.round().await.unwrap(), 0);
    assert_eq!(fake.acked_ids(), [1, 2]);
    assert_eq!(fake.published_ids(), ["m1", "m2"], "not published again");
}

// The running relay retries a failed publish by itself (after its backoff),
// still in order, and stops when told to.
#[tokio::test]
async fn the_running_relay_retries_by_itself_and_stops_when_told() {
    let (fake, relay) = fake_with_outbox(3).await;
    fake.fail_publishes("m2", 2);
    let (stop, stopping) = watch::channel(false);
    let running = tokio::spawn(relay.run(stopping));

    let mut acked = fake.acked.subscribe();
    tokio::time::timeout(TIMEOUT, acked.wait_for(|ids| ids.len() == 3)).await.unwrap().unwrap();
    assert_eq!(fake.acked_ids(), [1, 2, 3]);
    assert_eq!(fake.published_ids(), ["m1", "m2", "m2", "m2", "m3"]);

    stop.send(true).unwrap();
    tokio::time::timeout(TIMEOUT, running).await.expect("the relay stops").unwrap();
    assert_eq!(*fake.released.lock().unwrap(), ["relay-under-test"], "it gave up its lease on the way out");
}

// On the way out, what was published but not acknowledged is acknowledged
// before the lease goes (so the next holder does not publish it again).
#[tokio::test]
async fn a_finishing_relay_acknowledges_what_it_published_then_releases_its_lease() {
    let (fake, mut relay) = fake_with_outbox(2).await;
    *fake.ack_failures.lock().unwrap() = 1;
    assert!(relay.round().await.is_err(), "the ack failed");
    assert!(fake.acked_ids().is_empty());
    relay.finish().await;
    assert_eq!(fake.acked_ids(), [1, 2]);
    assert_eq!(*fake.released.lock().unwrap(), ["relay-under-test"]);
    assert_eq!(fake.published_ids(), ["m1", "m2"], "published once");
}
