//! The outbox relay against a scripted storage and notifier (see
//! [`crate::fake`]): what it publishes, in which order, and what it acks.

use ticketmesh_proto::v1::OutboxMessage;

use super::*;
use crate::fake::Fake;

const TIMEOUT: Duration = Duration::from_secs(5);

fn relay(url: &str) -> Relay {
    Relay {
        id: "relay-under-test".into(),
        publisher: Publisher {
            storage: StorageServiceClient::new(ticketmesh_runtime::grpc::channel(url, TIMEOUT).unwrap()),
            notifier: NotifierServiceClient::new(ticketmesh_runtime::grpc::channel(url, TIMEOUT).unwrap()),
            storage_timeout: TIMEOUT,
            notifier_timeout: TIMEOUT,
            max_attempts: 3,
        },
        wake: Arc::new(Notify::new()),
        batch: 200,
        concurrency: 8,
        unacked: Vec::new(),
    }
}

/// Outbox rows 1..=n, message ids m1..mn, row `i` of ticket `tickets[i - 1]`.
fn rows_of(tickets: &[impl AsRef<str>]) -> Vec<OutboxMessage> {
    (1..)
        .zip(tickets)
        .map(|(id, ticket)| OutboxMessage {
            id,
            message_id: format!("m{id}"),
            routing_key: "ticket.created".into(),
            ticket_number: ticket.as_ref().into(),
            payload: vec![id as u8],
            created_at: None,
            traceparent: String::new(),
        })
        .collect()
}

async fn fake_with_outbox(tickets: &[impl AsRef<str>]) -> (Arc<Fake>, Relay) {
    let fake = Arc::new(Fake::default());
    fake.set_outbox(rows_of(tickets));
    let relay = relay(&fake.serve().await);
    (fake, relay)
}

/// One row each of tickets T1..T20.
fn twenty_tickets() -> Vec<String> {
    (1..=20).map(|n| format!("T{n}")).collect()
}

