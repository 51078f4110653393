//! Signed webhooks through gateway → event → storage on real PostgreSQL with
//! Redis, and on the embedded SQLite default: stored, read back with the right
//! figures, idempotent under replay and under concurrency.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::sync::Arc;

use redis::AsyncCommands;
use rig::*;
use serde_json::Value;

/// Ten tickets over three categories, then two of them cancelled.
async fn send_the_season(client: &reqwest::Client, stack: &Stack, tag: &str) -> Vec<String> {
    let plan = [
        ("Concert", "42.50"),
        ("Concert", "30.00"),
        ("Concert", "18.25"),
        ("Theater", "55.00"),
        ("Theater", "12.00"),
        ("Comedy Show", "25.75"),
        ("Comedy Show", "25.75"),
        ("Concert", "99.99"),
        ("Theater", "0.05"),
        ("Concert", "10.00"),
    ];
    let mut numbers = Vec::new();
    for (i, (category, amount)) in plan.iter().enumerate() {
        let number = format!("PETZI{tag}{i:03}");
        let a = post_signed(client, stack, &delivery("ticket_created", &number, category, amount, "")).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["duplicate"], false);
        assert_eq!(a.body["ticket_number"], number.as_str());
        numbers.push(number);
    }
    for (i, reason) in [(3, "event_cancellation"), (5, "customer_request")] {
        let (category, amount) = plan[i];
        let body = delivery("ticket_updated", &numbers[i], category, amount, reason);
        let a = post_signed(client, stack, &body).await;
        assert_eq!((a.status, &a.body["event"]), (200, &Value::from("ticket_updated")), "{}", a.body);
    }
    numbers
}

async fn reads_back_what_was_sent(backend: &Backend) {
    let stack = Stack::start(backend).await.ready().await;
    let client = reqwest::Client::new();
    let numbers = send_the_season(&client, &stack, "S").await;

    let stats = get(&client, stack.url("/api/stats")).await.body;
    assert_eq!(stats["tickets"], 10);
    // (42.50+30.00+18.25+55.00+12.00+25.75+25.75+99.99+0.05+10.00) / 10 = 31.929 → 31.93
    assert_eq!(stats["averagePrice"]["amount"], "31.93");
    assert_eq!(stats["averagePrice"]["currency"], "CHF");
    assert_eq!(stats["refundRate"], 0.2);
    assert_eq!(stats["cancelledTickets"], 2);
    assert_eq!(stats["cancelledEvents"], 1);
    assert_eq!(stats["cancellationsByReason"]["event_cancellation"], 1);
    assert_eq!(stats["cancellationsByReason"]["customer_request"], 1);
    assert_eq!(stats["byCategory"]["Concert"]["tickets"], 5);
    assert_eq!(stats["byCategory"]["Theater"]["averagePrice"]["amount"], "22.35"); // 67.05 / 3
    assert_eq!(stats["byCategory"]["Comedy Show"]["tickets"], 2);

    let one = get(&client, stack.url(&format!("/api/tickets/{}", numbers[3]))).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body["cancellationReason"], "event_cancellation");
    assert_eq!(one.body["lastEvent"], "ticket_updated");
    assert_eq!(one.body["price"]["amount"], "55.00");
    assert_eq!(one.body["sessions"][0]["location"]["city"], "Neuchatel");
    assert_eq!(one.body["buyer"]["lastName"], "Doe");

    // Cursor pagination: 4 + 4 + 2, newest first, every ticket exactly once.
    let mut seen = Vec::new();
    let mut url = stack.url("/api/tickets?page_size=4");
    let mut pages = 0;
    loop {
        let page = get(&client, url.clone()).await.body;
        pages += 1;
        seen.extend(
            page["tickets"].as_array().unwrap().iter().map(|t| t["number"].as_str().unwrap().to_owned()),
        );
        match page["next_page_token"].as_str() {
            Some("") | None => break,
            Some(token) => url = stack.url(&format!("/api/tickets?page_size=4&page_token={token}")),
        }
    }
    assert_eq!(pages, 3);
    let mut expected = numbers.clone();
    expected.reverse();
    assert_eq!(seen, expected);

    let theater = get(&client, stack.url("/api/tickets?category=Theater")).await.body;
    assert_eq!(theater["tickets"].as_array().unwrap().len(), 3);
    let by_event = get(&client, stack.url("/api/tickets?event_id=1")).await.body;
    assert_eq!(by_event["tickets"].as_array().unwrap().len(), 0);

    // A sender's retry: same body, new signature → 200, duplicate, stored once.
    let body = delivery("ticket_created", &numbers[0], "Concert", "42.50", "");
    let replay = post_signed(&client, &stack, &body).await;
    assert_eq!((replay.status, &replay.body["duplicate"]), (200, &Value::Bool(true)), "{}", replay.body);
    assert_eq!(backend.count("SELECT COUNT(*) FROM events").await, 12);
    assert_eq!(backend.count("SELECT COUNT(*) FROM outbox").await, 12);
    assert_eq!(get(&client, stack.url("/api/stats")).await.body["tickets"], 10);

    // A late "created" (a new delivery: its price differs from the body seen
    // before) never undoes a cancellation.
    let late =
        post_signed(&client, &stack, &delivery("ticket_created", &numbers[3], "Theater", "55.10", "")).await;
    assert_eq!((late.status, &late.body["duplicate"]), (200, &Value::Bool(false)));
    let still = get(&client, stack.url(&format!("/api/tickets/{}", numbers[3]))).await.body;
    assert_eq!(still["cancellationReason"], "event_cancellation");
    assert_eq!(get(&client, stack.url("/api/stats")).await.body["cancelledTickets"], 2);

    stack.stop().await;
}

