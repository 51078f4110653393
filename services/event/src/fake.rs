//! A storage and a notifier for the tests, in one scripted fake served by
//! tonic on 127.0.0.1:0: it records what it is sent and answers what the
//! test set up. The methods the event service does not call are UNIMPLEMENTED.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use ticketmesh_proto::v1::{
    AckOutboxRequest, AckOutboxResponse, ConfirmSnsSubscriptionRequest, ConfirmSnsSubscriptionResponse,
    FetchOutboxRequest, FetchOutboxResponse, GetStatsRequest, GetTicketRequest, ListSnsTopicsRequest,
    ListSnsTopicsResponse, ListTicketsRequest, ListTicketsResponse, Notification, OutboxMessage,
    PublishRequest, PublishResponse, RecordOutboxFailureRequest, RecordOutboxFailureResponse,
    ReleaseOutboxLeaseRequest, ReleaseOutboxLeaseResponse, SaveEventRequest, SaveEventResponse, Stats,
    StoredTicket, SubscribeRequest,
    notifier_service_server::{NotifierService, NotifierServiceServer},
    storage_service_server::{StorageService, StorageServiceServer},
};
use tokio::sync::watch;
use tonic::{Request, Response, Status, transport::server::TcpIncoming};

#[derive(Default)]
pub struct Fake {
    /// Every SaveEvent request, in order.
    pub saved: Mutex<Vec<SaveEventRequest>>,
    /// What SaveEvent answers instead of storing, when set.
    pub save_error: Mutex<Option<Status>>,
    /// How long SaveEvent takes to answer.
    pub save_delay: Mutex<Duration>,
    /// The outbox: FetchOutbox returns the rows not acknowledged yet.
    pub outbox: Mutex<Vec<OutboxMessage>>,
    /// The ids acknowledged so far, in order (a test can wait on it).
    pub acked: watch::Sender<Vec<i64>>,
    /// How many of the next AckOutbox calls fail.
    pub ack_failures: Mutex<usize>,
    /// Every Publish request, in order, the failed ones included.
    pub published: Mutex<Vec<PublishRequest>>,
    /// How many more publishes of a message id fail.
    pub publish_failures: Mutex<HashMap<String, usize>>,
    /// Message ids the notifier refuses every time, as a bad request.
    pub refused: Mutex<HashSet<String>>,
    /// Failures recorded per outbox id, and the ids that became dead letters
    /// (no longer fetched).
    pub attempts: Mutex<HashMap<i64, i32>>,
    /// How many of the next RecordOutboxFailure calls fail.
    pub record_failures: Mutex<usize>,
    pub dead: Mutex<HashSet<i64>>,
    /// The relays that released the lease, in order.
    pub released: Mutex<Vec<String>>,
    /// How long each Publish takes to answer.
    pub publish_delay: Mutex<Duration>,
    /// Publishes in progress now, and the most there were at once.
    pub publishing: AtomicUsize,
    pub most_publishing: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Fake {
    /// Serves the fake as both services; returns its URL.
    pub async fn serve(self: &Arc<Self>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tonic::transport::Server::builder()
            .add_service(StorageServiceServer::from_arc(self.clone()))
            .add_service(NotifierServiceServer::from_arc(self.clone()))
            .serve_with_incoming(TcpIncoming::from(listener));
        tokio::spawn(server);
        url
    }

    /// The message ids of every publish attempt, in order.
    pub fn published_ids(&self) -> Vec<String> {
        lock(&self.published).iter().map(|p| p.message_id.clone()).collect()
    }

    pub fn acked_ids(&self) -> Vec<i64> {
        self.acked.borrow().clone()
    }

    pub fn saved(&self) -> Vec<SaveEventRequest> {
        lock(&self.saved).clone()
    }

    pub fn fail_saves_with(&self, status: Option<Status>) {
        *lock(&self.save_error) = status;
    }

    pub fn set_outbox(&self, rows: Vec<OutboxMessage>) {
        *lock(&self.outbox) = rows;
    }

    pub fn fail_publishes(&self, message_id: &str, times: usize) {
        lock(&self.publish_failures).insert(message_id.into(), times);
    }

    pub fn refuse_publishes(&self, message_id: &str) {
        lock(&self.refused).insert(message_id.into());
    }
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in this fake"))
}

#[tonic::async_trait]
impl StorageService for Fake {
    async fn save_event(
        &self,
        request: Request<SaveEventRequest>,
    ) -> Result<Response<SaveEventResponse>, Status> {
        let delay = *lock(&self.save_delay);
        tokio::time::sleep(delay).await;
        if let Some(status) = lock(&self.save_error).clone() {
            return Err(status);
        }
        let request = request.into_inner();
        let delivery_id = request.event.as_ref().map(|e| e.delivery_id.clone()).unwrap_or_default();
        let mut saved = lock(&self.saved);
        let duplicate = saved.iter().any(|s| s.event.as_ref().is_some_and(|e| e.delivery_id == delivery_id));
        saved.push(request);
        Ok(Response::new(SaveEventResponse { delivery_id, duplicate }))
    }

