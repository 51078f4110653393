//! Fault rules, live: `/faults` on every admin port sets, checks and clears
//! them; each scenario of `scripts/break-scenarios.json` (what `make break`
//! switches on) moves the signal the README promises, under traffic, on
//! PostgreSQL, Redis and RabbitMQ; after the heal everything is as before,
//! and every webhook answered 2xx is stored once and published once.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use rig::{
    amqp::{Listener, message_id, wait_until_published},
    load,
    metrics::{self, metric},
    *,
};
use serde_json::{Value, json};

const SCENARIOS: &str = include_str!("../../scripts/break-scenarios.json");

fn admin(stack: &Stack, service: &str) -> String {
    let base = match service {
        "app-storage" => &stack.storage_admin,
        "app-event" => &stack.event_admin,
        "app-notifier" => &stack.notifier_admin,
        "app-gateway" => &stack.gateway_admin,
        other => panic!("no service {other}"),
    };
    format!("{base}/faults")
}

async fn put(client: &reqwest::Client, url: &str, body: Value) -> Answer {
    send(client.put(url).json(&body)).await
}

/// Switches a scenario on: its rules, service by service, as `make break` does.
async fn break_it(client: &reqwest::Client, stack: &Stack, name: &str) {
    let scenarios: Value = serde_json::from_str(SCENARIOS).unwrap();
    let faults = scenarios[name]["faults"].as_object().unwrap_or_else(|| panic!("no scenario {name}"));
    for (service, rules) in faults {
        let answer = put(client, &admin(stack, service), json!({"rules": rules})).await;
        assert_eq!(answer.status, 200, "{service}: {}", answer.body);
        assert_eq!(answer.body["rules"].as_array().unwrap().len(), rules.as_array().unwrap().len());
    }
}

/// Clears every service's rules, as `make heal` does.
async fn heal(client: &reqwest::Client, stack: &Stack) {
    for service in ["app-storage", "app-event", "app-notifier", "app-gateway"] {
        let answer = send(client.delete(admin(stack, service))).await;
        assert_eq!((answer.status, &answer.body["rules"]), (200, &json!([])), "{service}");
    }
}

/// A counter or gauge on `service_url`'s `/metrics`, 0 before its first use.
async fn count(service_url: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(&format!("{service_url}/metrics"), name, labels).await.unwrap_or(0.0)
}

/// `n` reads of /api/stats, 4 at a time: how many got each status, and the
/// error codes of the failures.
async fn reads(stack: &Arc<Stack>, n: usize) -> (HashMap<u16, usize>, Vec<String>) {
    let client = reqwest::Client::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(4));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (gate, client, stack) = (gate.clone(), client.clone(), stack.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            get(&client, stack.url("/api/stats")).await
        });
    }
    let (mut statuses, mut codes) = (HashMap::new(), Vec::new());
    for answer in tasks.join_all().await {
        *statuses.entry(answer.status).or_default() += 1;
        if answer.status != 200 {
            codes.push(answer.body["error"]["code"].as_str().unwrap_or("not JSON").to_owned());
        }
    }
    (statuses, codes)
}

