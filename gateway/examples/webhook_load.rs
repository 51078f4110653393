//! A small load generator for the webhook path: sends N distinct signed PETZI
//! deliveries with C in flight, then prints throughput and latency percentiles.
//!
//!     cargo run --release -p app-gateway --example webhook_load -- \
//!         [url=http://127.0.0.1:8080] [count=5000] [concurrency=32] [secret=secret]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_owned());
    let url = format!("{}/webhook", arg(0, "http://127.0.0.1:8080"));
    let count: usize = arg(1, "5000").parse().expect("count is a number");
    let concurrency: usize = arg(2, "32").parse().expect("concurrency is a number");
    let secret = Arc::new(arg(3, "secret"));
    let run = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();

    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, url, next, secret) = (client.clone(), url.clone(), next.clone(), secret.clone());
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let body = format!(
                    r#"{{"event": "ticket_created", "details": {{"ticket": {{"number": "LOAD{run}-{i}", "type": "online_presale", "title": "Load test night", "category": "Concert", "eventId": 4821, "event": "Case a Chocs", "cancellationReason": "", "sessions": [{{"name": "Main", "date": "2026-12-12", "time": "21:30:00", "doors": "20:30:00", "location": {{"name": "Case a Chocs", "street": "Quai Philippe-Godet 20", "city": "Neuchatel", "postcode": "2000"}}}}], "promoter": "Jane Roe", "price": {{"amount": "{}.50", "currency": "CHF"}}}}, "buyer": {{"role": "customer", "firstName": "John", "lastName": "Doe", "postcode": "2000"}}}}}}"#,
                    10 + i % 50
                );
                let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
                let signature = app_gateway::signature::sign(secret.as_bytes(), t, body.as_bytes());
                let sent = Instant::now();
                let answer = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("petzi-signature", signature)
                    .body(body)
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status() == 200 => latencies.push(sent.elapsed()),
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        });
    }
    let mut latencies: Vec<Duration> = Vec::with_capacity(count);
    let mut errors = 0;
    for (l, e) in workers.join_all().await {
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| {
        latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
    };
    let ms = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    println!(
        "{} ok, {errors} errors in {:.2} s: {:.0} req/s; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (concurrency {concurrency})",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(latencies.last()),
    );
}
