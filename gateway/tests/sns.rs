//! Hello world through SNS (LocalStack): GET / publishes to hello-world-topic,
//! SNS confirms the gateway's subscription and delivers the message back to
//! POST /sns with the trace of the GET that caused it; bad SNS input is a 400.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

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
async fn bad_sns_input_is_a_400() {
    let backend = Backend::sqlite();
    let stack = Stack::start(&backend).await.ready().await;
    let client = reqwest::Client::new();
    let message = |kind: &str, arn: &str| {
        json!({"Type": kind, "MessageId": "m-1", "TopicArn": arn, "Message": "x", "Timestamp": "2026-11-23T10:00:00.000Z"})
            .to_string()
    };
    let ours = "arn:aws:sns:us-east-1:000000000000:hello-world-topic";
    for (body, code) in [
        (message("Gossip", ours), "invalid_sns_message"),
        (message("Notification", "arn:aws:sns:us-east-1:000000000000:someone-elses-topic"), "unknown_topic"),
        ("{\"Type\": \"Notification\", ".to_owned(), "invalid_sns_message"),
        (json!({"Type": "Notification"}).to_string(), "invalid_sns_message"),
        (message("SubscriptionConfirmation", ours), "invalid_sns_message"), // no Token
    ] {
        let a = post_sns(&client, &stack, body.clone()).await;
        assert_eq!((a.status, a.body["error"]["code"].as_str()), (400, Some(code)), "{body} → {}", a.body);
    }
    // A well-formed notification of one of our topics is recorded.
    let ok = post_sns(&client, &stack, message("Notification", ours)).await;
    assert_eq!((ok.status, &ok.body["status"]), (200, &Value::from("recorded")), "{}", ok.body);
    let list = get(&client, stack.url("/api/sns/notifications")).await.body;
    assert_eq!(list["notifications"][0]["message_id"], "m-1");
    let metrics = reqwest::get(format!("{}/metrics", stack.event_admin)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"sns_notifications_total{topic="hello-world-topic"}"#), "{metrics}");
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
