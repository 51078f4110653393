//! The database adapter: PostgreSQL or SQLite through sqlx's `Any` driver, one
//! SQL dialect for both (`$N` binds, `ON CONFLICT`, `RETURNING`), migrations
//! embedded per backend.

use std::{
    collections::HashMap,
    future::Future,
    path::Path,
    sync::LazyLock,
    time::{Duration, Instant},
};

use prost::Message;
use sqlx::{AnyPool, Row, any::AnyPoolOptions, migrate::Migrator};
use ticketmesh_proto::v1::{EventType, Money, OutboxMessage, StoredTicket, Ticket, TicketEvent};
use ticketmesh_runtime::{Faults, telemetry};
use tracing::Instrument;

mod stats;

static QUERY_SECONDS: LazyLock<prometheus::HistogramVec> = LazyLock::new(|| {
    ticketmesh_runtime::metrics::histogram_vec(
        "db_query_duration_seconds",
        "Database statements and transactions, by operation, table and outcome",
        &["operation", "collection", "status"],
        vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
    )
});

static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A storage failure, as the gRPC layer reports it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or did not answer in time: retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database refused a statement: a bug, not a passing outage.
    #[error("database error: {0}")]
    Internal(String),
    /// The database refused the data itself (SQLSTATE class 22, a data
    /// exception such as a NUL in text): retrying the same event cannot help.
    #[error("the database refused the event: {0}")]
    Refused(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::Database(e) if e.code().is_some_and(|c| c.starts_with("22")) => {
                Self::Refused(e.message().to_owned())
            }
            sqlx::Error::Database(e) => Self::Internal(e.to_string()),
            sqlx::Error::Decode(_) | sqlx::Error::ColumnDecode { .. } => Self::Internal(error.to_string()),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// An event to store, as received from the event service.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event: TicketEvent,
    pub payload: Vec<u8>,
    /// The W3C trace context to publish with the outbox message ("" if none).
    pub traceparent: String,
}

/// A table whose old rows [`Database::prune`] deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prunable {
    /// Published outbox rows.
    Outbox,
    /// Stored deliveries (their ids are what recognises a sender's retry).
    Events,
}

impl Prunable {
    pub fn name(self) -> &'static str {
        match self {
            Self::Outbox => "outbox",
            Self::Events => "events",
        }
    }
}

/// Filters and cursor of a ticket listing.
#[derive(Debug, Clone, Default)]
pub struct TicketFilter {
    pub category: String,
    pub ticket_type: String,
    pub event_id: Option<i64>,
    /// Only tickets first seen before this position (the page cursor).
    pub before_seq: Option<i64>,
}

#[derive(Clone)]
pub struct Database {
    pool: AnyPool,
    backend: Backend,
    /// The `db` dependency's fault rules, checked before each statement.
    faults: Option<Faults>,
}

/// A client span by the OTel database conventions, made only when the call
/// serves a traced request. `db.operation.batch.size` is left to record.
pub fn span(system: &'static str, operation: &'static str, collection: &'static str) -> tracing::Span {
    if !telemetry::in_trace() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "db",
        otel.name = %format_args!("{operation} {collection}"),
        otel.kind = "client",
        db.system.name = system,
        db.operation.name = operation,
        db.collection.name = collection,
        db.operation.batch.size = tracing::field::Empty,
    )
}

