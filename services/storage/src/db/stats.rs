//! GetStats' figures, read from rollups instead of aggregated over every
//! ticket: `ticket_stats` holds one row per (category, currency, cancellation
//! reason, cancelled event) with its ticket count and price sum, and the
//! database keeps it exact in the transaction that changes a ticket
//! (triggers; migration 0006). On PostgreSQL the triggers append each
//! statement's net change to `ticket_stats_deltas` rather than update a
//! shared row that concurrent writers would queue on, and
//! [`Database::fold_stats`] folds those into `ticket_stats`. A read adds the
//! two, so it costs the number of rollup rows plus the deltas not yet folded,
//! whatever the number of tickets.

use std::collections::{HashMap, HashSet};

use sqlx::Row;
use ticketmesh_proto::v1::{CategoryStats, Stats};

use super::{Backend, Database, StoreError, average};

/// One rollup row: the tickets of one (category, currency, reason,
/// cancelled event), and the sum of their prices in cents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rollup {
    pub category: String,
    pub currency: String,
    pub cancellation_reason: String,
    /// The event_id of tickets cancelled for an event cancellation, else 0.
    pub cancelled_event: i64,
    pub tickets: i64,
    pub price_cents: i64,
}

const EVENT_CANCELLATION: &str = "event_cancellation";

impl Database {
    pub async fn stats(&self) -> Result<Stats, StoreError> {
        self.observe("SELECT", "ticket_stats", self.stats_statement()).await
    }

    /// Folds at most `limit` of the oldest deltas into `ticket_stats`, in one
    /// transaction; how many it folded. Several replicas may fold at once:
    /// each takes the deltas no other holds (SKIP LOCKED), and they update
    /// the rollup rows in key order, so they cannot deadlock. SQLite's
    /// triggers update `ticket_stats` directly: nothing to fold.
    pub async fn fold_stats(&self, limit: i64) -> Result<u64, StoreError> {
        if self.backend == Backend::Sqlite {
            return Ok(0);
        }
        let statement = async {
            let row = sqlx::query(
                "WITH taken AS ( \
                   DELETE FROM ticket_stats_deltas WHERE id IN \
                     (SELECT id FROM ticket_stats_deltas ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
                   RETURNING category, currency, cancellation_reason, cancelled_event, tickets, price_cents), \
                 merged AS ( \
                   INSERT INTO ticket_stats AS s \
                     (category, currency, cancellation_reason, cancelled_event, tickets, price_cents) \
                   SELECT category, currency, cancellation_reason, cancelled_event, SUM(tickets), SUM(price_cents) \
                   FROM taken GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4 \
                   ON CONFLICT (category, currency, cancellation_reason, cancelled_event) DO UPDATE \
                   SET tickets = s.tickets + excluded.tickets, price_cents = s.price_cents + excluded.price_cents \
                   RETURNING 1) \
                 SELECT (SELECT COUNT(*) FROM taken), (SELECT COUNT(*) FROM merged)",
            )
            .bind(limit)
            .fetch_one(&self.pool)
            .await?;
            Ok(u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0))
        };
        self.observe("UPDATE", "ticket_stats", statement).await
    }

    async fn stats_statement(&self) -> Result<Stats, StoreError> {
        Ok(figures(&self.rollups().await?))
    }

    /// The rollup rows with the deltas added, those with tickets only.
    pub(crate) async fn rollups(&self) -> Result<Vec<Rollup>, StoreError> {
        // One statement, so one snapshot: a fold moves rows from the deltas
        // to the rollup in one transaction, and a read sees it whole or not.
        let rows = sqlx::query(
            "SELECT category, currency, cancellation_reason, cancelled_event, \
                    CAST(SUM(tickets) AS BIGINT), CAST(SUM(price_cents) AS BIGINT) \
             FROM (SELECT category, currency, cancellation_reason, cancelled_event, tickets, price_cents \
                   FROM ticket_stats \
                   UNION ALL \
                   SELECT category, currency, cancellation_reason, cancelled_event, tickets, price_cents \
                   FROM ticket_stats_deltas) AS rows \
             GROUP BY category, currency, cancellation_reason, cancelled_event \
             HAVING SUM(tickets) <> 0",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Rollup {
                    category: r.try_get(0)?,
                    currency: r.try_get(1)?,
                    cancellation_reason: r.try_get(2)?,
                    cancelled_event: r.try_get(3)?,
                    tickets: r.try_get(4)?,
                    price_cents: r.try_get(5)?,
                })
            })
            .collect()
    }
}

