//! AWS SNS (LocalStack in the cluster and the tests) through aws-sdk-sns:
//! the notifier's topics are created at start (idempotently), the gateway's
//! `/sns` endpoint is subscribed to them when SNS_SUBSCRIBE_URL is set, and
//! each publish carries its headers (traceparent) as message attributes.

use std::{
    collections::HashMap,
    sync::LazyLock,
    time::{Duration, Instant},
};

use aws_config::{BehaviorVersion, Region, timeout::TimeoutConfig};
use aws_sdk_sns::{Client, config::Credentials, types::MessageAttributeValue};
use aws_smithy_http_client::tls;
use prometheus::{HistogramVec, IntCounterVec};
use ticketmesh_runtime::{Faults, backoff::Backoff, metrics};
use tokio::sync::RwLock;

/// The topics the notifier owns.
pub const TOPICS: [&str; 2] = ["hello-world-topic", "ticket-events"];

/// Creates the failure series of every topic at 0.
pub fn count_no_failures_yet() {
    for topic in TOPICS {
        PUBLISHED.with_label_values(&[topic, "failed"]);
    }
}

static PUBLISHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    metrics::counter_vec("sns_publish_total", "SNS publishes by topic and outcome", &["topic", "status"])
});
static DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    metrics::histogram_vec(
        "sns_publish_duration_seconds",
        "Time SNS took to accept a publish",
        &["topic"],
        prometheus::DEFAULT_BUCKETS.to_vec(),
    )
});

#[derive(Debug, thiserror::Error)]
pub enum SnsError {
    /// The topic as the caller named it, quoted short whatever its length.
    #[error("SNS topic {} is not one of this notifier's topics", petzi::quoted(.0))]
    UnknownTopic(String),
    #[error("SNS is unavailable: {0}")]
    Unavailable(String),
}

pub struct Sns {
    client: Client,
    subscribe_url: Option<String>,
    /// Topic name → ARN, once created.
    arns: RwLock<HashMap<&'static str, String>>,
    faults: Faults,
}

impl Sns {
    /// A client for `endpoint` (LocalStack, or a regional SNS endpoint).
    /// Region and credentials come from the standard AWS variables; without
    /// AWS_ACCESS_KEY_ID it uses LocalStack's demo credentials ("test").
    /// `faults` may fail or slow each publish (the `sns` dependency).
    pub async fn new(
        endpoint: &str,
        subscribe_url: Option<String>,
        timeout: Duration,
        faults: Faults,
    ) -> Self {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
            .build_https();
        let region = std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|_| "us-east-1".into());
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .region(Region::new(region))
            .timeout_config(
                TimeoutConfig::builder().connect_timeout(timeout).operation_timeout(timeout).build(),
            );
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            tracing::info!("AWS_ACCESS_KEY_ID is not set: using LocalStack's demo credentials");
            loader =
                loader.credentials_provider(Credentials::new("test", "test", None, None, "ticketmesh-demo"));
        }
        let sdk = loader.load().await;
        let config = aws_sdk_sns::config::Builder::from(&sdk).endpoint_url(endpoint).build();
        Self { client: Client::from_conf(config), subscribe_url, arns: RwLock::new(HashMap::new()), faults }
    }

    /// Creates the topics (and subscriptions), retrying until SNS answers or
    /// `stop` turns true.
    pub async fn prepare(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut backoff = Backoff::default();
        while let Err(error) = self.create_topics().await {
            tracing::warn!(%error, "SNS not ready, retrying");
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    async fn create_topics(&self) -> Result<(), SnsError> {
        for name in TOPICS {
            if self.arns.read().await.contains_key(name) {
                continue;
            }
            let created = self.client.create_topic().name(name).send().await.map_err(unavailable)?;
            let arn = created.topic_arn().unwrap_or_default().to_owned();
            // Known before subscribing: SNS may send the confirmation at once.
            self.arns.write().await.insert(name, arn.clone());
            if let Some(url) = &self.subscribe_url {
                self.client
                    .subscribe()
                    .topic_arn(&arn)
                    .protocol(if url.starts_with("https:") { "https" } else { "http" })
                    .endpoint(url)
                    .send()
                    .await
                    .map_err(unavailable)?;
            }
            tracing::info!(topic = name, %arn, subscribed = self.subscribe_url.is_some(), "SNS topic ready");
        }
        Ok(())
    }

    async fn arn(&self, topic: &str) -> Result<String, SnsError> {
        let name =
            TOPICS.into_iter().find(|t| *t == topic).ok_or_else(|| SnsError::UnknownTopic(topic.into()))?;
        if let Some(arn) = self.arns.read().await.get(name) {
            return Ok(arn.clone());
        }
        self.create_topics().await?;
        self.arns
            .read()
            .await
            .get(name)
            .cloned()
            .ok_or_else(|| SnsError::Unavailable("topic not created".into()))
    }

    /// Publishes; returns SNS's MessageId.
    pub async fn publish(
        &self,
        topic: &str,
        subject: &str,
        message: &str,
        attributes: &HashMap<String, String>,
    ) -> Result<String, SnsError> {
        let started = Instant::now();
        let result = match self.faults.dependency("sns").await {
            Ok(()) => self.try_publish(topic, subject, message, attributes).await,
            Err(injected) => Err(SnsError::Unavailable(injected.to_string())),
        };
        let label = if TOPICS.contains(&topic) { topic } else { "other" };
        PUBLISHED.with_label_values(&[label, if result.is_ok() { "published" } else { "failed" }]).inc();
        DURATION.with_label_values(&[label]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn try_publish(
        &self,
        topic: &str,
        subject: &str,
        message: &str,
        attributes: &HashMap<String, String>,
    ) -> Result<String, SnsError> {
        let arn = self.arn(topic).await?;
        let mut request = self.client.publish().topic_arn(arn).message(message);
        if !subject.is_empty() {
            request = request.subject(subject);
        }
        for (key, value) in attributes {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| SnsError::Unavailable(e.to_string()))?;
            request = request.message_attributes(key, value);
        }
        let sent = request.send().await.map_err(unavailable)?;
        Ok(sent.message_id().unwrap_or_default().to_owned())
    }

    /// The ARNs of the topics created so far.
    pub async fn topic_arns(&self) -> Vec<String> {
        self.arns.read().await.values().cloned().collect()
    }

    /// Confirms a subscription to one of this notifier's own topics (by its
    /// exact ARN: a topic of the same name in another account is not ours;
    /// SNS itself checks that the token belongs to that ARN).
    pub async fn confirm(&self, topic_arn: &str, token: &str) -> Result<String, SnsError> {
        if !self.arns.read().await.values().any(|arn| arn == topic_arn) {
            return Err(SnsError::UnknownTopic(topic_arn.into()));
        }
        let confirmed = self
            .client
            .confirm_subscription()
            .topic_arn(topic_arn)
            .token(token)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(confirmed.subscription_arn().unwrap_or_default().to_owned())
    }
}

fn unavailable(error: impl std::error::Error) -> SnsError {
    // The SDK's Display is terse; its source chain says what happened.
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    SnsError::Unavailable(text)
}