/// Sends `n` fresh signed deliveries, 8 at a time; returns the ticket numbers
/// answered 200 (all must be: no scenario faults a write's answer).
async fn webhooks(stack: &Stack, tag: &str, n: usize) -> Vec<String> {
    let mut numbers = Vec::new();
    for o in load::closed_loop(&stack.base, &format!("FLT-{tag}"), n, 8).await {
        assert_eq!((o.status, &o.body["duplicate"]), (Some(200), &Value::Bool(false)), "{}", o.body);
        numbers.push(o.number);
    }
    numbers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_set_checked_and_cleared_on_the_admin_ports() {
    let _turn = registry_turn().await;
    let backend = Backend::sqlite();
    let stack = Stack::start(&backend).await.ready().await;
    let client = reqwest::Client::new();
    let storage = admin(&stack, "app-storage");

    let listed = get(&client, storage.clone()).await.body;
    assert_eq!(listed["rules"], json!([]));
    assert!(listed["targets"]["methods"].as_array().unwrap().contains(&json!("StorageService/GetStats")));
    assert_eq!(listed["targets"]["dependencies"], json!(["db"]));

    let set = put(&client, &storage, json!({"rules": ["GetStats=unavailable@0.5"]})).await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(set.body["rules"][0]["rule"], "StorageService/GetStats=unavailable@0.5");

    // Bad input: 400 naming the bad part, and the rules in force stay.
    let bad = [
        (json!({"rules": ["GetStat=unavailable"]}), "unknown method \"GetStat\""),
        (
            json!({"rules": [{"target": "GetStats", "fault": "unavailable", "rate": 1.5}]}),
            "rate \"1.5\" is outside 0..1",
        ),
        (
            json!({"rules": [{"target": "*", "fault": "delay", "delay": "-20ms"}]}),
            "delay \"-20ms\" is negative",
        ),
    ];
    for (body, wanted) in bad {
        let answer = put(&client, &storage, body).await;
        assert_eq!(
            (answer.status, &answer.body["error"]),
            (400, &json!("invalid_fault_rules")),
            "{}",
            answer.body
        );
        assert!(answer.body["message"].as_str().unwrap().contains(wanted), "{}", answer.body);
    }
    let malformed = send(client.put(&storage).body("{\"rules\": [")).await;
    assert_eq!(malformed.status, 400);
    assert!(malformed.body["message"].as_str().unwrap().contains("not JSON"), "{}", malformed.body);
    let kept = get(&client, storage.clone()).await.body;
    assert_eq!(
        kept["rules"][0]["rule"], "StorageService/GetStats=unavailable@0.5",
        "bad input changed nothing"
    );

    // A fault on the webhook route: 503 + Retry-After before anything is
    // stored; the sender's retry after the heal is stored once.
    let gateway = admin(&stack, "app-gateway");
    let set = put(&client, &gateway, json!({"rules": ["POST /webhook=unavailable"]})).await;
    assert_eq!(set.status, 200, "{}", set.body);
    let body = delivery("ticket_created", "FLT-ADMIN-1", "Concert", "20.00", "");
    let refused = post_signed(&client, &stack, &body).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "fault_injected");
    assert!(refused.headers.contains_key("retry-after"));
    assert_eq!(backend.count("SELECT COUNT(*) FROM events").await, 0, "an injected error stores nothing");
    let labels = [("service", "app-gateway"), ("method", "POST /webhook"), ("kind", "unavailable")];
    assert!(count(&stack.gateway_admin, "faults_injected_total", &labels).await >= 1.0);

    heal(&client, &stack).await;
    let retried = post_signed(&client, &stack, &body).await;
    assert_eq!((retried.status, &retried.body["duplicate"]), (200, &Value::Bool(false)), "{}", retried.body);
    let again = post_signed(&client, &stack, &body).await;
    assert_eq!(again.body["duplicate"], true);
    assert_eq!(backend.count("SELECT COUNT(*) FROM events").await, 1);
    assert_eq!(get(&client, stack.url("/api/stats")).await.status, 200);

    stack.stop().await;
    backend.drop_database().await;
}