/// The figures from the rollup rows: what the four aggregates over every
/// ticket gave (count, price sum, cancellations by reason, by category, and
/// the distinct events cancelled).
pub(crate) fn figures(rollups: &[Rollup]) -> Stats {
    let (mut tickets, mut sum, mut cancelled) = (0, 0, 0);
    let mut currencies = HashSet::new();
    let mut reasons: HashMap<String, i64> = HashMap::new();
    let mut categories: HashMap<&str, (i64, i64)> = HashMap::new();
    let mut cancelled_events = HashSet::new();
    for r in rollups.iter().filter(|r| r.tickets > 0) {
        tickets += r.tickets;
        sum += r.price_cents;
        currencies.insert(r.currency.as_str());
        if !r.cancellation_reason.is_empty() {
            cancelled += r.tickets;
            *reasons.entry(r.cancellation_reason.clone()).or_default() += r.tickets;
        }
        if r.cancellation_reason == EVENT_CANCELLATION {
            cancelled_events.insert(r.cancelled_event);
        }
        let category = categories.entry(&r.category).or_default();
        category.0 += r.tickets;
        category.1 += r.price_cents;
    }
    // One currency is the normal case; with several, an average is meaningless.
    let currency = match currencies.len() {
        1 => currencies.into_iter().next().unwrap_or_default(),
        _ => "",
    };
    Stats {
        tickets,
        average_price: average(sum, tickets, currency),
        refund_rate: if tickets == 0 { 0.0 } else { cancelled as f64 / tickets as f64 },
        cancelled_tickets: cancelled,
        cancellations_by_reason: reasons,
        cancelled_events: i64::try_from(cancelled_events.len()).unwrap_or(i64::MAX),
        by_category: categories
            .into_iter()
            .map(|(name, (count, sum))| {
                (
                    name.to_owned(),
                    CategoryStats { tickets: count, average_price: average(sum, count, currency) },
                )
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::db::{NewEvent, ScratchPostgres, timestamp};
    use std::time::Duration;
    use ticketmesh_proto::v1::{EventType, Money, Ticket, TicketEvent};

    fn rollup(category: &str, currency: &str, reason: &str, event: i64, tickets: i64, cents: i64) -> Rollup {
        Rollup {
            category: category.into(),
            currency: currency.into(),
            cancellation_reason: reason.into(),
            cancelled_event: event,
            tickets,
            price_cents: cents,
        }
    }

    #[test]
    fn figures_count_reasons_categories_and_distinct_cancelled_events() {
        let rows = [
            rollup("Concert", "CHF", "", 0, 3, 6000),
            rollup("Concert", "CHF", "event_cancellation", 7, 1, 2000),
            rollup("Theater", "CHF", "event_cancellation", 7, 2, 3000),
            rollup("Theater", "CHF", "event_cancellation", 9, 1, 1000),
            rollup("Theater", "CHF", "customer_request", 0, 1, 1000),
            rollup("Gone", "EUR", "", 0, 0, 0), // every ticket moved out of it
        ];
        let stats = figures(&rows);
        assert_eq!((stats.tickets, stats.cancelled_tickets, stats.cancelled_events), (8, 5, 2));
        assert_eq!(stats.refund_rate, 5.0 / 8.0);
        assert_eq!(
            stats.average_price.as_ref().map(|m| (m.cents(), m.currency_code.as_str())),
            Some((1625, "CHF"))
        );
        assert_eq!(stats.cancellations_by_reason["event_cancellation"], 4);
        assert_eq!(stats.cancellations_by_reason["customer_request"], 1);
        assert_eq!(stats.by_category.len(), 2, "an empty rollup row is no category");
        assert_eq!(stats.by_category["Theater"].tickets, 4);
        assert_eq!(stats.by_category["Theater"].average_price.as_ref().unwrap().cents(), 1250);

        let mixed = figures(&[rollup("A", "CHF", "", 0, 1, 100), rollup("A", "EUR", "", 0, 1, 300)]);
        assert_eq!(mixed.average_price.unwrap().currency_code, "", "no currency for an average of two");
        assert_eq!(figures(&[]).average_price, None);
    }

    /// What the rollups must equal: the same grouping over every ticket.
    async fn grouped_tickets(db: &Database) -> Vec<Rollup> {
        let rows = sqlx::query(
            "SELECT category, currency, cancellation_reason, \
                    CASE WHEN cancellation_reason = 'event_cancellation' THEN event_id ELSE 0 END, \
                    COUNT(*), CAST(SUM(price_cents) AS BIGINT) \
             FROM tickets GROUP BY 1, 2, 3, 4",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        let mut rollups: Vec<Rollup> = rows
            .iter()
            .map(|r| Rollup {
                category: r.try_get(0).unwrap(),
                currency: r.try_get(1).unwrap(),
                cancellation_reason: r.try_get(2).unwrap(),
                cancelled_event: r.try_get(3).unwrap(),
                tickets: r.try_get(4).unwrap(),
                price_cents: r.try_get(5).unwrap(),
            })
            .collect();
        rollups.sort_by(key);
        rollups
    }

    fn key(a: &Rollup, b: &Rollup) -> std::cmp::Ordering {
        (&a.category, &a.currency, &a.cancellation_reason, a.cancelled_event).cmp(&(
            &b.category,
            &b.currency,
            &b.cancellation_reason,
            b.cancelled_event,
        ))
    }

    async fn assert_rollups_exact(db: &Database, when: &str) {
        let mut rollups = db.rollups().await.unwrap();
        rollups.sort_by(key);
        assert_eq!(rollups, grouped_tickets(db).await, "{when}: the rollups differ from the tickets");
    }

    /// Random deliveries over a few tickets: creations, updates that move a
    /// ticket between categories, currencies, prices, reasons and events,
    /// late creations (which do not undo an update) and repeats.
    fn deliveries(seed: u64, round: usize, n: usize) -> Vec<NewEvent> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move |bound: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % bound
        };
        (0..n)
            .map(|i| {
                let kind = if next(3) == 0 { EventType::TicketCreated } else { EventType::TicketUpdated };
                let reason = ["", "", "customer_request", "event_cancellation"][next(4) as usize];
                let ticket = Ticket {
                    number: format!("R{}", next(40)),
                    category: ["Concert", "Theater", "Club"][next(3) as usize].into(),
                    event_id: i64::try_from(next(3)).unwrap(),
                    cancellation_reason: reason.into(),
                    price: Some(Money::from_cents(
                        ["CHF", "CHF", "EUR"][next(3) as usize],
                        i64::try_from(next(10_000)).unwrap(),
                    )),
                    ..Ticket::default()
                };
                let id = format!("{seed}-{round}-{i}");
                let mut event = TicketEvent {
                    delivery_id: id.clone(),
                    ticket: Some(ticket),
                    received_at: Some(timestamp(1_000 + i64::try_from(i).unwrap())),
                    signed_at: Some(timestamp(1_000)),
                    ..TicketEvent::default()
                };
                event.set_type(kind);
                NewEvent { event, payload: id.into_bytes(), traceparent: String::new() }
            })
            .collect()
    }

    async fn rollups_follow_every_change(db: Database, writers: usize) {
        db.migrate().await.unwrap();
        assert_rollups_exact(&db, "empty").await;
        for round in 0..8 {
            // `writers` batches of 16 at once: on PostgreSQL their
            // transactions interleave, each one appending its own deltas.
            let mut saving = tokio::task::JoinSet::new();
            for w in 0..writers {
                let (db, batch) = (db.clone(), deliveries(w as u64 + 1, round, 16));
                saving.spawn(async move {
                    let refs: Vec<&NewEvent> = batch.iter().collect();
                    db.save_batch(&refs).await
                });
            }
            for saved in saving.join_all().await {
                saved.unwrap();
            }
            assert_rollups_exact(&db, &format!("round {round}")).await;
            if round % 3 == 2 {
                // Folded in two steps: a partial fold changes no figure.
                db.fold_stats(2).await.unwrap();
                assert_rollups_exact(&db, &format!("round {round}, partly folded")).await;
                db.fold_stats(1_000_000).await.unwrap();
                assert_rollups_exact(&db, &format!("round {round}, folded")).await;
            }
        }
        assert!(db.stats().await.unwrap().tickets > 0);
    }

    #[tokio::test]
    async fn sqlite_rollups_follow_every_change() {
        let dir = std::env::temp_dir().join(format!("tm-db-rollups-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite:{}?mode=rwc", dir.join("rollups.db").display());
        rollups_follow_every_change(Database::connect_lazy(&url, Duration::from_secs(5)).unwrap(), 1).await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "needs PostgreSQL (make test runs it)"]
    async fn postgres_rollups_follow_every_change_with_writers_at_once() {
        let scratch = ScratchPostgres::create("tm_test_rollups").await;
        rollups_follow_every_change(scratch.db.clone(), 4).await;
        // Folding everything leaves the deltas empty and the figures as they were.
        let before = scratch.db.stats().await.unwrap();
        while scratch.db.fold_stats(3).await.unwrap() > 0 {}
        let left: i64 = sqlx::query("SELECT COUNT(*) FROM ticket_stats_deltas")
            .fetch_one(&scratch.db.pool)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        assert_eq!(left, 0);
        assert_eq!(scratch.db.stats().await.unwrap(), before);
        scratch.drop_database().await;
    }
}
