//! Error tracking: with a DSN, ERROR events and panics reach Sentry (here a
//! local HTTP server standing in for it); without one, no client exists.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use axum::{Router, body::Bytes, routing::post};
use tokio::sync::mpsc;
use tracing_subscriber::prelude::*;

#[tokio::test]
async fn errors_and_panics_reach_sentry_only_with_a_dsn() {
    let (tx, mut envelopes) = mpsc::unbounded_channel::<String>();
    let app = Router::new().route(
        "/api/{project}/envelope/",
        post(move |body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    tracing_subscriber::registry().with(ticketmesh_runtime::sentry::layer()).init();

    // Without a DSN nothing starts, and an error goes nowhere.
    assert_eq!(ticketmesh_runtime::sentry::start("app-test", None), Ok(false));
    assert!(sentry::Hub::current().client().is_none());
    assert!(ticketmesh_runtime::sentry::start("app-test", Some("not a dsn")).is_err());

    let dsn = format!("http://publickey@{addr}/42");
    assert_eq!(ticketmesh_runtime::sentry::start("app-test", Some(&dsn)), Ok(true));
    tracing::warn!("a breadcrumb before the error");
    tracing::error!(ticket = "T-1", "storage refused the batch");
    let panicked = std::thread::spawn(|| panic!("the relay lost its place")).join();
    assert!(panicked.is_err());
    ticketmesh_runtime::sentry::flush();

    let mut received = String::new();
    let wait = async {
        while !(received.contains("storage refused the batch")
            && received.contains("the relay lost its place"))
        {
            received.push_str(&envelopes.recv().await.unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await.expect("both events reach Sentry within 10 s");
    assert!(received.contains("a breadcrumb before the error"), "WARN events ride along as breadcrumbs");
    assert!(received.contains("app-test@"), "the release names the service");
}
