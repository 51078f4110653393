//! app-storage: keeps ticket events in PostgreSQL (or the embedded SQLite)
//! with their outbox, answers the reads behind the gateway's `/api`, and
//! caches single tickets and the stats in Redis when one is configured.

pub mod cache;
pub mod db;
pub mod stats;
pub mod writer;

#[cfg(test)]
mod tests;

use std::{
    future::Future,
    sync::{
        Arc, LazyLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use clap::Parser;
use prometheus::IntGauge;
use prost::Message;
use ticketmesh_proto::v1::{
    AckOutboxRequest, AckOutboxResponse, FetchOutboxRequest, FetchOutboxResponse, GetStatsRequest,
    GetTicketRequest, ListTicketsRequest, ListTicketsResponse, RecordOutboxFailureRequest,
    RecordOutboxFailureResponse, ReleaseOutboxLeaseRequest, ReleaseOutboxLeaseResponse, SaveEventRequest,
    SaveEventResponse, Stats, StoredTicket,
    storage_service_server::{self, StorageService, StorageServiceServer},
};
use ticketmesh_runtime::{
    Faults,
    backoff::Backoff,
    faults::Targets,
    grpc::{GrpcServer, Health},
    metrics,
};
use tokio::{net::TcpListener, sync::watch};
use tonic::{Request, Response, Status};

use crate::{
    cache::Cache,
    db::{Database, NewEvent, StoreError, TicketFilter},
    stats::StatsMemo,
    writer::Writer,
};

static OUTBOX_BACKLOG: LazyLock<IntGauge> = LazyLock::new(|| {
    metrics::gauge("outbox_backlog", "Outbox messages not yet published (as of the last fetch)")
});
static OUTBOX_DEAD_LETTERS: LazyLock<IntGauge> = LazyLock::new(|| {
    metrics::gauge(
        "outbox_dead_letters",
        "Outbox messages given up on after repeated failures retrying cannot mend (as of the last fetch)",
    )
});

static STATS_FOLD_FAILING: LazyLock<IntGauge> = LazyLock::new(|| {
    metrics::gauge(
        "storage_stats_fold_failing",
        "1 while folding the stats deltas into the rollup fails (a stats read then adds up more deltas each second), else 0",
    )
});

#[derive(Debug, Clone, Parser)]
#[command(name = "app-storage", version, about = "ticketmesh storage service (gRPC)", after_help = ticketmesh_runtime::environment_help!())]
pub struct Args {
    /// Address of the gRPC server.
    #[arg(long, env = "GRPC_ADDR", default_value = "0.0.0.0:50053")]
    pub grpc_addr: String,
    /// Address of the admin HTTP server (/health, /ready, /metrics).
    #[arg(long, env = "ADMIN_ADDR", default_value = "0.0.0.0:9003")]
    pub admin_addr: String,
    /// postgres://user@host/db for PostgreSQL; sqlite:path?mode=rwc for the embedded default.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite:data/ticketmesh.db?mode=rwc")]
    pub database_url: String,
    /// Bound on each database transaction or query.
    #[arg(long, env = "DATABASE_TIMEOUT", default_value = "5s", value_parser = ticketmesh_runtime::parse_duration)]
    pub database_timeout: Duration,
    /// Most events written in one transaction (group commit).
    #[arg(long, env = "MAX_BATCH", default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_batch: u16,
    /// Transactions the group commit runs at once on PostgreSQL (SQLite
    /// takes one writer at a time: there it is always 1).
    #[arg(long, env = "WRITERS", default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub writers: u8,
    /// How long a published outbox message is kept (then pruned).
    #[arg(long, env = "OUTBOX_RETENTION", default_value = "7d", value_parser = ticketmesh_runtime::parse_duration)]
    pub outbox_retention: Duration,
    /// How long a stored delivery is kept (then pruned). A sender's retry
    /// of a delivery older than this is stored and published again.
    #[arg(long, env = "EVENTS_RETENTION", default_value = "30d", value_parser = ticketmesh_runtime::parse_duration)]
    pub events_retention: Duration,
    /// How often the pruning runs.
    #[arg(long, env = "PRUNE_INTERVAL", default_value = "10m", value_parser = ticketmesh_runtime::parse_duration)]
    pub prune_interval: Duration,
    /// redis://host:port for the read cache; unset means no cache.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of every cache key (lets several deployments share one Redis).
    #[arg(long, env = "CACHE_PREFIX", default_value = "ticketmesh")]
    pub cache_prefix: String,
    /// How long a cached ticket or stats entry lives.
    #[arg(long, env = "CACHE_TTL", default_value = "30s", value_parser = ticketmesh_runtime::parse_duration)]
    pub cache_ttl: Duration,
    /// Bound on each cache call; past it the read goes to the database (and
    /// the cache is skipped for a second). Well under the gateway's 250 ms
    /// read deadline, so a read with Redis gone still answers.
    #[arg(long, env = "CACHE_TIMEOUT", default_value = "100ms", value_parser = ticketmesh_runtime::parse_duration)]
    pub cache_timeout: Duration,
    #[command(flatten)]
    pub fault: ticketmesh_runtime::FaultArgs,
}

pub struct Storage {
    db: Database,
    cache: Option<Cache>,
    stats: StatsMemo,
    writer: Writer,
    health: Health,
    timeout: Duration,
}

/// A storage failure as a gRPC status: an outage is UNAVAILABLE (retry later).
fn status(e: StoreError) -> Status {
    match e {
        StoreError::Unavailable(m) => Status::unavailable(m),
        StoreError::Internal(m) => Status::internal(m),
        StoreError::Refused(m) => {
            Status::invalid_argument(format!("the database refused this event: {}", petzi::quoted(&m)))
        }
    }
}

impl Storage {
    fn ensure_ready(&self) -> Result<(), Status> {
        if self.health.readiness().get() { Ok(()) } else { Err(Status::unavailable("database unreachable")) }
    }

    async fn bounded<T>(&self, f: impl Future<Output = Result<T, StoreError>>) -> Result<T, Status> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(result) => result.map_err(status),
            Err(_) => Err(Status::unavailable(format!("database did not answer in {:?}", self.timeout))),
        }
    }

    /// Cache-aside read of a protobuf value.
    async fn cached<T: Message + Default>(
        &self,
        op: &'static str,
        key: impl FnOnce(&Cache) -> String,
        load: impl Future<Output = Result<Option<T>, StoreError>>,
    ) -> Result<Option<T>, Status> {
        let key = self.cache.as_ref().map(key);
        if let (Some(cache), Some(key)) = (&self.cache, &key)
            && let Some(bytes) = cache.get(op, key).await
            && let Ok(value) = T::decode(bytes.as_slice())
        {
            return Ok(Some(value));
        }
        self.ensure_ready()?;
        let value = self.bounded(load).await?;
        if let (Some(cache), Some(key), Some(value)) = (&self.cache, &key, &value) {
            cache.put(op, key, &value.encode_to_vec()).await;
        }
        Ok(value)
    }
}

