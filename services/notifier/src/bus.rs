//! Where published messages go: RabbitMQ (the durable topic exchange, with
//! publisher confirms) when AMQP_URL is set, else an in-process broadcast
//! with the same publish semantics, so `make run` needs no broker.

use std::{pin::Pin, time::Duration};

use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
        ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};
use ticketmesh_proto::v1::Notification;
use tokio::sync::{Mutex, broadcast};
use tokio_stream::{Stream, StreamExt, wrappers::BroadcastStream};

/// Deliveries a subscriber's queue hands this process before they are
/// acknowledged; they are acknowledged as the subscriber's stream takes
/// them. This bounds what one subscriber can hold in this process's memory,
/// however slowly it reads (lapin buffers whatever the broker sends).
pub const SUBSCRIBER_PREFETCH: u16 = 64;

/// Messages a subscriber's queue holds at the broker; past it the oldest are
/// dropped (`drop-head`). Never `reject-publish`: that would nack the relay's
/// publishes to the exchange, and one slow reader would stop every ticket.
pub const SUBSCRIBER_QUEUE_MAX: i32 = 1000;

/// A message ready to publish.
#[derive(Debug, Clone)]
pub struct Message {
    pub message_id: String,
    pub routing_key: String,
    pub content_type: String,
    pub payload: Vec<u8>,
    /// AMQP headers, e.g. the W3C traceparent.
    pub headers: std::collections::HashMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("broker unreachable: {0}")]
    Unreachable(String),
    #[error("broker refused the message")]
    Refused,
    #[error("no confirmation from the broker within {0:?}")]
    Timeout(Duration),
}

pub enum Bus {
    Amqp(Box<Amqp>),
    Local(broadcast::Sender<Notification>),
}

impl Bus {
    pub fn local() -> Self {
        Self::Local(broadcast::channel(1024).0)
    }

    /// Publishes one message; returns once the broker confirmed it (AMQP) or
    /// it was handed to the in-process subscribers.
    pub async fn publish(&self, message: &Message) -> Result<(), BusError> {
        match self {
            Self::Amqp(amqp) => amqp.publish(message).await,
            Self::Local(tx) => {
                // No subscriber is not an error: the message had nowhere to go.
                let _ = tx.send(Notification {
                    message_id: message.message_id.clone(),
                    routing_key: message.routing_key.clone(),
                    payload: message.payload.clone(),
                    content_type: message.content_type.clone(),
                    published_at: Some(std::time::SystemTime::now().into()),
                    headers: message.headers.clone(),
                });
                Ok(())
            }
        }
    }

    /// A live stream of the messages whose routing key matches one of
    /// `patterns` (AMQP topic patterns; empty means all). For RabbitMQ this
    /// is an exclusive, auto-deleted queue of its own, gone when the stream
    /// is dropped.
    pub async fn subscribe(&self, patterns: Vec<String>) -> Result<NotificationStream, BusError> {
        let patterns = if patterns.is_empty() { vec!["#".to_owned()] } else { patterns };
        match self {
            Self::Amqp(amqp) => amqp.subscribe(&patterns).await,
            Self::Local(tx) => {
                let stream = BroadcastStream::new(tx.subscribe()).filter_map(move |item| match item {
                    Ok(n) if patterns.iter().any(|p| topic_matches(p, &n.routing_key)) => Some(n),
                    // A lagging subscriber skips what it missed rather than ending.
                    _ => None,
                });
                Ok(Box::pin(stream))
            }
        }
    }

    /// The `messaging.system` of the OTel conventions.
    pub fn system(&self) -> &'static str {
        match self {
            Self::Amqp(_) => "rabbitmq",
            Self::Local(_) => "in_process",
        }
    }

    /// Whether publishing can work now; for AMQP this (re)connects.
    pub async fn check(&self) -> bool {
        match self {
            Self::Amqp(amqp) => amqp.channel().await.is_ok(),
            Self::Local(_) => true,
        }
    }
}

pub type NotificationStream = Pin<Box<dyn Stream<Item = Notification> + Send>>;

