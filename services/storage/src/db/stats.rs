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

/// The tickets of one (category, currency, cancellation reason), and the
/// sum of their prices in cents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Group {
    pub category: String,
    pub currency: String,
    pub cancellation_reason: String,
    pub tickets: i64,
    pub price_cents: i64,
}

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
        // One statement, so one snapshot: a fold moves rows from the deltas
        // to the rollup in one transaction, and a read sees it whole or not.
        // Summed per (category, currency, reason) in the database, plus one
        // row with the number of distinct events cancelled: the answer is a
        // handful of rows however many events have been cancelled.
        let rows = sqlx::query(
            "WITH r AS ( \
               SELECT category, currency, cancellation_reason, cancelled_event, tickets, price_cents \
               FROM ticket_stats \
               UNION ALL \
               SELECT category, currency, cancellation_reason, cancelled_event, tickets, price_cents \
               FROM ticket_stats_deltas) \
             SELECT CAST(0 AS BIGINT), category, currency, cancellation_reason, \
                    CAST(SUM(tickets) AS BIGINT), CAST(SUM(price_cents) AS BIGINT) \
             FROM r GROUP BY category, currency, cancellation_reason HAVING SUM(tickets) <> 0 \
             UNION ALL \
             SELECT CAST(1 AS BIGINT), '', '', '', CAST(COUNT(*) AS BIGINT), CAST(0 AS BIGINT) \
             FROM (SELECT cancelled_event FROM r WHERE cancellation_reason = 'event_cancellation' \
                   GROUP BY cancelled_event HAVING SUM(tickets) > 0) AS events",
        )
        .fetch_all(&self.pool)
        .await?;
        let (mut groups, mut cancelled_events) = (Vec::with_capacity(rows.len()), 0);
        for r in &rows {
            if r.try_get::<i64, _>(0)? == 1 {
                cancelled_events = r.try_get(4)?;
            } else {
                groups.push(Group {
                    category: r.try_get(1)?,
                    currency: r.try_get(2)?,
                    cancellation_reason: r.try_get(3)?,
                    tickets: r.try_get(4)?,
                    price_cents: r.try_get(5)?,
                });
            }
        }
        Ok(figures(&groups, cancelled_events))
    }
}

