//! app-event: the business entry point. Turns verified PETZI deliveries into
//! typed `TicketEvent`s and has storage keep them; reports SERVING only while
//! storage does.

pub mod petzi;
pub mod relay;

use std::{future::Future, sync::Arc, time::Duration};

use clap::Parser;
use ticketmesh_proto::v1::{
    HelloRequest, HelloResponse, IngestWebhookRequest, IngestWebhookResponse, RecordSnsNotificationRequest,
    RecordSnsNotificationResponse, SaveEventRequest, TicketEvent,
    event_service_server::{EventService, EventServiceServer},
    notifier_service_client::NotifierServiceClient,
    storage_service_client::StorageServiceClient,
};
use ticketmesh_runtime::grpc::{self, GrpcServer, with_deadline};
use tokio::{net::TcpListener, sync::Notify};
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The error domain in `google.rpc.ErrorInfo` details.
pub const ERROR_DOMAIN: &str = "ticketmesh.v1.EventService";

#[derive(Debug, Clone, Parser)]
#[command(name = "app-event", version, about = "ticketmesh event service (gRPC)")]
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
}

#[derive(Clone)]
pub struct Events {
    storage: StorageServiceClient<Channel>,
    storage_timeout: Duration,
    /// Wakes the outbox relay when a new delivery is stored.
    relay: Arc<Notify>,
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
        Err(Status::unimplemented("Hello needs the notifier, which does not publish yet"))
    }

    async fn ingest_webhook(
        &self,
        request: Request<IngestWebhookRequest>,
    ) -> Result<Response<IngestWebhookResponse>, Status> {
        let request = request.into_inner();
        let delivery = petzi::parse(&request.body).map_err(|e| invalid_payload(&e))?;
        let delivery_id = petzi::delivery_id(&request.body);
        let ticket_number = delivery.ticket.number.clone();
        let event_type = delivery.event_type;
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
                SaveEventRequest { event: Some(event), payload: request.body },
                self.storage_timeout,
            ))
            .await
            .map_err(from_storage)?
            .into_inner();
        if !saved.duplicate {
            self.relay.notify_one();
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
        _: Request<RecordSnsNotificationRequest>,
    ) -> Result<Response<RecordSnsNotificationResponse>, Status> {
        Err(Status::unimplemented("SNS notifications are not recorded yet"))
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
    let events =
        Events { storage: storage.clone(), storage_timeout: args.storage_timeout, relay: wake.clone() };
    let server = GrpcServer::new(&["ticketmesh.v1.EventService"]).await?;
    let storage_channel = grpc::channel(&args.storage_url, Duration::from_secs(1))?;
    tokio::spawn(grpc::follow_dependency(
        storage_channel,
        "ticketmesh.v1.StorageService",
        server.health(),
        server.stopping(),
    ));
    let relay = relay::Relay {
        storage,
        notifier: NotifierServiceClient::new(grpc::channel(&args.notifier_url, args.storage_timeout)?),
        wake,
        timeout: args.storage_timeout,
        batch: 200,
    };
    tokio::spawn(relay.run(server.stopping()));
    server.add_service(EventServiceServer::new(events)).serve(grpc_listener, admin_listener, shutdown).await
}