#[tonic::async_trait]
impl StorageService for Storage {
    async fn save_event(
        &self,
        request: Request<SaveEventRequest>,
    ) -> Result<Response<SaveEventResponse>, Status> {
        let request = request.into_inner();
        let event = request.event.ok_or_else(|| Status::invalid_argument("event is required"))?;
        if event.delivery_id.is_empty() {
            return Err(Status::invalid_argument("event.delivery_id is required"));
        }
        if event.ticket.as_ref().is_none_or(|t| t.number.is_empty()) {
            return Err(Status::invalid_argument("event.ticket.number is required"));
        }
        self.ensure_ready()?;
        let delivery_id = event.delivery_id.clone();
        let new = self
            .writer
            .save(NewEvent { event, payload: request.payload, traceparent: request.traceparent })
            .await
            .map_err(status)?;
        Ok(Response::new(SaveEventResponse { delivery_id, duplicate: !new }))
    }

    async fn get_ticket(&self, request: Request<GetTicketRequest>) -> Result<Response<StoredTicket>, Status> {
        let number = request.into_inner().number;
        if number.is_empty() {
            return Err(Status::invalid_argument("number is required"));
        }
        self.cached("ticket", |c| c.ticket_key(&number), self.db.ticket(&number))
            .await?
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no ticket {}", petzi::quoted(&number))))
    }

