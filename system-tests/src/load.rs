//! Signed webhook load: fresh deliveries, each its own ticket, every answer
//! kept with when it was sent. Open loop (a steady rate, whatever the answers
//! take) for the fault tests' books; closed loop (a fixed number, so many in
//! flight) where a test only needs them all sent.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::task::{JoinHandle, JoinSet};

use crate::{delivery, sign};

/// What one request got.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub number: String,
    /// Seconds after the load started.
    pub sent_at: f64,
    /// None: no HTTP answer (connection refused or reset).
    pub status: Option<u16>,
    pub body: Value,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap()
}

/// Sends ticket `number`'s `ticket_created`, signed now, to `base`.
async fn send(client: &reqwest::Client, base: &str, number: String, started: Instant) -> Outcome {
    let sent_at = started.elapsed().as_secs_f64();
    let body = delivery("ticket_created", &number, "Concert", "20.00", "");
    let request = client
        .post(format!("{base}/webhook"))
        .header("content-type", "application/json")
        .header("petzi-signature", sign(body.as_bytes()))
        .body(body);
    let (status, body) = match request.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            (Some(status), serde_json::from_str(&text).unwrap_or(Value::String(text)))
        }
        Err(e) => (None, Value::String(e.to_string())),
    };
    Outcome { number, sent_at, status, body }
}

/// `rate` deliveries a second for `seconds`, tickets `{prefix}-00000` on;
/// the outcomes in the order they were sent.
pub fn open_loop(base: &str, prefix: &str, rate: u32, seconds: f64) -> JoinHandle<Vec<Outcome>> {
    let (base, prefix) = (base.to_owned(), prefix.to_owned());
    tokio::spawn(async move {
        let client = client();
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = JoinSet::new();
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
        let mut i = 0u32;
        while started.elapsed().as_secs_f64() < seconds {
            tick.tick().await;
            let (client, base, outcomes) = (client.clone(), base.clone(), outcomes.clone());
            let number = format!("{prefix}-{i:05}");
            i += 1;
            tasks.spawn(async move {
                let outcome = send(&client, &base, number, started).await;
                outcomes.lock().unwrap().push(outcome);
            });
        }
        tasks.join_all().await;
        let mut outcomes = Arc::into_inner(outcomes).unwrap().into_inner().unwrap();
        outcomes.sort_by(|a, b| a.sent_at.total_cmp(&b.sent_at));
        outcomes
    })
}

/// `n` deliveries, `in_flight` at a time, tickets `{prefix}-00000` on.
pub async fn closed_loop(base: &str, prefix: &str, n: usize, in_flight: usize) -> Vec<Outcome> {
    let client = client();
    let gate = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let (client, base, gate) = (client.clone(), base.to_owned(), gate.clone());
        let number = format!("{prefix}-{i:05}");
        tasks.spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            send(&client, &base, number, started).await
        });
    }
    tasks.join_all().await
}
