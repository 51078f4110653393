//! The outbox relay: publishes what storage committed to the outbox, oldest
//! first, through the notifier, then marks it published.
//!
//! It lives in the event service because this is the service that makes
//! outbox rows (through SaveEvent) and already holds a storage client: it
//! can wake the relay the moment a delivery is stored, and neither storage
//! (which should not call out) nor the notifier (which should stay a thin
//! publisher) needs to know about the other. Guarantees: at least once (a
//! crash between publish and ack republishes, with the same message id),
//! and in order per ticket (a ticket's messages go out strictly in outbox
//! order, each once the one before is confirmed, and none after one that
//! failed; several tickets' messages go out at once).
//!
//! Every replica runs a relay, and one publishes at a time: FetchOutbox
//! hands messages only to the holder of the relay lease, which each fetch
//! renews ([`LEASE`]). When the holder stops renewing (it died, or lost
//! storage), another relay takes the lease once it expires, within a few
//! seconds. A holder publishes only while its lease is surely still its own
//! (a margin short of the lease, timed from before the fetch), so two
//! relays never publish at once.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use prometheus::{IntCounterVec, IntGauge};
use ticketmesh_proto::v1::{
    AckOutboxRequest, Destination, FetchOutboxRequest, OutboxMessage, PublishRequest,
    RecordOutboxFailureRequest, ReleaseOutboxLeaseRequest, notifier_service_client::NotifierServiceClient,
    storage_service_client::StorageServiceClient,
};
use ticketmesh_runtime::{
    backoff::Backoff,
    grpc::{Channel, with_deadline},
    metrics, telemetry,
};
use tokio::{
    sync::{Notify, watch},
    task::JoinSet,
};
use tracing::Instrument;

static BACKLOG: std::sync::LazyLock<IntGauge> = std::sync::LazyLock::new(|| {
    metrics::gauge(
        "outbox_relay_backlog",
        "Outbox messages waiting to be published, as the relay last saw it",
    )
});
static RELAYED: std::sync::LazyLock<IntCounterVec> = std::sync::LazyLock::new(|| {
    metrics::counter_vec(
        "outbox_relay_published_total",
        "Outbox messages handed to the notifier, by outcome",
        &["status"],
    )
});

static LAG: std::sync::LazyLock<prometheus::Histogram> = std::sync::LazyLock::new(|| {
    metrics::histogram(
        "outbox_relay_lag_seconds",
        "Time from a delivery's commit to its publish confirmation",
        vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0],
    )
});

/// How long a fetch holds the relay lease.
pub const LEASE: Duration = Duration::from_secs(5);

/// How much short of the lease a holder stops publishing: for the time the
/// fetch took to reach storage and for clocks that differ between storage
/// replicas.
const LEASE_MARGIN: Duration = Duration::from_secs(1);

static DEAD_LETTERED: std::sync::LazyLock<prometheus::IntCounter> = std::sync::LazyLock::new(|| {
    metrics::counter(
        "outbox_relay_dead_lettered_total",
        "Outbox messages this relay gave up on (dead letters) after repeated failures retrying cannot mend",
    )
});

/// Whether a publish failure is in the request itself, so retrying it cannot
/// succeed (an outage, a timeout or an overload can pass; these cannot).
fn lasting(code: tonic::Code) -> bool {
    use tonic::Code::{FailedPrecondition, InvalidArgument, NotFound, OutOfRange, Unimplemented};
    matches!(code, InvalidArgument | FailedPrecondition | OutOfRange | NotFound | Unimplemented)
}

static LEADER: std::sync::LazyLock<IntGauge> = std::sync::LazyLock::new(|| {
    metrics::gauge(
        "outbox_relay_leader",
        "1 while this process's relay holds the relay lease (publishes), else 0",
    )
});

/// A name for this process's relay that no other relay has: host (the pod
/// in Kubernetes), process id and start time.
pub fn relay_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map_or_else(|| "local".to_owned(), |h| h.trim().to_owned());
    let started =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    format!("{host}/{}/{started}", std::process::id())
}

/// The clients and bounds a relay calls storage and the notifier with; each
/// ticket's chain of a round publishes through a copy.
#[derive(Clone)]
pub struct Publisher {
    pub storage: StorageServiceClient<Channel>,
    pub notifier: NotifierServiceClient<Channel>,
    /// Deadline of each call to storage (fetch, ack, failure record).
    pub storage_timeout: Duration,
    /// Deadline of each publish through the notifier.
    pub notifier_timeout: Duration,
    /// Failures retrying cannot mend after which a message is a dead letter.
    pub max_attempts: i32,
}