impl Database {
    /// Prepares a pool without connecting: the service starts even while the
    /// database is down, and connects when it answers.
    pub fn connect_lazy(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            anyhow::bail!("DATABASE_URL must start with postgres:// or sqlite: (got {url:?})");
        };
        let mut options = AnyPoolOptions::new().acquire_timeout(timeout);
        if backend == Backend::Sqlite {
            create_parent_dir(url)?;
            options = options.max_connections(4).after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                    Ok(())
                })
            });
        } else {
            options = options.max_connections(10);
        }
        Ok(Self { pool: options.connect_lazy(url)?, backend, faults: None })
    }

    /// Checks these fault rules (the `db` dependency) before each statement
    /// or transaction: a slow or unavailable database on demand.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = Some(faults);
        self
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The `db.system.name` of the OTel database conventions.
    pub fn system_name(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => "postgresql",
            Backend::Sqlite => "sqlite",
        }
    }

    /// Runs one statement or transaction: timed in
    /// `db_query_duration_seconds{operation,status}`, and a client span by
    /// the OTel database conventions when it serves a traced call.
    async fn observe<T>(
        &self,
        operation: &'static str,
        collection: &'static str,
        statement: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let span = span(self.system_name(), operation, collection);
        let started = Instant::now();
        let result = async {
            if let Some(faults) = &self.faults {
                faults.dependency("db").await.map_err(|i| StoreError::Unavailable(i.to_string()))?;
            }
            statement.await
        }
        .instrument(span.clone())
        .await;
        let status = if result.is_ok() { "ok" } else { "error" };
        QUERY_SECONDS
            .with_label_values(&[operation, collection, status])
            .observe(started.elapsed().as_secs_f64());
        if let Err(error) = &result {
            telemetry::set_error(&span, error.to_string());
        }
        result
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.observe("SELECT", "1", self.ping_statement()).await
    }

    /// Stores a batch in one transaction (see [`Self::save_batch_statement`]).
    pub async fn save_batch(&self, batch: &[&NewEvent]) -> Result<Vec<bool>, StoreError> {
        self.observe("INSERT", "events", self.save_batch_statement(batch)).await
    }

    pub async fn ticket(&self, number: &str) -> Result<Option<StoredTicket>, StoreError> {
        self.observe("SELECT", "tickets", self.ticket_statement(number)).await
    }

    pub async fn tickets(
        &self,
        filter: &TicketFilter,
        limit: i64,
    ) -> Result<Vec<(i64, StoredTicket)>, StoreError> {
        self.observe("SELECT", "tickets", self.tickets_statement(filter, limit)).await
    }

    pub async fn outbox(&self, limit: i64) -> Result<(Vec<OutboxMessage>, i64), StoreError> {
        self.observe("SELECT", "outbox", self.outbox_statement(limit)).await
    }

    pub async fn ack_outbox(&self, ids: &[i64], now_ms: i64) -> Result<u64, StoreError> {
        self.observe("UPDATE", "outbox", self.ack_outbox_statement(ids, now_ms)).await
    }

    /// Counts a failure of message `id` that retrying cannot mend; at
    /// `max_attempts` it becomes a dead letter. (attempts so far, dead): (0,
    /// false) when it was already published or dead.
    pub async fn record_outbox_failure(
        &self,
        id: i64,
        error: &str,
        max_attempts: i32,
        now_ms: i64,
    ) -> Result<(i32, bool), StoreError> {
        let statement = async {
            let row = sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $1, \
                 dead_at_ms = CASE WHEN attempts + 1 >= $2 THEN $3 ELSE NULL END \
                 WHERE id = $4 AND published_at_ms IS NULL AND dead_at_ms IS NULL \
                 RETURNING CAST(attempts AS BIGINT), dead_at_ms",
            )
            .bind(error)
            .bind(i64::from(max_attempts))
            .bind(now_ms)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
            Ok(match row {
                Some(row) => {
                    let attempts = i32::try_from(row.try_get::<i64, _>(0)?).unwrap_or(i32::MAX);
                    (attempts, row.try_get::<Option<i64>, _>(1)?.is_some())
                }
                None => (0, false),
            })
        };
        self.observe("UPDATE", "outbox", statement).await
    }

    /// Deletes at most `limit` rows of `table` older than `before_ms`: outbox
    /// rows published before it (never an unpublished one or a dead letter),
    /// or events received before it. How many went.
    pub async fn prune(&self, table: Prunable, before_ms: i64, limit: i64) -> Result<u64, StoreError> {
        // The oldest first, a bounded number per statement, so a large first
        // prune neither holds its locks long nor outgrows the deadline.
        let sql = match table {
            Prunable::Outbox => {
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox \
                 WHERE published_at_ms IS NOT NULL AND published_at_ms < $1 ORDER BY published_at_ms LIMIT $2)"
            }
            Prunable::Events => {
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events \
                 WHERE received_at_ms < $1 ORDER BY received_at_ms LIMIT $2)"
            }
        };
        let statement = async {
            Ok(sqlx::query(sql).bind(before_ms).bind(limit).execute(&self.pool).await?.rows_affected())
        };
        self.observe("DELETE", table.name(), statement).await
    }

    /// Outbox messages that became dead letters (a partial index holds them).
    pub async fn dead_letters(&self) -> Result<i64, StoreError> {
        let statement = async {
            let row = sqlx::query("SELECT COUNT(*) FROM outbox WHERE dead_at_ms IS NOT NULL")
                .fetch_one(&self.pool)
                .await?;
            Ok(row.try_get::<i64, _>(0)?)
        };
        self.observe("SELECT", "outbox", statement).await
    }

    /// Takes the relay lease for `relay` until `until_ms` if it is free,
    /// expired (at `now_ms`) or `relay`'s already; the lease as it stands
    /// after: (holder, until when).
    pub async fn relay_lease(
        &self,
        relay: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<(String, i64), StoreError> {
        self.observe("INSERT", "relay_lease", self.relay_lease_statement(relay, now_ms, until_ms)).await
    }

    /// Ends the relay lease at once if `relay` holds it; whether it did.
    pub async fn release_relay_lease(&self, relay: &str) -> Result<bool, StoreError> {
        let statement = async {
            let released =
                sqlx::query("UPDATE relay_lease SET expires_at_ms = 0 WHERE name = 'outbox' AND holder = $1")
                    .bind(relay)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
            Ok(released > 0)
        };
        self.observe("UPDATE", "relay_lease", statement).await
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = match self.backend {
            Backend::Postgres => &POSTGRES,
            Backend::Sqlite => &SQLITE,
        };
        migrator.run(&self.pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => StoreError::from(e),
            other => StoreError::Internal(other.to_string()),
        })
    }

    async fn ping_statement(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Stores a batch in one transaction of three statements, whatever its
    /// size: the event rows (duplicates skipped), one upsert row per ticket
    /// (its state after the batch, see [`fold_tickets`]), and the outbox rows
    /// in delivery order. Returns, per event, whether it was new (false: a
    /// duplicate delivery, or a second copy within the batch).
    ///
    /// Several of these run at once (several writers, several replicas), so:
    /// - the outbox rows are inserted last, once the transaction holds the
    ///   row locks of its tickets: a later transaction touching one of them
    ///   waits for this one's commit before it takes outbox ids, so each
    ///   ticket's outbox ids follow the order its events committed in;
    /// - events and tickets are written in key order (delivery id, ticket
    ///   number), so two transactions take their locks in the same order and
    ///   cannot deadlock.
    async fn save_batch_statement(&self, batch: &[&NewEvent]) -> Result<Vec<bool>, StoreError> {
        let no_ticket = Ticket::default();
        let ticket = |e| ticket_or(e, &no_ticket);
        let mut tx = self.pool.begin().await?;

        let mut fresh = std::collections::HashSet::new();
        let mut by_id = batch.to_vec();
        by_id.sort_by(|a, b| a.event.delivery_id.cmp(&b.event.delivery_id));
        for chunk in chunks(&by_id, |new| new.payload.len()) {
            let sql = multi_row(
                "INSERT INTO events (delivery_id, event_type, ticket_number, payload, signed_at_ms, received_at_ms) \
                 VALUES ",
                6,
                chunk.len(),
                " ON CONFLICT (delivery_id) DO NOTHING RETURNING delivery_id",
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for new in chunk {
                let e = &new.event;
                query = query
                    .bind(&e.delivery_id)
                    .bind(e.r#type().petzi_name())
                    .bind(&ticket(e).number)
                    .bind(new.payload.as_slice())
                    .bind(millis(e.signed_at.as_ref()))
                    .bind(millis(e.received_at.as_ref()));
            }
            for row in query.fetch_all(&mut *tx).await? {
                fresh.insert(row.try_get::<String, _>(0)?);
            }
        }
        // The first copy of an id is the new one; any later copy a duplicate.
        let inserted: Vec<bool> = batch.iter().map(|new| fresh.remove(&new.event.delivery_id)).collect();
        let new: Vec<&NewEvent> =
            batch.iter().zip(&inserted).filter(|(_, is_new)| **is_new).map(|(e, _)| *e).collect();
        if new.is_empty() {
            tx.commit().await?;
            return Ok(inserted);
        }
        let encoded: Vec<Vec<u8>> = new.iter().map(|n| n.event.encode_to_vec()).collect();

        // An update (a cancellation) is never undone by a late or retried
        // "created" delivery of the same ticket.
        let mut rows = fold_tickets(&new);
        rows.sort_by(|a, b| ticket(&new[a.last].event).number.cmp(&ticket(&new[b.last].event).number));
        let no_price = Money::default();
        for chunk in chunks(&rows, |row| encoded[row.last].len()) {
            let sql = multi_row(
                "INSERT INTO tickets (number, ticket_type, title, category, event_id, event_name, \
             cancellation_reason, promoter, price_cents, currency, last_event, detail, created_at_ms, updated_at_ms) \
             VALUES ",
                14,
                chunk.len(),
                " ON CONFLICT (number) DO UPDATE SET ticket_type = excluded.ticket_type, title = excluded.title, \
             category = excluded.category, event_id = excluded.event_id, event_name = excluded.event_name, \
             cancellation_reason = excluded.cancellation_reason, promoter = excluded.promoter, \
             price_cents = excluded.price_cents, currency = excluded.currency, last_event = excluded.last_event, \
             detail = excluded.detail, updated_at_ms = excluded.updated_at_ms \
             WHERE NOT (tickets.last_event = 'ticket_updated' AND excluded.last_event = 'ticket_created')",
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for row in chunk {
                let e = &new[row.last].event;
                let t = ticket(e);
                let price = t.price.as_ref().unwrap_or(&no_price);
                query = query
                    .bind(&t.number)
                    .bind(&t.r#type)
                    .bind(&t.title)
                    .bind(&t.category)
                    .bind(t.event_id)
                    .bind(&t.event)
                    .bind(&t.cancellation_reason)
                    .bind(&t.promoter)
                    .bind(price.cents())
                    .bind(&price.currency_code)
                    .bind(e.r#type().petzi_name())
                    .bind(encoded[row.last].as_slice())
                    .bind(row.created_at_ms)
                    .bind(millis(e.received_at.as_ref()));
            }
            query.execute(&mut *tx).await?;
        }

        let messages: Vec<(&NewEvent, &[u8])> =
            new.iter().copied().zip(encoded.iter().map(Vec::as_slice)).collect();
        for chunk in chunks(&messages, |(_, encoded)| encoded.len()) {
            let sql = multi_row(
                "INSERT INTO outbox (message_id, routing_key, ticket_number, payload, created_at_ms, traceparent) \
                 VALUES ",
                6,
                chunk.len(),
                "",
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (n, encoded) in chunk {
                let e = &n.event;
                query = query
                    .bind(&e.delivery_id)
                    .bind(e.r#type().routing_key())
                    .bind(&ticket(e).number)
                    .bind(*encoded)
                    .bind(millis(e.received_at.as_ref()))
                    .bind(&n.traceparent);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    async fn ticket_statement(&self, number: &str) -> Result<Option<StoredTicket>, StoreError> {
        let row = sqlx::query(
            "SELECT detail, last_event, created_at_ms, updated_at_ms FROM tickets WHERE number = $1",
        )
        .bind(number)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| stored_ticket_at(&r, 0)).transpose()
    }

    /// Tickets newest first; each with its cursor position. The statement
    /// names only the filters given, as plain equalities, so the planner can
    /// match each to its index, (category, seq), (ticket_type, seq) or
    /// (event_id, seq), in any plan it keeps; with one statement of
    /// `($2 = '' OR category = $2)` for every filter, only a plan made for
    /// the values at hand could.
    async fn tickets_statement(
        &self,
        filter: &TicketFilter,
        limit: i64,
    ) -> Result<Vec<(i64, StoredTicket)>, StoreError> {
        let (sql, filters) = tickets_sql(filter);
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(filter.before_seq.unwrap_or(i64::MAX));
        for value in filters {
            query = match value {
                FilterValue::Text(text) => query.bind(text),
                FilterValue::Id(id) => query.bind(id),
            };
        }
        let rows = query.bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get::<i64, _>(0)?, stored_ticket_at(r, 1)?))).collect()
    }

    /// The oldest unpublished outbox messages, and how many wait in total.
    async fn outbox_statement(&self, limit: i64) -> Result<(Vec<OutboxMessage>, i64), StoreError> {
        let rows = sqlx::query(
            "SELECT id, message_id, routing_key, ticket_number, payload, created_at_ms, traceparent FROM outbox \
             WHERE published_at_ms IS NULL AND dead_at_ms IS NULL ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        // Fewer than asked for: these are all. Else from the oldest unpublished
        // id to the newest id, two index lookups, where a COUNT(*) would read
        // the whole backlog on every fetch (quadratic while draining a large
        // one); ids a rolled-back write took make it an upper bound.
        let backlog = if (rows.len() as i64) < limit {
            rows.len() as i64
        } else {
            let span = sqlx::query(
                "SELECT (SELECT MAX(id) FROM outbox) \
                 - (SELECT MIN(id) FROM outbox WHERE published_at_ms IS NULL AND dead_at_ms IS NULL) + 1",
            )
            .fetch_one(&self.pool)
            .await?;
            span.try_get::<Option<i64>, _>(0)?.unwrap_or(0)
        };
        let messages = rows
            .iter()
            .map(|r| {
                Ok(OutboxMessage {
                    id: r.try_get(0)?,
                    message_id: r.try_get(1)?,
                    routing_key: r.try_get(2)?,
                    ticket_number: r.try_get(3)?,
                    payload: r.try_get(4)?,
                    created_at: Some(timestamp(r.try_get(5)?)),
                    traceparent: r.try_get(6)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok((messages, backlog))
    }

    async fn relay_lease_statement(
        &self,
        relay: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<(String, i64), StoreError> {
        // One statement, so two relays asking at once cannot both win: the
        // update applies only to the holder or to an expired lease.
        let taken = sqlx::query(
            "INSERT INTO relay_lease (name, holder, expires_at_ms) VALUES ('outbox', $1, $2) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at_ms = excluded.expires_at_ms \
             WHERE relay_lease.holder = excluded.holder OR relay_lease.expires_at_ms < $3 \
             RETURNING holder, expires_at_ms",
        )
        .bind(relay)
        .bind(until_ms)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        let row = match taken {
            Some(row) => row,
            None => {
                sqlx::query("SELECT holder, expires_at_ms FROM relay_lease WHERE name = 'outbox'")
                    .fetch_one(&self.pool)
                    .await?
            }
        };
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// Marks the messages published, a chunk of ids per statement (the
    /// duplicates and the ones already published count nothing). Not one
    /// transaction: acknowledging is idempotent, and a relay whose ack failed
    /// sends it again whole.
    async fn ack_outbox_statement(&self, ids: &[i64], now_ms: i64) -> Result<u64, StoreError> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut acknowledged = 0;
        for chunk in ids.chunks(ACK_CHUNK) {
            // Padded to a power of two with its last id, so that a few
            // statement shapes, each prepared once per connection, serve
            // every length.
            let width = chunk.len().next_power_of_two();
            let mut query = sqlx::query(sqlx::AssertSqlSafe(ack_sql(width))).bind(now_ms);
            for n in 0..width {
                query = query.bind(chunk[n.min(chunk.len() - 1)]);
            }
            acknowledged += query.execute(&self.pool).await?.rows_affected();
        }
        Ok(acknowledged)
    }
}

/// Ids one acknowledging statement marks at most.
const ACK_CHUNK: usize = 256;

/// `UPDATE outbox … WHERE id IN ($2, …)` for `width` ids (`$1` is the time).
fn ack_sql(width: usize) -> String {
    let ids: Vec<String> = (2..width + 2).map(|n| format!("${n}")).collect();
    format!(
        "UPDATE outbox SET published_at_ms = $1 WHERE published_at_ms IS NULL AND id IN ({})",
        ids.join(", ")
    )
}

fn create_parent_dir(url: &str) -> anyhow::Result<()> {
    let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(parent) = Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", parent.display()))?;
    }
    Ok(())
}

/// A filter's value, bound in the order [`tickets_sql`] numbers them.
#[derive(Debug, PartialEq)]
enum FilterValue<'a> {
    Text(&'a str),
    Id(i64),
}

/// The listing statement with a condition for each filter given: the cursor
/// is `$1`, the filters' values `$2`… (returned in that order), the limit last.
fn tickets_sql(filter: &TicketFilter) -> (String, Vec<FilterValue<'_>>) {
    use std::fmt::Write;
    let mut filters = Vec::new();
    if !filter.category.is_empty() {
        filters.push(("category", FilterValue::Text(&filter.category)));
    }
    if !filter.ticket_type.is_empty() {
        filters.push(("ticket_type", FilterValue::Text(&filter.ticket_type)));
    }
    if let Some(event_id) = filter.event_id {
        filters.push(("event_id", FilterValue::Id(event_id)));
    }
    let mut sql = String::from(
        "SELECT seq, detail, last_event, created_at_ms, updated_at_ms FROM tickets WHERE seq < $1",
    );
    for (n, (column, _)) in filters.iter().enumerate() {
        let _ = write!(sql, " AND {column} = ${}", n + 2);
    }
    let _ = write!(sql, " ORDER BY seq DESC LIMIT ${}", filters.len() + 2);
    (sql, filters.into_iter().map(|(_, value)| value).collect())
}

/// Reads (detail, last_event, created_at_ms, updated_at_ms) from column `at`.
fn stored_ticket_at(row: &sqlx::any::AnyRow, at: usize) -> Result<StoredTicket, StoreError> {
    let detail: Vec<u8> = row.try_get(at)?;
    let event = TicketEvent::decode(detail.as_slice())
        .map_err(|e| StoreError::Internal(format!("stored ticket does not decode: {e}")))?;
    let last_event: String = row.try_get(at + 1)?;
    Ok(StoredTicket {
        ticket: event.ticket,
        buyer: event.buyer,
        last_event: EventType::from_petzi_name(&last_event).into(),
        created_at: Some(timestamp(row.try_get(at + 2)?)),
        updated_at: Some(timestamp(row.try_get(at + 3)?)),
    })
}

/// sum/count in cents, rounded half up to the cent, as Money.
fn average(sum_cents: i64, count: i64, currency: &str) -> Option<Money> {
    if count == 0 {
        return None;
    }
    Some(Money::from_cents(currency, (2 * sum_cents + count) / (2 * count)))
}

/// `head` followed by `rows` groups of `columns` numbered binds, then `tail`:
/// one statement for a whole batch (multi-row VALUES, in PostgreSQL and
/// SQLite). Only placeholders are generated; every value is bound.
fn multi_row(head: &str, columns: usize, rows: usize, tail: &str) -> String {
    use std::fmt::Write;
    let mut sql = String::with_capacity(head.len() + tail.len() + rows * columns * 6);
    sql.push_str(head);
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..columns {
            let sep = if column == 0 { "" } else { ", " };
            let _ = write!(sql, "{sep}${}", row * columns + column + 1);
        }
        sql.push(')');
    }
    sql.push_str(tail);
    sql
}

fn ticket_or<'a>(e: &'a TicketEvent, none: &'a Ticket) -> &'a Ticket {
    e.ticket.as_ref().unwrap_or(none)
}

/// Bytes of bound values per statement, at most (one row may exceed it). A
/// statement is sent in one write: past a TLS record (16 KiB) the driver's
/// second write waits for the server's delayed ACK (Nagle, ~40 ms), since
/// sqlx does not set TCP_NODELAY.
const STATEMENT_BYTES: usize = 12 * 1024;

/// Splits `items` into runs whose sizes (`size` + a row's fixed columns) fit
/// in [`STATEMENT_BYTES`], each run one multi-row statement.
fn chunks<T>(items: &[T], size: impl Fn(&T) -> usize) -> impl Iterator<Item = &[T]> {
    const ROW_OVERHEAD: usize = 256;
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (mut n, mut bytes) = (0, 0);
        while n < rest.len() && (n == 0 || bytes + size(&rest[n]) + ROW_OVERHEAD <= STATEMENT_BYTES) {
            bytes += size(&rest[n]) + ROW_OVERHEAD;
            n += 1;
        }
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

/// One ticket's row in a batch's upsert.
#[derive(Debug, PartialEq)]
struct TicketRow {
    /// The event (an index into the batch's new events) whose state the row holds.
    last: usize,
    /// When the batch first saw the ticket (kept if the ticket already exists).
    created_at_ms: i64,
}

/// A ticket's state after a batch's new events, applied in order as separate
/// upserts would: each event replaces the state, except that a "created"
/// never replaces an "updated". One row per ticket, in order of first sight,
/// since one statement cannot upsert the same row twice. Against the row
/// already stored the upsert applies the same rule.
fn fold_tickets(new: &[&NewEvent]) -> Vec<TicketRow> {
    fn number(e: &TicketEvent) -> &str {
        e.ticket.as_ref().map_or("", |t| t.number.as_str())
    }
    let mut rows: Vec<TicketRow> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, n) in new.iter().enumerate() {
        let e = &n.event;
        match index.get(number(e)) {
            None => {
                index.insert(number(e), rows.len());
                rows.push(TicketRow { last: i, created_at_ms: millis(e.received_at.as_ref()) });
            }
            Some(&at) => {
                let current = new[rows[at].last].event.r#type();
                if !(current == EventType::TicketUpdated && e.r#type() == EventType::TicketCreated) {
                    rows[at].last = i;
                }
            }
        }
    }
    rows
}

pub fn millis(ts: Option<&prost_types::Timestamp>) -> i64 {
    ts.map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos / 1_000_000))
}

pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// A PostgreSQL database of a test's own (at TEST_POSTGRES_URL's server),
/// created empty and dropped by [`ScratchPostgres::drop_database`].
#[cfg(test)]
pub(crate) struct ScratchPostgres {
    pub db: Database,
    admin: sqlx::PgConnection,
    name: String,
}

#[cfg(test)]
impl ScratchPostgres {
    pub async fn create(prefix: &str) -> Self {
        use sqlx::Connection;
        let url = std::env::var("TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("{prefix}_{}", std::process::id());
        let mut admin =
            sqlx::PgConnection::connect(&url).await.expect("PostgreSQL reachable (TEST_POSTGRES_URL)");
        for sql in [format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), format!("CREATE DATABASE {name}")]
        {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await.unwrap();
        }
        let base = url.rsplit_once('/').map_or(url.as_str(), |(base, _)| base);
        let db = Database::connect_lazy(&format!("{base}/{name}"), Duration::from_secs(5)).unwrap();
        Self { db, admin, name }
    }

    /// Runs one statement on the scratch database (a test's set-up).
    pub async fn execute(&self, sql: String) {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&self.db.pool).await.unwrap();
    }

    pub async fn drop_database(mut self) {
        self.db.pool.close().await;
        let sql = format!("DROP DATABASE {} WITH (FORCE)", self.name);
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut self.admin).await.unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_round_half_up_to_the_cent() {
        let avg = average(100 + 101, 2, "CHF").unwrap();
        assert_eq!((avg.units, avg.nanos), (1, 10_000_000)); // 1.005 → 1.01
        let avg = average(4250 * 3, 3, "CHF").unwrap();
        assert_eq!((avg.units, avg.nanos), (42, 500_000_000));
        assert!(average(0, 0, "CHF").is_none());
    }

    #[test]
    fn timestamps_round_trip_through_millis() {
        let t = timestamp(1_795_000_000_123);
        assert_eq!((t.seconds, t.nanos), (1_795_000_000, 123_000_000));
        assert_eq!(millis(Some(&t)), 1_795_000_000_123);
    }

    fn event(id: &str, kind: EventType, number: &str, reason: &str, at_ms: i64) -> NewEvent {
        let mut event = TicketEvent {
            delivery_id: id.into(),
            ticket: Some(Ticket {
                number: number.into(),
                title: format!("{id} title"),
                category: "Concert".into(),
                cancellation_reason: reason.into(),
                price: Some(Money { currency_code: "CHF".into(), units: 20, nanos: 0 }),
                ..Ticket::default()
            }),
            received_at: Some(timestamp(at_ms)),
            signed_at: Some(timestamp(at_ms)),
            ..TicketEvent::default()
        };
        event.set_type(kind);
        NewEvent { event, payload: id.as_bytes().to_vec(), traceparent: String::new() }
    }

    #[test]
    fn a_batch_folds_each_ticket_as_sequential_upserts_would() {
        use EventType::{TicketCreated as C, TicketUpdated as U};
        let batch = [
            event("a1", C, "A", "", 1),
            event("b1", C, "B", "", 2),
            event("a2", U, "A", "customer_request", 3),
            event("a3", C, "A", "", 4), // late "created": does not undo a2
            event("b2", C, "B", "", 5), // a second "created" replaces the first
        ];
        let refs: Vec<&NewEvent> = batch.iter().collect();
        assert_eq!(
            fold_tickets(&refs),
            [TicketRow { last: 2, created_at_ms: 1 }, TicketRow { last: 4, created_at_ms: 2 }]
        );
        let sizes = [5_000, 5_000, 5_000, 20_000, 1];
        let runs: Vec<usize> = chunks(&sizes, |n| *n).map(<[_]>::len).collect();
        assert_eq!(runs, [2, 1, 1, 1], "runs fit in the budget; a row larger than it goes alone");
        assert_eq!(
            multi_row("INSERT INTO t (a, b) VALUES ", 2, 3, " RETURNING a"),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4), ($5, $6) RETURNING a"
        );
    }

    /// One batch with copies, a cancellation and a late "created", then a
    /// second batch against the stored rows: the same results as one
    /// statement per event, on both backends.
    async fn batches_store_what_sequential_writes_would(db: Database) {
        use EventType::{TicketCreated as C, TicketUpdated as U};
        db.migrate().await.unwrap();
        let first = [
            event("a1", C, "A", "", 1_000),
            event("b1", C, "B", "", 2_000),
            event("a1", C, "A", "", 1_000), // the sender's retry, in the same batch
            event("a2", U, "A", "event_cancellation", 3_000),
            event("a3", C, "A", "", 4_000),
        ];
        let refs: Vec<&NewEvent> = first.iter().collect();
        assert_eq!(db.save_batch(&refs).await.unwrap(), [true, true, false, true, true]);
        let second =
            [event("b1", C, "B", "", 2_000), event("a4", C, "A", "", 5_000), event("c1", C, "C", "", 6_000)];
        let refs: Vec<&NewEvent> = second.iter().collect();
        assert_eq!(db.save_batch(&refs).await.unwrap(), [false, true, true]);

        let a = db.ticket("A").await.unwrap().unwrap();
        assert_eq!(a.last_event(), EventType::TicketUpdated, "the cancellation stands");
        let ticket = a.ticket.as_ref().unwrap();
        assert_eq!(
            (ticket.title.as_str(), ticket.cancellation_reason.as_str()),
            ("a2 title", "event_cancellation")
        );
        assert_eq!((millis(a.created_at.as_ref()), millis(a.updated_at.as_ref())), (1_000, 3_000));
        let b = db.ticket("B").await.unwrap().unwrap();
        assert_eq!(b.ticket.unwrap().title, "b1 title");
        let (outbox, backlog) = db.outbox(100).await.unwrap();
        let ids: Vec<&str> = outbox.iter().map(|m| m.message_id.as_str()).collect();
        assert_eq!(ids, ["a1", "b1", "a2", "a3", "a4", "c1"], "one message per new event, in delivery order");
        assert_eq!(backlog, 6);
        let listed = db.tickets(&TicketFilter::default(), 10).await.unwrap();
        let numbers: Vec<String> = listed.into_iter().map(|(_, t)| t.ticket.unwrap().number).collect();
        assert_eq!(numbers, ["C", "B", "A"], "tickets in order of first sight, newest first");

        // A batch too large for one statement per table is split, and still
        // one transaction with every row.
        let big: Vec<NewEvent> = (0..60)
            .map(|i| {
                let mut e = event(&format!("big{i}"), C, &format!("BIG{i}"), "", 7_000 + i);
                e.payload = vec![b'x'; 2048];
                e
            })
            .collect();
        let refs: Vec<&NewEvent> = big.iter().chain(&big[..2]).collect();
        let saved = db.save_batch(&refs).await.unwrap();
        assert_eq!(saved.iter().filter(|new| **new).count(), 60, "{saved:?}");
        assert!(!saved[60] && !saved[61], "the copies at the end are duplicates");
        assert_eq!(db.outbox(1000).await.unwrap().1, 66);
        assert_eq!(db.tickets(&TicketFilter::default(), 1000).await.unwrap().len(), 63);
    }

    // A selective filter reads its own index (rather than walking every
    // ticket newest first and filtering), and no filter the primary key. And
    // a filter on an event id matches that id alone, a negative one too.
    #[tokio::test]
    #[ignore = "needs PostgreSQL (make test runs it)"]
    async fn postgres_a_selective_listing_reads_its_index() {
        let scratch = ScratchPostgres::create("tm_db_plans").await;
        let db = scratch.db.clone();
        db.migrate().await.unwrap();
        // 20,000 tickets; 10 of them in a rare category, of a rare type, for a rare event.
        sqlx::raw_sql(
            "INSERT INTO tickets (number, ticket_type, title, category, event_id, event_name, cancellation_reason, \
               promoter, price_cents, currency, last_event, detail, created_at_ms, updated_at_ms) \
             SELECT 'P' || g, CASE WHEN g % 2000 = 1 THEN 'rare' ELSE 'type' || (g % 4) END, '', \
               CASE WHEN g % 2000 = 2 THEN 'rare' ELSE 'category' || (g % 4) END, \
               CASE WHEN g % 2000 = 3 THEN 9999 ELSE g % 100 END, '', '', '', 100, 'CHF', \
               'ticket_created', ''::bytea, 0, 0 FROM generate_series(1, 20000) AS g; \
             ANALYZE tickets",
        )
        .execute(&db.pool)
        .await
        .unwrap();
        let by = |category: &str, ticket_type: &str, event_id| TicketFilter {
            category: category.into(),
            ticket_type: ticket_type.into(),
            event_id,
            before_seq: None,
        };
        let cases = [
            (by("rare", "", None), "tickets_category"),
            (by("", "rare", None), "tickets_ticket_type"),
            (by("", "", Some(9999)), "tickets_event_id"),
            (by("", "", None), "tickets_pkey"),
        ];
        let mut conn = db.pool.acquire().await.unwrap();
        for (n, (filter, index)) in cases.iter().enumerate() {
            // The statement as app-storage sends it, prepared with the types
            // it binds, explained for these values.
            let (sql, values) = tickets_sql(filter);
            let mut types = vec!["bigint"];
            let mut args = vec![i64::MAX.to_string()];
            for value in &values {
                match value {
                    FilterValue::Text(text) => (types.push("text"), args.push(format!("'{text}'"))),
                    FilterValue::Id(id) => (types.push("bigint"), args.push(id.to_string())),
                };
            }
            types.push("bigint");
            args.push("50".into());
            let prepare = format!("PREPARE listing{n} ({}) AS {sql}", types.join(", "));
            sqlx::raw_sql(sqlx::AssertSqlSafe(prepare)).execute(&mut *conn).await.unwrap();
            let explain = format!("EXPLAIN EXECUTE listing{n} ({})", args.join(", "));
            let plan: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(explain))
                .fetch_all(&mut *conn)
                .await
                .unwrap()
                .iter()
                .map(|row| row.try_get(0).unwrap())
                .collect();
            let plan = plan.join("\n");
            let reads = [format!("using {index} "), format!("Index Scan on {index} ")];
            assert!(reads.iter().any(|r| plan.contains(r)), "{filter:?} does not read {index}:\n{plan}");
        }
        drop(conn);

        let listed = |event_id| {
            let db = db.clone();
            async move { db.tickets(&by("", "", Some(event_id)), 500).await.unwrap().len() }
        };
        assert_eq!(listed(42).await, 200, "the tickets of event 42 alone");
        assert_eq!(listed(-1).await, 0, "a negative id matches no ticket, not every ticket");
        scratch.drop_database().await;
    }

    #[tokio::test]
    async fn sqlite_batches_store_what_sequential_writes_would() {
        let dir = std::env::temp_dir().join(format!("tm-db-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite:{}?mode=rwc", dir.join("batch.db").display());
        batches_store_what_sequential_writes_would(
            Database::connect_lazy(&url, Duration::from_secs(5)).unwrap(),
        )
        .await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL (make test runs it)"]
    async fn postgres_batches_store_what_sequential_writes_would() {
        let scratch = ScratchPostgres::create("tm_db_test").await;
        batches_store_what_sequential_writes_would(scratch.db.clone()).await;
        scratch.drop_database().await;
    }
}
