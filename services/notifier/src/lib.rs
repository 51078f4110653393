//! app-notifier: publishes ticket events to RabbitMQ (the durable topic
//! exchange `ticketmesh.events`, publisher confirms) or, with no AMQP_URL, to
//! an in-process bus, streams them to subscribers, and publishes to AWS SNS
//! when SNS_ENDPOINT_URL is set (else SNS destinations report "disabled").

pub mod bus;
pub mod sns;

#[cfg(test)]
mod tests;

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use clap::Parser;
use ticketmesh_proto::v1::{
    ConfirmSnsSubscriptionRequest, ConfirmSnsSubscriptionResponse, Destination, ListSnsTopicsRequest,
    ListSnsTopicsResponse, Notification, PublishRequest, PublishResponse, PublishResult, SubscribeRequest,
    notifier_service_server::{NotifierService, NotifierServiceServer},
};
use ticketmesh_runtime::{
    Faults,
    backoff::Backoff,
    faults::Targets,
    grpc::{GrpcServer, Health},
    metrics, telemetry,
};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::{
    bus::{Amqp, Bus, BusError, Message},
    sns::{Sns, SnsError},
};

pub const SERVICE: &str = ticketmesh_proto::v1::notifier_service_server::SERVICE_NAME;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "app-notifier",
    version,
    about = "ticketmesh notifier service (gRPC)",
    after_help = concat!(
        ticketmesh_runtime::environment_help!(),
        "
  AWS_REGION                     SNS region (also AWS_DEFAULT_REGION; default us-east-1)
  AWS_DEFAULT_REGION
  AWS_ACCESS_KEY_ID              SNS credentials, with AWS_SECRET_ACCESS_KEY (default: LocalStack's demo \"test\")
  AWS_SECRET_ACCESS_KEY"
    )
)]
pub struct Args {
    /// Address of the gRPC server.
    #[arg(long, env = "GRPC_ADDR", default_value = "0.0.0.0:50052")]
    pub grpc_addr: String,
    /// Address of the admin HTTP server (/health, /ready, /metrics).
    #[arg(long, env = "ADMIN_ADDR", default_value = "0.0.0.0:9002")]
    pub admin_addr: String,
    /// amqp://user:pass@host:5672/%2f for RabbitMQ; unset means the in-process bus.
    #[arg(long, env = "AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<String>,
    /// The topic exchange ticket events are published to.
    #[arg(long, env = "AMQP_EXCHANGE", default_value = "ticketmesh.events")]
    pub amqp_exchange: String,
    /// SNS endpoint (LocalStack: http://127.0.0.1:4566); unset means SNS is disabled.
    /// Region and credentials come from the standard AWS_* variables.
    #[arg(long, env = "SNS_ENDPOINT_URL")]
    pub sns_endpoint_url: Option<String>,
    /// The gateway's public `POST /sns` URL, subscribed to every topic at start.
    #[arg(long, env = "SNS_SUBSCRIBE_URL")]
    pub sns_subscribe_url: Option<String>,
    /// Bound on connecting and on each publish confirmation (AMQP and SNS).
    #[arg(long, env = "PUBLISH_TIMEOUT", default_value = "5s", value_parser = ticketmesh_runtime::parse_duration)]
    pub publish_timeout: Duration,
    #[command(flatten)]
    pub fault: ticketmesh_runtime::FaultArgs,
}

static PUBLISHED: std::sync::LazyLock<prometheus::IntCounterVec> = std::sync::LazyLock::new(|| {
    metrics::counter_vec(
        "amqp_publish_total",
        "Messages published to the bus, by routing key and outcome",
        &["routing_key", "status"],
    )
});

static SUBSCRIBERS: std::sync::LazyLock<prometheus::IntGauge> = std::sync::LazyLock::new(|| {
    metrics::gauge("notifier_subscribers", "Subscribe streams open now (each with its own queue on RabbitMQ)")
});

pub struct Notifier {
    bus: Arc<Bus>,
    sns: Option<Arc<Sns>>,
    exchange: String,
    faults: Faults,
}

/// A producer span for one message, its body size recorded. The message
/// carries this span's trace context, so its consumers continue the trace.
fn publish_span(system: &'static str, destination: &str, message_id: &str, body: &[u8]) -> tracing::Span {
    let span = telemetry::messaging_span(telemetry::Messaging::Publish, system, destination, message_id);
    span.record("messaging.message.body.size", body.len() as i64);
    span
}

