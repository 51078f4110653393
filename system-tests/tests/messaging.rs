//! Accepted webhooks flow from the outbox through the relay and the notifier
//! to RabbitMQ: each exactly once per message id, each ticket's in order,
//! persistent; and
//! nothing accepted while the broker is unreachable is lost.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::time::{Duration, Instant};

use lapin::{Connection, ConnectionProperties, options::ExchangeDeleteOptions};
use prost::Message;
use rig::{
    amqp::{Listener, assert_once_in_ticket_order, message_id, wait_until_published},
    *,
};
use ticketmesh_proto::v1::TicketEvent;

/// The trace id in a message's `traceparent` header, or "".
fn trace_id(d: &lapin::message::Delivery) -> String {
    let Some(headers) = d.properties.headers() else { return String::new() };
    match headers.inner().get("traceparent") {
        Some(lapin::types::AMQPValue::LongString(tp)) => {
            String::from_utf8_lossy(tp.as_bytes()).split('-').nth(1).unwrap_or_default().to_owned()
        }
        _ => String::new(),
    }
}

#[ignore = "needs PostgreSQL and RabbitMQ (make test runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_accepted_webhook_reaches_rabbitmq_once_each_ticket_in_order() {
    let backend = Backend::postgres(false).await;
    let exchange = unique("tm.test");
    let mut listener = Listener::bind(&exchange).await;
    let options = Options { amqp: Some((amqp_url(), exchange.clone())), ..Options::default() };
    let stack = Stack::start_with(&backend, options).await.ready().await;
    let client = reqwest::Client::new();

    // Every fifth delivery cancels the ticket created four deliveries before.
    let number = |i: usize| format!("PETZIQ{:03}", if i % 5 == 4 { i - 4 } else { i });
    let mut sent = Vec::new();
    for i in 0..20 {
        let event = if i % 5 == 4 { "ticket_updated" } else { "ticket_created" };
        let body = delivery(
            event,
            &number(i),
            "Concert",
            "20.00",
            if i % 5 == 4 { "event_cancellation" } else { "" },
        );
        let a = post_signed(&client, &stack, &body).await;
        assert_eq!(a.status, 200, "{}", a.body);
        sent.push((
            a.body["delivery_id"].as_str().unwrap().to_owned(),
            body,
            a.body["trace_id"].as_str().unwrap().to_owned(),
        ));
    }
    for (_, body, _) in sent.iter().take(10) {
        assert_eq!(post_signed(&client, &stack, body).await.body["duplicate"], true);
    }

    let got = listener.take(20, Duration::from_secs(15)).await;
    let expected: Vec<String> = sent.iter().map(|(id, _, _)| id.clone()).collect();
    assert_once_in_ticket_order(&got, &expected);
    for (i, (id, _, trace)) in sent.iter().enumerate() {
        let d = got.iter().find(|d| message_id(d) == *id).unwrap();
        let key = if i % 5 == 4 { "ticket.updated" } else { "ticket.created" };
        assert_eq!(d.routing_key.as_str(), key);
        assert_eq!(*d.properties.delivery_mode(), Some(2), "persistent");
        assert_eq!(trace_id(d), *trace, "the trace of the POST that delivered it");
        let event = TicketEvent::decode(d.data.as_slice()).unwrap();
        assert_eq!(event.delivery_id, *id);
        assert_eq!(event.ticket.unwrap().number, number(i));
    }
    wait_until_published(&backend).await;
    stack.stop().await;
    listener.close().await;
    backend.drop_database().await;
}