pub struct Relay {
    /// This relay's name in the lease ([`relay_id`]).
    pub id: String,
    pub publisher: Publisher,
    pub wake: Arc<Notify>,
    pub batch: i32,
    /// Tickets whose messages are published at once (each ticket's in order).
    pub concurrency: usize,
    /// Published and confirmed, but storage did not take the acknowledgement
    /// (it was down): acknowledged first next round, not published again.
    pub unacked: Vec<i64>,
}

impl Relay {
    /// Runs until `stop` turns true, then [`Self::finish`]es.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        // Both outcomes exist from the start, so a failure rate reads 0, not no data.
        for status in ["published", "failed"] {
            RELAYED.with_label_values(&[status]);
        }
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let round = self.round().await;
            if round.is_ok() {
                backoff.reset();
            }
            let pause = match round {
                Ok(0) => Some(Duration::from_secs(1)), // idle: wait for a wake-up
                Ok(_) => None,                         // there may be more: go again at once
                Err(error) => {
                    tracing::warn!(%error, "outbox relay paused");
                    Some(backoff.next_delay())
                }
            };
            if let Some(pause) = pause {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(pause) => {}
                }
            } else if *stop.borrow() {
                break;
            }
        }
        self.finish().await;
    }

    /// On the way out, between rounds: acknowledges what was published but
    /// not acknowledged yet (else the next holder publishes it again), then
    /// gives up the lease, so another relay takes over at its next fetch
    /// (within a second) instead of once the lease expires. Best effort:
    /// storage may be gone, and then the lease simply expires.
    pub async fn finish(&mut self) {
        if let Err(error) = self.ack_unacked().await {
            tracing::warn!(%error, "could not acknowledge the last published messages");
        }
        let request = ReleaseOutboxLeaseRequest { relay_id: self.id.clone() };
        let publisher = &mut self.publisher;
        match publisher.storage.release_outbox_lease(with_deadline(request, publisher.storage_timeout)).await
        {
            Ok(answer) if answer.get_ref().released => tracing::info!("outbox relay lease released"),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "could not release the outbox relay lease; it will expire"),
        }
        LEADER.set(0);
    }

    /// Acknowledges what was published and confirmed but not yet
    /// acknowledged (storage did not take the last ack).
    async fn ack_unacked(&mut self) -> Result<(), tonic::Status> {
        if !self.unacked.is_empty() {
            let ids = self.unacked.clone();
            let publisher = &mut self.publisher;
            publisher
                .storage
                .ack_outbox(with_deadline(AckOutboxRequest { ids }, publisher.storage_timeout))
                .await?;
            self.unacked.clear();
        }
        Ok(())
    }

    /// One fetch → publish → ack round; returns how many were published.
    /// The polling itself is not traced (it runs every second); each
    /// message's publish continues the trace of the webhook that stored it.
    ///
    /// The fetched messages are split by ticket into chains, each in outbox
    /// order, and up to `concurrency` chains publish at once: a ticket's
    /// next message goes out only once the notifier confirmed the one
    /// before, while other tickets' messages go out beside it. A failure
    /// ends its own chain (the ticket's later messages wait for the next
    /// round); an outage also stops the round from starting anything more.
    async fn round(&mut self) -> Result<usize, tonic::Status> {
        let poll = tracing::info_span!("outbox.poll");
        telemetry::set_parent(&poll, telemetry::unsampled());
        self.ack_unacked().instrument(poll.clone()).await?;
        let asked = Instant::now();
        let request = FetchOutboxRequest {
            limit: self.batch,
            relay_id: self.id.clone(),
            lease: prost_types::Duration::try_from(LEASE).ok(),
        };
        let fetched = self
            .publisher
            .storage
            .fetch_outbox(with_deadline(request, self.publisher.storage_timeout))
            .instrument(poll.clone())
            .await?
            .into_inner();
        LEADER.set(i64::from(fetched.leader));
        if !fetched.leader {
            // Another relay publishes, and reports the backlog; ask again when idle.
            BACKLOG.set(0);
            return Ok(0);
        }
        BACKLOG.set(fetched.backlog);
        let round = Round {
            publisher: self.publisher.clone(),
            until: asked + LEASE - LEASE_MARGIN,
            halt: Arc::new(AtomicBool::new(false)),
        };
        let mut chains = by_ticket(fetched.messages).into_iter();
        let mut running = JoinSet::new();
        let mut published = Vec::new();
        let mut failure = None;
        loop {
            while running.len() < self.concurrency.max(1) && !round.halted() {
                let Some(chain) = chains.next() else { break };
                running.spawn(round.clone().chain(chain));
            }
            let Some(joined) = running.join_next().await else { break };
            let (ids, failed) = joined.unwrap_or_else(|error| {
                round.halt();
                (Vec::new(), Some(tonic::Status::internal(format!("a relay chain ended: {error}"))))
            });
            published.extend(ids);
            if failure.is_none() {
                failure = failed;
            }
        }
        let count = published.len();
        if count > 0 {
            published.sort_unstable();
            // Acknowledged like a previous round's leftovers: kept for the next round if storage fails.
            self.unacked = published;
            self.ack_unacked().instrument(poll).await?;
            BACKLOG.set(fetched.backlog - count as i64);
        }
        match failure {
            Some(status) => Err(status),
            None => Ok(count),
        }
    }
}