fn bounded_key(routing_key: &str) -> &str {
    match routing_key {
        "ticket.created" | "ticket.updated" | "hello" => routing_key,
        _ => "other",
    }
}

impl Notifier {
    /// A publish's request, checked whole before anything is published: a
    /// refusal (INVALID_ARGUMENT) after an AMQP publish would have the relay
    /// retry, and so publish that message again each time, before giving up
    /// on it. Returns its destinations (AMQP when none is named).
    fn check(&self, r: &PublishRequest) -> Result<Vec<i32>, Status> {
        if r.message_id.is_empty() || r.routing_key.is_empty() {
            return Err(Status::invalid_argument("message_id and routing_key are required"));
        }
        let destinations =
            if r.destinations.is_empty() { vec![Destination::Amqp as i32] } else { r.destinations.clone() };
        for &destination in &destinations {
            match Destination::try_from(destination) {
                Ok(Destination::Amqp) => {}
                Ok(Destination::Sns) if self.sns.is_none() => {}
                Ok(Destination::Sns) => {
                    std::str::from_utf8(&r.payload)
                        .map_err(|_| Status::invalid_argument("SNS messages must be UTF-8 text"))?;
                    if !sns::TOPICS.contains(&r.sns_topic.as_str()) {
                        return Err(Status::invalid_argument(
                            SnsError::UnknownTopic(r.sns_topic.clone()).to_string(),
                        ));
                    }
                }
                _ => return Err(Status::invalid_argument(format!("unknown destination {destination}"))),
            }
        }
        Ok(destinations)
    }
}

#[tonic::async_trait]
impl NotifierService for Notifier {
    async fn publish(&self, request: Request<PublishRequest>) -> Result<Response<PublishResponse>, Status> {
        let r = request.into_inner();
        let destinations = self.check(&r)?;
        let mut results = Vec::new();
        for destination in destinations {
            match Destination::try_from(destination) {
                Ok(Destination::Amqp) => {
                    let span = publish_span(self.bus.system(), &self.exchange, &r.message_id, &r.payload);
                    telemetry::set_attribute(
                        &span,
                        "messaging.rabbitmq.destination.routing_key",
                        r.routing_key.clone(),
                    );
                    let mut headers = r.headers.clone();
                    span.in_scope(|| telemetry::inject_map(&mut headers));
                    let message = Message {
                        message_id: r.message_id.clone(),
                        routing_key: r.routing_key.clone(),
                        content_type: r.content_type.clone(),
                        payload: r.payload.clone(),
                        headers,
                    };
                    let outcome = async {
                        self.faults
                            .dependency("amqp")
                            .await
                            .map_err(|i| BusError::Unreachable(i.to_string()))?;
                        self.bus.publish(&message).await
                    }
                    .instrument(span.clone())
                    .await;
                    if let Err(error) = &outcome {
                        telemetry::set_error(&span, error.to_string());
                    }
                    let status = if outcome.is_ok() { "published" } else { "failed" };
                    PUBLISHED.with_label_values(&[bounded_key(&r.routing_key), status]).inc();
                    outcome.map_err(|e| Status::unavailable(e.to_string()))?;
                    results.push(PublishResult {
                        destination,
                        status: "published".into(),
                        broker_message_id: r.message_id.clone(),
                    });
                }
                Ok(Destination::Sns) => {
                    let Some(sns) = &self.sns else {
                        results.push(PublishResult {
                            destination,
                            status: "disabled".into(),
                            broker_message_id: String::new(),
                        });
                        continue;
                    };
                    let text = std::str::from_utf8(&r.payload)
                        .map_err(|_| Status::invalid_argument("SNS messages must be UTF-8 text"))?;
                    let span = publish_span("aws_sns", &r.sns_topic, &r.message_id, &r.payload);
                    let mut attributes = r.headers.clone();
                    span.in_scope(|| telemetry::inject_map(&mut attributes));
                    attributes.insert("message_id".into(), r.message_id.clone());
                    attributes.insert("routing_key".into(), r.routing_key.clone());
                    let published = sns
                        .publish(&r.sns_topic, &r.routing_key, text, &attributes)
                        .instrument(span.clone())
                        .await;
                    let id = published.map_err(|e| {
                        telemetry::set_error(&span, e.to_string());
                        match e {
                            SnsError::UnknownTopic(_) => Status::invalid_argument(e.to_string()),
                            SnsError::Unavailable(_) => Status::unavailable(e.to_string()),
                        }
                    })?;
                    // SNS names the message only once it has it.
                    span.record("messaging.message.id", id.as_str());
                    results.push(PublishResult {
                        destination,
                        status: "published".into(),
                        broker_message_id: id,
                    });
                }
                _ => return Err(Status::invalid_argument(format!("unknown destination {destination}"))),
            }
        }
        Ok(Response::new(PublishResponse { results }))
    }

