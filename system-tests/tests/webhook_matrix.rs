//! Bad input against the running gateway: every malformed, unsigned, forged,
//! stale, oversized or off-schema webhook gets its exact 4xx and error code,
//! nothing is stored, and every process keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use rig::*;
use serde_json::Value;

struct Case {
    name: String,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
    status: u16,
    code: &'static str,
    /// Text the error message must contain (the field at fault, for schema errors).
    mentions: String,
}

fn example() -> String {
    delivery("ticket_created", "PETZI48213577", "Concert", "42.50", "")
}

fn signed_case(name: &str, body: Vec<u8>, status: u16, code: &'static str, mentions: &str) -> Case {
    let signature = sign(&body);
    Case {
        name: name.into(),
        body,
        headers: vec![("content-type", "application/json".into()), ("petzi-signature", signature)],
        status,
        code,
        mentions: mentions.into(),
    }
}

fn with_signature(name: &str, signature: String, body: Option<Vec<u8>>, code: &'static str) -> Case {
    Case {
        name: name.into(),
        body: body.unwrap_or_else(|| example().into_bytes()),
        headers: vec![("content-type", "application/json".into()), ("petzi-signature", signature)],
        status: 401,
        code,
        mentions: String::new(),
    }
}

/// Every key path of the example (objects only), e.g. ["details", "ticket", "price", "amount"].
fn key_paths(value: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                prefix.push(k.clone());
                out.push(prefix.clone());
                key_paths(v, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                prefix.push(i.to_string());
                key_paths(v, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

/// `details.ticket.sessions[0].date` for ["details","ticket","sessions","0","date"].
fn dotted(path: &[String]) -> String {
    let mut s = String::new();
    for p in path {
        if p.parse::<usize>().is_ok() {
            s.push_str(&format!("[{p}]"));
        } else {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(p);
        }
    }
    s
}

fn edited(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_str(&example()).unwrap();
    edit(&mut v);
    serde_json::to_vec(&v).unwrap()
}

fn cases() -> Vec<Case> {
    let body = example().into_bytes();
    let v1 = |t: i64, secret: &str, body: &[u8]| petzi::sign(secret.as_bytes(), t, body);
    let now = now();
    let good = v1(now, SECRET, &body);
    let hex = good.split_once(",v1=").unwrap().1.to_owned();
    let mut cases = vec![
        Case {
            name: "no signature header".into(),
            body: body.clone(),
            headers: vec![("content-type", "application/json".into())],
            status: 401,
            code: "missing_signature",
            mentions: String::new(),
        },
        with_signature("header without t", format!("v1={hex}"), None, "malformed_signature"),
        with_signature("header without v1", format!("t={now}"), None, "malformed_signature"),
        with_signature("v1 not hex", format!("t={now},v1={}", "zz".repeat(32)), None, "malformed_signature"),
        with_signature("a part that is not key=value", format!("{good},v0"), None, "malformed_signature"),
        with_signature("t not a number", format!("t=yesterday,v1={hex}"), None, "malformed_signature"),
        with_signature("wrong secret", v1(now, "not-the-secret", &body), None, "invalid_signature"),
        with_signature(
            "body changed after signing",
            good.clone(),
            Some(example().replace("42.50", "4.25").into_bytes()),
            "invalid_signature",
        ),
        with_signature("timestamp 31 s old", v1(now - 31, SECRET, &body), None, "timestamp_out_of_tolerance"),
        // `now` is taken once, before every case is sent: a timestamp just
        // past the limit ahead drifts inside it if sending takes a second,
        // so this one leaves a margin.
        with_signature(
            "timestamp 45 s ahead",
            v1(now + 45, SECRET, &body),
            None,
            "timestamp_out_of_tolerance",
        ),
        Case {
            name: "wrong content type".into(),
            body: body.clone(),
            headers: vec![("content-type", "text/plain".into()), ("petzi-signature", good.clone())],
            status: 415,
            code: "unsupported_media_type",
            mentions: String::new(),
        },
        Case {
            name: "no content type".into(),
            body: body.clone(),
            headers: vec![("petzi-signature", good.clone())],
            status: 415,
            code: "unsupported_media_type",
            mentions: String::new(),
        },
        Case {
            name: "unsupported Petzi-Version".into(),
            body: body.clone(),
            headers: vec![
                ("content-type", "application/json".into()),
                ("petzi-signature", good.clone()),
                ("petzi-version", "3".into()),
            ],
            status: 400,
            code: "unsupported_version",
            mentions: String::new(),
        },
        signed_case("invalid JSON", b"{\"event\": \"ticket_created\", ".to_vec(), 400, "invalid_json", ""),
        signed_case("empty body", Vec::new(), 400, "invalid_json", "empty"),
        signed_case("JSON not an object", b"[\"ticket_created\"]".to_vec(), 400, "invalid_payload", "object"),
        signed_case("JSON a bare string", b"\"hello\"".to_vec(), 400, "invalid_payload", "object"),
        signed_case(
            "unknown event",
            edited(|v| v["event"] = "ticket_deleted".into()),
            400,
            "invalid_payload",
            "event",
        ),
        signed_case(
            "eventId as a string",
            edited(|v| v["details"]["ticket"]["eventId"] = "4821".into()),
            400,
            "invalid_payload",
            "details.ticket.eventId",
        ),
        signed_case(
            "price.amount as a float",
            edited(|v| v["details"]["ticket"]["price"]["amount"] = 42.5.into()),
            400,
            "invalid_payload",
            "details.ticket.price.amount",
        ),
        signed_case(
            "price.amount not a number",
            edited(|v| v["details"]["ticket"]["price"]["amount"] = "abc".into()),
            400,
            "invalid_payload",
            "details.ticket.price.amount",
        ),
        signed_case(
            "postcode as a number",
            edited(|v| v["details"]["buyer"]["postcode"] = 2000.into()),
            400,
            "invalid_payload",
            "details.buyer.postcode",
        ),
        signed_case(
            "sessions not an array",
            edited(|v| v["details"]["ticket"]["sessions"] = "tonight".into()),
            400,
            "invalid_payload",
            "details.ticket.sessions",
        ),
    ];
    // Each required field missing, one at a time (cancellationReason is
    // optional: an absent reason means not cancelled).
    let example: Value = serde_json::from_str(&example()).unwrap();
    let mut paths = Vec::new();
    key_paths(&example, &mut Vec::new(), &mut paths);
    for path in paths.iter().filter(|p| p.last().is_some_and(|k| k != "cancellationReason")) {
        let field = dotted(path);
        let body = edited(|v| {
            let (last, parents) = path.split_last().unwrap();
            let mut node = v;
            for p in parents {
                node = match p.parse::<usize>() {
                    Ok(i) => &mut node[i],
                    Err(_) => &mut node[p.as_str()],
                };
            }
            node.as_object_mut().unwrap().remove(last.as_str());
        });
        cases.push(signed_case(&format!("missing {field}"), body, 400, "invalid_payload", &field));
    }
    // Over the size limit (256 KiB), signed correctly.
    let mut big = example.clone();
    big["details"]["ticket"]["title"] = "x".repeat(300 * 1024).into();
    cases.push(signed_case(
        "body over the limit",
        serde_json::to_vec(&big).unwrap(),
        413,
        "payload_too_large",
        "",
    ));
    cases
}

async fn send_case(client: &reqwest::Client, stack: &impl Gateway, case: &Case) -> Answer {
    let headers: Vec<(&str, &str)> = case.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    post(client, stack, case.body.clone(), &headers).await
}

/// What is wrong with the answer to a case, if anything.
fn wrong(case: &Case, answer: &Answer) -> Option<String> {
    let code = answer.body["error"]["code"].as_str().unwrap_or("<no JSON error>");
    let message = answer.body["error"]["message"].as_str().unwrap_or("");
    let trace_id = answer.body["error"]["trace_id"].as_str().unwrap_or("");
    let right = answer.status == case.status
        && code == case.code
        && message.contains(&case.mentions)
        && trace_id.len() == 32;
    (!right).then(|| {
        format!(
            "{}: expected {} {} mentioning {:?}, got {} {}",
            case.name, case.status, case.code, case.mentions, answer.status, answer.body
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_webhook_gets_its_exact_status_and_code() {
    let backend = Backend::sqlite();
    let stack = Stack::start(&backend).await.ready().await;
    let client = reqwest::Client::new();
    let cases = cases();
    assert!(cases.len() > 40, "the matrix covers every field: {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        failures.extend(wrong(case, &send_case(&client, &stack, case).await));
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // Nothing was stored, and everything still serves: a good delivery is accepted.
    assert_eq!(backend.count("SELECT COUNT(*) FROM events").await, 0);
    let ok = post_signed(&client, &stack, &example()).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["duplicate"], false);
    assert_eq!(get(&client, stack.url("/ready")).await.status, 200);
    stack.stop().await;
    backend.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_answer_json_errors() {
    let backend = Backend::sqlite();
    let stack = Stack::start(&backend).await.ready().await;
    let client = reqwest::Client::new();
    let missing = get(&client, stack.url("/nope")).await;
    assert_eq!((missing.status, missing.body["error"]["code"].as_str()), (404, Some("not_found")));
    let wrong_method = get(&client, stack.url("/webhook")).await;
    assert_eq!(
        (wrong_method.status, wrong_method.body["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let unknown_ticket = get(&client, stack.url("/api/tickets/PETZI0")).await;
    assert_eq!(
        (unknown_ticket.status, unknown_ticket.body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let bad_query = get(&client, stack.url("/api/tickets?page_size=many")).await;
    assert_eq!((bad_query.status, bad_query.body["error"]["code"].as_str()), (400, Some("invalid_query")));
    let bad_token = get(&client, stack.url("/api/tickets?page_token=xyz")).await;
    assert_eq!((bad_token.status, bad_token.body["error"]["code"].as_str()), (400, Some("invalid_query")));
    stack.stop().await;
    backend.drop_database().await;
}

/// The matrix at scale: every case five times, mixed with 300 good deliveries,
/// 32 in flight, on PostgreSQL. The good ones are all accepted and stored,
/// the bad ones all get their exact 4xx, and nothing else is stored.
#[ignore = "needs PostgreSQL (make test runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_matrix_mixed_with_good_traffic_under_concurrency() {
    let backend = Backend::postgres(false).await;
    let stack = std::sync::Arc::new(Stack::start(&backend).await.ready().await);
    let client = reqwest::Client::new();
    // Oversized bodies included: the gateway reads and discards what it
    // refuses (up to a bound) before its 413, so a client still writing the
    // body gets the answer, not a broken pipe.
    let cases = std::sync::Arc::new(cases());
    let good: Vec<String> = (0..300).map(|i| format!("MIX{i:04}")).collect();
    // Interleaved: a good delivery, then a bad case, round after round.
    let mut plan: Vec<Result<String, usize>> = Vec::new();
    for i in 0..good.len().max(cases.len() * 5) {
        if let Some(number) = good.get(i) {
            plan.push(Ok(number.clone()));
        }
        if i < cases.len() * 5 {
            plan.push(Err(i % cases.len()));
        }
    }
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    for item in plan {
        let (gate, client, stack, cases) = (gate.clone(), client.clone(), stack.clone(), cases.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            match item {
                Ok(number) => {
                    let answer = post_signed(
                        &client,
                        &stack,
                        &delivery("ticket_created", &number, "Concert", "20.00", ""),
                    )
                    .await;
                    let right = answer.status == 200 && answer.body["duplicate"] == false;
                    (!right).then(|| format!("good {number}: {} {}", answer.status, answer.body))
                }
                Err(i) => wrong(&cases[i], &send_case(&client, &stack, &cases[i]).await),
            }
        });
    }
    let failures: Vec<String> = tasks.join_all().await.into_iter().flatten().collect();
    assert!(failures.is_empty(), "{} wrong answers:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(backend.count("SELECT COUNT(*) FROM events").await, 300, "exactly the good ones stored");
    assert_eq!(backend.count("SELECT COUNT(*) FROM tickets WHERE number LIKE 'MIX%'").await, 300);
    std::sync::Arc::into_inner(stack).unwrap().stop().await;
    backend.drop_database().await;
}
