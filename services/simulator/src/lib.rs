//! app-simulator: realistic signed PETZI webhooks against a gateway. As a load
//! generator it sends `--count N` (closed loop, `--concurrency` in flight) or
//! `--rate R` for `--duration D` (open loop), and reports what a load tool
//! reports. As a canary it sends one delivery per `--interval` and reads it
//! back, and its exit status says whether the webhook path works.

pub mod payload;
pub mod report;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clap::Parser;
use tokio::{sync::Semaphore, task::JoinSet};

use payload::{Delivery, Generator};
use report::{Intent, Outcome, Report, Stats};

#[derive(Debug, Clone, Parser)]
#[command(name = "app-simulator", version, about = "PETZI simulator: signed webhooks as load or as a canary")]
pub struct Args {
    /// The gateway's base URL.
    #[arg(long, env = "GATEWAY_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The shared secret deliveries are signed with (HMAC-SHA256). The default is the demo value.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true, default_value = "secret")]
    pub secret: String,
    /// Send this many deliveries, as fast as --concurrency allows (the default: 100).
    #[arg(long, env = "COUNT", conflicts_with = "rate")]
    pub count: Option<u64>,
    /// Send this many deliveries a second (open loop), for --duration or until stopped.
    #[arg(long, env = "RATE", value_parser = positive)]
    pub rate: Option<f64>,
    /// How long to send at --rate.
    #[arg(long, env = "DURATION", value_parser = ticketmesh_runtime::parse_duration, requires = "rate")]
    pub duration: Option<Duration>,
    /// Most deliveries in flight at once.
    #[arg(long, env = "CONCURRENCY", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Share of deliveries that cancel a ticket sent earlier (ticket_updated).
    #[arg(long, env = "CANCEL_RATIO", default_value_t = 0.1, value_parser = ratio)]
    pub cancel_ratio: f64,
    /// Share of deliveries signed with the wrong secret (the gateway must answer 401).
    #[arg(long, env = "BAD_SIGNATURE_RATIO", default_value_t = 0.0, value_parser = ratio)]
    pub bad_signature_ratio: f64,
    /// Share of deliveries that resend an accepted body, as a sender's retry does (must be a duplicate).
    #[arg(long, env = "REPLAY_RATIO", default_value_t = 0.0, value_parser = ratio)]
    pub replay_ratio: f64,
    /// Canary mode: one delivery per --interval, read back from /api/tickets; with --count, stop
    /// after that many and exit 0 only if every one worked.
    #[arg(long, env = "CANARY")]
    pub canary: bool,
    /// Time between two canary probes.
    #[arg(long, env = "INTERVAL", default_value = "10s", value_parser = ticketmesh_runtime::parse_duration)]
    pub interval: Duration,
    /// Serve /health, /ready and /metrics (the canary's probe counters) on this address.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Bound on each request.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "10s", value_parser = ticketmesh_runtime::parse_duration)]
    pub request_timeout: Duration,
    /// Print the report (or each canary probe) as JSON.
    #[arg(long, env = "JSON_REPORT")]
    pub json: bool,
    /// Seed of the generated data (default: from the clock). Ticket numbers also carry the run's start time.
    #[arg(long, env = "SEED")]
    pub seed: Option<u64>,
}

fn ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a ratio between 0 and 1")),
    }
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Sends deliveries and judges the answers. Cloning shares everything.
#[derive(Clone, Debug)]
pub struct Sender {
    client: reqwest::Client,
    webhook: String,
    base: String,
    secret: Arc<Vec<u8>>,
    generator: Arc<Mutex<Generator>>,
    /// Bodies accepted so far, for replays (a bounded window).
    accepted: Arc<Mutex<Vec<String>>>,
    bad_signature_ratio: f64,
    replay_ratio: f64,
}

