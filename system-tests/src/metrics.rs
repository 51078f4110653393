//! Reading a service's `/metrics`: the Prometheus text checked line by line,
//! and one value out of it.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// One sample: its name, its labels and its value.
pub type Sample = (String, HashMap<String, String>, f64);

/// The samples at `url` (a `/metrics` endpoint), checked as [`parse_prometheus`] does.
pub async fn scrape(url: &str) -> Vec<Sample> {
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    parse_prometheus(&text)
}

/// The sum of the samples at `url` named `name` whose labels include
/// `labels`; `None` while there is none (a labelled counter or a lazily
/// registered metric appears with its first use).
pub async fn metric(url: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    sum(&scrape(url).await, name, labels)
}

/// [`metric`] (0 while absent), asked every 50 ms until `done` holds for it
/// or `within` has passed; the last value read, for the caller to assert on.
/// A figure moves when a background loop (a relay round, a stream's
/// forwarder, the notifier's answer) has run, not when a test's request
/// returned.
pub async fn wait_for(
    url: &str,
    name: &str,
    labels: &[(&str, &str)],
    within: Duration,
    done: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + within;
    loop {
        let value = metric(url, name, labels).await.unwrap_or(0.0);
        if done(value) || Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`metric`], or `None` while `url` does not answer (its process is down
/// or still starting) as well.
pub async fn metric_if_up(url: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = reqwest::get(url).await.ok()?.text().await.ok()?;
    sum(&parse_prometheus(&text), name, labels)
}

fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut matching = samples.iter().filter(|s| matches(s, name, labels)).map(|(_, _, v)| *v).peekable();
    matching.peek().is_some().then(|| matching.sum())
}

fn matches((n, l, _): &Sample, name: &str, labels: &[(&str, &str)]) -> bool {
    n == name && labels.iter().all(|(k, v)| l.get(*k).is_some_and(|x| x == v))
}

/// Prometheus text, checked line by line against the exposition format:
/// every sample belongs to a family with HELP and TYPE, names and labels
/// are well formed, values are numbers. Returns the samples.
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    let mut typed: HashMap<String, String> = HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, what) =
                (parts.next().unwrap(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            assert!(valid_name(name), "bad family name in {line:?}");
            if kind == "TYPE" {
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&what),
                    "bad TYPE in {line:?}"
                );
                typed.insert(name.to_owned(), what.to_owned());
            } else {
                assert_eq!(kind, "HELP", "unknown comment {line:?}");
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value {v:?} is not a number in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                (name, parse_labels(body, line))
            }
            None => (series, HashMap::new()),
        };
        assert!(valid_name(name), "bad metric name in {line:?}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.get(*f).is_some_and(|t| t == "histogram")))
            .unwrap_or(name);
        assert!(typed.contains_key(family), "sample {name} has no TYPE line");
        samples.push((name.to_owned(), labels, value));
    }
    samples
}

fn parse_labels(body: &str, line: &str) -> HashMap<String, String> {
    let mut labels = HashMap::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("bad label in {line:?}"));
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => panic!("bad escape {other:?} in {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        assert!(
            !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad label name {key:?}"
        );
        labels.insert(key.to_owned(), value);
        rest = after[end + 1..].strip_prefix(',').unwrap_or(&after[end + 1..]);
    }
    labels
}

/// The sum of the samples named `name` whose labels include `labels` (0
/// when there is none).
pub fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    sum(samples, name, labels).unwrap_or(0.0)
}