/// Splits fetched messages into one chain per ticket, each in outbox order;
/// the chains in the order of their tickets' oldest message.
fn by_ticket(messages: Vec<OutboxMessage>) -> Vec<Vec<OutboxMessage>> {
    let mut index = HashMap::new();
    let mut chains: Vec<Vec<OutboxMessage>> = Vec::new();
    for message in messages {
        let at = *index.entry(message.ticket_number.clone()).or_insert_with(|| {
            chains.push(Vec::new());
            chains.len() - 1
        });
        chains[at].push(message);
    }
    chains
}

/// What one round's chains share: the publisher, the time the lease is
/// surely still this relay's, and whether the round stopped.
#[derive(Clone)]
struct Round {
    publisher: Publisher,
    until: Instant,
    halt: Arc<AtomicBool>,
}

impl Round {
    fn halted(&self) -> bool {
        self.halt.load(Ordering::Relaxed)
    }

    fn halt(&self) {
        self.halt.store(true, Ordering::Relaxed);
    }

    /// Publishes one ticket's messages in order, each only once the one
    /// before is confirmed; returns the ids published and the failure that
    /// ended the chain early, if one did. Stops before a message once the
    /// lease may lapse (it is renewed first, next round, at once) or the
    /// round halted.
    async fn chain(mut self, chain: Vec<OutboxMessage>) -> (Vec<i64>, Option<tonic::Status>) {
        let mut published = Vec::with_capacity(chain.len());
        for message in chain {
            if self.halted() || Instant::now() >= self.until {
                break;
            }
            let id = message.id;
            let committed = message.created_at.and_then(|t| std::time::SystemTime::try_from(t).ok());
            let span = tracing::info_span!(
                "outbox.relay",
                messaging.message.id = %message.message_id,
                messaging.destination.name = %message.routing_key,
            );
            if !message.traceparent.is_empty() {
                let carrier = [("traceparent".to_owned(), message.traceparent.clone())].into();
                telemetry::set_parent(&span, telemetry::extract_map(&carrier));
            }
            let request = PublishRequest {
                message_id: message.message_id,
                routing_key: message.routing_key,
                payload: message.payload,
                content_type: "application/x-protobuf; proto=ticketmesh.v1.TicketEvent".into(),
                destinations: vec![Destination::Amqp.into()],
                sns_topic: String::new(),
                // The notifier sends its publish span's context with the message.
                headers: Default::default(),
            };
            match self
                .publisher
                .notifier
                .publish(with_deadline(request, self.publisher.notifier_timeout))
                .instrument(span.clone())
                .await
            {
                Ok(_) => {
                    RELAYED.with_label_values(&["published"]).inc();
                    if let Some(lag) = committed.and_then(|t| t.elapsed().ok()) {
                        LAG.observe(lag.as_secs_f64());
                    }
                    published.push(id);
                }
                Err(status) => {
                    telemetry::set_error(&span, status.message().to_owned());
                    RELAYED.with_label_values(&["failed"]).inc();
                    if !lasting(status.code()) {
                        // An outage: what else the round would publish fails too.
                        self.halt();
                        return (published, Some(status));
                    }
                    match self.dead_letter(id, &status).instrument(span).await {
                        Ok(true) => {} // given up on: the ticket's next message flows on
                        // Keep the order: nothing of this ticket goes out before it.
                        Ok(false) => return (published, Some(status)),
                        // Storage did not take it: stop the round here, but
                        // acknowledge what it published, so that goes out once.
                        Err(unrecorded) => {
                            self.halt();
                            return (published, Some(unrecorded));
                        }
                    }
                }
            }
        }
        (published, None)
    }

    /// Records a failure of message `id` that retrying cannot mend; whether
    /// it is now a dead letter (after `max_attempts` of them).
    async fn dead_letter(&mut self, id: i64, status: &tonic::Status) -> Result<bool, tonic::Status> {
        let request = RecordOutboxFailureRequest {
            id,
            error: format!("{:?}: {}", status.code(), status.message()),
            max_attempts: self.publisher.max_attempts,
        };
        let recorded = self
            .publisher
            .storage
            .record_outbox_failure(with_deadline(request, self.publisher.storage_timeout))
            .await?
            .into_inner();
        if recorded.dead {
            DEAD_LETTERED.inc();
            tracing::error!(id, attempts = recorded.attempts, error = %status.message(), "outbox message given up on");
        }
        Ok(recorded.dead)
    }
}

#[cfg(test)]
mod tests;