impl Sender {
    pub fn new(args: &Args) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(args.request_timeout)
            .connect_timeout(args.request_timeout)
            .pool_max_idle_per_host(args.concurrency as usize)
            .user_agent("PETZI webhook (ticketmesh simulator)")
            .build()?;
        let run = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let base = args.url.trim_end_matches('/').to_owned();
        Ok(Self {
            client,
            webhook: format!("{base}/webhook"),
            base,
            secret: Arc::new(args.secret.clone().into_bytes()),
            generator: Arc::new(Mutex::new(Generator::new(args.seed.unwrap_or(run), run, args.cancel_ratio))),
            accepted: Arc::default(),
            bad_signature_ratio: args.bad_signature_ratio,
            replay_ratio: args.replay_ratio,
        })
    }

    /// The next delivery to send, and what should come of it.
    fn next(&self) -> (Intent, Delivery) {
        let mut generator = self.generator.lock().unwrap_or_else(|e| e.into_inner());
        if self.replay_ratio > 0.0 && generator.rng().chance(self.replay_ratio) {
            let accepted = self.accepted.lock().unwrap_or_else(|e| e.into_inner());
            if !accepted.is_empty() {
                let body = accepted[generator.rng().below(accepted.len() as u64) as usize].clone();
                return (Intent::Replay, Delivery { number: String::new(), event: "replay", body });
            }
        }
        if self.bad_signature_ratio > 0.0 && generator.rng().chance(self.bad_signature_ratio) {
            return (Intent::BadSignature, generator.next_forged());
        }
        (Intent::Fresh, generator.next_delivery())
    }

    /// Signs (correctly or, for a forged delivery, with another secret) and sends one delivery.
    pub async fn send(&self, intent: Intent, delivery: &Delivery) -> (Outcome, Duration) {
        let secret: &[u8] =
            if intent == Intent::BadSignature { b"not-the-shared-secret" } else { &self.secret };
        let signature = petzi::sign(secret, unix_now() as i64, delivery.body.as_bytes());
        let started = Instant::now();
        let answer = self
            .client
            .post(&self.webhook)
            .header("content-type", "application/json")
            .header("petzi-version", "2")
            .header("petzi-signature", signature)
            .body(delivery.body.clone())
            .send()
            .await;
        let outcome = match answer {
            Ok(response) if response.status().is_success() => {
                match response.json::<serde_json::Value>().await {
                    Ok(body) if body["duplicate"] == true => Outcome::Duplicate,
                    Ok(_) => Outcome::Accepted,
                    Err(e) => Outcome::Failed(format!("unreadable 2xx body: {e}")),
                }
            }
            Ok(response) => Outcome::Rejected(response.status().as_u16()),
            Err(e) => Outcome::Failed(describe(&e)),
        };
        let latency = started.elapsed();
        if outcome == Outcome::Accepted && intent == Intent::Fresh {
            let mut accepted = self.accepted.lock().unwrap_or_else(|e| e.into_inner());
            if accepted.len() >= 1000 {
                accepted.swap_remove(0);
            }
            accepted.push(delivery.body.clone());
        }
        (outcome, latency)
    }

    /// One canary probe: a fresh delivery, accepted, then readable by number.
    pub async fn probe(&self) -> Result<Duration, String> {
        let started = Instant::now();
        let delivery = loop {
            let delivery = self.generator.lock().unwrap_or_else(|e| e.into_inner()).next_delivery();
            if delivery.event == "ticket_created" {
                break delivery;
            }
        };
        match self.send(Intent::Fresh, &delivery).await {
            (Outcome::Accepted, _) => {}
            (other, _) => return Err(format!("webhook {}: {other:?}", delivery.number)),
        }
        let url = format!("{}/api/tickets/{}", self.base, delivery.number);
        match self.client.get(&url).send().await {
            Ok(r) if r.status().is_success() => Ok(started.elapsed()),
            Ok(r) => Err(format!("GET {url}: {}", r.status())),
            Err(e) => Err(format!("GET {url}: {}", describe(&e))),
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else {
        e.to_string()
    }
}

/// A load run: sends until `count` is reached, `duration` has passed, or
/// `stop` resolves; prints a progress line to stderr every `progress` if set.
pub async fn load(
    args: &Args,
    stop: impl std::future::Future<Output = ()>,
    progress: Option<Duration>,
) -> anyhow::Result<Report> {
    let sender = Sender::new(args)?;
    let stats = Arc::new(Mutex::new(Stats::default()));
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(args.concurrency as usize));
    let mut in_flight = JoinSet::new();
    let count = if args.rate.is_some() { None } else { Some(args.count.unwrap_or(100)) };
    let period = args.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let end = args.duration.map(|d| started + d);
    let mut ticker = progress.map(|p| tokio::time::interval_at((started + p).into(), p));
    tokio::pin!(stop);
    let mut sent = 0u64;
    loop {
        if count.is_some_and(|n| sent >= n) || end.is_some_and(|e| Instant::now() >= e) {
            break;
        }
        // Open loop: the n-th delivery leaves at start + n × period, however long the others take.
        let due = period.map(|p| started + p.mul_f64(sent as f64));
        if due.zip(end).is_some_and(|(due, end)| due >= end) {
            break;
        }
        let permit = tokio::select! {
            biased;
            () = &mut stop => break,
            Some(_) = async { match ticker.as_mut() { Some(t) => Some(t.tick().await), None => None } } => {
                let line = stats.lock().unwrap_or_else(|e| e.into_inner()).progress(started.elapsed());
                eprintln!("{line}");
                continue;
            }
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => continue,
            permit = async {
                if let Some(due) = due {
                    tokio::time::sleep_until(due.into()).await;
                }
                permits.clone().acquire_owned().await
            } => permit?,
        };
        let (intent, delivery) = sender.next();
        let (sender, stats) = (sender.clone(), stats.clone());
        in_flight.spawn(async move {
            let (outcome, latency) = sender.send(intent, &delivery).await;
            stats.lock().unwrap_or_else(|e| e.into_inner()).record(intent, &outcome, latency);
            drop(permit);
        });
        sent += 1;
    }
    while in_flight.join_next().await.is_some() {}
    let report = stats.lock().unwrap_or_else(|e| e.into_inner()).report(started.elapsed());
    Ok(report)
}