async fn concurrent_deliveries_are_stored_exactly_once(backend: &Backend) {
    let stack = Arc::new(Stack::start(backend).await.ready().await);
    let client = reqwest::Client::new();
    let bodies: Arc<Vec<String>> = Arc::new(
        (0..200)
            .map(|i| delivery("ticket_created", &format!("PETZIC{i:04}"), "Dance Party", "20.00", ""))
            .collect(),
    );
    // 200 deliveries 32 at a time, then all 200 again (the sender's retries).
    for round in 0..2 {
        let gate = Arc::new(tokio::sync::Semaphore::new(32));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..bodies.len() {
            let (gate, client, stack, bodies) = (gate.clone(), client.clone(), stack.clone(), bodies.clone());
            tasks.spawn(async move {
                let _permit = gate.acquire().await.unwrap();
                let a = post_signed(&client, &stack, &bodies[i]).await;
                (a.status, a.body["duplicate"].as_bool())
            });
        }
        let answers = tasks.join_all().await;
        let expected = (200, Some(round == 1));
        let wrong: Vec<_> = answers.iter().filter(|a| **a != expected).collect();
        assert!(
            wrong.is_empty(),
            "round {round}: {} answers not {expected:?}: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
    }
    assert_eq!(backend.count("SELECT COUNT(*) FROM events").await, 200);
    assert_eq!(backend.count("SELECT COUNT(DISTINCT delivery_id) FROM events").await, 200);
    assert_eq!(backend.count("SELECT COUNT(*) FROM tickets").await, 200);
    assert_eq!(backend.count("SELECT COUNT(*) FROM outbox").await, 200);
    let stats = get(&client, stack.url("/api/stats")).await.body;
    assert_eq!(stats["tickets"], 200);
    // Concurrent requests were grouped: fewer commits than deliveries.
    let metrics =
        reqwest::get(format!("{}/metrics", stack.storage_admin)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("storage_commit_batch_size_count"), "{metrics}");
    Arc::into_inner(stack).unwrap().stop().await;
}

#[ignore = "needs PostgreSQL and Redis (make test runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_with_redis_reads_back_what_was_sent() {
    let backend = Backend::postgres(true).await;
    reads_back_what_was_sent(&backend).await;
    // The stats are cached under this test's own prefix after a read.
    let mut redis =
        redis::Client::open(redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let cached: Option<Vec<u8>> = redis.get(format!("{}:stats", backend.cache_prefix)).await.unwrap();
    assert!(cached.is_some(), "stats were cached in Redis");
    let _: () = redis.del(format!("{}:stats", backend.cache_prefix)).await.unwrap();
    backend.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reads_back_what_was_sent() {
    let backend = Backend::sqlite();
    reads_back_what_was_sent(&backend).await;
    backend.drop_database().await;
}

#[ignore = "needs PostgreSQL and Redis (make test runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stores_concurrent_deliveries_exactly_once() {
    let backend = Backend::postgres(true).await;
    concurrent_deliveries_are_stored_exactly_once(&backend).await;
    backend.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_stores_concurrent_deliveries_exactly_once() {
    let backend = Backend::sqlite();
    concurrent_deliveries_are_stored_exactly_once(&backend).await;
    backend.drop_database().await;
}

#[ignore = "needs PostgreSQL and Redis (make test runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_invalidates_the_cached_stats_and_ticket() {
    let backend = Backend::postgres(true).await;
    let stack = Stack::start(&backend).await.ready().await;
    let client = reqwest::Client::new();
    let a =
        post_signed(&client, &stack, &delivery("ticket_created", "PETZIR1", "Concert", "10.00", "")).await;
    assert_eq!(a.status, 200);
    // Read twice: the second read is served from Redis.
    assert_eq!(get(&client, stack.url("/api/stats")).await.body["tickets"], 1);
    assert_eq!(get(&client, stack.url("/api/tickets/PETZIR1")).await.body["cancellationReason"], "");
    assert_eq!(get(&client, stack.url("/api/stats")).await.body["tickets"], 1);
    // A new write must be visible at once, not after the TTL.
    post_signed(&client, &stack, &delivery("ticket_created", "PETZIR2", "Concert", "30.00", "")).await;
    post_signed(
        &client,
        &stack,
        &delivery("ticket_updated", "PETZIR1", "Concert", "10.00", "customer_request"),
    )
    .await;
    let stats = get(&client, stack.url("/api/stats")).await.body;
    assert_eq!(
        (stats["tickets"].as_i64(), stats["averagePrice"]["amount"].as_str()),
        (Some(2), Some("20.00"))
    );
    assert_eq!(
        get(&client, stack.url("/api/tickets/PETZIR1")).await.body["cancellationReason"],
        "customer_request"
    );
    let metrics =
        reqwest::get(format!("{}/metrics", stack.storage_admin)).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"cache_requests_total{op="stats",result="hit"}"#),
        "a stats read hit the cache"
    );
    stack.stop().await;
    backend.drop_database().await;
}