    async fn get_ticket(&self, _: Request<GetTicketRequest>) -> Result<Response<StoredTicket>, Status> {
        unimplemented()
    }

    async fn list_tickets(
        &self,
        _: Request<ListTicketsRequest>,
    ) -> Result<Response<ListTicketsResponse>, Status> {
        unimplemented()
    }

    async fn get_stats(&self, _: Request<GetStatsRequest>) -> Result<Response<Stats>, Status> {
        unimplemented()
    }

    async fn fetch_outbox(
        &self,
        request: Request<FetchOutboxRequest>,
    ) -> Result<Response<FetchOutboxResponse>, Status> {
        let acked: HashSet<i64> = self.acked.borrow().iter().copied().collect();
        let dead = lock(&self.dead).clone();
        let mut rows: Vec<OutboxMessage> = lock(&self.outbox)
            .iter()
            .filter(|m| !acked.contains(&m.id) && !dead.contains(&m.id))
            .cloned()
            .collect();
        rows.sort_by_key(|m| m.id);
        let backlog = rows.len() as i64;
        let request = request.into_inner();
        rows.truncate(usize::try_from(request.limit).unwrap_or(0));
        // This storage has one relay: whoever asks holds the lease.
        Ok(Response::new(FetchOutboxResponse {
            messages: rows,
            backlog,
            leader: true,
            holder: request.relay_id,
            lease_until: None,
        }))
    }

    async fn ack_outbox(
        &self,
        request: Request<AckOutboxRequest>,
    ) -> Result<Response<AckOutboxResponse>, Status> {
        let mut failures = lock(&self.ack_failures);
        if *failures > 0 {
            *failures -= 1;
            return Err(Status::unavailable("scripted: storage down"));
        }
        let ids = request.into_inner().ids;
        let acknowledged = ids.len() as i64;
        self.acked.send_modify(|acked| acked.extend(ids));
        Ok(Response::new(AckOutboxResponse { acknowledged }))
    }

    async fn record_outbox_failure(
        &self,
        request: Request<RecordOutboxFailureRequest>,
    ) -> Result<Response<RecordOutboxFailureResponse>, Status> {
        let mut failures = lock(&self.record_failures);
        if *failures > 0 {
            *failures -= 1;
            return Err(Status::unavailable("scripted: storage down"));
        }
        let request = request.into_inner();
        let mut attempts = lock(&self.attempts);
        let attempts = attempts.entry(request.id).or_default();
        *attempts += 1;
        let dead = *attempts >= request.max_attempts;
        if dead {
            lock(&self.dead).insert(request.id);
        }
        Ok(Response::new(RecordOutboxFailureResponse { attempts: *attempts, dead }))
    }

    async fn release_outbox_lease(
        &self,
        request: Request<ReleaseOutboxLeaseRequest>,
    ) -> Result<Response<ReleaseOutboxLeaseResponse>, Status> {
        lock(&self.released).push(request.into_inner().relay_id);
        Ok(Response::new(ReleaseOutboxLeaseResponse { released: true }))
    }
}

#[tonic::async_trait]
impl NotifierService for Fake {
    async fn publish(&self, request: Request<PublishRequest>) -> Result<Response<PublishResponse>, Status> {
        let request = request.into_inner();
        let id = request.message_id.clone();
        lock(&self.published).push(request);
        let now = self.publishing.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_publishing.fetch_max(now, Ordering::SeqCst);
        let delay = *lock(&self.publish_delay);
        tokio::time::sleep(delay).await;
        self.publishing.fetch_sub(1, Ordering::SeqCst);
        if lock(&self.refused).contains(&id) {
            return Err(Status::invalid_argument("scripted: a message the notifier cannot take"));
        }
        if let Some(left) = lock(&self.publish_failures).get_mut(&id).filter(|left| **left > 0) {
            *left -= 1;
            return Err(Status::unavailable("scripted: broker down"));
        }
        Ok(Response::new(PublishResponse::default()))
    }

    type SubscribeStream = tonic::codegen::tokio_stream::Empty<Result<Notification, Status>>;

    async fn subscribe(
        &self,
        _: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        unimplemented()
    }

    async fn confirm_sns_subscription(
        &self,
        _: Request<ConfirmSnsSubscriptionRequest>,
    ) -> Result<Response<ConfirmSnsSubscriptionResponse>, Status> {
        unimplemented()
    }

    async fn list_sns_topics(
        &self,
        _: Request<ListSnsTopicsRequest>,
    ) -> Result<Response<ListSnsTopicsResponse>, Status> {
        unimplemented()
    }
}
