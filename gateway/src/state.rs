//! What every handler shares: the downstream services' clients, the checked
//! configuration, the admission gates, the live streams' bounds and readiness.

use std::{sync::Arc, time::Duration};

use ticketmesh_proto::v1::notifier_service_client::NotifierServiceClient;
use ticketmesh_runtime::{Faults, Readiness, faults::Targets, grpc};

use crate::{
    clients::{Event, Notifier, Storage},
    config::{Args, FAULT_ROUTES, secrets},
    routes::{events, sns},
    server,
};

/// What [`AppState`] shares between handlers.
pub(crate) struct Inner {
    pub(crate) event: Event,
    pub(crate) storage: Storage,
    pub(crate) notifier: Notifier,
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
    pub(crate) faults: Faults,
    /// The last readiness probe's answer, for the admin port's `/ready`.
    pub(crate) ready: Readiness,
    /// Turns true when shutdown starts: ends the open `/events` streams, which
    /// would otherwise hold graceful shutdown open for as long as a browser watches.
    pub(crate) stopping: tokio::sync::watch::Sender<bool>,
}

#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

impl AppState {
    pub fn new(args: &Args) -> anyhow::Result<Self> {
        let event = Event::new(grpc::channel(&args.event_url, args.grpc_timeout)?, args.grpc_timeout);
        let storage = Storage::new(grpc::channel(&args.storage_url, args.grpc_timeout)?, args.read_timeout);
        let notifier = NotifierServiceClient::new(grpc::channel(&args.notifier_url, args.grpc_timeout)?);
        Ok(Self(Arc::new(Inner {
            event,
            storage,
            notifier: Notifier::new(notifier.clone(), args.grpc_timeout),
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
            faults: Faults::from_spec(
                "app-gateway",
                Targets {
                    methods: FAULT_ROUTES.iter().map(|r| (*r).to_owned()).collect(),
                    dependencies: vec![],
                    http: true,
                },
                &args.fault.faults,
            )?,
            ready: Readiness::default(),
            stopping: tokio::sync::watch::Sender::new(false),
        })))
    }

    pub(crate) fn event(&self) -> &Event {
        &self.0.event
    }

    pub(crate) fn storage(&self) -> &Storage {
        &self.0.storage
    }

    pub(crate) fn notifier(&self) -> &Notifier {
        &self.0.notifier
    }

    /// Ends every open `/events` stream (their clients reconnect elsewhere or later).
    pub(crate) fn close_streams(&self) {
        self.0.stopping.send_replace(true);
    }
}
