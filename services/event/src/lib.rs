//! app-event: the business entry point. Turns verified PETZI deliveries into
//! typed `TicketEvent`s and has storage keep them; reports SERVING only while
//! storage does.

pub mod petzi;
pub mod relay;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::{
    collections::VecDeque,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use clap::Parser;
use ticketmesh_proto::v1::{
    Destination, EventType, HelloRequest, HelloResponse, IngestWebhookRequest, IngestWebhookResponse,
    ListSnsNotificationsRequest, ListSnsNotificationsResponse, PublishRequest, RecordSnsNotificationRequest,
    RecordSnsNotificationResponse, SaveEventRequest, SnsNotification, Ticket, TicketEvent,
    event_service_server::{self, EventService, EventServiceServer},
    notifier_service_client::NotifierServiceClient,
    storage_service_client::StorageServiceClient,
};
use ticketmesh_runtime::{
    Faults,
    faults::Targets,
    grpc::{self, Channel, GrpcServer, with_deadline},
    telemetry,
};
use tokio::{net::TcpListener, sync::Notify};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The error domain in `google.rpc.ErrorInfo` details.
pub const ERROR_DOMAIN: &str = ticketmesh_proto::v1::event_service_server::SERVICE_NAME;

#[derive(Debug, Clone, Parser)]
#[command(name = "app-event", version, about = "ticketmesh event service (gRPC)", after_help = ticketmesh_runtime::environment_help!())]
pub struct Args {
    /// Address of the gRPC server.
    #[arg(long, env = "GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: String,
    /// Address of the admin HTTP server (/health, /ready, /metrics).
    #[arg(long, env = "ADMIN_ADDR", default_value = "0.0.0.0:9001")]
    pub admin_addr: String,
    /// The storage service's gRPC URL.
    #[arg(long, env = "STORAGE_URL", default_value = "http://127.0.0.1:50053")]
    pub storage_url: String,
    /// Deadline of each call to storage.
    #[arg(long, env = "STORAGE_TIMEOUT", default_value = "5s", value_parser = ticketmesh_runtime::parse_duration)]
    pub storage_timeout: Duration,
    /// The notifier service's gRPC URL (the outbox relay publishes through it).
    #[arg(long, env = "NOTIFIER_URL", default_value = "http://127.0.0.1:50052")]
    pub notifier_url: String,
    /// Deadline of each call to the notifier.
    #[arg(long, env = "NOTIFIER_TIMEOUT", default_value = "5s", value_parser = ticketmesh_runtime::parse_duration)]
    pub notifier_timeout: Duration,
    /// Times the notifier may refuse an outbox message as a bad request
    /// (retrying cannot mend it) before the relay gives up on it: a dead letter.
    #[arg(long, env = "OUTBOX_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(i32).range(1..=100))]
    pub outbox_max_attempts: i32,
    /// Tickets whose outbox messages the relay publishes at once; each
    /// ticket's go out one after another, in order.
    #[arg(long, env = "OUTBOX_RELAY_CONCURRENCY", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=128))]
    pub outbox_relay_concurrency: u16,
    #[command(flatten)]
    pub fault: ticketmesh_runtime::FaultArgs,
}

#[derive(Clone)]
pub struct Events {
    storage: StorageServiceClient<Channel>,
    notifier: NotifierServiceClient<Channel>,
    storage_timeout: Duration,
    notifier_timeout: Duration,
    /// Wakes the outbox relay when a new delivery is stored.
    relay: Arc<Notify>,
    /// The latest SNS notifications, newest first.
    recent_sns: Arc<Mutex<VecDeque<SnsNotification>>>,
}

static SNS_NOTIFICATIONS: std::sync::LazyLock<prometheus::IntCounterVec> = std::sync::LazyLock::new(|| {
    ticketmesh_runtime::metrics::counter_vec(
        "sns_notifications_total",
        "SNS notifications delivered back through POST /sns, by topic",
        &["topic"],
    )
});

/// The business figures of stored deliveries (not duplicates), for the
/// dashboards: tickets by event and category, revenue, cancellations.
struct Business {
    tickets: prometheus::IntCounterVec,
    revenue_cents: prometheus::IntCounterVec,
    cancellations: prometheus::IntCounterVec,
    categories: ticketmesh_runtime::metrics::BoundedLabel,
    reasons: ticketmesh_runtime::metrics::BoundedLabel,
}

static BUSINESS: std::sync::LazyLock<Business> = std::sync::LazyLock::new(|| Business {
    tickets: ticketmesh_runtime::metrics::counter_vec(
        "tickets_total",
        "Ticket deliveries stored (duplicates excluded), by event type and category",
        &["event", "category"],
    ),
    revenue_cents: ticketmesh_runtime::metrics::counter_vec(
        "ticket_revenue_cents_total",
        "Price of the tickets created, in hundredths of the currency",
        &["currency"],
    ),
    cancellations: ticketmesh_runtime::metrics::counter_vec(
        "ticket_cancellations_total",
        "Ticket updates that carry a cancellation reason, by reason",
        &["reason"],
    ),
    categories: ticketmesh_runtime::metrics::BoundedLabel::new(32),
    reasons: ticketmesh_runtime::metrics::BoundedLabel::new(16),
});

impl Business {
    /// The counters one stored delivery moves, chosen before the ticket is
    /// handed to storage and moved only once it is stored.
    fn counts(&self, event_type: EventType, ticket: &Ticket) -> Counts {
        let category = self.categories.get(&ticket.category);
        if event_type == EventType::TicketCreated {
            let revenue = ticket.price.as_ref().and_then(|price| {
                let cents = price.units.checked_mul(100)?.checked_add(i64::from(price.nanos / 10_000_000))?;
                let currency = price.currency_code.as_str();
                let currency = if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()) {
                    currency
                } else {
                    "other"
                };
                // The parser refuses negative prices; a counter never goes down.
                Some((self.revenue_cents.with_label_values(&[currency]), u64::try_from(cents).ok()?))
            });
            Counts {
                ticket: self.tickets.with_label_values(&["ticket_created", category]),
                revenue,
                cancellation: None,
            }
        } else {
            let cancellation = (!ticket.cancellation_reason.is_empty()).then(|| {
                self.cancellations.with_label_values(&[self.reasons.get(&ticket.cancellation_reason)])
            });
            Counts {
                ticket: self.tickets.with_label_values(&["ticket_updated", category]),
                revenue: None,
                cancellation,
            }
        }
    }
}

