//! Group commit: concurrent SaveEvent calls queue here, and a writer task
//! writes whatever has queued in a single transaction, so N webhooks cost one
//! commit instead of N. Several writers commit at once (on PostgreSQL), each
//! taking the next batch while the others wait on the database; across
//! writers and replicas, each ticket's outbox ids still follow its commit
//! order, because a transaction inserts its outbox rows only after it holds
//! the row locks of its tickets (see `Database::save_batch`).

use std::{
    sync::{Arc, LazyLock},
    time::Duration,
};

use prometheus::{Histogram, IntCounterVec};
use ticketmesh_runtime::{metrics, telemetry};
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::Instrument;

use crate::{
    cache::Cache,
    db::{Database, NewEvent, StoreError},
    stats::StatsMemo,
};

static BATCH_SIZE: LazyLock<Histogram> = LazyLock::new(|| {
    metrics::histogram(
        "storage_commit_batch_size",
        "Events written per database transaction (group commit)",
        vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
    )
});

static COMMITS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    metrics::counter_vec(
        "storage_commits_total",
        "Database transactions of the group-commit writer, by outcome: ok, error (an outage), split (refused for one row's data, retried in halves), refused (one event the database refuses)",
        &["status"],
    )
});

/// Whether the event was new, and how many events its transaction held.
type Reply = oneshot::Sender<(Result<bool, StoreError>, usize)>;

/// The handle SaveEvent uses: queue an event, wait for its commit.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<(NewEvent, Reply)>,
    /// The database's `db.system.name`, for the spans.
    system: &'static str,
}

impl Writer {
    /// Starts `writers` writer tasks (at least one) sharing one queue. They
    /// end when every handle is dropped.
    pub fn start(
        db: Database,
        cache: Option<Cache>,
        stats: StatsMemo,
        max_batch: usize,
        writers: usize,
        timeout: Duration,
    ) -> Self {
        let (queue, rx) = mpsc::channel(max_batch.max(1) * 4);
        let rx = Arc::new(Mutex::new(rx));
        let system = db.system_name();
        for _ in 0..writers.max(1) {
            let (db, cache, stats, rx) = (db.clone(), cache.clone(), stats.clone(), rx.clone());
            tokio::spawn(run(db, cache, stats, rx, max_batch.max(1), timeout));
        }
        Self { queue, system }
    }

    /// Stores one event; Ok(true) when it was new, Ok(false) for a duplicate.
    /// Returns only after the transaction holding it has committed.
    /// In a traced call, a span covers the wait for that commit.
    pub async fn save(&self, event: NewEvent) -> Result<bool, StoreError> {
        let span = crate::db::span(self.system, "INSERT", "events");
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the writer has stopped".into());
        let (saved, batch) = async {
            self.queue.send((event, reply)).await.map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())
        }
        .instrument(span.clone())
        .await?;
        span.record("db.operation.batch.size", batch as i64);
        if let Err(error) = &saved {
            telemetry::set_error(&span, error.to_string());
        }
        saved
    }
}

async fn run(
    db: Database,
    cache: Option<Cache>,
    stats: StatsMemo,
    rx: Arc<Mutex<mpsc::Receiver<(NewEvent, Reply)>>>,
    max_batch: usize,
    timeout: Duration,
) {
    let mut jobs = Vec::with_capacity(max_batch);
    // One writer waits on the queue at a time; the others are committing, or
    // waiting for their turn to take the next batch.
    while rx.lock().await.recv_many(&mut jobs, max_batch).await > 0 {
        let events: Vec<&NewEvent> = jobs.iter().map(|(e, _)| e).collect();
        let outcome = commit_isolating(&db, &events, timeout).await;
        if outcome.iter().any(|r| matches!(r, Ok(true))) {
            stats.changed();
        }
        if let Some(cache) = &cache {
            // Invalidate before answering, so a caller reading right
            // after its 200 never sees the state before its write.
            let changed = events
                .iter()
                .zip(&outcome)
                .filter(|(_, new)| matches!(new, Ok(true)))
                .filter_map(|(e, _)| e.event.ticket.as_ref().map(|t| t.number.as_str()));
            cache.invalidate(changed).await;
        }
        let size = jobs.len();
        for ((_, reply), answer) in jobs.drain(..).zip(outcome) {
            // The caller may have given up (deadline); the result stands anyway.
            let _ = reply.send((answer, size));
        }
    }
}

/// Commits `events` in order, and isolates what the database refuses: a
/// batch refused for its data (one bad row fails the whole transaction) is
/// split in halves, committed first half first, until the refused events
/// stand alone. Every other event is stored, in its order, at a cost of about
/// two transactions per halving; an outage fails the range it hits, as before.
pub(crate) async fn commit_isolating(
    db: &Database,
    events: &[&NewEvent],
    timeout: Duration,
) -> Vec<Result<bool, StoreError>> {
    let mut outcome: Vec<Option<Result<bool, StoreError>>> = vec![None; events.len()];
    let mut ranges = std::collections::VecDeque::new();
    ranges.push_back(0..events.len());
    while let Some(range) = ranges.pop_front() {
        let batch = &events[range.clone()];
        BATCH_SIZE.observe(batch.len() as f64);
        let committed = match tokio::time::timeout(timeout, db.save_batch(batch)).await {
            Ok(committed) => committed,
            Err(_) => Err(StoreError::Unavailable(format!("commit took longer than {timeout:?}"))),
        };
        match committed {
            Ok(inserted) => {
                COMMITS.with_label_values(&["ok"]).inc();
                for (slot, new) in outcome[range].iter_mut().zip(inserted) {
                    *slot = Some(Ok(new));
                }
            }
            Err(StoreError::Refused(_)) if range.len() > 1 => {
                COMMITS.with_label_values(&["split"]).inc();
                let middle = range.start + range.len() / 2;
                ranges.push_front(middle..range.end);
                ranges.push_front(range.start..middle);
            }
            Err(error) => {
                COMMITS
                    .with_label_values(&[if matches!(error, StoreError::Refused(_)) {
                        "refused"
                    } else {
                        "error"
                    }])
                    .inc();
                tracing::warn!(%error, events = range.len(), "batch not stored");
                for slot in &mut outcome[range] {
                    *slot = Some(Err(error.clone()));
                }
            }
        }
    }
    outcome.into_iter().map(|r| r.unwrap_or(Ok(false))).collect()
}