    async fn list_tickets(
        &self,
        request: Request<ListTicketsRequest>,
    ) -> Result<Response<ListTicketsResponse>, Status> {
        let r = request.into_inner();
        let page_size = match r.page_size {
            0 => 50,
            n @ 1..=500 => i64::from(n),
            n => return Err(Status::invalid_argument(format!("page_size must be 1..500, got {n}"))),
        };
        let before_seq = match r.page_token.as_str() {
            "" => None,
            token => Some(token.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "page_token {} is not one this service issued",
                    petzi::quoted(token)
                ))
            })?),
        };
        let filter =
            TicketFilter { category: r.category, ticket_type: r.r#type, event_id: r.event_id, before_seq };
        self.ensure_ready()?;
        // One extra row tells whether a next page exists.
        let mut rows = self.bounded(self.db.tickets(&filter, page_size + 1)).await?;
        let more = rows.len() as i64 > page_size;
        rows.truncate(page_size as usize);
        let next_page_token = match rows.last() {
            Some((seq, _)) if more => seq.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(ListTicketsResponse {
            tickets: rows.into_iter().map(|(_, t)| t).collect(),
            next_page_token,
        }))
    }

    async fn get_stats(&self, _: Request<GetStatsRequest>) -> Result<Response<Stats>, Status> {
        let stats = self
            .cached("stats", Cache::stats_key, async { self.stats.get(self.db.stats()).await.map(Some) })
            .await?
            .unwrap_or_default();
        Ok(Response::new(stats))
    }

    async fn fetch_outbox(
        &self,
        request: Request<FetchOutboxRequest>,
    ) -> Result<Response<FetchOutboxResponse>, Status> {
        let request = request.into_inner();
        let limit = match request.limit {
            0 => 100,
            n @ 1..=1000 => i64::from(n),
            n => return Err(Status::invalid_argument(format!("limit must be 1..1000, got {n}"))),
        };
        check_relay_id(&request.relay_id)?;
        let lease = match request.lease.map(Duration::try_from) {
            None => Duration::from_secs(5),
            Some(Ok(lease)) if (Duration::from_secs(1)..=Duration::from_secs(60)).contains(&lease) => lease,
            Some(_) => return Err(Status::invalid_argument("lease must be 1..60 s")),
        };
        self.ensure_ready()?;
        let now = db::millis(Some(&std::time::SystemTime::now().into()));
        let until = now + lease.as_millis() as i64;
        let (holder, until) = self.bounded(self.db.relay_lease(&request.relay_id, now, until)).await?;
        // Every fetch, the holder's or not, so each replica's figure is fresh.
        OUTBOX_DEAD_LETTERS.set(self.bounded(self.db.dead_letters()).await?);
        let lease_until = Some(db::timestamp(until));
        if holder != request.relay_id {
            return Ok(Response::new(FetchOutboxResponse {
                leader: false,
                holder,
                lease_until,
                ..Default::default()
            }));
        }
        let (messages, backlog) = self.bounded(self.db.outbox(limit)).await?;
        OUTBOX_BACKLOG.set(backlog);
        Ok(Response::new(FetchOutboxResponse { messages, backlog, leader: true, holder, lease_until }))
    }

    async fn record_outbox_failure(
        &self,
        request: Request<RecordOutboxFailureRequest>,
    ) -> Result<Response<RecordOutboxFailureResponse>, Status> {
        let request = request.into_inner();
        if !(1..=100).contains(&request.max_attempts) {
            return Err(Status::invalid_argument(format!(
                "max_attempts must be 1..100, got {}",
                request.max_attempts
            )));
        }
        self.ensure_ready()?;
        let error: String = request.error.chars().take(1000).collect();
        let now = db::millis(Some(&std::time::SystemTime::now().into()));
        let (attempts, dead) = self
            .bounded(self.db.record_outbox_failure(request.id, &error, request.max_attempts, now))
            .await?;
        if dead {
            tracing::error!(id = request.id, attempts, %error, "outbox message is now a dead letter");
        }
        Ok(Response::new(RecordOutboxFailureResponse { attempts, dead }))
    }

    async fn ack_outbox(
        &self,
        request: Request<AckOutboxRequest>,
    ) -> Result<Response<AckOutboxResponse>, Status> {
        let ids = request.into_inner().ids;
        self.ensure_ready()?;
        let now = db::millis(Some(&std::time::SystemTime::now().into()));
        let acknowledged = self.bounded(self.db.ack_outbox(&ids, now)).await?;
        Ok(Response::new(AckOutboxResponse { acknowledged: acknowledged as i64 }))
    }

    async fn release_outbox_lease(
        &self,
        request: Request<ReleaseOutboxLeaseRequest>,
    ) -> Result<Response<ReleaseOutboxLeaseResponse>, Status> {
        let relay_id = request.into_inner().relay_id;
        check_relay_id(&relay_id)?;
        self.ensure_ready()?;
        let released = self.bounded(self.db.release_relay_lease(&relay_id)).await?;
        Ok(Response::new(ReleaseOutboxLeaseResponse { released }))
    }
}

