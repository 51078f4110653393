//! Dependencies down: a webhook is never answered 200 unless stored, the
//! answer is 503 + Retry-After (so PETZI retries), readiness says why, and
//! reads survive a dead cache.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::time::Duration;

use rig::*;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Nothing listens on port 1 on loopback: connections are refused at once.
const CLOSED: &str = "127.0.0.1:1";

async fn storage_health(stack: &Stack) -> i32 {
    let channel =
        tonic::transport::Endpoint::from_shared(stack.storage_grpc.clone()).unwrap().connect().await.unwrap();
    HealthClient::new(channel)
        .check(HealthCheckRequest { service: "ticketmesh.v1.StorageService".into() })
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_without_its_database_answers_503_and_is_not_ready() {
    let mut backend = Backend::sqlite();
    backend.database_url = format!("postgres://postgres@{CLOSED}/ticketmesh");
    let stack = Stack::start(&backend).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = reqwest::Client::new();

    let a =
        post_signed(&client, &stack, &delivery("ticket_created", "PETZID1", "Concert", "10.00", "")).await;
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(a.body["error"]["code"], "unavailable");
    assert_eq!(a.headers["retry-after"], "5");

    let ready = get(&client, stack.url("/ready")).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.body["dependencies"]["storage"], "not_serving");
    assert_eq!(get(&client, format!("{}/ready", stack.storage_admin)).await.status, 503);
    assert_eq!(
        get(&client, format!("{}/health", stack.storage_admin)).await.status,
        200,
        "alive, only not ready"
    );
    assert_eq!(storage_health(&stack).await, 2, "NOT_SERVING");

    for path in ["/api/stats", "/api/tickets", "/api/tickets/PETZID1"] {
        let read = get(&client, stack.url(path)).await;
        assert_eq!((read.status, read.body["error"]["code"].as_str()), (503, Some("unavailable")), "{path}");
    }
    stack.stop().await;
}

#[ignore = "needs PostgreSQL (make test runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_stored_nothing_and_the_retry_is_stored_once() {
    let backend = Backend::postgres(false).await;
    let body = delivery("ticket_created", "PETZIO1", "Concert", "10.00", "");
    let client = reqwest::Client::new();

    // The event service cannot reach storage at all.
    let cut = Stack::start_with(
        &backend,
        Options { storage_url: Some(format!("http://{CLOSED}")), ..Options::default() },
    )
    .await;
    for _ in 0..3 {
        let a = post_signed(&client, &cut, &body).await;
        assert_eq!((a.status, a.body["error"]["code"].as_str()), (503, Some("unavailable")), "{}", a.body);
        assert!(a.headers.contains_key("retry-after"));
    }
    assert_eq!(get(&client, cut.url("/ready")).await.status, 503);
    cut.stop().await;

    // Storage is back: the sender's retry is stored, once, with its outbox row.
    let whole = Stack::start(&backend).await.ready().await;
    assert_eq!(backend.count("SELECT COUNT(*) FROM events").await, 0);
    let a = post_signed(&client, &whole, &body).await;
    assert_eq!((a.status, a.body["duplicate"].as_bool()), (200, Some(false)), "{}", a.body);
    assert_eq!(backend.count("SELECT COUNT(*) FROM events").await, 1);
    assert_eq!(backend.count("SELECT COUNT(*) FROM outbox").await, 1);
    whole.stop().await;
    backend.drop_database().await;
}

#[ignore = "needs PostgreSQL and Redis (make test runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_come_from_the_database_while_redis_is_down() {
    let mut backend = Backend::postgres(true).await;
    backend.redis_url = Some(format!("redis://{CLOSED}"));
    let stack = Stack::start(&backend).await.ready().await;
    let client = reqwest::Client::new();
    for (n, amount) in [("PETZIX1", "10.00"), ("PETZIX2", "20.00")] {
        let a = post_signed(&client, &stack, &delivery("ticket_created", n, "Concert", amount, "")).await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let stats = get(&client, stack.url("/api/stats")).await;
    assert_eq!((stats.status, stats.body["averagePrice"]["amount"].as_str()), (200, Some("15.00")));
    assert_eq!(get(&client, stack.url("/api/tickets/PETZIX2")).await.body["price"]["amount"], "20.00");
    let metrics =
        reqwest::get(format!("{}/metrics", stack.storage_admin)).await.unwrap().text().await.unwrap();
    let total = |prefix: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let errors = total("cache_errors_total{");
    assert!(errors >= 1.0, "cache errors are counted: {errors}");
    // After a failure the cache is skipped for a second, not tried again.
    let skipped = total("cache_requests_total{op=\"ticket\",result=\"skipped\"}");
    assert!(skipped >= 1.0, "the read after a failure skips the cache: {metrics}");
    stack.stop().await;
    backend.drop_database().await;
}