#[ignore = "needs PostgreSQL, Redis and RabbitMQ (make test runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_scenario_moves_its_signal_and_the_heal_loses_nothing() {
    let _turn = registry_turn().await;
    let backend = Backend::postgres(true).await;
    let exchange = unique("faults");
    let mut listener = Listener::bind(&exchange).await;
    let options = Options {
        amqp: Some((amqp_url(), exchange.clone())),
        read_timeout: Some(Duration::from_millis(250)),
        ..Options::default()
    };
    let stack = Arc::new(Stack::start_with(&backend, options).await.ready().await);
    let client = reqwest::Client::new();
    let mut accepted = webhooks(&stack, "before", 10).await;

    // flaky-reads: ~30 % of reads fail (503 JSON), writes untouched.
    let injected =
        [("service", "app-storage"), ("method", "StorageService/GetStats"), ("kind", "unavailable")];
    let injected_before = count(&stack.storage_admin, "faults_injected_total", &injected).await;
    break_it(&client, &stack, "flaky-reads").await;
    let (statuses, codes) = reads(&stack, 200).await;
    let failed = statuses.get(&503).copied().unwrap_or(0);
    assert!((30..=90).contains(&failed), "503s in 200 reads at 30 %: {statuses:?}");
    assert_eq!(statuses.get(&200).copied().unwrap_or(0) + failed, 200, "only 200 or 503: {statuses:?}");
    assert!(codes.iter().all(|c| c == "unavailable"), "{codes:?}");
    accepted.extend(webhooks(&stack, "flaky", 20).await);
    let injected_now = count(&stack.storage_admin, "faults_injected_total", &injected).await;
    assert_eq!(injected_now - injected_before, failed as f64, "one count per injected error");
    heal(&client, &stack).await;
    assert_eq!(reads(&stack, 20).await.0, HashMap::from([(200, 20)]), "healed");

    // slow-storage: +300 ms on every storage call; reads pass the gateway's
    // 250 ms read deadline (504 JSON), writes are slow but stored.
    break_it(&client, &stack, "slow-storage").await;
    let (statuses, codes) = reads(&stack, 8).await;
    assert_eq!(statuses, HashMap::from([(504, 8)]), "{codes:?}");
    assert!(codes.iter().all(|c| c == "deadline_exceeded"), "{codes:?}");
    let started = Instant::now();
    accepted.extend(webhooks(&stack, "slow", 8).await);
    assert!(started.elapsed() >= Duration::from_millis(300), "writes waited too: {:?}", started.elapsed());
    let delayed = [("service", "app-storage"), ("method", "StorageService/SaveEvent"), ("kind", "delay")];
    assert!(count(&stack.storage_admin, "faults_injected_total", &delayed).await >= 8.0);
    heal(&client, &stack).await;
    assert_eq!(reads(&stack, 10).await.0, HashMap::from([(200, 10)]), "healed");

    // broker-down: webhooks still accepted (stored), nothing published, the
    // backlog grows; after the heal it drains and each arrives once.
    wait_until_published(&backend).await;
    let before = listener.take(accepted.len(), Duration::from_secs(15)).await;
    break_it(&client, &stack, "broker-down").await;
    let during = webhooks(&stack, "broker", 30).await;
    // The relay's next fetch reports the backlog; its publishes fail.
    let within = Duration::from_secs(10);
    let storage = format!("{}/metrics", stack.storage_admin);
    let backlog = metrics::wait_for(&storage, "outbox_backlog", &[], within, |b| b >= 30.0).await;
    assert!(backlog >= 30.0, "outbox backlog {backlog} after 30 webhooks with the broker down");
    let failed = [("routing_key", "ticket.created"), ("status", "failed")];
    let notifier = format!("{}/metrics", stack.notifier_admin);
    assert!(metrics::wait_for(&notifier, "amqp_publish_total", &failed, within, |n| n >= 1.0).await >= 1.0);
    let amqp = [("service", "app-notifier"), ("method", "amqp"), ("kind", "unavailable")];
    assert!(count(&stack.notifier_admin, "faults_injected_total", &amqp).await >= 1.0);
    heal(&client, &stack).await;
    wait_until_published(&backend).await;
    let after = listener.take(during.len(), Duration::from_secs(15)).await;
    accepted.extend(during);

    // forged-webhooks: no rule, bad signatures: every one 401, counted.
    let forged_before =
        count(&stack.base, "webhook_requests_total", &[("status", "invalid_signature")]).await;
    for i in 0..10 {
        let body = delivery("ticket_created", &format!("FLT-FORGED-{i}"), "Concert", "20.00", "");
        let signature = format!("t={},v1={}", now(), "0".repeat(64));
        let headers = [("content-type", "application/json"), ("petzi-signature", signature.as_str())];
        let answer = post(&client, &stack, body.into_bytes(), &headers).await;
        assert_eq!(
            (answer.status, &answer.body["error"]["code"]),
            (401, &json!("invalid_signature")),
            "{}",
            answer.body
        );
    }
    let forged = count(&stack.base, "webhook_requests_total", &[("status", "invalid_signature")]).await;
    assert!(forged - forged_before >= 10.0, "{forged_before} → {forged}");

    // Nothing lost, nothing twice: every 2xx stored once, published once.
    let mut published: Vec<String> = before.iter().chain(&after).map(message_id).collect();
    published.sort();
    let mut stored: Vec<String> = Vec::new();
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&backend.database_url).await.unwrap();
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT delivery_id, ticket_number FROM events ORDER BY delivery_id")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        let mut numbers: Vec<&str> = rows.iter().map(|(_, n)| n.as_str()).collect();
        numbers.sort();
        accepted.sort();
        assert_eq!(numbers, accepted.iter().map(String::as_str).collect::<Vec<_>>(), "each 2xx stored once");
        stored.extend(rows.into_iter().map(|(id, _)| id));
    }
    assert_eq!(published, stored, "each stored event published once");

    Arc::into_inner(stack).unwrap().stop().await;
    listener.close().await;
    backend.drop_database().await;
}
