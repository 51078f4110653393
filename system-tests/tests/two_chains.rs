//! Two chains on shared books, as processes: two gateways, two app-event and
//! two app-storage (chain 0 the topology's binaries, chain 1 their replicas,
//! each calling only its own chain), on one PostgreSQL database, one
//! app-notifier and one RabbitMQ exchange. Each of 150 tickets is created
//! through one chain and, once that was answered 200, cancelled through the
//! other (a sender retries a 503/504, as PETZI does), the tickets
//! concurrently, with steady extra creations on both chains. Then the books:
//! - every delivery answered 200 is in `events` exactly once;
//! - the outbox is drained, and every stored message reached RabbitMQ, none
//!   that was not stored;
//! - each ticket's creation was published before its cancellation, although
//!   the two were stored by different storage replicas;
//! - with no fault, no message came twice (one relay publishes at a time);
//! - with the relay lease holder SIGKILLed mid-run (and started again 2 s
//!   later, so its chain recovers; meanwhile its gateway answers 503), another
//!   relay takes over, and only the dead relay's in-flight batch comes twice.
//!
//! The tests take turns (one lock): each stack alone saturates two cores.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rig::{
    amqp::{self, Listener},
    load::{self, Outcome},
    metrics,
    procs::{Procs, Setup},
    *,
};
use serde_json::Value;

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The app-event of each chain (chain 0, chain 1).
const EVENTS: [&str; 2] = ["app-event", "app-event-2"];
/// Tickets created through one chain and cancelled through the other.
const TICKETS: usize = 150;
/// The pairs start over this many seconds; the extra creations run as long.
const LOAD_SECONDS: f64 = 8.0;
/// Extra creations a second, on each chain.
const EXTRA_RATE: u32 = 10;
/// How many messages a relay fetches at once (app-event's batch): at most
/// this many were published but not acknowledged when a relay dies.
const RELAY_BATCH: usize = 200;
/// How long a sender retries one delivery refused with 503/504.
const RETRY_FOR: Duration = Duration::from_secs(40);

/// The two chains, the test's database and its exchange's listener.
struct Chains {
    backend: Backend,
    listener: Listener,
    procs: Procs,
    /// Each chain's gateway.
    bases: [String; 2],
}

impl Chains {
    async fn start() -> Self {
        let backend = Backend::postgres(false).await;
        let exchange = unique("tm.chains");
        let listener = Listener::bind(&exchange).await;
        let setup = Setup {
            database_url: backend.database_url.clone(),
            amqp: Some((amqp_url(), exchange)),
            ..Setup::default()
        };
        let mut procs = Procs::start(setup).await;
        // The second chain, from the bottom up; the notifier is the one of the first.
        procs.spawn_replica("app-storage", "app-storage-2").await;
        let storage = format!("http://{}", procs.addr_of("app-storage-2", "GRPC_ADDR"));
        procs.spawn_replica_with("app-event", "app-event-2", &[("STORAGE_URL", storage.clone())]).await;
        let event = format!("http://{}", procs.addr_of("app-event-2", "GRPC_ADDR"));
        procs
            .spawn_replica_with(
                "app-gateway",
                "app-gateway-2",
                &[("EVENT_URL", event), ("STORAGE_URL", storage)],
            )
            .await;
        procs.ready_of("app-gateway-2").await;
        let bases = [procs.base.clone(), procs.base_of("app-gateway-2")];
        Self { backend, listener, procs, bases }
    }

    async fn stop(self) {
        self.procs.terminate().await;
        self.listener.close().await;
        self.backend.drop_database().await;
    }

    fn metrics_url(&self, event: &str) -> String {
        self.procs.admin(event, "/metrics")
    }

