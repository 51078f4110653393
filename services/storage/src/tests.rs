//! The StorageService handlers called directly, on SQLite in a temp dir and
//! with no cache: built as `serve()` builds them, readiness included, so no
//! PostgreSQL or Redis is needed.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
};

use ticketmesh_proto::v1::{EventType, Money, Ticket, TicketEvent};
use tonic::Code;

use super::*;

const TIMEOUT: Duration = Duration::from_secs(5);

/// A storage service on its own SQLite file, removed when dropped.
struct Fixture {
    storage: Storage,
    dir: PathBuf,
    /// Keeps the database watcher running.
    _stop: watch::Sender<bool>,
}

impl std::ops::Deref for Fixture {
    type Target = Storage;
    fn deref(&self) -> &Storage {
        &self.storage
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The service as `serve()` makes it; `ready` waits until the database
/// watcher has migrated it and reports SERVING, as a server would.
async fn storage(ready: bool) -> Fixture {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tm-storage-handlers-{}-{n}", std::process::id()));
    let url = format!("sqlite:{}?mode=rwc", dir.join("storage.db").display());
    let db = Database::connect_lazy(&url, TIMEOUT).unwrap();
    let health = GrpcServer::new(&[storage_service_server::SERVICE_NAME]).await.unwrap().health();
    let stats = StatsMemo::default();
    let writer = Writer::start(db.clone(), None, stats.clone(), 256, 1, TIMEOUT);
    let (stop, stopping) = watch::channel(false);
    if ready {
        tokio::spawn(watch_database(db.clone(), health.clone(), TIMEOUT, stopping));
        let readiness = health.readiness();
        let migrated = async {
            while !readiness.get() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(TIMEOUT, migrated).await.expect("the database watcher reports SERVING");
    }
    Fixture {
        storage: Storage { db, cache: None, stats, writer, health, timeout: TIMEOUT },
        dir,
        _stop: stop,
    }
}

/// A ticket of 20.00 CHF in `category`, for event 1.
fn ticket(number: &str, category: &str) -> Ticket {
    Ticket {
        number: number.into(),
        r#type: "online_presale".into(),
        category: category.into(),
        event_id: 1,
        price: Some(Money::from_cents("CHF", 2000)),
        ..Ticket::default()
    }
}

fn event(delivery_id: &str, kind: EventType, ticket: Ticket, received_ms: i64) -> TicketEvent {
    let mut event = TicketEvent {
        delivery_id: delivery_id.into(),
        ticket: Some(ticket),
        received_at: Some(db::timestamp(received_ms)),
        ..TicketEvent::default()
    };
    event.set_type(kind);
    event
}

fn created(delivery_id: &str, ticket: Ticket) -> TicketEvent {
    event(delivery_id, EventType::TicketCreated, ticket, 1_000)
}

async fn save(s: &Storage, event: TicketEvent, traceparent: &str) -> Result<SaveEventResponse, Status> {
    let request =
        SaveEventRequest { event: Some(event), payload: b"{}".to_vec(), traceparent: traceparent.into() };
    s.save_event(Request::new(request)).await.map(Response::into_inner)
}

async fn get(s: &Storage, number: &str) -> Result<StoredTicket, Status> {
    s.get_ticket(Request::new(GetTicketRequest { number: number.into() })).await.map(Response::into_inner)
}

/// The ticket numbers of one page, and its next_page_token.
async fn list(s: &Storage, request: ListTicketsRequest) -> Result<(Vec<String>, String), Status> {
    let page = s.list_tickets(Request::new(request)).await?.into_inner();
    let numbers = page.tickets.into_iter().map(|t| t.ticket.unwrap_or_default().number).collect();
    Ok((numbers, page.next_page_token))
}

async fn fetch(s: &Storage, limit: i32) -> Result<FetchOutboxResponse, Status> {
    s.fetch_outbox(Request::new(FetchOutboxRequest { limit, relay_id: "relay-a".into(), lease: None }))
        .await
        .map(Response::into_inner)
}

// SaveEvent stores a delivery once: the same delivery id again is answered
// `duplicate` and adds no second outbox message.
#[tokio::test]
async fn save_event_stores_once_and_answers_duplicate_for_the_same_delivery_id() {
    let s = storage(true).await;
    let first = save(&s, created("d1", ticket("T1", "Concert")), "").await.unwrap();
    assert_eq!((first.delivery_id.as_str(), first.duplicate), ("d1", false));
    let again = save(&s, created("d1", ticket("T1", "Concert")), "").await.unwrap();
    assert_eq!((again.delivery_id.as_str(), again.duplicate), ("d1", true));

    let stored = get(&s, "T1").await.unwrap();
    assert_eq!(stored.last_event(), EventType::TicketCreated);
    assert_eq!(stored.ticket.unwrap().category, "Concert");
    assert_eq!(fetch(&s, 0).await.unwrap().backlog, 1, "a duplicate makes no outbox message");
}

// SaveEvent refuses an event it cannot key: no event, no delivery id, no ticket number.
#[tokio::test]
async fn save_event_without_delivery_id_or_ticket_number_is_invalid_argument() {
    let s = storage(true).await;
    let no_event = SaveEventRequest::default();
    assert_eq!(s.save_event(Request::new(no_event)).await.unwrap_err().code(), Code::InvalidArgument);
    let no_id = save(&s, created("", ticket("T1", "Concert")), "").await.unwrap_err();
    assert_eq!((no_id.code(), no_id.message()), (Code::InvalidArgument, "event.delivery_id is required"));
    let no_number = save(&s, created("d1", ticket("", "Concert")), "").await.unwrap_err();
    assert_eq!(no_number.code(), Code::InvalidArgument);
    assert_eq!(fetch(&s, 0).await.unwrap().backlog, 0, "nothing was stored");
}

// A ticket_updated carrying a cancellation reason replaces the ticket's
// state; it keeps the time the ticket was first seen.
#[tokio::test]
async fn a_cancelling_update_changes_the_stored_ticket() {
    let s = storage(true).await;
    save(&s, event("d1", EventType::TicketCreated, ticket("T1", "Concert"), 1_000), "").await.unwrap();
    let cancelled = Ticket { cancellation_reason: "event_cancellation".into(), ..ticket("T1", "Concert") };
    assert!(!save(&s, event("d2", EventType::TicketUpdated, cancelled, 2_000), "").await.unwrap().duplicate);

    let stored = get(&s, "T1").await.unwrap();
    assert_eq!(stored.last_event(), EventType::TicketUpdated);
    assert_eq!(stored.ticket.as_ref().unwrap().cancellation_reason, "event_cancellation");
    assert_eq!(db::millis(stored.created_at.as_ref()), 1_000);
    assert_eq!(db::millis(stored.updated_at.as_ref()), 2_000);
}

// GetTicket of a number never stored is NOT_FOUND, the number quoted; an
// empty number is INVALID_ARGUMENT.
#[tokio::test]
async fn get_ticket_of_an_unknown_number_is_not_found_with_the_number_quoted() {
    let s = storage(true).await;
    let missing = get(&s, "PETZI-404").await.unwrap_err();
    assert_eq!((missing.code(), missing.message()), (Code::NotFound, "no ticket \"PETZI-404\""));
    assert_eq!(get(&s, "").await.unwrap_err().code(), Code::InvalidArgument);
    // A 70 KB number is quoted shortened: the error fits any header budget.
    let long = "N".repeat(70_000);
    let missing = get(&s, &long).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(missing.message().len() < 200 && missing.message().contains("70000"), "{}", missing.message());
}

// ListTickets: newest first, page by page through next_page_token (empty on
// the last page), the default page size when 0, and each filter.
#[tokio::test]
async fn list_tickets_pages_newest_first_and_filters() {
    let s = storage(true).await;
    for (i, category) in ["Concert", "Theater", "Concert", "Comedy", "Concert"].into_iter().enumerate() {
        let number = format!("T{i}");
        let ticket = Ticket { event_id: 10 + (i as i64 % 2), ..ticket(&number, category) };
        let ticket = if i == 3 { Ticket { r#type: "vip_ticket".into(), ..ticket } } else { ticket };
        save(&s, created(&format!("d{i}"), ticket), "").await.unwrap();
    }
    let page = |size: i32, token: &str| ListTicketsRequest {
        page_size: size,
        page_token: token.into(),
        ..ListTicketsRequest::default()
    };

    let (first, token) = list(&s, page(2, "")).await.unwrap();
    assert_eq!(first, ["T4", "T3"]);
    let (second, token) = list(&s, page(2, &token)).await.unwrap();
    assert_eq!(second, ["T2", "T1"]);
    let (last, token) = list(&s, page(2, &token)).await.unwrap();
    assert_eq!((last, token.as_str()), (vec!["T0".to_owned()], ""), "the last page has no token");
    let (all, token) = list(&s, page(0, "")).await.unwrap();
    assert_eq!((all.len(), token.as_str()), (5, ""), "0 means the default page size (50)");

    let category = ListTicketsRequest { category: "Concert".into(), ..page(0, "") };
    assert_eq!(list(&s, category).await.unwrap().0, ["T4", "T2", "T0"]);
    let kind = ListTicketsRequest { r#type: "vip_ticket".into(), ..page(0, "") };
    assert_eq!(list(&s, kind).await.unwrap().0, ["T3"]);
    let event = ListTicketsRequest { event_id: Some(11), ..page(0, "") };
    assert_eq!(list(&s, event).await.unwrap().0, ["T3", "T1"]);
    let both = ListTicketsRequest { category: "Concert".into(), event_id: Some(10), ..page(1, "") };
    let (one, token) = list(&s, both.clone()).await.unwrap();
    assert_eq!(one, ["T4"]);
    let rest = ListTicketsRequest { page_token: token, ..both };
    assert_eq!(list(&s, rest).await.unwrap().0, ["T2"], "the filters hold on the next page");
}

// ListTickets refuses a page size outside 1..500 and a page token it did not
// issue, quoting the token.
#[tokio::test]
async fn list_tickets_refuses_bad_page_sizes_and_tokens() {
    let s = storage(true).await;
    let page = |size: i32, token: &str| ListTicketsRequest {
        page_size: size,
        page_token: token.into(),
        ..ListTicketsRequest::default()
    };
    assert!(list(&s, page(500, "")).await.is_ok());
    for size in [501, -1] {
        let refused = list(&s, page(size, "")).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "page_size {size}");
        assert!(refused.message().contains("page_size must be 1..500"), "{}", refused.message());
    }
    for token in ["abc", "0", "-5"] {
        let refused = list(&s, page(10, token)).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "page_token {token}");
        assert!(refused.message().contains(&format!("\"{token}\"")), "{}", refused.message());
    }
    let refused = list(&s, page(10, &"9".repeat(70_000))).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().len() < 200, "a 70 KB token echoed: {} bytes", refused.message().len());
}

// GetStats counts tickets, cancellations (by reason, and the events
// cancelled), categories and average prices, and sees a write at once.
#[tokio::test]
async fn get_stats_counts_tickets_cancellations_and_categories() {
    let s = storage(true).await;
    let stats = || async { s.get_stats(Request::new(GetStatsRequest {})).await.unwrap().into_inner() };
    let empty = stats().await;
    assert_eq!((empty.tickets, empty.average_price, empty.refund_rate), (0, None, 0.0));

    save(&s, created("d1", ticket("T1", "Concert")), "").await.unwrap();
    let dear = Ticket { price: Some(Money::from_cents("CHF", 5000)), ..ticket("T2", "Theater") };
    save(&s, created("d2", dear), "").await.unwrap();
    let before = stats().await;
    assert_eq!((before.tickets, before.cancelled_tickets), (2, 0));
    assert_eq!(before.average_price.unwrap().cents(), 3500);

    let cancelled = Ticket { cancellation_reason: "event_cancellation".into(), ..ticket("T1", "Concert") };
    save(&s, event("d3", EventType::TicketUpdated, cancelled, 2_000), "").await.unwrap();
    let after = stats().await;
    assert_eq!((after.tickets, after.cancelled_tickets, after.cancelled_events), (2, 1, 1));
    assert_eq!(after.refund_rate, 0.5);
    assert_eq!(after.cancellations_by_reason.get("event_cancellation"), Some(&1));
    let concert = &after.by_category["Concert"];
    assert_eq!((concert.tickets, concert.average_price.as_ref().unwrap().cents()), (1, 2000));
    assert_eq!(after.by_category["Theater"].tickets, 1);
}

// FetchOutbox returns the unpublished messages oldest first (with what
// SaveEvent was given), bounded by the limit; AckOutbox removes them from
// the next fetch and acknowledges each only once.
#[tokio::test]
async fn fetch_outbox_is_oldest_first_and_ack_removes_from_the_next_fetch() {
    let s = storage(true).await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    save(&s, created("d1", ticket("T1", "Concert")), traceparent).await.unwrap();
    save(&s, created("d2", ticket("T2", "Concert")), "").await.unwrap();
    let cancelled = Ticket { cancellation_reason: "customer_request".into(), ..ticket("T1", "Concert") };
    save(&s, event("d3", EventType::TicketUpdated, cancelled, 2_000), "").await.unwrap();

    let all = fetch(&s, 0).await.unwrap();
    let ids: Vec<&str> = all.messages.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!((ids, all.backlog), (vec!["d1", "d2", "d3"], 3));
    assert!(all.messages.windows(2).all(|w| w[0].id < w[1].id), "ids increase in commit order");
    let first = &all.messages[0];
    assert_eq!((first.routing_key.as_str(), first.ticket_number.as_str()), ("ticket.created", "T1"));
    assert_eq!(first.traceparent, traceparent);
    assert_eq!(TicketEvent::decode(first.payload.as_slice()).unwrap().delivery_id, "d1");
    assert_eq!(all.messages[2].routing_key, "ticket.updated");

    let two = fetch(&s, 2).await.unwrap();
    assert_eq!((two.messages.len(), two.backlog), (2, 3), "the backlog counts every unpublished message");
    let ids: Vec<i64> = two.messages.iter().map(|m| m.id).collect();
    let ack = |ids: Vec<i64>| async { s.ack_outbox(Request::new(AckOutboxRequest { ids })).await };
    assert_eq!(ack(ids.clone()).await.unwrap().into_inner().acknowledged, 2);
    let rest = fetch(&s, 0).await.unwrap();
    let left: Vec<&str> = rest.messages.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!((left, rest.backlog), (vec!["d3"], 1));
    assert_eq!(ack(ids).await.unwrap().into_inner().acknowledged, 0, "already acknowledged");
}

// AckOutbox takes any number of ids (more than one statement's worth here),
// counts each message once however often it is named, and counts nothing
// for ids already published or unknown.
#[tokio::test]
async fn ack_outbox_counts_each_message_once_in_any_number_of_ids() {
    let s = storage(true).await;
    for n in 0..300 {
        save(&s, created(&format!("a{n}"), ticket(&format!("A{n}"), "Concert")), "").await.unwrap();
    }
    let all: Vec<i64> = fetch(&s, 1000).await.unwrap().messages.iter().map(|m| m.id).collect();
    assert_eq!(all.len(), 300);
    let ack = |ids: Vec<i64>| async { s.ack_outbox(Request::new(AckOutboxRequest { ids })).await };
    // Every other message, each named twice, in reverse.
    let half: Vec<i64> = all.iter().step_by(2).rev().flat_map(|&id| [id, id]).collect();
    assert_eq!(ack(half).await.unwrap().into_inner().acknowledged, 150);
    let left = fetch(&s, 1000).await.unwrap();
    let expected: Vec<i64> = all.iter().skip(1).step_by(2).copied().collect();
    assert_eq!(left.messages.iter().map(|m| m.id).collect::<Vec<_>>(), expected);
    let mut everything = all.clone();
    everything.push(all[299] + 1_000_000);
    assert_eq!(ack(everything).await.unwrap().into_inner().acknowledged, 150, "only the unpublished half");
    assert!(fetch(&s, 1000).await.unwrap().messages.is_empty());
}

async fn fetch_as(s: &Storage, relay: &str, lease_ms: u64) -> Result<FetchOutboxResponse, Status> {
    let lease = prost_types::Duration::try_from(Duration::from_millis(lease_ms)).ok();
    s.fetch_outbox(Request::new(FetchOutboxRequest { limit: 0, relay_id: relay.into(), lease }))
        .await
        .map(Response::into_inner)
}

// One relay at a time: the first to fetch holds the lease and renews it with
// each fetch; another gets no messages and is told who holds it, until the
// lease expires unrenewed, when it takes it.
#[tokio::test]
async fn the_relay_lease_gives_the_outbox_to_one_relay_until_it_lapses() {
    let s = storage(true).await;
    save(&s, created("d1", ticket("T1", "Concert")), "").await.unwrap();
    let a = fetch_as(&s, "relay-a", 1_000).await.unwrap();
    assert!(a.leader && a.holder == "relay-a" && a.messages.len() == 1, "{a:?}");
    let b = fetch_as(&s, "relay-b", 1_000).await.unwrap();
    assert!(!b.leader && b.holder == "relay-a" && b.messages.is_empty(), "{b:?}");
    assert_eq!(b.lease_until, a.lease_until, "a refused fetch does not move the lease");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let renewed = fetch_as(&s, "relay-a", 1_000).await.unwrap();
    assert!(renewed.leader && db::millis(renewed.lease_until.as_ref()) > db::millis(a.lease_until.as_ref()));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!fetch_as(&s, "relay-b", 1_000).await.unwrap().leader, "renewed 600 ms ago: still relay-a's");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let taken = fetch_as(&s, "relay-b", 1_000).await.unwrap();
    assert!(taken.leader && taken.holder == "relay-b" && taken.messages.len() == 1, "{taken:?}");
    assert!(!fetch_as(&s, "relay-a", 1_000).await.unwrap().leader, "relay-a lost it");

    // Released by its holder, the lease is free at once; released by
    // another relay, it stays where it is.
    let release = |relay: &str| {
        let request = ReleaseOutboxLeaseRequest { relay_id: relay.into() };
        async { s.release_outbox_lease(Request::new(request)).await.map(|r| r.into_inner().released) }
    };
    assert!(!release("relay-a").await.unwrap(), "relay-a does not hold it");
    assert!(!fetch_as(&s, "relay-a", 60_000).await.unwrap().leader, "still relay-b's");
    assert!(release("relay-b").await.unwrap());
    assert!(fetch_as(&s, "relay-a", 60_000).await.unwrap().leader, "free right after its release");
    assert_eq!(release("").await.unwrap_err().code(), Code::InvalidArgument);
}

// RecordOutboxFailure counts a message's failures; at max_attempts it is a
// dead letter: kept, counted, and no longer fetched, while the messages
// behind it are. A published message is not counted.
#[tokio::test]
async fn a_message_that_keeps_failing_becomes_a_dead_letter() {
    let s = storage(true).await;
    for (id, number) in [("d1", "T1"), ("d2", "T2")] {
        save(&s, created(id, ticket(number, "Concert")), "").await.unwrap();
    }
    let ids: Vec<i64> = fetch(&s, 0).await.unwrap().messages.iter().map(|m| m.id).collect();
    let storage: &Storage = &s;
    let fail = |id: i64| async move {
        let request =
            RecordOutboxFailureRequest { id, error: "InvalidArgument: bad".into(), max_attempts: 2 };
        storage.record_outbox_failure(Request::new(request)).await.map(Response::into_inner)
    };
    let first = fail(ids[0]).await.unwrap();
    assert_eq!((first.attempts, first.dead), (1, false));
    assert_eq!(fetch(&s, 0).await.unwrap().messages.len(), 2, "still fetched after one failure");
    let second = fail(ids[0]).await.unwrap();
    assert_eq!((second.attempts, second.dead), (2, true));
    let rest = fetch(&s, 0).await.unwrap();
    let left: Vec<&str> = rest.messages.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!((left, rest.backlog), (vec!["d2"], 1));
    assert_eq!(s.db.dead_letters().await.unwrap(), 1);
    assert_eq!(fail(ids[0]).await.unwrap().attempts, 0, "a dead letter is not counted again");
    s.ack_outbox(Request::new(AckOutboxRequest { ids: vec![ids[1]] })).await.unwrap();
    assert_eq!(fail(ids[1]).await.unwrap().attempts, 0, "a published message is not counted");
    let out_of_range = RecordOutboxFailureRequest { id: ids[1], error: String::new(), max_attempts: 0 };
    let refused = s.record_outbox_failure(Request::new(out_of_range)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
}

// Pruning deletes published outbox rows and events past their retention,
// at most `limit` a statement, oldest first; never an unpublished message or
// a dead letter. A delivery pruned from events is new again if resent.
#[tokio::test]
async fn pruning_deletes_only_what_is_past_its_retention() {
    use db::Prunable::{Events, Outbox};
    let s = storage(true).await;
    for (id, number) in [("p1", "P1"), ("p2", "P2"), ("p3", "P3"), ("p4", "P4")] {
        save(&s, created(id, ticket(number, "Concert")), "").await.unwrap();
    }
    let ids: Vec<i64> = fetch(&s, 0).await.unwrap().messages.iter().map(|m| m.id).collect();
    s.ack_outbox(Request::new(AckOutboxRequest { ids: ids[..3].to_vec() })).await.unwrap();
    let failure = RecordOutboxFailureRequest { id: ids[3], error: "bad".into(), max_attempts: 1 };
    assert!(s.record_outbox_failure(Request::new(failure)).await.unwrap().into_inner().dead);
    let now = db::millis(Some(&std::time::SystemTime::now().into()));

    assert_eq!(s.db.prune(Outbox, now - 60_000, 10).await.unwrap(), 0, "published just now: kept");
    assert_eq!(s.db.prune(Outbox, now + 1_000, 2).await.unwrap(), 2, "at most the limit");
    assert_eq!(s.db.prune(Outbox, now + 1_000, 10).await.unwrap(), 1);
    assert_eq!(s.db.prune(Outbox, now + 1_000, 10).await.unwrap(), 0, "the dead letter stays");
    assert_eq!(s.db.dead_letters().await.unwrap(), 1);

    // Events carry the received time of the deliveries (1 s after the epoch here).
    assert_eq!(s.db.prune(Events, 500, 10).await.unwrap(), 0);
    assert_eq!(s.db.prune(Events, 2_000, 10).await.unwrap(), 4);
    let again = save(&s, created("p1", ticket("P1", "Concert")), "").await.unwrap();
    assert!(!again.duplicate, "past the events' retention a resent delivery is new again");
    assert_eq!(get(&s, "P2").await.unwrap().ticket.unwrap().number, "P2", "tickets are never pruned");
}

// FetchOutbox refuses a fetch with no relay id, or a lease outside 1..60 s.
#[tokio::test]
async fn fetch_outbox_refuses_no_relay_id_or_a_lease_out_of_range() {
    let s = storage(true).await;
    for (relay, lease_ms) in [("", 5_000), ("relay-a", 500), ("relay-a", 61_000)] {
        let error = fetch_as(&s, relay, lease_ms).await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{relay:?} {lease_ms}: {error:?}");
    }
}

// FetchOutbox refuses a limit outside 1..1000.
#[tokio::test]
async fn fetch_outbox_refuses_a_limit_out_of_range() {
    let s = storage(true).await;
    assert!(fetch(&s, 1000).await.is_ok());
    for limit in [1001, -1] {
        assert_eq!(fetch(&s, limit).await.unwrap_err().code(), Code::InvalidArgument, "limit {limit}");
    }
}

// Until the database watcher has reached the database, every call that needs
// it is UNAVAILABLE (retry later) rather than an error or a wait.
#[tokio::test]
async fn calls_are_unavailable_until_the_database_is_ready() {
    let s = storage(false).await;
    fn code<T>(result: Result<T, Status>) -> Code {
        result.err().map_or(Code::Ok, |status| status.code())
    }
    let codes = [
        code(save(&s, created("d1", ticket("T1", "Concert")), "").await),
        code(get(&s, "T1").await),
        code(list(&s, ListTicketsRequest::default()).await),
        code(s.get_stats(Request::new(GetStatsRequest {})).await),
        code(fetch(&s, 0).await),
        code(s.ack_outbox(Request::new(AckOutboxRequest { ids: vec![1] })).await),
    ];
    assert_eq!(codes, [Code::Unavailable; 6]);
}

// Several writers at once on PostgreSQL, each ticket updated by concurrent
// deliveries that land in different batches: for every ticket, the outbox
// message with the highest id carries the state its row ended in. A consumer
// applying the messages in outbox order ends where the database did, which
// holds only if each ticket's outbox ids follow the order its events
// committed in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL (make test runs it)"]
async fn several_writers_keep_each_tickets_outbox_in_commit_order() {
    let scratch = db::ScratchPostgres::create("tm_test_writers").await;
    let db = scratch.db.clone();
    db.migrate().await.unwrap();
    // Batches of two and eight writers: the updates of one ticket are spread
    // over transactions that run at the same time.
    let writer = Writer::start(db.clone(), None, StatsMemo::default(), 2, 8, TIMEOUT);
    let new = |id: String, kind, t: Ticket| NewEvent {
        event: event(&id, kind, t, 1_000),
        payload: id.into_bytes(),
        traceparent: String::new(),
    };
    const TICKETS: usize = 10;
    const UPDATES: usize = 30;
    // Several rounds: whether two transactions interleave is up to timing.
    for round in 0..6 {
        let number = |t: usize| format!("W{round}-{t:02}");
        for t in 0..TICKETS {
            let created =
                new(format!("{}-c", number(t)), EventType::TicketCreated, ticket(&number(t), "Concert"));
            writer.save(created).await.unwrap();
        }
        let mut saving = tokio::task::JoinSet::new();
        for u in 0..UPDATES {
            for t in 0..TICKETS {
                let writer = writer.clone();
                let cancelled =
                    Ticket { cancellation_reason: format!("reason-{u}"), ..ticket(&number(t), "Concert") };
                let event = new(format!("{}-u{u}", number(t)), EventType::TicketUpdated, cancelled);
                saving.spawn(async move { writer.save(event).await });
            }
        }
        for saved in saving.join_all().await {
            assert!(saved.unwrap(), "a new event");
        }
        let (outbox, _) = db.outbox(1000).await.unwrap();
        assert_eq!(outbox.len(), TICKETS * (UPDATES + 1));
        let mut last = std::collections::HashMap::new();
        for m in &outbox {
            let event = TicketEvent::decode(m.payload.as_slice()).unwrap();
            last.insert(m.ticket_number.clone(), event.ticket.unwrap().cancellation_reason);
        }
        for t in 0..TICKETS {
            let stored = db.ticket(&number(t)).await.unwrap().unwrap().ticket.unwrap().cancellation_reason;
            assert_eq!(
                last[&number(t)],
                stored,
                "{}: the last message published is not the state stored",
                number(t)
            );
        }
        let ids: Vec<i64> = outbox.iter().map(|m| m.id).collect();
        db.ack_outbox(&ids, 1).await.unwrap();
    }
    drop((writer, db));
    scratch.drop_database().await;
}

/// A batch the database refuses for one event's data (a NUL in a text
/// column) is split until that event stands alone: every other event of the
/// batch is stored once, in its order, and only that one is refused.
#[tokio::test]
#[ignore = "needs PostgreSQL (make test runs it)"]
async fn postgres_a_refused_event_is_isolated_and_the_rest_of_its_batch_stored() {
    let scratch = db::ScratchPostgres::create("tm_test_isolate").await;
    let db = scratch.db.clone();
    db.migrate().await.unwrap();
    let bad = 11;
    let events: Vec<NewEvent> = (0..16)
        .map(|i| {
            let mut t = ticket(&format!("ISO{i:02}"), "Concert");
            if i == bad {
                t.title = "bad\0title".into();
            }
            NewEvent {
                event: created(&format!("iso-{i}"), t),
                payload: b"{}".to_vec(),
                traceparent: String::new(),
            }
        })
        .collect();
    let batch: Vec<&NewEvent> = events.iter().collect();
    let outcome = writer::commit_isolating(&db, &batch, TIMEOUT).await;
    for (i, result) in outcome.iter().enumerate() {
        if i == bad {
            assert!(matches!(result, Err(db::StoreError::Refused(_))), "the bad event: {result:?}");
        } else {
            assert!(matches!(result, Ok(true)), "event {i}: {result:?}");
        }
    }
    let (outbox, _) = db.outbox(100).await.unwrap();
    let stored: Vec<&str> = outbox.iter().map(|m| m.ticket_number.as_str()).collect();
    let expected: Vec<String> = (0..16).filter(|i| *i != bad).map(|i| format!("ISO{i:02}")).collect();
    assert_eq!(stored, expected, "every other event stored once, in order");
    drop(db);
    scratch.drop_database().await;
}

/// A fold that fails is reported as failing until one works again: what
/// `storage_stats_fold_failing`, and the alert StatsFoldFailing, show.
#[tokio::test]
#[ignore = "needs PostgreSQL (make test runs it)"]
async fn postgres_a_failing_fold_is_reported_until_one_works() {
    let scratch = db::ScratchPostgres::create("tm_test_fold_failing").await;
    scratch.db.migrate().await.unwrap();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let rename = |from: &str, to: &str| scratch.execute(format!("ALTER TABLE {from} RENAME TO {to}"));
    let mut failing = false;
    fold_round(&scratch.db, TIMEOUT, &stopped, &mut failing).await;
    assert!(!failing, "a fold of an empty table works");
    rename("ticket_stats_deltas", "ticket_stats_deltas_away").await;
    fold_round(&scratch.db, TIMEOUT, &stopped, &mut failing).await;
    assert!(failing, "a fold without its table fails");
    fold_round(&scratch.db, TIMEOUT, &stopped, &mut failing).await;
    assert!(failing, "and stays failing while it does");
    rename("ticket_stats_deltas_away", "ticket_stats_deltas").await;
    fold_round(&scratch.db, TIMEOUT, &stopped, &mut failing).await;
    assert!(!failing, "the next fold that works clears it");
    scratch.drop_database().await;
}