/// The figures from the tickets per (category, currency, reason) and the
/// number of distinct events cancelled: what the four aggregates over every
/// ticket gave (count, price sum, cancellations by reason, by category).
pub(crate) fn figures(groups: &[Group], cancelled_events: i64) -> Stats {
    let (mut tickets, mut sum, mut cancelled) = (0, 0, 0);
    let mut currencies = HashSet::new();
    let mut reasons: HashMap<String, i64> = HashMap::new();
    let mut categories: HashMap<&str, (i64, i64)> = HashMap::new();
    for g in groups.iter().filter(|g| g.tickets > 0) {
        tickets += g.tickets;
        sum += g.price_cents;
        currencies.insert(g.currency.as_str());
        if !g.cancellation_reason.is_empty() {
            cancelled += g.tickets;
            *reasons.entry(g.cancellation_reason.clone()).or_default() += g.tickets;
        }
        let category = categories.entry(&g.category).or_default();
        category.0 += g.tickets;
        category.1 += g.price_cents;
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
        cancelled_events,
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

    /// One row of `ticket_stats` (or their sum with the deltas).
    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    struct Rollup {
        category: String,
        currency: String,
        cancellation_reason: String,
        cancelled_event: i64,
        tickets: i64,
        price_cents: i64,
    }

    fn group(category: &str, currency: &str, reason: &str, tickets: i64, cents: i64) -> Group {
        Group {
            category: category.into(),
            currency: currency.into(),
            cancellation_reason: reason.into(),
            tickets,
            price_cents: cents,
        }
    }

    #[test]
    fn figures_count_reasons_categories_and_averages() {
        let groups = [
            group("Concert", "CHF", "", 3, 6000),
            group("Concert", "CHF", "event_cancellation", 1, 2000),
            group("Theater", "CHF", "event_cancellation", 3, 4000),
            group("Theater", "CHF", "customer_request", 1, 1000),
            group("Gone", "EUR", "", 0, 0), // every ticket moved out of it
        ];
        let stats = figures(&groups, 2);
        assert_eq!((stats.tickets, stats.cancelled_tickets, stats.cancelled_events), (8, 5, 2));
        assert_eq!(stats.refund_rate, 5.0 / 8.0);
        assert_eq!(
            stats.average_price.as_ref().map(|m| (m.cents(), m.currency_code.as_str())),
            Some((1625, "CHF"))
        );
        assert_eq!(stats.cancellations_by_reason["event_cancellation"], 4);
        assert_eq!(stats.cancellations_by_reason["customer_request"], 1);
        assert_eq!(stats.by_category.len(), 2, "an empty group is no category");
        assert_eq!(stats.by_category["Theater"].tickets, 4);
        assert_eq!(stats.by_category["Theater"].average_price.as_ref().unwrap().cents(), 1250);

        let mixed = figures(&[group("A", "CHF", "", 1, 100), group("A", "EUR", "", 1, 300)], 0);
        assert_eq!(mixed.average_price.unwrap().currency_code, "", "no currency for an average of two");
        assert_eq!(figures(&[], 0).average_price, None);
    }

    fn rollups_of(rows: &[sqlx::any::AnyRow]) -> Vec<Rollup> {
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
        rollups.sort();
        rollups
    }

    /// `ticket_stats` with the deltas added, the rows with tickets only.
    async fn rollups(db: &Database) -> Vec<Rollup> {
        let rows = sqlx::query(
            "SELECT category, currency, cancellation_reason, cancelled_event, \
                    CAST(SUM(tickets) AS BIGINT), CAST(SUM(price_cents) AS BIGINT) \
             FROM (SELECT * FROM ticket_stats UNION ALL \
                   SELECT category, currency, cancellation_reason, cancelled_event, tickets, price_cents \
                   FROM ticket_stats_deltas) AS r \
             GROUP BY 1, 2, 3, 4 HAVING SUM(tickets) <> 0",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        rollups_of(&rows)
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
        rollups_of(&rows)
    }

    /// The rollups equal the grouping over every ticket, and GetStats'
    /// figures equal those computed from that grouping.
    async fn assert_rollups_exact(db: &Database, when: &str) {
        let expected = grouped_tickets(db).await;
        assert_eq!(rollups(db).await, expected, "{when}: the rollups differ from the tickets");
        let mut groups: Vec<Group> = Vec::new();
        for r in &expected {
            match groups.iter_mut().find(|g| {
                (&g.category, &g.currency, &g.cancellation_reason)
                    == (&r.category, &r.currency, &r.cancellation_reason)
            }) {
                Some(g) => {
                    (g.tickets, g.price_cents) = (g.tickets + r.tickets, g.price_cents + r.price_cents)
                }
                None => groups.push(group(
                    &r.category,
                    &r.currency,
                    &r.cancellation_reason,
                    r.tickets,
                    r.price_cents,
                )),
            }
        }
        let events: std::collections::BTreeSet<i64> = expected
            .iter()
            .filter(|r| r.cancellation_reason == "event_cancellation")
            .map(|r| r.cancelled_event)
            .collect();
        let figures = figures(&groups, i64::try_from(events.len()).unwrap());
        assert_eq!(db.stats().await.unwrap(), figures, "{when}: GetStats differs from the tickets' figures");
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

    /// An upgrade: tickets stored before migration 0006 are counted by it,
    /// and a change after it is counted once.
    async fn the_migration_counts_the_tickets_already_stored(db: Database, migrations: &str) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(migrations);
        let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|f| f.unwrap().path()).collect();
        files.sort();
        let (before, from_0006) =
            files.split_at(files.iter().position(|f| f.ends_with("0006_ticket_stats.sql")).unwrap());
        let run = |file: &std::path::Path| {
            let sql = std::fs::read_to_string(file).unwrap();
            let pool = db.pool.clone();
            async move { sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await.unwrap() }
        };
        for file in before {
            run(file).await;
        }
        let old = deliveries(7, 0, 30);
        db.save_batch(&old.iter().collect::<Vec<_>>()).await.unwrap();
        let stored = grouped_tickets(&db).await;
        assert!(!stored.is_empty());
        for file in from_0006 {
            run(file).await;
        }
        assert_rollups_exact(&db, "right after the migration").await;
        let new = deliveries(8, 1, 30);
        db.save_batch(&new.iter().collect::<Vec<_>>()).await.unwrap();
        db.fold_stats(1_000).await.unwrap();
        assert_rollups_exact(&db, "after a write").await;
    }

    #[tokio::test]
    async fn sqlite_the_migration_counts_the_tickets_already_stored() {
        let dir = std::env::temp_dir().join(format!("tm-db-rollups-upgrade-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite:{}?mode=rwc", dir.join("upgrade.db").display());
        let db = Database::connect_lazy(&url, Duration::from_secs(5)).unwrap();
        the_migration_counts_the_tickets_already_stored(db, "sqlite").await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL (make test runs it)"]
    async fn postgres_the_migration_counts_the_tickets_already_stored() {
        let scratch = ScratchPostgres::create("tm_test_rollups_upgrade").await;
        the_migration_counts_the_tickets_already_stored(scratch.db.clone(), "postgres").await;
        scratch.drop_database().await;
    }
}