    /// The app-event whose relay holds the lease (its `outbox_relay_leader`
    /// is 1, the other's 0), once the gauges say so.
    async fn leader(&self) -> &'static str {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut leaders = Vec::new();
            for event in EVENTS {
                let gauge = metrics::metric_if_up(&self.metrics_url(event), "outbox_relay_leader", &[]).await;
                if gauge == Some(1.0) {
                    leaders.push(event);
                }
            }
            if let [leader] = leaders[..] {
                return leader;
            }
            assert!(Instant::now() < deadline, "no single relay leader after 20 s: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// One answer to one attempt at one delivery.
#[derive(Debug, Clone)]
struct Attempt {
    number: String,
    event: &'static str,
    chain: usize,
    status: Option<u16>,
    body: Value,
}

async fn post(client: &reqwest::Client, base: &str, body: &str) -> (Option<u16>, Value) {
    let request = client
        .post(format!("{base}/webhook"))
        .header("content-type", "application/json")
        .header("petzi-signature", sign(body.as_bytes()))
        .body(body.to_owned());
    match request.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            (Some(status), serde_json::from_str(&text).unwrap_or(Value::String(text)))
        }
        Err(e) => (None, Value::String(e.to_string())),
    }
}

/// Ticket `number` created through chain `first`, then, once that was
/// answered 200, cancelled through the other; each delivery sent again (the
/// same body, signed anew) while it is answered 503/504, as PETZI's sender
/// does. Every attempt goes to `log`.
async fn created_then_cancelled(
    client: reqwest::Client,
    bases: Arc<[String; 2]>,
    number: String,
    first: usize,
    log: Arc<Mutex<Vec<Attempt>>>,
) {
    for (event, reason, chain) in
        [("ticket_created", "", first), ("ticket_updated", "event_cancellation", 1 - first)]
    {
        let body = delivery(event, &number, "Concert", "20.00", reason);
        let deadline = Instant::now() + RETRY_FOR;
        loop {
            let (status, answer) = post(&client, &bases[chain], &body).await;
            log.lock().unwrap().push(Attempt {
                number: number.clone(),
                event,
                chain,
                status,
                body: answer.clone(),
            });
            if status == Some(200) {
                break;
            }
            assert!(
                matches!(status, Some(503 | 504)) && answer["error"]["code"].is_string(),
                "{number} {event} through chain {chain}: {status:?} {answer}"
            );
            assert!(
                Instant::now() < deadline,
                "{number} {event}: chain {chain} refused it for {RETRY_FOR:?}, last with {status:?} {answer}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// What the load sent: every attempt of the pairs, and the extra creations
/// of each chain (sent once, not retried).
struct Sent {
    pairs: Vec<Attempt>,
    extras: [Vec<Outcome>; 2],
}

/// The pairs (ticket i created through chain i % 2) started at an even pace
/// over [`LOAD_SECONDS`], with [`EXTRA_RATE`] extra creations a second on
/// each chain meanwhile.
fn start_load(bases: &[String; 2], tag: &str) -> tokio::task::JoinHandle<Sent> {
    let bases = Arc::new(bases.clone());
    let tag = tag.to_owned();
    tokio::spawn(async move {
        let extras = [0, 1].map(|chain| {
            load::open_loop(&bases[chain], &format!("TWO-{tag}-x{chain}"), EXTRA_RATE, LOAD_SECONDS)
        });
        let client = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut pairs = tokio::task::JoinSet::new();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(LOAD_SECONDS / TICKETS as f64));
        for i in 0..TICKETS {
            tick.tick().await;
            let number = format!("TWO-{tag}-{i:03}");
            pairs.spawn(created_then_cancelled(client.clone(), bases.clone(), number, i % 2, log.clone()));
        }
        pairs.join_all().await;
        let [first, second] = extras;
        let extras = [first.await.unwrap(), second.await.unwrap()];
        let pairs = Arc::into_inner(log).unwrap().into_inner().unwrap();
        Sent { pairs, extras }
    })
}

/// The refusals by chain `chain` other than a gateway shedding load
/// (`overloaded`, which a busy machine may cause): "ticket event: answer".
fn broken_refusals(sent: &Sent, chain: usize) -> Vec<String> {
    let pairs =
        sent.pairs.iter().filter(|a| a.chain == chain).map(|a| (&a.number, a.event, a.status, &a.body));
    let extras = sent.extras[chain].iter().map(|o| (&o.number, "ticket_created", o.status, &o.body));
    pairs
        .chain(extras)
        .filter(|(.., status, body)| *status != Some(200) && body["error"]["code"] != "overloaded")
        .map(|(number, event, status, body)| format!("{number} {event}: {status:?} {body}"))
        .collect()
}

/// The figures of a run's books.
#[derive(Debug)]
struct Books {
    /// Deliveries answered 200 (a pair's delivery once, however many attempts).
    accepted: usize,
    /// Answers 503/504 (each a delivery its sender would send again).
    refused: usize,
    /// Rows in `events`.
    stored: usize,
    /// Distinct message ids that reached RabbitMQ.
    published: usize,
    /// Message ids that reached RabbitMQ more than once, and the copies beyond the first.
    duplicated: usize,
    copies: usize,
    /// 503/504 answers per chain.
    refused_by_chain: [usize; 2],
}

/// The books after a run (see the module's documentation).
async fn audit(chains: &mut Chains, sent: &Sent) -> Books {
    // The answers: 200, or 503/504 with a JSON error (a sender retries those).
    let mut accepted: HashMap<String, (String, &'static str)> = HashMap::new();
    let mut refused_by_chain = [0, 0];
    for a in &sent.pairs {
        if a.status == Some(200) {
            assert_eq!(a.body["ticket_number"], a.number.as_str(), "{a:?}");
            assert_eq!(a.body["event"], a.event, "{a:?}");
            let id = a.body["delivery_id"].as_str().unwrap().to_owned();
            accepted.insert(id, (a.number.clone(), a.event));
        } else {
            refused_by_chain[a.chain] += 1;
        }
    }
    // The pairs were retried until accepted: each ticket in both events.
    let pairs: HashSet<(&str, &str)> = accepted.values().map(|(n, e)| (n.as_str(), *e)).collect();
    assert_eq!(pairs.len(), 2 * TICKETS, "a pair's delivery was never accepted");
    for (chain, outcomes) in sent.extras.iter().enumerate() {
        for o in outcomes {
            match o.status {
                Some(200) => {
                    assert_eq!(o.body["ticket_number"], o.number.as_str(), "{o:?}");
                    let id = o.body["delivery_id"].as_str().unwrap().to_owned();
                    accepted.insert(id, (o.number.clone(), "ticket_created"));
                }
                Some(503 | 504) if o.body["error"]["code"].is_string() => refused_by_chain[chain] += 1,
                _ => panic!("{} through chain {chain}: {:?} {}", o.number, o.status, o.body),
            }
        }
    }

    // Stored: every delivery answered 200, exactly once; nothing half-written.
    chains.backend.assert_whole().await;
    let rows: Vec<(String, String, String)> = {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&chains.backend.database_url).await.unwrap();
        sqlx::query_as("SELECT delivery_id, ticket_number, event_type FROM events")
            .fetch_all(&mut conn)
            .await
            .unwrap()
    };
    let mut per_event: HashMap<(&str, &str), usize> = HashMap::new();
    for (_, number, event) in &rows {
        *per_event.entry((number.as_str(), event.as_str())).or_default() += 1;
    }
    let twice: Vec<_> = per_event.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "a ticket's event stored more than once: {twice:?}");
    let stored: HashSet<String> = rows.iter().map(|(id, ..)| id.clone()).collect();
    let lost: Vec<_> = accepted.iter().filter(|(id, _)| !stored.contains(*id)).map(|(_, n)| n).collect();
    assert!(lost.is_empty(), "{} answered 200 but not stored, e.g. {:?}", lost.len(), lost.first());

    // Published: every stored message, nothing else, each ticket in order.
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut arrived = Vec::new();
    let mut seen = HashSet::new();
    loop {
        let missing = stored.iter().filter(|id| !seen.contains(*id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} stored messages had not reached RabbitMQ after 45 s",
            stored.len()
        );
        for m in chains.listener.take_any(Duration::from_millis(500)).await {
            seen.insert(amqp::message_id(&m));
            arrived.push(m);
        }
    }
    amqp::wait_until_published(&chains.backend).await;
    let unpublished = chains.backend.count("SELECT COUNT(*) FROM outbox WHERE published_at_ms IS NULL").await;
    assert_eq!(unpublished, 0, "the outbox is not drained");
    arrived.extend(chains.listener.take_any(Duration::from_secs(1)).await);
    let strangers: Vec<String> =
        arrived.iter().map(amqp::message_id).filter(|id| !stored.contains(id)).collect();
    assert!(strangers.is_empty(), "published but never stored: {strangers:?}");
    let again = amqp::check_order(&arrived);
    Books {
        accepted: accepted.len(),
        refused: refused_by_chain.iter().sum(),
        stored: rows.len(),
        published: seen.len(),
        duplicated: again.len(),
        copies: again.values().map(|n| n - 1).sum(),
        refused_by_chain,
    }
}

#[ignore = "needs PostgreSQL, RabbitMQ and the built binaries (make test runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chains_share_the_books_with_one_publisher() {
    let _turn = TURN.lock().await;
    let mut chains = Chains::start().await;
    let leader = chains.leader().await;
    let sent = start_load(&chains.bases, "steady").await.unwrap();
    let books = audit(&mut chains, &sent).await;
    // A refusal here can only be a gateway shedding load (a busy machine),
    // never a chain failing.
    for chain in [0, 1] {
        let refused = broken_refusals(&sent, chain);
        assert!(refused.is_empty(), "chain {chain} refused with nothing broken: {:?}", refused.first());
    }
    assert_eq!(books.duplicated, 0, "published twice while both relays ran: {books:?}");
    // What the relays published adds up to what was stored: no message went
    // out twice from either (the lease holder publishes; on a machine slow
    // enough to let the lease lapse, the other may take over, never at once).
    let published = |event| {
        let url = chains.metrics_url(event);
        async move {
            metrics::metric(&url, "outbox_relay_published_total", &[("status", "published")])
                .await
                .unwrap_or(0.0) as usize
        }
    };
    let by_relay = [published(EVENTS[0]).await, published(EVENTS[1]).await];
    assert_eq!(by_relay.iter().sum::<usize>(), books.stored, "published by each relay: {by_relay:?}");
    println!(
        "two chains, no fault: accepted {}, refused {} (overloaded), stored {}, published {} \
         ({by_relay:?} by {EVENTS:?}; lease holder at the start {leader}), duplicates 0, lost 0, unpublished 0",
        books.accepted, books.refused, books.stored, books.published
    );
    chains.stop().await;
}

#[ignore = "needs PostgreSQL, RabbitMQ and the built binaries (make test runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chains_when_the_relay_lease_holder_is_sigkilled() {
    let _turn = TURN.lock().await;
    let mut chains = Chains::start().await;
    let load = start_load(&chains.bases, "kill");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let leader = chains.leader().await;
    let killed_chain = EVENTS.iter().position(|e| *e == leader).unwrap();
    let urls = EVENTS.map(|e| chains.metrics_url(e));
    let killed = Instant::now();
    chains.procs.kill(leader).await;
    // Takeover: the first time a relay (the other, or the killed one started
    // again) reports holding the lease.
    let takeover = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            for (event, url) in EVENTS.iter().zip(&urls) {
                if metrics::metric_if_up(url, "outbox_relay_leader", &[]).await == Some(1.0) {
                    return (killed.elapsed(), *event);
                }
            }
            assert!(Instant::now() < deadline, "no relay took the lease over within 40 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // Its chain's gateway answers 503 meanwhile; started again, the chain recovers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    chains.procs.spawn(leader).await;
    let sent = load.await.unwrap();
    let (took_over, successor) = takeover.await.unwrap();
    let books = audit(&mut chains, &sent).await;
    // The other chain went on as if nothing happened.
    let other = broken_refusals(&sent, 1 - killed_chain);
    assert!(other.is_empty(), "the chain whose app-event lived refused: {:?}", other.first());
    assert!(
        !broken_refusals(&sent, killed_chain).is_empty(),
        "the killed app-event's gateway refused nothing"
    );
    assert!(
        books.copies <= RELAY_BATCH,
        "more copies than the dead relay's batch of {RELAY_BATCH}: {books:?}"
    );
    assert!(took_over < Duration::from_secs(20), "took over after {took_over:?}");
    println!(
        "two chains, {leader} (chain {killed_chain}) SIGKILLed and started again 2 s later: accepted {}, \
         refused {} (503/504 by chain: {:?}), stored {}, published {}, duplicates {} ({} copies), lost 0, \
         unpublished 0, takeover {:.1} s (by {successor})",
        books.accepted,
        books.refused,
        books.refused_by_chain,
        books.stored,
        books.published,
        books.duplicated,
        books.copies,
        took_over.as_secs_f64()
    );
    chains.stop().await;
}