/// AMQP topic matching: words split by '.', `*` is one word, `#` any number.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match (p.first(), k.first()) {
            (None, None) => true,
            (Some(&"#"), _) => go(&p[1..], k) || (!k.is_empty() && go(p, &k[1..])),
            (Some(&"*"), Some(_)) => go(&p[1..], &k[1..]),
            (Some(pw), Some(kw)) if pw == kw => go(&p[1..], &k[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&p, &k)
}

/// The string-valued AMQP headers of a delivery (the trace context among them).
fn string_headers(table: Option<&FieldTable>) -> std::collections::HashMap<String, String> {
    let Some(table) = table else { return Default::default() };
    table
        .inner()
        .iter()
        .filter_map(|(key, value)| match value {
            AMQPValue::LongString(s) => Some((key.to_string(), s.to_string())),
            AMQPValue::ShortString(s) => Some((key.to_string(), s.as_str().to_owned())),
            _ => None,
        })
        .collect()
}

/// Closes its channel when the subscriber's stream is dropped, which
/// cancels the consumer and so deletes the auto-delete queue.
struct ChannelGuard(Channel);

impl Drop for ChannelGuard {
    fn drop(&mut self) {
        let channel = self.0.clone();
        tokio::spawn(async move {
            let _ = channel.close(200, "subscriber left".into()).await;
        });
    }
}

/// One connection and one confirming channel, made on first use and made
/// again after any failure.
pub struct Amqp {
    url: String,
    exchange: String,
    timeout: Duration,
    open: Mutex<Option<(Connection, Channel)>>,
}

impl Amqp {
    pub fn new(url: &str, exchange: &str, timeout: Duration) -> Self {
        Self { url: url.to_owned(), exchange: exchange.to_owned(), timeout, open: Mutex::new(None) }
    }

