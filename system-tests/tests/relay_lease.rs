//! Two app-event replicas (two outbox relays) on one storage, PostgreSQL and
//! RabbitMQ, as processes: one relay publishes at a time (the lease holder),
//! nothing is published twice while both run, and when the holder is
//! SIGKILLed the other takes over within seconds; nothing is lost, and each
//! ticket's creation is published before its cancellation throughout. A
//! holder stopped with SIGTERM hands the lease over at once instead.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::time::{Duration, Instant};

use rig::{
    amqp::{Listener, check_order},
    metrics::{self, metric},
    procs::{Procs, Setup},
    *,
};

/// For each of `tickets` new tickets, its creation and then (once that was
/// answered) its cancellation, the tickets concurrently; all must be 200.
async fn created_then_cancelled(procs: &Procs, tag: &str, tickets: usize) {
    let client = reqwest::Client::new();
    let mut sending = tokio::task::JoinSet::new();
    for i in 0..tickets {
        let (client, base, number) = (client.clone(), procs.base.clone(), format!("LEASE-{tag}-{i:03}"));
        sending.spawn(async move {
            for (event, reason) in [("ticket_created", ""), ("ticket_updated", "event_cancellation")] {
                let body = delivery(event, &number, "Concert", "20.00", reason);
                assert_eq!(post_signed(&client, &base, &body).await.status, 200, "{number} {event}");
            }
        });
    }
    sending.join_all().await;
}

async fn gauge(procs: &Procs, name: &str, metric_name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(&procs.admin(name, "/metrics"), metric_name, labels).await.unwrap_or(0.0)
}

/// Until app-event `name`'s relay reports that it holds the lease, or
/// `within` has passed; whether it does.
async fn leads_within(procs: &Procs, name: &str, within: Duration) -> bool {
    let url = procs.admin(name, "/metrics");
    metrics::wait_for(&url, "outbox_relay_leader", &[], within, |v| v == 1.0).await == 1.0
}

/// The system with a second app-event, and the gateway sent to it: the first
/// one's relay holds the lease (the second starts only once it does: a relay
/// that found storage still starting may be backing off for seconds), and
/// can be stopped without stopping the webhooks.
async fn two_relays() -> (Backend, Procs, Listener) {
    let backend = Backend::postgres(false).await;
    let exchange = unique("tm.lease");
    let listener = Listener::bind(&exchange).await;
    let setup = Setup {
        database_url: backend.database_url.clone(),
        amqp: Some((amqp_url(), exchange.clone())),
        ..Setup::default()
    };
    let mut procs = Procs::start(setup).await;
    assert!(leads_within(&procs, "app-event", Duration::from_secs(30)).await, "no lease in 30 s");
    procs.spawn_replica("app-event", "app-event-2").await;
    let second = format!("http://{}", procs.addr_of("app-event-2", "GRPC_ADDR"));
    procs.set_env("app-gateway", "EVENT_URL", second);
    procs.kill("app-gateway").await;
    procs.spawn("app-gateway").await;
    procs.ready().await;
    (backend, procs, listener)
}

