//! The topics `POST /sns` takes messages of: exactly those the notifier created.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use ticketmesh_proto::v1::notifier_service_client::NotifierServiceClient;
use ticketmesh_runtime::grpc::Channel;
use tokio::sync::Mutex;

use crate::{clients::Notifier, error::AppError};

/// The ARNs of the notifier's topics, asked again at most once a second
/// when a message names one not known yet (a topic created after start).
pub struct Topics {
    notifier: Notifier,
    known: Mutex<(Option<Instant>, HashSet<String>)>,
}

impl Topics {
    pub fn new(notifier: NotifierServiceClient<Channel>, timeout: Duration) -> Self {
        Self { notifier: Notifier::new(notifier, timeout), known: Mutex::new((None, HashSet::new())) }
    }

    pub(super) async fn contains(&self, arn: &str) -> Result<bool, AppError> {
        let mut known = self.known.lock().await;
        if known.1.contains(arn) || known.0.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
            return Ok(known.1.contains(arn));
        }
        let list = self.notifier.list_sns_topics().await?;
        *known = (Some(Instant::now()), list.topic_arns.into_iter().collect());
        Ok(known.1.contains(arn))
    }
}
