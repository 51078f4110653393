//! Where published messages go: RabbitMQ (the durable topic exchange, with
//! publisher confirms) when AMQP_URL is set, else an in-process broadcast
//! with the same publish semantics, so `make run` needs no broker.

use std::time::Duration;

use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
    options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions},
    types::FieldTable,
};
use ticketmesh_proto::v1::Notification;
use tokio::sync::{Mutex, broadcast};

/// A message ready to publish.
#[derive(Debug, Clone)]
pub struct Message {
    pub message_id: String,
    pub routing_key: String,
    pub content_type: String,
    pub payload: Vec<u8>,
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
                });
                Ok(())
            }
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

    async fn reset(&self) {
        *self.open.lock().await = None;
    }

    async fn publish(&self, message: &Message) -> Result<(), BusError> {
        let channel = self.channel().await?;
        let properties = BasicProperties::default()
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
