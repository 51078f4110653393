//! The simulator against the real pipeline (in-process services on
//! PostgreSQL with Redis): what it reports is what was stored, its realistic
//! payloads all parse, and its canary tells a working stack from a broken one.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::time::Duration;

use clap::Parser;
use rig::*;

fn args(base: &str, extra: &[&str]) -> app_simulator::Args {
    let mut argv = vec!["app-simulator", "--url", base, "--secret", SECRET];
    argv.extend_from_slice(extra);
    app_simulator::Args::try_parse_from(argv).unwrap()
}

#[ignore = "needs PostgreSQL and Redis (make test runs it)"]
#[tokio::test]
async fn simulated_load_is_stored_exactly_as_reported() {
    let backend = Backend::postgres(true).await;
    let stack = Stack::start(&backend).await.ready().await;
    let load = args(
        &stack.base,
        &[
            "--count",
            "300",
            "--concurrency",
            "16",
            "--seed",
            "42",
            "--cancel-ratio",
            "0.2",
            "--replay-ratio",
            "0.1",
            "--bad-signature-ratio",
            "0.1",
        ],
    );
    let report = app_simulator::load(&load, std::future::pending(), None).await.unwrap();

    assert_eq!(report.sent, 300);
    assert_eq!(report.unexpected, 0, "{report}");
    assert_eq!(report.failed, 0);
    let forged = report.rejected.get("401").copied().unwrap_or(0);
    assert_eq!(
        report.rejected.len(),
        usize::from(forged > 0),
        "only forged deliveries are refused: {report}"
    );
    assert!(forged > 10 && report.duplicates > 10, "the mix shows in the figures: {report}");
    assert_eq!(report.accepted + report.duplicates + forged, 300);
    assert!(report.latency_ms.p50 > 0.0 && report.latency_ms.p50 <= report.latency_ms.p99);

    // Every accepted delivery is one stored event, and nothing else is.
    let stored = backend.count("SELECT COUNT(*) FROM events").await;
    assert_eq!(stored as u64, report.accepted);
    let client = reqwest::Client::new();
    let stats = get(&client, stack.url("/api/stats")).await;
    assert_eq!(stats.status, 200);
    let body = &stats.body;
    assert_eq!(body["byCategory"].as_object().unwrap().len(), 5, "{body}");
    assert!(body["cancelledTickets"].as_u64().unwrap() > 0, "{body}");
    let tickets = body["tickets"].as_u64().unwrap();
    assert_eq!(tickets + body["cancelledTickets"].as_u64().unwrap(), report.accepted, "{body}");

    stack.stop().await;
    backend.drop_database().await;
}

#[tokio::test]
async fn the_canary_passes_on_a_working_stack_and_fails_on_a_broken_one() {
    let backend = Backend::sqlite();
    let stack = Stack::start(&backend).await.ready().await;
    let probe = args(&stack.base, &["--canary", "--count", "2", "--interval", "50ms"]);
    assert_eq!(app_simulator::canary(&probe, std::future::pending()).await.unwrap(), 0);
    assert_eq!(canary_metric(r#"canary_probes_total{result="ok"}"#), 2.0);
    assert_eq!(canary_metric(r#"canary_probes_total{result="failed"}"#), 0.0);
    assert_eq!(canary_metric("canary_probe_duration_seconds_count"), 2.0);
    let unix_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((unix_now - canary_metric("canary_last_success_timestamp_seconds")).abs() < 60.0);
    let base = stack.base.clone();
    stack.stop().await;

    let probe = args(&base, &["--canary", "--count", "2", "--interval", "50ms", "--request-timeout", "2s"]);
    let failures =
        tokio::time::timeout(Duration::from_secs(20), app_simulator::canary(&probe, std::future::pending()))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(failures, 2);
    assert_eq!(canary_metric(r#"canary_probes_total{result="failed"}"#), 2.0);
    assert_eq!(canary_metric("canary_probe_duration_seconds_count"), 2.0, "failed probes are not timed");
    backend.drop_database().await;
}

/// One sample of this process's metrics (the canary above is the only one in
/// this test binary), by its exact series name.
fn canary_metric(series: &str) -> f64 {
    let text = ticketmesh_runtime::admin::render_metrics();
    let line = text.lines().find(|l| l.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')));
    line.unwrap_or_else(|| panic!("no {series} in\n{text}")).rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn bad_flags_are_refused_with_the_reason() {
    for (flag, value) in [("--replay-ratio", "1.5"), ("--bad-signature-ratio", "-0.1"), ("--rate", "0")] {
        let flag_value = format!("{flag}={value}");
        let error =
            app_simulator::Args::try_parse_from(["app-simulator", &flag_value]).unwrap_err().to_string();
        assert!(error.contains(value), "{flag} {value}: {error}");
    }
    let error =
        app_simulator::Args::try_parse_from(["app-simulator", "--count", "5", "--rate", "10"]).unwrap_err();
    assert!(error.to_string().contains("cannot be used with"), "{error}");
}