/// A relay's name in the lease: 1..200 bytes (never echoed back).
fn check_relay_id(relay_id: &str) -> Result<(), Status> {
    if relay_id.is_empty() || relay_id.len() > 200 {
        return Err(Status::invalid_argument("relay_id must be 1..200 bytes"));
    }
    Ok(())
}

static PRUNED: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    metrics::counter_vec(
        "storage_pruned_rows_total",
        "Rows deleted past their retention, by table",
        &["table"],
    )
});

/// What pruning keeps, and how much it deletes per statement.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub outbox: Duration,
    pub events: Duration,
    pub every: Duration,
}

/// Rows per pruning statement.
const PRUNE_BATCH: i64 = 5_000;

/// Deletes what is past its retention, every `retention.every`, until
/// `stop`: each table in statements of [`PRUNE_BATCH`] rows until none is
/// left. Several replicas may prune at once: a row deleted twice is deleted once.
pub async fn prune(db: Database, retention: Retention, timeout: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        // First after one interval: at start the database may not be migrated yet.
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(retention.every) => {}
        }
        for (table, keep) in
            [(db::Prunable::Outbox, retention.outbox), (db::Prunable::Events, retention.events)]
        {
            let now = db::millis(Some(&std::time::SystemTime::now().into()));
            let before = now.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
            loop {
                match tokio::time::timeout(timeout, db.prune(table, before, PRUNE_BATCH)).await {
                    Ok(Ok(deleted)) => {
                        PRUNED.with_label_values(&[table.name()]).inc_by(deleted);
                        if deleted < PRUNE_BATCH as u64 || *stop.borrow() {
                            break;
                        }
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(%error, table = table.name(), "pruning failed; next time");
                        break;
                    }
                    Err(_) => {
                        tracing::warn!(
                            table = table.name(),
                            "pruning took longer than {timeout:?}; next time"
                        );
                        break;
                    }
                }
            }
        }
    }
}

/// How often the stats deltas are folded into their rollup, and at most how
/// many per statement (a second's worth at several thousand writes/s).
const FOLD_EVERY: Duration = Duration::from_secs(1);
const FOLD_BATCH: i64 = 10_000;

/// Folds the stats deltas that PostgreSQL's writes append into the rollup,
/// every [`FOLD_EVERY`], until `stop`: what a stats read adds up stays a
/// second of writes at most. Several replicas may fold at once.
pub async fn fold_stats(db: Database, timeout: Duration, mut stop: watch::Receiver<bool>) {
    if db.backend() == db::Backend::Sqlite {
        return;
    }
    // Said once when folding starts failing and once when it works again:
    // the deltas, and with them the cost of a stats read, grow meanwhile.
    let mut failing = false;
    STATS_FOLD_FAILING.set(0);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(FOLD_EVERY) => {}
        }
        fold_round(&db, timeout, &stop, &mut failing).await;
        STATS_FOLD_FAILING.set(i64::from(failing));
    }
}