struct Counts {
    ticket: prometheus::IntCounter,
    revenue: Option<(prometheus::IntCounter, u64)>,
    cancellation: Option<prometheus::IntCounter>,
}

impl Counts {
    fn stored(self) {
        self.ticket.inc();
        if let Some((counter, cents)) = self.revenue {
            counter.inc_by(cents);
        }
        if let Some(counter) = self.cancellation {
            counter.inc();
        }
    }
}

/// How many SNS notifications ListSnsNotifications remembers.
const RECENT_SNS: usize = 100;

/// The trace id of a `traceparent` value, or "".
fn trace_id(traceparent: &str) -> String {
    traceparent.split('-').nth(1).filter(|id| id.len() == 32).unwrap_or_default().to_owned()
}

/// A message id no other hello call has: time and a counter, hashed.
fn hello_id() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("hello-{}", &petzi::delivery_id(format!("{nanos}-{n}-{}", std::process::id()).as_bytes())[..32])
}

fn invalid_payload(error: &petzi::PayloadError) -> Status {
    let (reason, field) = match error {
        petzi::PayloadError::InvalidJson(_) => ("INVALID_JSON", "body"),
        petzi::PayloadError::InvalidField { field, .. } => ("INVALID_PAYLOAD", field.as_str()),
    };
    let mut details = ErrorDetails::with_bad_request_violation(field, error.to_string());
    details.set_error_info(reason, ERROR_DOMAIN, std::collections::HashMap::new());
    Status::with_error_details(Code::InvalidArgument, error.to_string(), details)
}

/// Storage's failures as this service's callers should see them: anything
/// transient stays UNAVAILABLE (retry later), a deadline stays a deadline.
fn from_storage(status: Status) -> Status {
    match status.code() {
        Code::Unavailable | Code::ResourceExhausted | Code::Aborted | Code::Unknown => {
            Status::unavailable(format!("storage unavailable: {}", status.message()))
        }
        Code::DeadlineExceeded | Code::Cancelled => {
            Status::deadline_exceeded(format!("storage did not answer in time: {}", status.message()))
        }
        _ => status,
    }
}

#[tonic::async_trait]
impl EventService for Events {
    async fn hello(&self, _: Request<HelloRequest>) -> Result<Response<HelloResponse>, Status> {
        const TOPIC: &str = "hello-world-topic";
        const MESSAGE: &str = "Hello World!";
        let publish = PublishRequest {
            message_id: hello_id(),
            routing_key: "hello".into(),
            payload: MESSAGE.as_bytes().to_vec(),
            content_type: "text/plain".into(),
            destinations: vec![Destination::Sns.into()],
            sns_topic: TOPIC.into(),
            // The notifier sends its publish span's context with the message.
            headers: Default::default(),
        };
        let started = std::time::Instant::now();
        let published = self
            .notifier
            .clone()
            .publish(with_deadline(publish, self.notifier_timeout))
            .await
            .map_err(|s| match s.code() {
                Code::DeadlineExceeded | Code::Cancelled => {
                    Status::deadline_exceeded("SNS did not answer in time")
                }
                _ => Status::unavailable(format!("SNS publish failed: {}", s.message())),
            })?
            .into_inner();
        let result = published.results.into_iter().next().unwrap_or_default();
        Ok(Response::new(HelloResponse {
            message: MESSAGE.into(),
            topic: TOPIC.into(),
            status: result.status,
            message_id: result.broker_message_id,
            duration: prost_types::Duration::try_from(started.elapsed()).ok(),
        }))
    }