#[ignore = "needs PostgreSQL, RabbitMQ and the built binaries (make test runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_relay_publishes_at_a_time_and_another_takes_over_when_it_dies() {
    let (backend, mut procs, mut listener) = two_relays().await;

    // Both relays up: one publishes, the other publishes nothing, no copies.
    created_then_cancelled(&procs, "steady", 40).await;
    let steady = listener.take(80, Duration::from_secs(30)).await;
    assert!(check_order(&steady).is_empty(), "published twice while both relays ran");
    let published = |name| gauge(&procs, name, "outbox_relay_published_total", &[("status", "published")]);
    // The counter moves once the notifier answered, which may be after the broker delivered.
    let counted = [("status", "published")];
    let url = procs.admin("app-event", "/metrics");
    metrics::wait_for(&url, "outbox_relay_published_total", &counted, Duration::from_secs(10), |n| n >= 80.0)
        .await;
    let (first, other) = (published("app-event").await, published("app-event-2").await);
    assert_eq!((first, other), (80.0, 0.0), "the first relay keeps the lease and publishes alone");
    assert_eq!(gauge(&procs, "app-event", "outbox_relay_leader", &[]).await, 1.0);
    assert_eq!(gauge(&procs, "app-event-2", "outbox_relay_leader", &[]).await, 0.0);

    // The holder dies mid-load: the other takes over once its lease expires.
    let load = {
        let base = procs.base.clone();
        tokio::spawn(async move { load::closed_loop(&base, "LEASE-kill", 150, 8).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Instant::now();
    procs.kill("app-event").await;
    // Takeover: the first time the other relay reports holding the lease.
    let takeover = {
        let url = procs.admin("app-event-2", "/metrics");
        tokio::spawn(async move {
            let within = Duration::from_secs(40);
            let leader = metrics::wait_for(&url, "outbox_relay_leader", &[], within, |v| v == 1.0).await;
            assert_eq!(leader, 1.0, "app-event-2 did not take the lease over within 40 s");
            killed.elapsed()
        })
    };
    created_then_cancelled(&procs, "after", 20).await;
    let outcomes = load.await.unwrap();
    let accepted = outcomes.iter().filter(|o| o.status == Some(200)).count();
    assert_eq!(accepted, 150, "the gateway's app-event was not the one killed");
    // Whatever the dead relay had published but not acknowledged comes again
    // (at least once); everything else exactly once, each ticket in order.
    let expected = 150 + 40;
    let mut after = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ids = std::collections::HashSet::new();
    while ids.len() < expected {
        assert!(Instant::now() < deadline, "{} of {expected} published after the kill", ids.len());
        let got = listener.take_any(Duration::from_secs(1)).await;
        for m in got {
            ids.insert(amqp::message_id(&m));
            after.push(m);
        }
    }
    let drained = killed.elapsed();
    let took_over = takeover.await.unwrap();
    let copies = check_order(&after);
    assert!(copies.len() <= 200, "more copies than one relay batch: {copies:?}");
    assert_eq!(gauge(&procs, "app-event-2", "outbox_relay_leader", &[]).await, 1.0);
    // The lease lasts 5 s from the dead holder's last renewal; the other asks every second.
    assert!(took_over < Duration::from_secs(10), "took over after {took_over:?}");
    println!(
        "took over {took_over:?} and drained {expected} messages {drained:?} after the kill; {} published twice",
        copies.len()
    );

    procs.terminate().await;
    listener.close().await;
    backend.drop_database().await;
}

// A relay stopped gracefully (SIGTERM, as in a rolling update) releases the
// lease on its way out: the other relay takes over at its next fetch (it
// asks every second), not once the lease expires (5 s after the holder's
// last renewal, which is at most a second before the stop: 4 s at least),
// and with nothing in flight nothing is published twice.
#[ignore = "needs PostgreSQL, RabbitMQ and the built binaries (make test runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_stopped_gracefully_hands_its_lease_over_at_once() {
    let (backend, mut procs, mut listener) = two_relays().await;
    created_then_cancelled(&procs, "before", 10).await;
    let before = listener.take(20, Duration::from_secs(30)).await;
    assert!(check_order(&before).is_empty());
    assert_eq!(gauge(&procs, "app-event", "outbox_relay_leader", &[]).await, 1.0);

    let first = procs.take("app-event");
    let logged = first.lines.clone();
    let status = first.terminate().await;
    assert!(status.success(), "app-event exited with {status}");
    // Its last lines may still be on their way through the pipe.
    let released = || logged.lock().unwrap().iter().any(|l| l["message"] == "outbox relay lease released");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !released() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(released(), "app-event did not release the lease on its way out");
    // Timed from the exit (however long the shutdown took on a busy machine):
    // at most app-event-2's next idle fetch, a second away, not the expiry.
    let exited = Instant::now();
    assert!(
        leads_within(&procs, "app-event-2", Duration::from_secs(10)).await,
        "app-event-2 never took the lease"
    );
    let took_over = exited.elapsed();
    assert!(
        took_over < Duration::from_secs(3),
        "took over {took_over:?} after app-event exited: the lease was not released"
    );

    created_then_cancelled(&procs, "after", 10).await;
    let after = listener.take(20, Duration::from_secs(30)).await;
    assert!(check_order(&after).is_empty(), "published twice across a graceful handover");
    assert!(listener.take_any(Duration::from_millis(500)).await.is_empty(), "nothing more, no copy");
    println!("took over {took_over:?} after SIGTERM");

    procs.terminate().await;
    listener.close().await;
    backend.drop_database().await;
}
