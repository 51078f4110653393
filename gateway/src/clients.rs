//! The downstream services as the handlers call them: one method per call,
//! each carrying its deadline and turning a failure into the error its HTTP
//! client should see, so that a handler reads as a sequence of `?`.

use std::time::Duration;

use axum::http::StatusCode;
use ticketmesh_proto::v1::{
    ConfirmSnsSubscriptionRequest, ConfirmSnsSubscriptionResponse, GetStatsRequest, GetTicketRequest,
    HelloRequest, HelloResponse, IngestWebhookRequest, IngestWebhookResponse, ListSnsNotificationsRequest,
    ListSnsNotificationsResponse, ListSnsTopicsRequest, ListSnsTopicsResponse, ListTicketsRequest,
    ListTicketsResponse, Notification, RecordSnsNotificationRequest, RecordSnsNotificationResponse, Stats,
    StoredTicket, SubscribeRequest, event_service_client::EventServiceClient, event_service_server,
    notifier_service_client::NotifierServiceClient, storage_service_client::StorageServiceClient,
    storage_service_server,
};
use ticketmesh_runtime::grpc::{self, Channel, with_deadline};
use tonic::{Code, Status, Streaming};

use crate::error::AppError;

const EVENT: &str = "the event service";
const STORAGE: &str = "the storage service";
const NOTIFIER: &str = "the notifier service";

/// A call's answer, or the error its HTTP client should see; `what` names the
/// service in that error.
fn answer<T>(what: &str, result: Result<tonic::Response<T>, Status>) -> Result<T, AppError> {
    answer_or(what, result, |_| None)
}

/// As [`answer`], except for the failures `own` maps to an error of their own.
fn answer_or<T>(
    what: &str,
    result: Result<tonic::Response<T>, Status>,
    own: impl FnOnce(&Status) -> Option<AppError>,
) -> Result<T, AppError> {
    result
        .map(tonic::Response::into_inner)
        .map_err(|s| own(&s).unwrap_or_else(|| AppError::from_grpc(what, &s)))
}

/// A service the gateway needs in order to be ready: its client, the deadline
/// of every call on it, and the channel its health (as `name`) is asked on.
pub(crate) struct Needed<C> {
    client: C,
    channel: Channel,
    name: &'static str,
    timeout: Duration,
}

impl<C> Needed<C> {
    fn with(channel: Channel, name: &'static str, timeout: Duration, client: fn(Channel) -> C) -> Self {
        Self { client: client(channel.clone()), channel, name, timeout }
    }

    /// Whether it answers SERVING within `within`.
    pub(crate) async fn serving(&self, within: Duration) -> bool {
        grpc::is_serving(self.channel.clone(), self.name, within).await
    }
}

/// The event service: every call within the gRPC deadline (GRPC_TIMEOUT).
pub(crate) type Event = Needed<EventServiceClient<Channel>>;

impl Event {
    pub(crate) fn new(channel: Channel, timeout: Duration) -> Self {
        Self::with(channel, event_service_server::SERVICE_NAME, timeout, EventServiceClient::new)
    }

    /// An UNAVAILABLE here is SNS's (the notifier could not publish): 503 `sns_unavailable`.
    pub(crate) async fn hello(&self) -> Result<HelloResponse, AppError> {
        let answer = self.client.clone().hello(with_deadline(HelloRequest {}, self.timeout)).await;
        answer_or(EVENT, answer, |s| {
            (s.code() == Code::Unavailable)
                .then(|| AppError::new(StatusCode::SERVICE_UNAVAILABLE, "sns_unavailable", s.message()))
        })
    }

    pub(crate) async fn ingest_webhook(
        &self,
        request: IngestWebhookRequest,
    ) -> Result<IngestWebhookResponse, AppError> {
        answer(EVENT, self.client.clone().ingest_webhook(with_deadline(request, self.timeout)).await)
    }

    pub(crate) async fn record_sns_notification(
        &self,
        request: RecordSnsNotificationRequest,
    ) -> Result<RecordSnsNotificationResponse, AppError> {
        answer(EVENT, self.client.clone().record_sns_notification(with_deadline(request, self.timeout)).await)
    }

    pub(crate) async fn list_sns_notifications(&self) -> Result<ListSnsNotificationsResponse, AppError> {
        let request = with_deadline(ListSnsNotificationsRequest {}, self.timeout);
        answer(EVENT, self.client.clone().list_sns_notifications(request).await)
    }
}

/// The storage service, for the reads: every call within READ_TIMEOUT.
pub(crate) type Storage = Needed<StorageServiceClient<Channel>>;

impl Storage {
    pub(crate) fn new(channel: Channel, timeout: Duration) -> Self {
        Self::with(channel, storage_service_server::SERVICE_NAME, timeout, StorageServiceClient::new)
    }

    /// An INVALID_ARGUMENT here is the query's (a bad filter or page token): 400 `invalid_query`.
    pub(crate) async fn list_tickets(
        &self,
        request: ListTicketsRequest,
    ) -> Result<ListTicketsResponse, AppError> {
        let answer = self.client.clone().list_tickets(with_deadline(request, self.timeout)).await;
        answer_or(STORAGE, answer, |s| {
            (s.code() == Code::InvalidArgument).then(|| AppError::bad_request("invalid_query", s.message()))
        })
    }

    pub(crate) async fn get_ticket(&self, request: GetTicketRequest) -> Result<StoredTicket, AppError> {
        answer(STORAGE, self.client.clone().get_ticket(with_deadline(request, self.timeout)).await)
    }

    pub(crate) async fn get_stats(&self) -> Result<Stats, AppError> {
        answer(STORAGE, self.client.clone().get_stats(with_deadline(GetStatsRequest {}, self.timeout)).await)
    }
}

/// The notifier service: every call within the gRPC deadline but the live
/// stream, which lasts as long as its client.
pub(crate) struct Notifier {
    client: NotifierServiceClient<Channel>,
    timeout: Duration,
}

impl Notifier {
    pub(crate) fn new(client: NotifierServiceClient<Channel>, timeout: Duration) -> Self {
        Self { client, timeout }
    }

    pub(crate) async fn subscribe(
        &self,
        request: SubscribeRequest,
    ) -> Result<Streaming<Notification>, AppError> {
        answer(NOTIFIER, self.client.clone().subscribe(request).await)
    }

    pub(crate) async fn confirm_sns_subscription(
        &self,
        request: ConfirmSnsSubscriptionRequest,
    ) -> Result<ConfirmSnsSubscriptionResponse, AppError> {
        answer(
            NOTIFIER,
            self.client.clone().confirm_sns_subscription(with_deadline(request, self.timeout)).await,
        )
    }

    pub(crate) async fn list_sns_topics(&self) -> Result<ListSnsTopicsResponse, AppError> {
        answer(
            NOTIFIER,
            self.client.clone().list_sns_topics(with_deadline(ListSnsTopicsRequest {}, self.timeout)).await,
        )
    }
}