/// Every publish attempt of the given message ids, in the order they came.
fn attempts_of(fake: &Fake, ids: &[&str]) -> Vec<String> {
    fake.published_ids().into_iter().filter(|id| ids.contains(&id.as_str())).collect()
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

// One round publishes every outbox row as a ticket event to AMQP under the
// row's id and routing key, then acks them all; the next round finds
// nothing to publish.
#[tokio::test]
async fn a_round_publishes_the_outbox_then_acks_it() {
    let (fake, mut relay) = fake_with_outbox(&["T1", "T2", "T3"]).await;
    assert_eq!(relay.round().await.unwrap(), 3);
    assert_eq!(sorted(fake.published_ids()), ["m1", "m2", "m3"]);
    assert_eq!(fake.acked_ids(), [1, 2, 3]);
    let first = fake.published.lock().unwrap().iter().find(|p| p.message_id == "m1").unwrap().clone();
    assert_eq!((first.routing_key.as_str(), first.payload.as_slice()), ("ticket.created", &[1u8][..]));
    assert_eq!(first.destinations, [Destination::Amqp as i32]);
    assert!(first.content_type.contains("ticketmesh.v1.TicketEvent"), "{}", first.content_type);

    assert_eq!(relay.round().await.unwrap(), 0);
    assert_eq!(fake.published_ids().len(), 3, "nothing is published twice");
}

// Several tickets' messages are in flight at once, but never two of one
// ticket: each ticket's go out in outbox order, each once the one before
// was confirmed.
#[tokio::test]
async fn tickets_go_out_at_once_and_each_tickets_messages_in_order() {
    let (fake, mut relay) = fake_with_outbox(&["A", "B", "C", "A", "B", "C", "A", "B", "C", "A"]).await;
    *fake.publish_delay.lock().unwrap() = Duration::from_millis(50);
    assert_eq!(relay.round().await.unwrap(), 10);
    assert_eq!(fake.most_publishing.load(std::sync::atomic::Ordering::SeqCst), 3, "one at a time per ticket");
    assert_eq!(attempts_of(&fake, &["m1", "m4", "m7", "m10"]), ["m1", "m4", "m7", "m10"]);
    assert_eq!(attempts_of(&fake, &["m2", "m5", "m8"]), ["m2", "m5", "m8"]);
    assert_eq!(attempts_of(&fake, &["m3", "m6", "m9"]), ["m3", "m6", "m9"]);
    assert_eq!(fake.acked_ids(), (1..=10).collect::<Vec<_>>());
}

// No more publishes are in flight at once than the relay's concurrency.
#[tokio::test]
async fn no_more_than_the_concurrency_is_in_flight() {
    let (fake, mut relay) = fake_with_outbox(&twenty_tickets()).await;
    relay.concurrency = 4;
    *fake.publish_delay.lock().unwrap() = Duration::from_millis(30);
    assert_eq!(relay.round().await.unwrap(), 20);
    assert_eq!(fake.most_publishing.load(std::sync::atomic::Ordering::SeqCst), 4);
}

// An outage (a failure that may pass) stops the round: nothing more starts
// after it, what came before is acked, and the next round starts again
// from the failed row.
#[tokio::test]
async fn an_outage_stops_the_round_until_the_failed_row_goes_through() {
    let (fake, mut relay) = fake_with_outbox(&["T1", "T2", "T3", "T4"]).await;
    relay.concurrency = 1;
    fake.fail_publishes("m2", 1);
    let failed = relay.round().await.unwrap_err();
    assert_eq!(failed.code(), tonic::Code::Unavailable);
    assert_eq!(fake.published_ids(), ["m1", "m2"], "nothing after the failure");
    assert_eq!(fake.acked_ids(), [1]);

    assert_eq!(relay.round().await.unwrap(), 3);
    assert_eq!(fake.published_ids(), ["m1", "m2", "m2", "m3", "m4"]);
    assert_eq!(fake.acked_ids(), [1, 2, 3, 4]);
}

// With the notifier down, one round tries at most `concurrency` messages,
// not the whole batch.
#[tokio::test]
async fn an_outage_costs_one_attempt_per_chain_in_flight() {
    let (fake, mut relay) = fake_with_outbox(&twenty_tickets()).await;
    relay.concurrency = 4;
    for n in 1..=20 {
        fake.fail_publishes(&format!("m{n}"), 1);
    }
    assert_eq!(relay.round().await.unwrap_err().code(), tonic::Code::Unavailable);
    assert_eq!(fake.published_ids().len(), 4);
    assert!(fake.acked_ids().is_empty());
}

// A message the notifier refuses as a bad request holds back its own
// ticket's later messages only: the other tickets' go out and are acked.
#[tokio::test]
async fn a_refused_message_holds_back_only_its_ticket() {
    let (fake, mut relay) = fake_with_outbox(&["A", "B", "A", "C"]).await;
    fake.refuse_publishes("m1");
    assert_eq!(relay.round().await.unwrap_err().code(), tonic::Code::InvalidArgument);
    assert_eq!(sorted(fake.published_ids()), ["m1", "m2", "m4"], "m3 waits behind m1");
    assert_eq!(fake.acked_ids(), [2, 4]);
}

// A refused message counts; at its third refusal it becomes a dead letter
// and its ticket's messages behind it flow again. An outage never counts.
#[tokio::test]
async fn a_message_refused_three_times_becomes_a_dead_letter_and_the_rest_flows() {
    let (fake, mut relay) = fake_with_outbox(&["A", "B", "B"]).await;
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
    assert_eq!(attempts_of(&fake, &["m2", "m3"]), ["m2", "m2", "m2", "m3", "m3"]);
    assert_eq!(attempts_of(&fake, &["m1"]), ["m1"]);
    assert_eq!(fake.attempts.lock().unwrap().get(&3), None, "an outage is not counted");
    assert_eq!(relay.round().await.unwrap(), 0, "the dead letter is not fetched again");
}

// When storage cannot record a refusal, the round stops there, and what
// it published before is still acknowledged (so it goes out once).
#[tokio::test]
async fn an_unrecorded_refusal_stops_the_round_but_keeps_the_acks() {
    let (fake, mut relay) = fake_with_outbox(&["T1", "T2", "T3"]).await;
    relay.concurrency = 1;
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
    let (fake, mut relay) = fake_with_outbox(&["T", "T"]).await;
    *fake.ack_failures.lock().unwrap() = 1;
    assert!(relay.round().await.is_err());
    assert_eq!((fake.published_ids().len(), fake.acked_ids().len()), (2, 0));

    assert_eq!(relay.round().await.unwrap(), 0);
    assert_eq!(fake.acked_ids(), [1, 2]);
    assert_eq!(fake.published_ids(), ["m1", "m2"], "not published again");
}

// The running relay retries a failed publish by itself (after its backoff),
// the ticket still in order, and stops when told to.
#[tokio::test]
async fn the_running_relay_retries_by_itself_and_stops_when_told() {
    let (fake, relay) = fake_with_outbox(&["T", "T", "T"]).await;
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
    let (fake, mut relay) = fake_with_outbox(&["T", "T"]).await;
    *fake.ack_failures.lock().unwrap() = 1;
    assert!(relay.round().await.is_err(), "the ack failed");
    assert!(fake.acked_ids().is_empty());
    relay.finish().await;
    assert_eq!(fake.acked_ids(), [1, 2]);
    assert_eq!(*fake.released.lock().unwrap(), ["relay-under-test"]);
    assert_eq!(fake.published_ids(), ["m1", "m2"], "published once");
}
