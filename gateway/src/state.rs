//! What every handler shares: the gRPC clients, the checked configuration,
//! the admission gates and the live streams' bounds.

use std::{sync::Arc, time::Duration};

use ticketmesh_proto::v1::{
    event_service_client::EventServiceClient, notifier_service_client::NotifierServiceClient,
    storage_service_client::StorageServiceClient,
};
use ticketmesh_runtime::{
    Faults,
    faults::Targets,
    grpc::{self, Channel},
};

use crate::{
    config::{Args, FAULT_ROUTES, secrets},
    error::AppError,
    routes::{events, sns},
    server,
};

/// What [`AppState`] shares between handlers.
pub(crate) struct Inner {
    pub(crate) event: EventServiceClient<Channel>,
    pub(crate) storage: StorageServiceClient<Channel>,
    pub(crate) notifier: NotifierServiceClient<Channel>,
    pub(crate) event_channel: Channel,
    pub(crate) storage_channel: Channel,
    pub(crate) secrets: Vec<Vec<u8>>,
    pub(crate) sns_topics: Vec<String>,
    pub(crate) sns_verifier: sns::Verifier,
    pub(crate) sns_known: sns::Topics,
    pub(crate) tolerance_secs: u64,
    pub(crate) max_body_bytes: usize,
    pub(crate) body_read_timeout: Duration,
    pub(crate) webhooks: server::Gate,
    pub(crate) reads: server::Gate,
    pub(crate) sse: events::Streams,
    pub(crate) timeout: Duration,
    pub(crate) read_timeout: Duration,
    pub(crate) faults: Faults,
    /// Turns true when shutdown starts: ends the open `/events` streams, which
    /// would otherwise hold graceful shutdown open for as long as a browser watches.
    pub(crate) stopping: tokio::sync::watch::Sender<bool>,
}

#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

impl AppState {
    pub fn new(args: &Args) -> anyhow::Result<Self> {
        let event_channel = grpc::channel(&args.event_url, args.grpc_timeout)?;
        let storage_channel = grpc::channel(&args.storage_url, args.grpc_timeout)?;
        let notifier = NotifierServiceClient::new(grpc::channel(&args.notifier_url, args.grpc_timeout)?);
        Ok(Self(Arc::new(Inner {
            event: EventServiceClient::new(event_channel.clone()),
            storage: StorageServiceClient::new(storage_channel.clone()),
            notifier: notifier.clone(),
            event_channel,
            storage_channel,
            secrets: secrets(args)?,
            sns_topics: args.sns_topics.clone(),
            sns_verifier: sns::Verifier::new(args.sns_cert_origins.clone(), args.grpc_timeout)?,
            sns_known: sns::Topics::new(notifier, args.grpc_timeout),
            tolerance_secs: args.signature_tolerance.as_secs(),
            max_body_bytes: args.max_body_bytes,
            body_read_timeout: args.limits.body_read_timeout,
            webhooks: server::Gate::new("webhooks", args.limits.webhook_concurrency),
            reads: server::Gate::new("reads", args.limits.read_concurrency),
            sse: events::Streams::new(
                args.limits.max_sse_clients,
                args.limits.sse_buffer,
                args.limits.sse_buffer_bytes,
            ),
            timeout: args.grpc_timeout,
            read_timeout: args.read_timeout,
            faults: Faults::from_spec(
                "app-gateway",
                Targets {
                    methods: FAULT_ROUTES.iter().map(|r| (*r).to_owned()).collect(),
                    dependencies: vec![],
                    http: true,
                },
                &args.fault.faults,
            )?,
            stopping: tokio::sync::watch::Sender::new(false),
        })))
    }

    /// Ends every open `/events` stream (their clients reconnect elsewhere or later).
    pub(crate) fn close_streams(&self) {
        self.0.stopping.send_replace(true);
    }
}

/// A downstream call's answer, or the error its HTTP client should see;
/// `what` names the service in that error.
pub(crate) fn answer<T>(
    what: &str,
    result: Result<tonic::Response<T>, tonic::Status>,
) -> Result<T, AppError> {
    result.map(tonic::Response::into_inner).map_err(|status| AppError::from_grpc(what, &status))
}
