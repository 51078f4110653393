//! The services' own telemetry, checked on the real binaries: the spans
//! they export over OTLP (one trace from the webhook to the consumer, and
//! from `GET /` through SNS to `POST /sns`), the metrics each `/metrics`
//! exposes, and the JSON log lines carrying the spans' trace ids.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rig::{
    metrics::{Sample, sample, scrape},
    procs::{CONSUMER, Collector, ERROR, PRODUCER, Procs, SERVER, Setup, Span, Wanted, ancestry},
};

fn find<'a>(spans: &'a [Span], service: &str, name: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| s.service == service && s.name == name)
        .unwrap_or_else(|| panic!("no {service} span {name:?}"))
}

async fn wait_metric(url: &str, name: &str, labels: &[(&str, &str)], want: f64) -> Vec<Sample> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let samples = scrape(url).await;
        if sample(&samples, name, labels) == want || std::time::Instant::now() > deadline {
            return samples;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[ignore = "needs RabbitMQ and the built binaries (make test runs it)"]
#[tokio::test]
async fn one_webhook_is_one_trace_from_the_gateway_to_the_sse_consumer() {
    let (collector, otlp) = Collector::start().await;
    let backend = rig::Backend::sqlite();
    let exchange = rig::unique("tm.telemetry");
    let setup = Setup {
        database_url: backend.database_url.clone(),
        amqp: Some((rig::amqp_url(), exchange.clone())),
        export_delay_ms: 100,
        ..Setup::default()
    };
    let stack = Procs::start(Setup { otlp: Some(otlp.clone()), ..setup }).await;
    let client = reqwest::Client::new();

    // A live consumer first, so the published message has somewhere to go.
    let mut events = client.get(stack.url("/events")).send().await.unwrap();
    assert_eq!(events.status(), 200);
    wait_metric(&stack.admin("app-notifier", "/metrics"), "notifier_subscribers", &[], 1.0).await;

    let body = rig::delivery("ticket_created", "TEL-1", "Standard", "42.00", "");
    let answer = rig::post_signed(&client, &stack, &body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let trace_id = answer.body["trace_id"].as_str().unwrap().to_owned();
    let delivery_id = answer.body["delivery_id"].as_str().unwrap().to_owned();
    assert_eq!(trace_id.len(), 32);
    rig::sse_until(&mut events, &delivery_id, Duration::from_secs(10)).await;

    let wanted: [Wanted<'_>; 9] = [
        ("gateway server span", &|s| s.service == "app-gateway" && s.name == "POST /webhook"),
        ("signature check", &|s| s.name == "webhook.verify_signature"),
        ("event server span", &|s| {
            s.service == "app-event"
                && s.name == "ticketmesh.v1.EventService/IngestWebhook"
                && s.kind == SERVER
        }),
        ("payload parse", &|s| s.name == "petzi.parse"),
        ("storage server span", &|s| {
            s.service == "app-storage"
                && s.name == "ticketmesh.v1.StorageService/SaveEvent"
                && s.kind == SERVER
        }),
        ("database span", &|s| s.service == "app-storage" && s.name == "INSERT events"),
        ("outbox relay", &|s| s.service == "app-event" && s.name == "outbox.relay"),
        ("notifier publish", &|s| s.service == "app-notifier" && s.kind == PRODUCER),
        ("SSE consumer", &|s| s.service == "app-gateway" && s.kind == CONSUMER),
    ];
    let spans = collector.wait_for(&trace_id, &wanted, Duration::from_secs(15)).await;

    // One root, and every other span's parent is in the trace.
    let roots: Vec<&Span> = spans.iter().filter(|s| s.parent_id.is_empty()).collect();
    assert_eq!(roots.len(), 1, "one root span, got {roots:#?}");
    assert_eq!(roots[0].name, "POST /webhook");
    for span in &spans {
        assert!(
            span.parent_id.is_empty() || spans.iter().any(|p| p.span_id == span.parent_id),
            "{} has a parent outside the trace",
            span.name
        );
    }
    let server = find(&spans, "app-gateway", "POST /webhook");
    assert_eq!(server.kind, SERVER);
    assert_eq!(server.attr("http.request.method"), "POST");
    assert_eq!(server.attr("http.route"), "/webhook");
    assert_eq!(server.attr("http.response.status_code"), 200);

    let event = find(&spans, "app-event", "ticketmesh.v1.EventService/IngestWebhook");
    assert_eq!(event.attr("rpc.system"), "grpc");
    assert_eq!(event.attr("rpc.service"), "ticketmesh.v1.EventService");
    assert_eq!(event.attr("rpc.method"), "IngestWebhook");
    assert_eq!(event.attr("rpc.grpc.status_code"), 0);
    assert_eq!(
        ancestry(&spans, event),
        [
            "ticketmesh.v1.EventService/IngestWebhook",
            "ticketmesh.v1.EventService/IngestWebhook",
            "POST /webhook"
        ],
        "event server span ← gateway client span ← gateway server span"
    );
    let storage = find(&spans, "app-storage", "ticketmesh.v1.StorageService/SaveEvent");
    assert_eq!(ancestry(&spans, storage)[2], "ticketmesh.v1.EventService/IngestWebhook");
    let db = find(&spans, "app-storage", "INSERT events");
    assert_eq!(db.attr("db.system.name"), "sqlite");
    assert_eq!(db.attr("db.operation.name"), "INSERT");
    assert_eq!(db.parent_id, storage.span_id);

    let publish = spans.iter().find(|s| s.kind == PRODUCER).unwrap();
    assert_eq!(publish.attr("messaging.system"), "rabbitmq");
    assert_eq!(publish.attr("messaging.destination.name"), exchange.as_str());
    assert_eq!(publish.attr("messaging.message.id"), delivery_id.as_str());
    let chain = ancestry(&spans, publish);
    assert!(
        chain.iter().any(|n| n == "outbox.relay") && chain.last().unwrap() == "POST /webhook",
        "publish ← notifier server ← relay ← … ← webhook, got {chain:?}"
    );
    let relay = find(&spans, "app-event", "outbox.relay");
    assert_eq!(relay.parent_id, event.span_id, "the outbox carried the event span's context");
    let consumer = spans.iter().find(|s| s.kind == CONSUMER).unwrap();
    assert_eq!(consumer.parent_id, publish.span_id, "the consumer continues from the publish span");
    assert_eq!(consumer.attr("messaging.message.id"), delivery_id.as_str());

    // A payload that fails to parse marks the parse span failed.
    let bad = br#"{"event": "ticket_created", "details": {}}"#;
    let answer = rig::post_signed(&client, &stack, std::str::from_utf8(bad).unwrap()).await;
    assert_eq!(answer.status, 400);
    let bad_trace = answer.body["error"]["trace_id"].as_str().unwrap().to_owned();
    let wanted: [Wanted<'_>; 2] = [
        ("parse span", &|s| s.name == "petzi.parse"),
        ("gateway server span", &|s| s.service == "app-gateway" && s.name == "POST /webhook"),
    ];
    let spans = collector.wait_for(&bad_trace, &wanted, Duration::from_secs(10)).await;
    assert_eq!(find(&spans, "app-event", "petzi.parse").status, ERROR);
    assert_eq!(find(&spans, "app-gateway", "POST /webhook").attr("http.response.status_code"), 400);

    // Background work traced nothing: the relay polls the outbox every
    // second, the event service checks storage's health, storage pings its
    // database; none of it may show up as spans.
    let background: Vec<String> = collector
        .all()
        .iter()
        .filter(|s| {
            s.name.ends_with("/FetchOutbox") || s.name.starts_with("grpc.health") || s.name == "SELECT 1"
        })
        .map(|s| format!("{}: {}", s.service, s.name))
        .collect();
    assert!(background.is_empty(), "background work exported spans: {background:?}");

    drop(events);
    stack.terminate().await;
    backend.drop_database().await;
}

#[ignore = "needs LocalStack's SNS and the built binaries (make test runs it)"]
#[tokio::test]
async fn hello_continues_through_sns_into_post_sns() {
    let (collector, otlp) = Collector::start().await;
    let backend = rig::Backend::sqlite();
    let setup = Setup {
        database_url: backend.database_url.clone(),
        sns: Some(rig::sns_endpoint()),
        export_delay_ms: 100,
        ..Setup::default()
    };
    let stack = Procs::start(Setup { otlp: Some(otlp.clone()), ..setup }).await;
    let client = reqwest::Client::new();

    // SNS delivers only once the subscription is confirmed: retry until a
    // hello comes back (any one sent: a delivery may take longer than the
    // pause between two), then check the trace of that one.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut sent = Vec::new();
    let trace_id = loop {
        let hello = rig::get(&client, stack.url("/")).await;
        assert!(
            std::time::Instant::now() < deadline,
            "no hello came back through SNS in 30 s: {}",
            hello.body
        );
        if hello.status != 200 {
            // The notifier may still be creating its topics and subscribing.
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        sent.push(hello.body["trace_id"].as_str().unwrap().to_owned());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let back = rig::get(&client, stack.url("/api/sns/notifications")).await;
        let arrived = back.body["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|n| sent.iter().find(|id| n["trace_id"] == id.as_str()).cloned());
        if let Some(trace_id) = arrived {
            break trace_id;
        }
        assert!(std::time::Instant::now() < deadline, "no hello came back through SNS in 30 s");
    };
    let wanted: [Wanted<'_>; 5] = [
        ("GET /", &|s| s.service == "app-gateway" && s.name == "GET /"),
        ("event Hello", &|s| {
            s.service == "app-event" && s.name == "ticketmesh.v1.EventService/Hello" && s.kind == SERVER
        }),
        ("SNS publish", &|s| s.service == "app-notifier" && s.kind == PRODUCER),
        ("POST /sns consumer", &|s| s.service == "app-gateway" && s.kind == CONSUMER),
        ("recorded", &|s| {
            s.service == "app-event"
                && s.name == "ticketmesh.v1.EventService/RecordSnsNotification"
                && s.kind == SERVER
        }),
    ];
    let spans = collector.wait_for(&trace_id, &wanted, Duration::from_secs(15)).await;
    let publish = spans.iter().find(|s| s.kind == PRODUCER).unwrap();
    assert_eq!(publish.attr("messaging.system"), "aws_sns");
    assert_eq!(publish.attr("messaging.destination.name"), "hello-world-topic");
    assert!(
        publish.attr("messaging.message.id").as_str().is_some_and(|id| !id.is_empty()),
        "SNS message id recorded"
    );
    let consumer = spans.iter().find(|s| s.kind == CONSUMER).unwrap();
    assert_eq!(consumer.parent_id, publish.span_id, "POST /sns continues from the SNS publish span");
    assert_eq!(consumer.attr("messaging.system"), "aws_sns");
    let recorded = find(&spans, "app-event", "ticketmesh.v1.EventService/RecordSnsNotification");
    assert!(ancestry(&spans, recorded).contains(&consumer.name));
    assert_eq!(ancestry(&spans, publish).last().map(String::as_str), Some("GET /"));

    stack.terminate().await;
    backend.drop_database().await;
}

#[ignore = "needs Redis and the built binaries (make test runs it)"]
#[tokio::test]
async fn metrics_count_what_was_sent_and_logs_share_the_spans_trace_ids() {
    let (collector, otlp) = Collector::start().await;
    let backend = rig::Backend::sqlite();
    let setup = Setup {
        database_url: backend.database_url.clone(),
        redis: Some((rig::redis_url(), rig::unique("tm"))),
        // Nothing is exported before shutdown: the spans checked below
        // arrive only because SIGTERM flushes them.
        export_delay_ms: 600_000,
        ..Setup::default()
    };
    let stack = Procs::start(Setup { otlp: Some(otlp.clone()), ..setup }).await;
    let client = reqwest::Client::new();

    // 5 accepted (4 tickets created, then one of them cancelled), 1 duplicate,
    // 2 forged, 1 unparsable (but signed).
    let mut sizes = 0.0;
    let mut first_trace = String::new();
    for n in 0..5 {
        let body = if n < 4 {
            rig::delivery("ticket_created", &format!("MET-{n}"), "VIP", "10.25", "")
        } else {
            rig::delivery("ticket_updated", "MET-3", "VIP", "10.25", "event_cancellation")
        };
        let answer = rig::post_signed(&client, &stack, &body).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        sizes += body.len() as f64;
        if n == 0 {
            first_trace = answer.body["trace_id"].as_str().unwrap().to_owned();
        }
    }
    let replay = rig::delivery("ticket_created", "MET-0", "VIP", "10.25", "");
    assert_eq!(rig::post_signed(&client, &stack, &replay).await.body["duplicate"], true);
    sizes += replay.len() as f64;
    for _ in 0..2 {
        let forged = rig::post(
            &client,
            &stack,
            replay.clone().into_bytes(),
            &[("content-type", "application/json"), ("petzi-signature", "t=1,v1=00")],
        )
        .await;
        assert_eq!(forged.status, 401);
    }
    let unparsable = br#"{"event": "ticket_created"}"#;
    let answer = rig::post(
        &client,
        &stack,
        unparsable.to_vec(),
        &[("content-type", "application/json"), ("petzi-signature", &rig::sign(unparsable))],
    )
    .await;
    assert_eq!(answer.status, 400);
    sizes += unparsable.len() as f64;
    // Two reads of one ticket (a cache miss, then a hit), and a path with no route.
    for _ in 0..2 {
        assert_eq!(rig::get(&client, stack.url("/api/tickets/MET-1")).await.status, 200);
    }
    assert_eq!(rig::get(&client, stack.url("/no/such/path")).await.status, 404);

    let gateway = scrape(&stack.url("/metrics")).await;
    let webhooks = |status| sample(&gateway, "webhook_requests_total", &[("status", status)]);
    assert_eq!(webhooks("accepted"), 5.0);
    assert_eq!(webhooks("duplicate"), 1.0);
    assert_eq!(
        webhooks("malformed_signature")
            + webhooks("timestamp_out_of_tolerance")
            + webhooks("invalid_signature"),
        2.0
    );
    assert_eq!(webhooks("invalid_payload"), 1.0);
    assert_eq!(sample(&gateway, "webhook_processing_time_seconds_count", &[]), 9.0);
    assert_eq!(sample(&gateway, "webhook_payload_size_bytes_count", &[]), 7.0);
    assert_eq!(sample(&gateway, "webhook_payload_size_bytes_sum", &[]), sizes);
    let http =
        |route, status| sample(&gateway, "http_requests_total", &[("route", route), ("status_code", status)]);
    assert_eq!(http("/webhook", "200"), 6.0);
    assert_eq!(http("/webhook", "401"), 2.0);
    assert_eq!(http("/webhook", "400"), 1.0);
    assert_eq!(http("/api/tickets/{number}", "200"), 2.0);
    assert_eq!(http("unmatched", "404"), 1.0);
    assert_eq!(
        sample(&gateway, "http_request_duration_seconds_count", &[("method", "POST"), ("route", "/webhook")]),
        9.0
    );
    assert!(
        gateway
            .iter()
            .all(|(_, labels, _)| labels.values().all(|v| !v.contains("MET-") && v != "/no/such/path")),
        "no raw path in any label"
    );
    assert_eq!(
        sample(&gateway, "active_connections", &[]),
        1.0,
        "only the /metrics request itself is in flight"
    );
    let ingest = [
        ("grpc_type", "unary"),
        ("grpc_service", "ticketmesh.v1.EventService"),
        ("grpc_method", "IngestWebhook"),
    ];
    let with_code = |labels: &[(&'static str, &'static str)], code| {
        let mut l = labels.to_vec();
        l.push(("grpc_code", code));
        l
    };
    assert_eq!(sample(&gateway, "grpc_client_handled_total", &with_code(&ingest, "OK")), 6.0);
    assert_eq!(sample(&gateway, "grpc_client_handled_total", &with_code(&ingest, "InvalidArgument")), 1.0);
    assert_eq!(sample(&gateway, "grpc_client_handling_seconds_count", &ingest), 7.0);

    let event = scrape(&stack.admin("app-event", "/metrics")).await;
    assert_eq!(sample(&event, "grpc_server_handled_total", &with_code(&ingest, "OK")), 6.0);
    assert_eq!(sample(&event, "grpc_server_handled_total", &with_code(&ingest, "InvalidArgument")), 1.0);
    assert_eq!(sample(&event, "grpc_server_handling_seconds_count", &ingest), 7.0);
    let save = [
        ("grpc_type", "unary"),
        ("grpc_service", "ticketmesh.v1.StorageService"),
        ("grpc_method", "SaveEvent"),
    ];
    assert_eq!(sample(&event, "grpc_client_handled_total", &with_code(&save, "OK")), 6.0);
    // The business figures count stored deliveries: the duplicate is not one.
    let tickets = |event_type| sample(&event, "tickets_total", &[("event", event_type), ("category", "VIP")]);
    assert_eq!(tickets("ticket_created"), 4.0);
    assert_eq!(tickets("ticket_updated"), 1.0);
    assert_eq!(sample(&event, "ticket_revenue_cents_total", &[("currency", "CHF")]), 4100.0);
    assert_eq!(sample(&event, "ticket_cancellations_total", &[("reason", "event_cancellation")]), 1.0);

    let storage = scrape(&stack.admin("app-storage", "/metrics")).await;
    assert_eq!(sample(&storage, "grpc_server_handled_total", &with_code(&save, "OK")), 6.0);
    assert_eq!(sample(&storage, "storage_commit_batch_size_sum", &[]), 6.0);
    let inserts = sample(
        &storage,
        "db_query_duration_seconds_count",
        &[("operation", "INSERT"), ("collection", "events"), ("status", "ok")],
    );
    assert!((1.0..=6.0).contains(&inserts), "one INSERT per group commit, got {inserts}");
    assert_eq!(sample(&storage, "cache_requests_total", &[("op", "ticket"), ("result", "miss")]), 1.0);
    assert_eq!(sample(&storage, "cache_requests_total", &[("op", "ticket"), ("result", "hit")]), 1.0);
    assert!(sample(&storage, "process_resident_memory_bytes", &[]) > 0.0);

    let publish = [
        ("grpc_type", "unary"),
        ("grpc_service", "ticketmesh.v1.NotifierService"),
        ("grpc_method", "Publish"),
    ];
    // Waits for the server's count, taken as each answer leaves: after its publish was counted.
    let notifier = wait_metric(
        &stack.admin("app-notifier", "/metrics"),
        "grpc_server_handled_total",
        &with_code(&publish, "OK"),
        5.0,
    )
    .await;
    let published =
        |key| sample(&notifier, "amqp_publish_total", &[("routing_key", key), ("status", "published")]);
    assert_eq!(published("ticket.created"), 4.0);
    assert_eq!(published("ticket.updated"), 1.0);
    assert_eq!(sample(&notifier, "grpc_server_handled_total", &with_code(&publish, "OK")), 5.0);
    for samples in [&gateway, &event, &storage, &notifier] {
        assert!(sample(samples, "process_open_fds", &[]) > 0.0, "process metrics on every process");
    }

    // Log lines of the first webhook carry its trace id, in two services.
    let gateway_lines = stack.get("app-gateway").lines_of(&first_trace);
    let event_lines = stack.get("app-event").lines_of(&first_trace);
    let stored = event_lines
        .iter()
        .find(|l| l["message"] == "delivery stored")
        .expect("the event service logged the delivery");
    assert_eq!(stored["service"], "app-event");
    let span_id = stored["span_id"].as_str().unwrap().to_owned();
    assert_eq!(span_id.len(), 16);
    assert!(collector.trace(&first_trace).is_empty(), "nothing exported before shutdown");

    stack.terminate().await;
    let spans = collector.trace(&first_trace);
    assert!(!spans.is_empty(), "SIGTERM flushed the buffered spans");
    assert!(
        spans.iter().any(|s| s.span_id == span_id && s.service == "app-event"),
        "the log line's span_id names an exported span"
    );
    // The gateway logs nothing for a 200; its spans share the trace id all the same.
    assert!(gateway_lines.iter().all(|l| l["trace_id"] == first_trace.as_str()));
    backend.drop_database().await;
}

/// A fault rule set at start marks the call it fails: the storage server
/// span carries `fault.injected` with the rule, and is an error.
#[ignore = "needs the built binaries (make test runs it)"]
#[tokio::test]
async fn an_injected_fault_is_marked_on_its_span() {
    let (collector, otlp) = Collector::start().await;
    let backend = rig::Backend::sqlite();
    let setup = Setup {
        database_url: backend.database_url.clone(),
        export_delay_ms: 100,
        storage_faults: "GetStats=unavailable".into(),
        ..Setup::default()
    };
    let stack = Procs::start(Setup { otlp: Some(otlp.clone()), ..setup }).await;
    let answer = rig::get(&reqwest::Client::new(), stack.url("/api/stats")).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    let trace_id = answer.body["error"]["trace_id"].as_str().unwrap().to_owned();
    let wanted: [Wanted<'_>; 1] =
        [("storage server span", &|s| s.service == "app-storage" && s.name.ends_with("/GetStats"))];
    let spans = collector.wait_for(&trace_id, &wanted, Duration::from_secs(10)).await;
    let server = find(&spans, "app-storage", "ticketmesh.v1.StorageService/GetStats");
    assert_eq!(server.attr("fault.injected"), "StorageService/GetStats=unavailable");
    assert_eq!(server.status, ERROR);
    stack.terminate().await;
    backend.drop_database().await;
}