    async fn channel(&self) -> Result<Channel, BusError> {
        let mut open = self.open.lock().await;
        if let Some((connection, channel)) = open.as_ref()
            && connection.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        *open = None;
        let connect = async {
            let connection = Connection::connect(&self.url, ConnectionProperties::default()).await?;
            let channel = connection.create_channel().await?;
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
            channel
                .exchange_declare(
                    self.exchange.as_str().into(),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() },
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, lapin::Error>((connection, channel))
        };
        let (connection, channel) = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| BusError::Unreachable(format!("no connection within {:?}", self.timeout)))?
            .map_err(|e| BusError::Unreachable(e.to_string()))?;
        tracing::info!(exchange = %self.exchange, "connected to RabbitMQ");
        *open = Some((connection, channel.clone()));
        Ok(channel)
    }

    async fn subscribe(&self, patterns: &[String]) -> Result<NotificationStream, BusError> {
        self.channel().await?;
        let channel = {
            let open = self.open.lock().await;
            let (connection, _) =
                open.as_ref().ok_or_else(|| BusError::Unreachable("connection lost".into()))?;
            tokio::time::timeout(self.timeout, connection.create_channel())
                .await
                .map_err(|_| BusError::Timeout(self.timeout))?
                .map_err(|e| BusError::Unreachable(e.to_string()))?
        };
        // Closed when the stream is dropped, or right away if setup fails.
        let guard = ChannelGuard(channel.clone());
        let setup = async {
            channel.basic_qos(SUBSCRIBER_PREFETCH, BasicQosOptions::default()).await?;
            let mut bounded = FieldTable::default();
            bounded.insert("x-max-length".into(), AMQPValue::LongInt(SUBSCRIBER_QUEUE_MAX));
            bounded.insert("x-overflow".into(), AMQPValue::LongString("drop-head".into()));
            let queue = channel
                .queue_declare(
                    "".into(),
                    QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        ..QueueDeclareOptions::default()
                    },
                    bounded,
                )
                .await?;
            for pattern in patterns {
                channel
                    .queue_bind(
                        queue.name().clone(),
                        self.exchange.as_str().into(),
                        pattern.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
            let consumer = channel
                .basic_consume(
                    queue.name().clone(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, lapin::Error>(consumer)
        };
        let consumer = tokio::time::timeout(self.timeout, setup)
            .await
            .map_err(|_| BusError::Timeout(self.timeout))?
            .map_err(|e| BusError::Unreachable(e.to_string()))?;
        // Acknowledged when the subscriber's stream takes it: the broker then
        // sends the next, so at most SUBSCRIBER_PREFETCH wait in this process.
        let acked = consumer.then(|delivery| async move {
            let d = delivery.ok()?;
            d.acker.ack(BasicAckOptions::default()).await.ok()?;
            Some(d)
        });
        let stream = acked.map_while(move |delivery| {
            let _alive = &guard;
            let d = delivery?;
            let published_at = d
                .properties
                .timestamp()
                .map(|s| std::time::UNIX_EPOCH + Duration::from_secs(s))
                .unwrap_or_else(std::time::SystemTime::now);
            Some(Notification {
                message_id: d
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default(),
                routing_key: d.routing_key.as_str().to_owned(),
                content_type: d
                    .properties
                    .content_type()
                    .as_ref()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default(),
                headers: string_headers(d.properties.headers().as_ref()),
                payload: d.data,
                published_at: Some(published_at.into()),
            })
        });
        Ok(Box::pin(stream))
    }

    async fn reset(&self) {
        *self.open.lock().await = None;
    }

    async fn publish(&self, message: &Message) -> Result<(), BusError> {
        let channel = self.channel().await?;
        let mut headers = FieldTable::default();
        for (key, value) in &message.headers {
            headers.insert(key.as_str().into(), AMQPValue::LongString(value.as_str().into()));
        }
        let properties = BasicProperties::default()
            .with_headers(headers)
            .with_message_id(message.message_id.as_str().into())
            .with_content_type(message.content_type.as_str().into())
            .with_delivery_mode(2) // persistent
            .with_timestamp(
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            );
        let confirmed = tokio::time::timeout(self.timeout, async {
            channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    message.routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    &message.payload,
                    properties,
                )
                .await?
                .await
        })
        .await;
        match confirmed {
            Ok(Ok(Confirmation::Ack(_) | Confirmation::NotRequested)) => Ok(()),
            Ok(Ok(Confirmation::Nack(_))) => Err(BusError::Refused),
            Ok(Err(error)) => {
                self.reset().await;
                Err(BusError::Unreachable(error.to_string()))
            }
            Err(_) => {
                self.reset().await;
                Err(BusError::Timeout(self.timeout))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A subscriber that stops reading holds at most SUBSCRIBER_PREFETCH
    /// messages in this process and SUBSCRIBER_QUEUE_MAX at the broker, the
    /// newest: of 1,500 published while it did not read, it gets no more
    /// than those two bounds, ending with the last one published.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs RabbitMQ (make test runs it)"]
    async fn a_subscriber_that_stops_reading_keeps_a_bounded_backlog_of_the_newest() {
        let url =
            std::env::var("TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        let exchange = format!("test.bounded.{}", std::process::id());
        let bus = Bus::Amqp(Box::new(Amqp::new(&url, &exchange, Duration::from_secs(5))));
        let mut stream = bus.subscribe(vec!["#".into()]).await.unwrap();
        let published = 1_500;
        for n in 0..published {
            let message = Message {
                message_id: format!("m{n}"),
                routing_key: "ticket.created".into(),
                content_type: "text/plain".into(),
                payload: vec![b'x'; 100],
                headers: Default::default(),
            };
            bus.publish(&message).await.unwrap();
        }
        let mut got = Vec::new();
        while let Ok(Some(n)) = tokio::time::timeout(Duration::from_secs(3), stream.next()).await {
            got.push(n.message_id);
        }
        let queue = usize::try_from(SUBSCRIBER_QUEUE_MAX).unwrap();
        let bound = usize::from(SUBSCRIBER_PREFETCH) + queue;
        assert!(got.len() <= bound, "{} of {published} reached the subscriber (bound {bound})", got.len());
        assert!(got.len() >= queue, "only {} reached the subscriber", got.len());
        assert_eq!(got.last().map(String::as_str), Some("m1499"), "the newest are kept");
    }

    #[test]
    fn topic_patterns_match_like_rabbitmq() {
        assert!(topic_matches("ticket.*", "ticket.created"));
        assert!(!topic_matches("ticket.*", "hello"));
        assert!(!topic_matches("ticket.*", "ticket.created.late"));
        assert!(topic_matches("#", "hello"));
        assert!(topic_matches("ticket.#", "ticket.created.late"));
        assert!(topic_matches("*.created", "ticket.created"));
    }
}