/// What the canary's `/metrics` shows: probes by result, their duration, and
/// when one last worked (the alert rules and the dashboards read these).
struct CanaryMetrics {
    probes: prometheus::IntCounterVec,
    seconds: prometheus::Histogram,
    last_success: prometheus::IntGauge,
}

static CANARY: std::sync::LazyLock<CanaryMetrics> = std::sync::LazyLock::new(|| {
    use ticketmesh_runtime::metrics;
    let probes = metrics::counter_vec(
        "canary_probes_total",
        "Canary probes (a signed delivery, then read back) by result",
        &["result"],
    );
    // Both series exist from the start, so a rate of failures is 0, not absent.
    probes.with_label_values(&["ok"]);
    probes.with_label_values(&["failed"]);
    CanaryMetrics {
        probes,
        seconds: metrics::histogram(
            "canary_probe_duration_seconds",
            "Time of a canary probe that worked, from sending the delivery to reading it back",
            vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
        ),
        last_success: metrics::gauge(
            "canary_last_success_timestamp_seconds",
            "Unix time of the last canary probe that worked",
        ),
    }
});

/// Canary probes every `interval`; with `count`, that many and then the
/// number that failed. Each probe's result goes to stdout and to the
/// canary metrics.
pub async fn canary(args: &Args, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<u64> {
    let sender = Sender::new(args)?;
    let mut ticker = tokio::time::interval(args.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    let (mut probes, mut failures) = (0u64, 0u64);
    loop {
        if args.count.is_some_and(|n| probes >= n) {
            break;
        }
        tokio::select! {
            biased;
            () = &mut stop => break,
            _ = ticker.tick() => {}
        }
        probes += 1;
        let result = sender.probe().await;
        let metrics = &*CANARY;
        match &result {
            Ok(took) => {
                metrics.probes.with_label_values(&["ok"]).inc();
                metrics.seconds.observe(took.as_secs_f64());
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                metrics.last_success.set(i64::try_from(now.as_secs()).unwrap_or(i64::MAX));
            }
            Err(_) => {
                metrics.probes.with_label_values(&["failed"]).inc();
                failures += 1;
            }
        }
        let line = match (&result, args.json) {
            (Ok(took), true) => {
                serde_json::json!({"ok": true, "ms": took.as_secs_f64() * 1000.0}).to_string()
            }
            (Err(why), true) => serde_json::json!({"ok": false, "error": why}).to_string(),
            (Ok(took), false) => {
                format!("canary ok: webhook stored and read back in {:.1} ms", took.as_secs_f64() * 1000.0)
            }
            (Err(why), false) => format!("canary FAILED: {why}"),
        };
        println!("{line}");
    }
    Ok(failures)
}