    type SubscribeStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<Notification, Status>> + Send>>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let patterns = request.into_inner().routing_keys;
        let stream = self.bus.subscribe(patterns).await.map_err(|e| Status::unavailable(e.to_string()))?;
        let subscriber = metrics::Held::new(&SUBSCRIBERS);
        let stream = stream.map(move |n| {
            let _counted = &subscriber; // lives (and counts) as long as the stream
            Ok(n)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn confirm_sns_subscription(
        &self,
        request: Request<ConfirmSnsSubscriptionRequest>,
    ) -> Result<Response<ConfirmSnsSubscriptionResponse>, Status> {
        let r = request.into_inner();
        let sns = self.sns.as_ref().ok_or_else(|| Status::failed_precondition("SNS is not configured"))?;
        let subscription_arn = sns.confirm(&r.topic_arn, &r.token).await.map_err(|e| match e {
            SnsError::UnknownTopic(_) => Status::invalid_argument(e.to_string()),
            SnsError::Unavailable(_) => Status::unavailable(e.to_string()),
        })?;
        tracing::info!(topic_arn = %r.topic_arn, %subscription_arn, "SNS subscription confirmed");
        Ok(Response::new(ConfirmSnsSubscriptionResponse { subscription_arn }))
    }

    async fn list_sns_topics(
        &self,
        _: Request<ListSnsTopicsRequest>,
    ) -> Result<Response<ListSnsTopicsResponse>, Status> {
        let topic_arns = match &self.sns {
            Some(sns) => sns.topic_arns().await,
            None => Vec::new(),
        };
        Ok(Response::new(ListSnsTopicsResponse { topic_arns }))
    }
}

/// Keeps health in step with the broker, reconnecting with backoff (asked
/// every 2 s while it answers).
async fn watch_bus(bus: Arc<Bus>, health: Health, stop: tokio::sync::watch::Receiver<bool>) {
    let check = move || {
        let bus = bus.clone();
        async move { bus.check().await }
    };
    health.follow(check, Duration::from_secs(2), Backoff::default(), stop).await;
}

/// Serves the notifier on already bound listeners until `shutdown`.
pub async fn serve(
    args: Args,
    grpc_listener: TcpListener,
    admin_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let bus = Arc::new(match &args.amqp_url {
        Some(url) => Bus::Amqp(Box::new(Amqp::new(url, &args.amqp_exchange, args.publish_timeout))),
        None => Bus::local(),
    });
    let faults =
        Faults::from_spec("app-notifier", Targets::grpc(&[SERVICE], &["amqp", "sns"]), &args.fault.faults)?;
    let server = GrpcServer::new(&[SERVICE]).await?.with_faults(faults.clone());
    let sns = match &args.sns_endpoint_url {
        Some(endpoint) => {
            let sns = Arc::new(
                Sns::new(endpoint, args.sns_subscribe_url.clone(), args.publish_timeout, faults.clone())
                    .await,
            );
            let (preparing, stop) = (sns.clone(), server.stopping());
            tokio::spawn(async move { preparing.prepare(stop).await });
            Some(sns)
        }
        None => None,
    };
    tokio::spawn(watch_bus(bus.clone(), server.health(), server.stopping()));
    // Failure series exist from the start at 0, so an alert's failure ratio
    // reads 0 rather than no data until the first failure.
    for key in ["ticket.created", "ticket.updated", "hello"] {
        PUBLISHED.with_label_values(&[key, "failed"]);
    }
    if sns.is_some() {
        sns::count_no_failures_yet();
    }
    server
        .add_service(NotifierServiceServer::new(Notifier {
            bus,
            sns,
            exchange: args.amqp_exchange.clone(),
            faults,
        }))
        .serve(grpc_listener, admin_listener, shutdown)
        .await
}
