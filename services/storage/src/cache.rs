//! Redis cache-aside for single tickets and the stats. Best effort by design:
//! every call is bounded by a short timeout, and any Redis failure is counted
//! and then ignored, so reads fall back to the database.
//!
//! Two rules keep it correct through an outage:
//! - after a failure the cache is skipped for [`PAUSE`], so a read does not
//!   pay the timeout again and again while Redis is away;
//! - after an invalidation failed, the cache is not used until a TTL has
//!   passed: entries written before the outage may outlive it (a network cut
//!   leaves them in Redis), and by then every one of them has expired.

use std::{
    sync::{Arc, LazyLock, Mutex},
    time::{Duration, Instant},
};

use prometheus::IntCounterVec;
use redis::{AsyncCommands, aio::ConnectionManager};
use ticketmesh_runtime::{metrics, telemetry};
use tracing::Instrument;

static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    metrics::counter_vec(
        "cache_requests_total",
        "Cache lookups and writes, by operation and result (hit, miss, stored, error; skipped: paused after a failure)",
        &["op", "result"],
    )
});

static ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    metrics::counter_vec(
        "cache_errors_total",
        "Cache operations that failed or timed out (the read fell back to the database)",
        &["op"],
    )
});

/// A Redis client span when the call serves a traced request.
fn span(command: &'static str) -> tracing::Span {
    if telemetry::in_trace() {
        tracing::info_span!(
            "redis",
            otel.name = command,
            otel.kind = "client",
            db.system.name = "redis",
            db.operation.name = command,
        )
    } else {
        tracing::Span::none()
    }
}

/// How long the cache is left alone after a failure.
const PAUSE: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Cache {
    conn: ConnectionManager,
    prefix: String,
    ttl_secs: u64,
    timeout: Duration,
    health: Arc<Mutex<Health>>,
}

/// Until when the last failures keep the cache out of use.
#[derive(Default)]
struct Health {
    /// After any failure: skip Redis until then.
    paused_until: Option<Instant>,
    /// After a failed invalidation: a TTL later, every entry that may have
    /// missed it has expired.
    stale_until: Option<Instant>,
}

pub const STATS: &str = "stats";

impl Cache {
    /// Prepares a connection that is made on first use and remade after a
    /// failure; Redis being down at start is not an error.
    pub fn new(url: &str, prefix: &str, ttl: Duration, timeout: Duration) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("REDIS_URL {url:?} is not a Redis URL: {e}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
            ttl_secs: ttl.as_secs().max(1),
            timeout,
            health: Arc::default(),
        })
    }

    pub fn ticket_key(&self, number: &str) -> String {
        format!("{}:ticket:{number}", self.prefix)
    }

    pub fn stats_key(&self) -> String {
        format!("{}:{STATS}", self.prefix)
    }

    /// Whether Redis may be used now: not paused after a failure, and no
    /// entry left from before a failed invalidation.
    fn usable(&self) -> bool {
        let now = Instant::now();
        !self.paused() && self.health.lock().is_ok_and(|h| h.stale_until.is_none_or(|until| now >= until))
    }

    /// Whether a failure was seen less than [`PAUSE`] ago.
    fn paused(&self) -> bool {
        let now = Instant::now();
        self.health.lock().map_or(true, |h| h.paused_until.is_some_and(|until| now < until))
    }

    pub async fn get(&self, op: &'static str, key: &str) -> Option<Vec<u8>> {
        if !self.usable() {
            REQUESTS.with_label_values(&[op, "skipped"]).inc();
            return None;
        }
        let mut conn = self.conn.clone();
        let get = conn.get::<_, Option<Vec<u8>>>(key).instrument(span("GET"));
        match tokio::time::timeout(self.timeout, get).await {
            Ok(Ok(Some(value))) => {
                REQUESTS.with_label_values(&[op, "hit"]).inc();
                Some(value)
            }
            Ok(Ok(None)) => {
                REQUESTS.with_label_values(&[op, "miss"]).inc();
                None
            }
            Ok(Err(error)) => self.failed(op, &error.to_string()),
            Err(_) => self.failed(op, "timed out"),
        }
    }

    pub async fn put(&self, op: &'static str, key: &str, value: &[u8]) {
        if !self.usable() {
            return;
        }
        let mut conn = self.conn.clone();
        let set = conn.set_ex::<_, _, ()>(key, value, self.ttl_secs).instrument(span("SETEX"));
        match tokio::time::timeout(self.timeout, set).await {
            Ok(Ok(())) => REQUESTS.with_label_values(&[op, "stored"]).inc(),
            Ok(Err(error)) => {
                self.failed(op, &error.to_string());
            }
            Err(_) => {
                self.failed(op, "timed out");
            }
        }
    }

    /// Drops the stats and the given tickets after a write. If Redis is down
    /// the entries expire by their TTL instead.
    pub async fn invalidate<'a>(&self, tickets: impl Iterator<Item = &'a str>) {
        let mut keys: Vec<String> = tickets.map(|n| self.ticket_key(n)).collect();
        if keys.is_empty() {
            return;
        }
        keys.push(self.stats_key());
        // Deleted even while reads skip the cache, so that window ends.
        if self.paused() {
            self.stale_for_a_ttl();
            return;
        }
        let mut conn = self.conn.clone();
        let del = conn.del::<_, ()>(&keys).instrument(span("DEL"));
        let error = match tokio::time::timeout(self.timeout, del).await {
            Ok(Ok(())) => {
                REQUESTS.with_label_values(&["invalidate", "stored"]).inc();
                return;
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        self.failed("invalidate", &error);
        self.stale_for_a_ttl();
    }

    /// An invalidation was missed: no read or write of the cache until the
    /// entries it should have removed have expired.
    fn stale_for_a_ttl(&self) {
        if let Ok(mut health) = self.health.lock() {
            health.stale_until = Some(Instant::now() + Duration::from_secs(self.ttl_secs));
        }
    }

    /// Counts a failure and pauses the cache; always `None` (a miss).
    fn failed(&self, op: &'static str, error: &str) -> Option<Vec<u8>> {
        REQUESTS.with_label_values(&[op, "error"]).inc();
        ERRORS.with_label_values(&[op]).inc();
        if let Ok(mut health) = self.health.lock() {
            health.paused_until = Some(Instant::now() + PAUSE);
        }
        tracing::debug!(op, error, "cache unavailable, using the database");
        None
    }
}
