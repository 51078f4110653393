//! The NotifierService handlers called directly, on the in-process bus and
//! with SNS off (no AMQP_URL, no SNS_ENDPOINT_URL): no broker needed.

use std::collections::HashMap;

use ticketmesh_proto::v1::{ConfirmSnsSubscriptionRequest, ListSnsTopicsRequest};
use tonic::Code;

use super::*;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Tests that open Subscribe streams hold this: `notifier_subscribers` is
/// one gauge for the whole process.
static SUBSCRIBING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The notifier as `serve()` makes it without AMQP_URL or SNS.
fn notifier() -> Notifier {
    Notifier {
        bus: Arc::new(Bus::local()),
        sns: None,
        exchange: "ticketmesh.events".into(),
        faults: Faults::new("app-notifier", Targets::grpc(&[SERVICE], &["amqp", "sns"])),
    }
}

fn message(id: &str, routing_key: &str, destinations: &[Destination]) -> PublishRequest {
    PublishRequest {
        message_id: id.into(),
        routing_key: routing_key.into(),
        payload: format!("payload of {id}").into_bytes(),
        content_type: "text/plain".into(),
        destinations: destinations.iter().map(|d| *d as i32).collect(),
        sns_topic: "ticket-events".into(),
        headers: HashMap::from([("x-test".to_owned(), id.to_owned())]),
    }
}

fn result(destination: Destination, status: &str, broker_message_id: &str) -> PublishResult {
    PublishResult {
        destination: destination as i32,
        status: status.into(),
        broker_message_id: broker_message_id.into(),
    }
}

async fn publish(n: &Notifier, request: PublishRequest) -> Result<Vec<PublishResult>, Status> {
    Ok(n.publish(Request::new(request)).await?.into_inner().results)
}

async fn subscribe(n: &Notifier, patterns: &[&str]) -> <Notifier as NotifierService>::SubscribeStream {
    let request = SubscribeRequest { routing_keys: patterns.iter().map(|p| (*p).to_owned()).collect() };
    n.subscribe(Request::new(request)).await.unwrap().into_inner()
}

async fn next(stream: &mut <Notifier as NotifierService>::SubscribeStream) -> Notification {
    tokio::time::timeout(TIMEOUT, stream.next()).await.expect("a notification in time").unwrap().unwrap()
}

// A subscriber receives what is published after it subscribed, as
// published, filtered by its routing-key patterns (none means all); the
// publish reports the message published under its own id.
#[tokio::test]
async fn a_subscriber_receives_what_is_published_matching_its_patterns() {
    let _one_at_a_time = SUBSCRIBING.lock().await;
    let n = notifier();
    let mut tickets = subscribe(&n, &["ticket.*"]).await;
    let mut everything = subscribe(&n, &[]).await;

    publish(&n, message("h1", "hello", &[])).await.unwrap();
    let results = publish(&n, message("t1", "ticket.created", &[Destination::Amqp])).await.unwrap();
    assert_eq!(results, [result(Destination::Amqp, "published", "t1")]);

    let got = next(&mut tickets).await;
    assert_eq!(
        (got.message_id.as_str(), got.routing_key.as_str()),
        ("t1", "ticket.created"),
        "hello is filtered out"
    );
    assert_eq!((got.payload.as_slice(), got.content_type.as_str()), (&b"payload of t1"[..], "text/plain"));
    assert_eq!(got.headers.get("x-test").map(String::as_str), Some("t1"));
    assert!(got.published_at.is_some());
    let all: Vec<String> = [next(&mut everything).await, next(&mut everything).await]
        .into_iter()
        .map(|n| n.message_id)
        .collect();
    assert_eq!(all, ["h1", "t1"], "no pattern means every message, in publish order");
}

// With SNS not configured, an SNS destination is answered "disabled" (not
// an error), beside the AMQP one that is published.
#[tokio::test]
async fn publish_to_sns_without_sns_reports_disabled() {
    let n = notifier();
    let results = publish(&n, message("s1", "hello", &[Destination::Sns])).await.unwrap();
    assert_eq!(results, [result(Destination::Sns, "disabled", "")]);
    let both = publish(&n, message("s2", "hello", &[Destination::Amqp, Destination::Sns])).await.unwrap();
    let statuses: Vec<&str> = both.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(statuses, ["published", "disabled"]);
}

// Publish refuses a message without an id or routing key, and a
// destination it does not know.
#[tokio::test]
async fn publish_refuses_missing_ids_and_unknown_destinations() {
    let n = notifier();
    for request in [message("", "hello", &[]), message("m1", "", &[])] {
        let refused = publish(&n, request).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
    }
    for destination in [Destination::Unspecified as i32, 7] {
        let request = PublishRequest { destinations: vec![destination], ..message("m1", "hello", &[]) };
        let refused = publish(&n, request).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "destination {destination}");
        assert_eq!(refused.message(), format!("unknown destination {destination}"));
    }
}

// A request refused for any of its destinations publishes to none of them:
// an AMQP publish before the refusal would be repeated at each of the
// relay's retries.
#[tokio::test]
async fn a_refused_publish_publishes_nothing() {
    let _one_at_a_time = SUBSCRIBING.lock().await;
    let n = notifier();
    let mut everything = subscribe(&n, &[]).await;
    let request =
        PublishRequest { destinations: vec![Destination::Amqp as i32, 7], ..message("r1", "hello", &[]) };
    let refused = publish(&n, request).await.unwrap_err();
    assert_eq!((refused.code(), refused.message()), (Code::InvalidArgument, "unknown destination 7"));
    publish(&n, message("r2", "hello", &[])).await.unwrap();
    assert_eq!(next(&mut everything).await.message_id, "r2", "r1 was not published to AMQP");
}

// Without SNS there are no topics, and confirming a subscription is
// FAILED_PRECONDITION.
#[tokio::test]
async fn without_sns_there_are_no_topics_to_list_or_confirm() {
    let n = notifier();
    let topics = n.list_sns_topics(Request::new(ListSnsTopicsRequest {})).await.unwrap().into_inner();
    assert!(topics.topic_arns.is_empty());
    let confirm = ConfirmSnsSubscriptionRequest {
        topic_arn: "arn:aws:sns:us-east-1:000000000000:ticket-events".into(),
        token: "token".into(),
    };
    let refused = n.confirm_sns_subscription(Request::new(confirm)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
}

// A Subscribe stream counts in `notifier_subscribers` while it is open; once
// dropped it is counted no more and the bus no longer delivers to it.
#[tokio::test]
async fn a_dropped_subscriber_is_removed() {
    let _one_at_a_time = SUBSCRIBING.lock().await;
    let n = notifier();
    let Bus::Local(sender) = n.bus.as_ref() else { unreachable!("the in-process bus") };
    let before = SUBSCRIBERS.get();
    let stream = subscribe(&n, &[]).await;
    assert_eq!((SUBSCRIBERS.get(), sender.receiver_count()), (before + 1, 1));
    drop(stream);
    assert_eq!((SUBSCRIBERS.get(), sender.receiver_count()), (before, 0));
}

// An unknown topic is named in the error quoted short, however long the
// caller's value: a gRPC status travels in an HTTP/2 header.
#[test]
fn an_unknown_topic_is_quoted_short() {
    let message = SnsError::UnknownTopic("t".repeat(70_000)).to_string();
    assert!(message.len() < 200, "{} bytes", message.len());
    assert!(message.contains("(70000 characters)"), "{message}");
    assert_eq!(
        SnsError::UnknownTopic("ticket-event".into()).to_string(),
        "SNS topic \"ticket-event\" is not one of this notifier's topics"
    );
}
