//! Hello world through SNS (LocalStack): GET / publishes to hello-world-topic,
//! SNS confirms the gateway's subscription and delivers the message back to
//! POST /sns with the trace of the GET that caused it; every message is
//! verified (signature, certificate origin, exact topic) and bad, unsigned or
//! forged ones are refused.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::time::{Duration, Instant};

use rig::*;
use serde_json::{Value, json};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[ignore = "needs LocalStack's SNS (make test runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_goes_through_sns_and_comes_back_with_its_trace() {
    let backend = Backend::sqlite();
    let stack = Stack::start_with(&backend, Options { sns: Some(sns_endpoint()), ..Options::default() })
        .await
        .ready()
        .await;
    let client = reqwest::Client::new();

    // The notifier creates the topics and subscribes this gateway at start:
    // until SNS answered, hello is a 503, and until the gateway confirmed its
    // subscription, SNS has nobody to deliver to. So say hello until one
    // comes back to POST /sns, then check that one.
    let deadline = Instant::now() + Duration::from_secs(30);
    'hello: loop {
        assert!(Instant::now() < deadline, "no hello came back through SNS in 30 s");
        let r = client
            .get(stack.url("/"))
            .header("traceparent", format!("00-{TRACE}-00f067aa0ba902b7-01"))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let hello: Value = r.json().await.unwrap();
        if status != 200 {
            assert_eq!((status, hello["error"]["code"].as_str()), (503, Some("sns_unavailable")), "{hello}");
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert_eq!(hello["message"], "Hello World!");
        assert_eq!(hello["sns"]["topic"], "hello-world-topic");
        assert_eq!(hello["sns"]["status"], "published");
        assert_eq!(hello["trace_id"], TRACE);
        assert!(hello["sns"]["duration"].as_f64().unwrap() > 0.0);
        let message_id = hello["sns"]["message_id"].as_str().unwrap().to_owned();
        assert!(!message_id.is_empty());

        // SNS delivers it to POST /sns; the event service records it with
        // the trace id of the GET.
        let wait = Instant::now() + Duration::from_secs(3);
        while Instant::now() < wait {
            let list = get(&client, stack.url("/api/sns/notifications")).await.body;
            let ours = list["notifications"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["message_id"] == message_id.as_str())
                .cloned();
            if let Some(n) = ours {
                assert_eq!(n["message"], "Hello World!");
                assert_eq!(n["trace_id"], TRACE);
                assert!(n["topic_arn"].as_str().unwrap().ends_with(":hello-world-topic"));
                break 'hello;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let metrics =
        reqwest::get(format!("{}/metrics", stack.notifier_admin)).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"sns_publish_total{status="published",topic="hello-world-topic"}"#),
        "{metrics}"
    );
    stack.stop().await;
    backend.drop_database().await;
}

async fn post_sns(client: &reqwest::Client, stack: &Stack, body: String) -> Answer {
    send(client.post(stack.url("/sns")).header("content-type", "text/plain; charset=UTF-8").body(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_unsigned_sns_input_is_refused_and_nothing_is_recorded() {
    let backend = Backend::sqlite();
    let stack = Stack::start(&backend).await.ready().await;
    let client = reqwest::Client::new();
    let message = |kind: &str, arn: &str| {
        json!({"Type": kind, "MessageId": "m-1", "TopicArn": arn, "Message": "x", "Timestamp": "2026-11-23T10:00:00.000Z"})
            .to_string()
    };
    let ours = "arn:aws:sns:us-east-1:000000000000:hello-world-topic";
    for (body, status, code) in [
        (message("Gossip", ours), 400, "invalid_sns_message"),
        (
            message("Notification", "arn:aws:sns:us-east-1:000000000000:someone-elses-topic"),
            400,
            "unknown_topic",
        ),
        ("{\"Type\": \"Notification\", ".to_owned(), 400, "invalid_sns_message"),
        (json!({"Type": "Notification"}).to_string(), 400, "invalid_sns_message"),
        // serde's error quotes a value of the wrong type: never at length.
        (
            json!({"Type": "Notification", "MessageId": "m-1", "TopicArn": ours, "MessageAttributes": "a".repeat(70_000)})
                .to_string(),
            400,
            "invalid_sns_message",
        ),
        // Well formed, of a topic with our name, but signed by nobody.
        (message("Notification", ours), 403, "untrusted_signing_cert"),
        (message("SubscriptionConfirmation", ours), 403, "untrusted_signing_cert"),
    ] {
        let a = post_sns(&client, &stack, body.clone()).await;
        let shown: String = body.chars().take(200).collect();
        assert_eq!((a.status, a.body["error"]["code"].as_str()), (status, Some(code)), "{shown} → {}", a.body);
        assert!(a.body.to_string().len() < 1024, "{shown}: an answer of {} bytes", a.body.to_string().len());
    }
    let list = get(&client, stack.url("/api/sns/notifications")).await.body;
    assert_eq!(list["notifications"], json!([]), "a refused message was recorded");
    stack.stop().await;
    backend.drop_database().await;
}

/// What SNS delivered, and what the gateway answered it.
type Deliveries = std::sync::Arc<std::sync::Mutex<Vec<(Value, u16)>>>;

/// An HTTP endpoint in front of a stack's POST /sns: it keeps each body SNS
/// delivers (real, signed messages to replay and tamper with) and forwards
/// it, answering what the gateway answered.
async fn recorder() -> (String, Deliveries, tokio::sync::watch::Sender<Option<String>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sns", listener.local_addr().unwrap());
    let deliveries: Deliveries = Default::default();
    let (target, forward_to) = tokio::sync::watch::channel(None::<String>);
    let kept = deliveries.clone();
    let app = axum::Router::new().route(
        "/sns",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let (kept, client) = (kept.clone(), reqwest::Client::new());
            let mut forward_to = forward_to.clone();
            async move {
                let Ok(Some(to)) = tokio::time::timeout(Duration::from_secs(10), async {
                    forward_to.wait_for(Option::is_some).await.ok().and_then(|t| t.clone())
                })
                .await
                else {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                };
                let mut request = client.post(to).body(body.clone());
                for (name, value) in &headers {
                    if name.as_str().starts_with("x-amz-sns") || name == "content-type" {
                        request = request.header(name.as_str(), value.as_bytes());
                    }
                }
                let status = request.send().await.map_or(502, |r| r.status().as_u16());
                kept.lock().unwrap().push((serde_json::from_str(&body).unwrap_or(Value::Null), status));
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, deliveries, target)
}

/// A LocalStack SNS call (query API) as the account `account`.
async fn localstack(client: &reqwest::Client, account: &str, form: &[(&str, &str)]) -> String {
    let credential = format!(
        "AWS4-HMAC-SHA256 Credential={account}/20261201/us-east-1/sns/aws4_request, SignedHeaders=host, Signature=00"
    );
    let mut form = form.to_vec();
    form.push(("Version", "2010-03-31"));
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let body: Vec<String> = form.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
    let r = client
        .post(sns_endpoint())
        .header("authorization", credential)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.join("&"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "LocalStack {form:?}: {}", r.status());
    r.text().await.unwrap()
}

/// LocalStack's real, signed deliveries pass; the same messages tampered
/// with, forged ones, ones naming a foreign certificate host, and a real
/// signed confirmation of another account's topic of the same name are each
/// refused, and none of them is recorded.
#[ignore = "needs RabbitMQ and LocalStack's SNS (make test runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_sns_deliveries_verify_and_forged_ones_are_refused() {
    let (recorder_url, deliveries, target) = recorder().await;
    let backend = Backend::sqlite();
    let options = Options {
        sns: Some(sns_endpoint()),
        sns_subscribe_url: Some(recorder_url.clone()),
        ..Options::default()
    };
    let stack = Stack::start_with(&backend, options).await.ready().await;
    target.send_replace(Some(stack.url("/sns")));
    let client = reqwest::Client::new();

    // Hello until one comes back: its notification passed the recorder, signed by LocalStack.
    let deadline = Instant::now() + Duration::from_secs(30);
    let real = loop {
        assert!(Instant::now() < deadline, "no signed notification came back in 30 s");
        let _ = client.get(stack.url("/")).send().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seen = deliveries.lock().unwrap().clone();
        if let Some((n, status)) = seen.iter().find(|(m, _)| m["Type"] == "Notification") {
            assert_eq!(*status, 200, "a real notification was refused: {n}");
            break n.clone();
        }
    };
    let confirmed =
        deliveries.lock().unwrap().iter().any(|(m, s)| m["Type"] == "SubscriptionConfirmation" && *s == 200);
    assert!(confirmed, "the real, signed subscription confirmation was refused");
    assert!(real["Signature"].as_str().is_some_and(|s| !s.is_empty()), "LocalStack did not sign: {real}");
    let replayed = post_sns(&client, &stack, real.to_string()).await;
    assert_eq!(replayed.status, 200, "the real message, sent again: {}", replayed.body);

    let changed = |edit: &dyn Fn(&mut Value)| {
        let mut m = real.clone();
        edit(&mut m);
        m.to_string()
    };
    for (what, body, status, code) in [
        (
            "tampered",
            changed(&|m| m["Message"] = "Hello from an attacker".into()),
            403,
            "invalid_sns_signature",
        ),
        (
            "forged",
            changed(&|m| {
                m["MessageId"] = "forged-1".into();
                m["Signature"] = "QUJD".repeat(86).into();
            }),
            403,
            "invalid_sns_signature",
        ),
        (
            "certificate from another host",
            changed(&|m| {
                m["SigningCertURL"] = "http://127.0.0.2:4566/_aws/sns/SimpleNotificationService-x.pem".into()
            }),
            403,
            "untrusted_signing_cert",
        ),
    ] {
        let a = post_sns(&client, &stack, body).await;
        assert_eq!((a.status, a.body["error"]["code"].as_str()), (status, Some(code)), "{what}: {}", a.body);
    }

    // Another account's topic with our topic's name, really signed by SNS.
    let created =
        localstack(&client, "111111111111", &[("Action", "CreateTopic"), ("Name", "hello-world-topic")])
            .await;
    let foreign = created.split("<TopicArn>").nth(1).and_then(|s| s.split('<').next()).unwrap().to_owned();
    assert!(foreign.contains(":111111111111:hello-world-topic"), "{foreign}");
    localstack(
        &client,
        "111111111111",
        &[("Action", "Subscribe"), ("TopicArn", &foreign), ("Protocol", "http"), ("Endpoint", &recorder_url)],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let answered = loop {
        let seen = deliveries.lock().unwrap().clone();
        if let Some((_, status)) = seen.iter().find(|(m, _)| m["TopicArn"] == foreign.as_str()) {
            break *status;
        }
        assert!(Instant::now() < deadline, "LocalStack sent no confirmation for {foreign}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answered, 400, "another account's topic was accepted");

    let list = get(&client, stack.url("/api/sns/notifications")).await.body;
    let recorded: Vec<&Value> = list["notifications"].as_array().unwrap().iter().collect();
    assert!(
        recorded.iter().all(|n| n["message"] == "Hello World!" && n["topic_arn"] != foreign.as_str()),
        "{list}"
    );
    assert!(!recorded.iter().any(|n| n["message_id"] == "forged-1"));
    let metrics = get(&client, stack.url("/metrics")).await.body;
    let metrics = metrics.as_str().unwrap();
    for reason in ["invalid_signature", "untrusted_certificate", "unknown_topic"] {
        assert!(metrics.contains(&format!("sns_messages_refused_total{{reason=\"{reason}\"}}")), "{reason}");
    }
    stack.stop().await;
    backend.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_without_sns_reports_disabled_and_with_sns_down_a_503() {
    let backend = Backend::sqlite();
    let stack = Stack::start(&backend).await.ready().await;
    let client = reqwest::Client::new();
    let hello = get(&client, stack.url("/")).await;
    assert_eq!(hello.status, 200, "{}", hello.body);
    assert_eq!(hello.body["sns"]["status"], "disabled");
    assert_eq!(hello.body["message"], "Hello World!");
    assert_eq!(hello.body["trace_id"].as_str().unwrap().len(), 32);
    stack.stop().await;

    let down =
        Stack::start_with(&backend, Options { sns: Some("http://127.0.0.1:1".into()), ..Options::default() })
            .await
            .ready()
            .await;
    let a = get(&client, down.url("/")).await;
    assert_eq!((a.status, a.body["error"]["code"].as_str()), (503, Some("sns_unavailable")), "{}", a.body);
    assert!(a.headers.contains_key("retry-after"));
    down.stop().await;
    backend.drop_database().await;
}