    async fn ingest_webhook(
        &self,
        request: Request<IngestWebhookRequest>,
    ) -> Result<Response<IngestWebhookResponse>, Status> {
        // The outbox row keeps this call's trace context: the relay's publish
        // continues this trace, however much later it runs.
        let traceparent = telemetry::traceparent();
        let request = request.into_inner();
        let delivery = tracing::info_span!("petzi.parse", http.request.body.size = request.body.len())
            .in_scope(|| {
                petzi::parse(&request.body).map_err(|e| {
                    telemetry::set_error(&tracing::Span::current(), e.to_string());
                    invalid_payload(&e)
                })
            })?;
        let delivery_id = petzi::delivery_id(&request.body);
        let ticket_number = delivery.ticket.number.clone();
        let event_type = delivery.event_type;
        let counts = BUSINESS.counts(event_type, &delivery.ticket);
        let event = TicketEvent {
            delivery_id: delivery_id.clone(),
            r#type: event_type.into(),
            ticket: Some(delivery.ticket),
            buyer: Some(delivery.buyer),
            received_at: request.received_at,
            signed_at: request.signed_at,
        };
        let saved = self
            .storage
            .clone()
            .save_event(with_deadline(
                SaveEventRequest { event: Some(event), payload: request.body, traceparent },
                self.storage_timeout,
            ))
            .await
            .map_err(from_storage)?
            .into_inner();
        if !saved.duplicate {
            self.relay.notify_one();
            counts.stored();
        }
        tracing::info!(
            delivery_id = %delivery_id,
            ticket = %ticket_number,
            duplicate = saved.duplicate,
            "delivery stored"
        );
        Ok(Response::new(IngestWebhookResponse {
            delivery_id,
            duplicate: saved.duplicate,
            ticket_number,
            event_type: event_type.into(),
        }))
    }

    async fn record_sns_notification(
        &self,
        request: Request<RecordSnsNotificationRequest>,
    ) -> Result<Response<RecordSnsNotificationResponse>, Status> {
        let notification = request.into_inner();
        let trace_id = trace_id(notification.attributes.get("traceparent").map_or("", String::as_str));
        // The gateway accepts only its configured topics, so the label stays bounded.
        let topic = notification.topic_arn.rsplit(':').next().unwrap_or_default();
        SNS_NOTIFICATIONS.with_label_values(&[topic]).inc();
        tracing::info!(
            message_id = %notification.message_id,
            topic_arn = %notification.topic_arn,
            trace_id = %trace_id,
            "SNS notification received"
        );
        let mut recent = self.recent_sns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        recent.push_front(SnsNotification {
            notification: Some(notification),
            received_at: Some(std::time::SystemTime::now().into()),
            trace_id,
        });
        recent.truncate(RECENT_SNS);
        Ok(Response::new(RecordSnsNotificationResponse {}))
    }

    async fn list_sns_notifications(
        &self,
        _: Request<ListSnsNotificationsRequest>,
    ) -> Result<Response<ListSnsNotificationsResponse>, Status> {
        let recent = self.recent_sns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(Response::new(ListSnsNotificationsResponse { notifications: recent.iter().cloned().collect() }))
    }
}

/// Serves the event service on already bound listeners until `shutdown`.
pub async fn serve(
    args: Args,
    grpc_listener: TcpListener,
    admin_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let storage = StorageServiceClient::new(grpc::channel(&args.storage_url, args.storage_timeout)?);
    let wake = Arc::new(Notify::new());
    let notifier = NotifierServiceClient::new(grpc::channel(&args.notifier_url, args.notifier_timeout)?);
    let events = Events {
        storage: storage.clone(),
        notifier: notifier.clone(),
        storage_timeout: args.storage_timeout,
        notifier_timeout: args.notifier_timeout,
        relay: wake.clone(),
        recent_sns: Arc::default(),
    };
    let faults = Faults::from_spec(
        "app-event",
        Targets::grpc(&[event_service_server::SERVICE_NAME], &[]),
        &args.fault.faults,
    )?;
    let server = GrpcServer::new(&[event_service_server::SERVICE_NAME]).await?.with_faults(faults);
    let storage_channel = grpc::channel(&args.storage_url, Duration::from_secs(1))?;
    tokio::spawn(grpc::follow_dependency(
        storage_channel,
        ticketmesh_proto::v1::storage_service_server::SERVICE_NAME,
        server.health(),
        server.stopping(),
    ));
    let relay = relay::Relay {
        id: relay::relay_id(),
        publisher: relay::Publisher {
            storage,
            notifier,
            storage_timeout: args.storage_timeout,
            notifier_timeout: args.notifier_timeout,
            max_attempts: args.outbox_max_attempts,
        },
        wake,
        batch: 200,
        concurrency: usize::from(args.outbox_relay_concurrency),
        unacked: Vec::new(),
    };
    let relay = tokio::spawn(relay.run(server.stopping()));
    let served = server
        .add_service(EventServiceServer::new(events))
        .serve(grpc_listener, admin_listener, shutdown)
        .await;
    // Let the relay hand its lease over before the process exits (each of
    // its last two calls has the storage deadline).
    let _ = tokio::time::timeout(2 * args.storage_timeout + Duration::from_secs(1), relay).await;
    served
}