#[ignore = "needs PostgreSQL and RabbitMQ (make test runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_accepted_while_the_broker_is_unreachable_all_arrive_later() {
    let backend = Backend::postgres(false).await;
    let exchange = unique("tm.test");
    let client = reqwest::Client::new();

    // The notifier cannot reach RabbitMQ: webhooks are still accepted (stored).
    let cut = Options {
        amqp: Some(("amqp://guest:guest@127.0.0.1:1/%2f".into(), exchange.clone())),
        ..Options::default()
    };
    let stack = Stack::start_with(&backend, cut).await.ready().await;
    let mut ids = Vec::new();
    for i in 0..100 {
        let a = post_signed(
            &client,
            &stack,
            &delivery("ticket_created", &format!("PETZIU{i:03}"), "Theater", "15.00", ""),
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.body);
        ids.push(a.body["delivery_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(backend.count("SELECT COUNT(*) FROM outbox WHERE published_at_ms IS NULL").await, 100);
    stack.stop().await;

    // The broker is back: the backlog drains by itself, nothing lost or doubled.
    let mut listener = Listener::bind(&exchange).await;
    let whole = Options { amqp: Some((amqp_url(), exchange.clone())), ..Options::default() };
    let stack = Stack::start_with(&backend, whole).await.ready().await;
    assert_once_in_ticket_order(&listener.take(100, Duration::from_secs(20)).await, &ids);
    wait_until_published(&backend).await;
    assert_eq!(backend.count("SELECT COUNT(*) FROM events").await, 100);
    // Each relayed message's commit-to-publish lag was measured (the other
    // tests in this binary publish fewer than 30).
    let lag_count = gauge(format!("{}/metrics", stack.event_admin), "outbox_relay_lag_seconds_count").await;
    assert!(lag_count >= 100.0, "outbox_relay_lag_seconds_count = {lag_count}");
    stack.stop().await;
    listener.close().await;
    backend.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_bus_drains_the_outbox_without_a_broker() {
    let backend = Backend::sqlite();
    let stack = Stack::start(&backend).await.ready().await;
    let client = reqwest::Client::new();
    for i in 0..5 {
        let a = post_signed(
            &client,
            &stack,
            &delivery("ticket_created", &format!("PETZIL{i}"), "Comedy Show", "9.90", ""),
        )
        .await;
        assert_eq!(a.status, 200);
    }
    wait_until_published(&backend).await;
    assert_eq!(backend.count("SELECT COUNT(*) FROM outbox").await, 5);
    stack.stop().await;
    backend.drop_database().await;
}

/// A gauge on `url`; -1 while it does not exist (so a wait for 0 waits for it).
async fn gauge(url: String, name: &str) -> f64 {
    rig::metrics::metric(&url, name, &[]).await.unwrap_or(-1.0)
}

async fn sse_shows_a_webhook_and_cleans_up(stack: &Stack) {
    let client = reqwest::Client::new();
    let mut response = client.get(stack.url("/events")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let a = post_signed(&client, stack, &delivery("ticket_created", "PETZISSE1", "Dance Party", "33.30", ""))
        .await;
    assert_eq!(a.status, 200);
    let id = a.body["delivery_id"].as_str().unwrap();
    let seen = sse_until(&mut response, id, Duration::from_secs(10)).await;
    assert!(seen.contains(r#""number":"PETZISSE1""#), "{seen}");
    assert!(seen.contains(r#""amount":"33.30""#), "{seen}");
    assert_eq!(gauge(format!("{}/metrics", stack.notifier_admin), "notifier_subscribers").await, 1.0);

    // The client leaves: its stream, subscription (and queue) go away.
    drop(response);
    let deadline = Instant::now() + Duration::from_secs(5);
    while gauge(format!("{}/metrics", stack.notifier_admin), "notifier_subscribers").await != 0.0 {
        assert!(Instant::now() < deadline, "subscriber still counted 5 s after the client left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(gauge(stack.url("/metrics"), "sse_clients").await, 0.0);
}

#[ignore = "needs RabbitMQ (make test runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_clients_see_tickets_through_rabbitmq_and_unsubscribe_on_leaving() {
    let _turn = registry_turn().await;
    let backend = Backend::sqlite();
    let exchange = unique("tm.test");
    let options = Options { amqp: Some((amqp_url(), exchange.clone())), ..Options::default() };
    let stack = Stack::start_with(&backend, options).await.ready().await;
    sse_shows_a_webhook_and_cleans_up(&stack).await;
    stack.stop().await;
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await.unwrap();
    backend.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_clients_see_tickets_on_the_embedded_bus() {
    let _turn = registry_turn().await;
    let backend = Backend::sqlite();
    let stack = Stack::start(&backend).await.ready().await;
    sse_shows_a_webhook_and_cleans_up(&stack).await;
    stack.stop().await;
    backend.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_event_streams_instead_of_waiting_for_them() {
    let _turn = registry_turn().await;
    let backend = Backend::sqlite();
    let stack = Stack::start(&backend).await.ready().await;
    let mut response = reqwest::Client::new().get(stack.url("/events")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    // Stack::stop fails unless every service (the gateway too) exits within 10 s.
    let started = Instant::now();
    stack.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
    // The browser's stream ended (cleanly or cut): EventSource reconnects from there.
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(Some(_)) = response.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the event stream is still open after shutdown");
    backend.drop_database().await;
}

#[ignore = "needs RabbitMQ (make test runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notifier_reconnects_after_the_broker_connection_dies() {
    let backend = Backend::sqlite();
    let exchange = unique("tm.test");
    let mut listener = Listener::bind(&exchange).await;
    let broker = Proxy::start("127.0.0.1:5672").await;
    let url = format!("amqp://guest:guest@{}/%2f", broker.addr);
    let stack =
        Stack::start_with(&backend, Options { amqp: Some((url, exchange.clone())), ..Options::default() })
            .await
            .ready()
            .await;
    let client = reqwest::Client::new();
    let send = |range: std::ops::Range<usize>| {
        let (client, stack) = (&client, &stack);
        async move {
            let mut ids = Vec::new();
            for i in range {
                let a = post_signed(
                    client,
                    stack,
                    &delivery("ticket_created", &format!("PETZIK{i:03}"), "Concert", "5.00", ""),
                )
                .await;
                assert_eq!(a.status, 200, "{}", a.body);
                ids.push(a.body["delivery_id"].as_str().unwrap().to_owned());
            }
            ids
        }
    };

    let before = send(0..10).await;
    assert_once_in_ticket_order(&listener.take(10, Duration::from_secs(10)).await, &before);

    // The connection to the broker dies, as in a broker restart; webhooks are
    // still accepted meanwhile.
    broker.cut();
    let during = send(10..30).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.restore();

    // The notifier reconnects by itself; the relay drains what waited.
    assert_once_in_ticket_order(&listener.take(20, Duration::from_secs(20)).await, &during);
    wait_until_published(&backend).await;
    stack.stop().await;
    listener.close().await;
    backend.drop_database().await;
}
