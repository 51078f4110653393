//! RabbitMQ for the tests: a test's own exchange, a queue on it that counts
//! what the notifier published, and a wait for the outbox to drain.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant},
};

use lapin::{
    Connection, ConnectionProperties, ExchangeKind,
    options::{
        BasicConsumeOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    types::FieldTable,
};
use prost::Message;
use ticketmesh_proto::v1::{EventType, TicketEvent};
use tokio_stream::StreamExt;

use crate::{Backend, amqp_url};

/// A test's own exchange and an exclusive queue bound to `ticket.*`.
pub struct Listener {
    connection: Connection,
    exchange: String,
    consumer: lapin::Consumer,
}

impl Listener {
    pub async fn bind(exchange: &str) -> Self {
        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions { durable: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.into(),
                "ticket.*".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                "test".into(),
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .unwrap();
        Self { connection, exchange: exchange.to_owned(), consumer }
    }

    /// Waits for `n` messages (at most `within`), then checks nothing more comes.
    pub async fn take(&mut self, n: usize, within: Duration) -> Vec<lapin::message::Delivery> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.consumer.next()).await {
                Ok(Some(delivery)) => got.push(delivery.unwrap()),
                _ => panic!("only {} of {n} messages arrived", got.len()),
            }
        }
        if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(800), self.consumer.next()).await
        {
            panic!("more than {n} messages: {:?}", extra.unwrap().properties.message_id());
        }
        got
    }

    /// Whatever arrives within `within` (possibly nothing), in order.
    pub async fn take_any(&mut self, within: Duration) -> Vec<lapin::message::Delivery> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        while let Ok(Some(delivery)) =
            tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), self.consumer.next())
                .await
        {
            got.push(delivery.unwrap());
        }
        got
    }

    /// Takes messages until every id of `expected` has arrived (at most
    /// `within`), then whatever else comes in 800 ms. Delivery is at least
    /// once: a message may come twice, with the same id, when its publish was
    /// confirmed but the confirmation did not reach the relay. Returns the
    /// ids that came more than once (with their counts); an id outside
    /// `expected` fails.
    pub async fn take_ids(
        &mut self,
        expected: &std::collections::HashSet<String>,
        within: Duration,
    ) -> std::collections::HashMap<String, usize> {
        let deadline = Instant::now() + within;
        let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        loop {
            let missing = expected.iter().filter(|id| !seen.contains_key(*id)).count();
            let left = if missing == 0 {
                Duration::from_millis(800)
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            match tokio::time::timeout(left, self.consumer.next()).await {
                Ok(Some(delivery)) => {
                    let id = message_id(&delivery.unwrap());
                    assert!(expected.contains(&id), "a message that was never stored: {id}");
                    *seen.entry(id).or_default() += 1;
                }
                _ if missing == 0 => break,
                _ => panic!("{missing} of {} stored events never published", expected.len()),
            }
        }
        seen.retain(|_, n| *n > 1);
        seen
    }

    pub async fn close(self) {
        let channel = self.connection.create_channel().await.unwrap();
        channel
            .exchange_delete(self.exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .unwrap();
        let _ = self.connection.close(0, "done".into()).await;
    }
}

pub fn message_id(d: &lapin::message::Delivery) -> String {
    d.properties.message_id().as_ref().map(|s| s.as_str().to_owned()).unwrap_or_default()
}

pub async fn wait_until_published(backend: &Backend) {
    // After a fault or a load, a debug relay on a busy machine may have a backlog of thousands.
    let deadline = Instant::now() + Duration::from_secs(30);
    while backend.count("SELECT COUNT(*) FROM outbox WHERE published_at_ms IS NULL").await > 0 {
        assert!(Instant::now() < deadline, "outbox not drained in 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The delivery a message carries (its payload decoded).
fn event_of(m: &lapin::message::Delivery) -> TicketEvent {
    let event = TicketEvent::decode(m.data.as_slice()).unwrap();
    assert_eq!(event.delivery_id, message_id(m), "the message id is the delivery id");
    event
}

/// Every ticket's creation came before its cancellation; the messages per
/// delivery id (more than 1: published twice).
pub fn check_order(messages: &[lapin::message::Delivery]) -> HashMap<String, usize> {
    let mut created = HashSet::new();
    let mut copies: HashMap<String, usize> = HashMap::new();
    for m in messages {
        let event = event_of(m);
        let number = event.ticket.unwrap().number;
        *copies.entry(event.delivery_id).or_default() += 1;
        if event.r#type == EventType::TicketCreated as i32 {
            created.insert(number);
        } else {
            assert!(
                created.contains(&number),
                "{number}: its cancellation was published before its creation"
            );
        }
    }
    copies.retain(|_, n| *n > 1);
    copies
}

/// `got` holds each of `sent` (delivery ids, in the order they were
/// accepted) exactly once, and each ticket's in the order accepted. The relay
/// publishes several tickets at once, so the order across tickets is free.
pub fn assert_once_in_ticket_order(got: &[lapin::message::Delivery], sent: &[String]) {
    let ids: Vec<String> = got.iter().map(message_id).collect();
    let (mut published, mut accepted) = (ids.clone(), sent.to_vec());
    published.sort();
    accepted.sort();
    assert_eq!(published, accepted, "every delivery once");
    let ticket: HashMap<String, String> = got
        .iter()
        .map(|m| {
            let event = event_of(m);
            (event.delivery_id, event.ticket.unwrap().number)
        })
        .collect();
    let per_ticket = |order: &[String]| {
        let mut tickets: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for id in order {
            tickets.entry(ticket[id].clone()).or_default().push(id.clone());
        }
        tickets
    };
    assert_eq!(per_ticket(&ids), per_ticket(sent), "each ticket's deliveries in the order accepted");
}