/// One round: batches of [`FOLD_BATCH`] until the deltas are folded, `stop`
/// is set or a batch fails; `failing` says how the last batch went.
async fn fold_round(db: &Database, timeout: Duration, stop: &watch::Receiver<bool>, failing: &mut bool) {
    loop {
        let error = match tokio::time::timeout(timeout, db.fold_stats(FOLD_BATCH)).await {
            Ok(Ok(folded)) => {
                if std::mem::take(failing) {
                    tracing::info!("folding the stats deltas works again");
                }
                if folded < FOLD_BATCH as u64 || *stop.borrow() {
                    return;
                }
                continue;
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer in {timeout:?}"),
        };
        // Before the migration, or during an outage: the next round.
        if !std::mem::replace(failing, true) {
            tracing::warn!(%error, "folding the stats deltas failed; retrying every second");
        }
        return;
    }
}

/// Migrates, then keeps health in step with the database: NOT_SERVING while
/// it cannot be reached, SERVING again by itself when it answers (asked
/// every second while it does, with backoff while it does not).
async fn watch_database(db: Database, health: Health, timeout: Duration, stop: watch::Receiver<bool>) {
    // Set once the migrations have run: from then on a check is a ping.
    let migrated = Arc::new(AtomicBool::new(false));
    let check = move || {
        let (db, migrated) = (db.clone(), migrated.clone());
        async move {
            let first = !migrated.load(Ordering::Relaxed);
            let check = async { if first { db.migrate().await } else { db.ping().await } };
            let result = match tokio::time::timeout(timeout, check).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::Unavailable(format!("no answer in {timeout:?}"))),
            };
            match result {
                Ok(()) => {
                    if first {
                        tracing::info!(backend = ?db.backend(), "database migrated");
                        migrated.store(true, Ordering::Relaxed);
                    }
                    true
                }
                Err(error) => {
                    tracing::warn!(%error, "database not reachable, retrying");
                    false
                }
            }
        }
    };
    health.follow(check, Duration::from_secs(1), Backoff::default(), stop).await;
}

/// Serves storage on already bound listeners until `shutdown`.
pub async fn serve(
    args: Args,
    grpc_listener: TcpListener,
    admin_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let faults = Faults::from_spec(
        "app-storage",
        Targets::grpc(&[storage_service_server::SERVICE_NAME], &["db"]),
        &args.fault.faults,
    )?;
    let db = Database::connect_lazy(&args.database_url, args.database_timeout)?.with_faults(faults.clone());
    let cache = args
        .redis_url
        .as_deref()
        .map(|url| Cache::new(url, &args.cache_prefix, args.cache_ttl, args.cache_timeout))
        .transpose()?;
    let server = GrpcServer::new(&[storage_service_server::SERVICE_NAME]).await?.with_faults(faults);
    let health = server.health();
    let stats = StatsMemo::default();
    let writers = match db.backend() {
        db::Backend::Postgres => usize::from(args.writers),
        db::Backend::Sqlite => 1,
    };
    let writer = Writer::start(
        db.clone(),
        cache.clone(),
        stats.clone(),
        usize::from(args.max_batch),
        writers,
        args.database_timeout,
    );
    tokio::spawn(watch_database(db.clone(), health.clone(), args.database_timeout, server.stopping()));
    let retention = Retention {
        outbox: args.outbox_retention,
        events: args.events_retention,
        every: args.prune_interval,
    };
    tokio::spawn(prune(db.clone(), retention, args.database_timeout, server.stopping()));
    tokio::spawn(fold_stats(db.clone(), args.database_timeout, server.stopping()));
    let storage = Storage { db, cache, stats, writer, health, timeout: args.database_timeout };
    server
        .add_service(StorageServiceServer::new(storage))
        .serve(grpc_listener, admin_listener, shutdown)
        .await
}
