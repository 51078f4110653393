//! `POST /sns`: the SNS HTTP subscription endpoint, trusting nothing it is
//! sent. A message is accepted only if its signature (SignatureVersion 1,
//! SHA1withRSA, or 2, SHA256withRSA, over the canonical string AWS documents)
//! verifies against a certificate fetched from an allowed origin, and only if
//! its TopicArn is exactly one the notifier created.
//!
//! The handler is here; `signature` checks a message against a key,
//! `verify` fetches and keeps the keys, `topics` knows the notifier's topics.

mod signature;
mod topics;
mod verify;

pub use signature::{Forged, canonical, rsa_public_key, verify_with_key};
pub use topics::Topics;
pub use verify::{Verifier, VerifyError, allowed_certificate_url};

use std::{collections::HashMap, sync::LazyLock};

use axum::{
    Json,
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use petzi::{clipped, quoted, sns::SnsMessage};
use prometheus::IntCounterVec;
use serde_json::{Value, json};
use ticketmesh_proto::v1::{ConfirmSnsSubscriptionRequest, RecordSnsNotificationRequest};
use ticketmesh_runtime::metrics;
use tracing::Instrument;

use super::process_span;
use crate::{body::read_body, error::AppError, state::AppState};

static REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    metrics::counter_vec(
        "sns_messages_refused_total",
        "POST /sns messages refused: untrusted_certificate, invalid_signature, unknown_topic",
        &["reason"],
    )
});

fn refused(reason: &'static str, error: AppError) -> AppError {
    REFUSED.with_label_values(&[reason]).inc();
    error
}

/// The SNS HTTP subscription endpoint: verifies each message, then confirms
/// subscriptions to our topics and hands notifications (and their trace
/// context) to the event service. Anything else is refused and recorded
/// nowhere.
pub async fn sns(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, AppError> {
    let inner = &state.0;
    let body = read_body(&headers, body, inner.max_body_bytes, inner.body_read_timeout).await?;
    let message = SnsMessage::parse(&body).map_err(|e| {
        AppError::bad_request(
            "invalid_sns_message",
            format!("not an SNS message: {}", clipped(&e.to_string())),
        )
    })?;
    if let Some(declared) = headers.get("x-amz-sns-message-type")
        && declared.as_bytes() != message.r#type.as_bytes()
    {
        return Err(AppError::bad_request(
            "invalid_sns_message",
            "x-amz-sns-message-type does not match Type",
        ));
    }
    if !["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"]
        .contains(&message.r#type.as_str())
    {
        return Err(AppError::bad_request(
            "invalid_sns_message",
            format!("unknown Type {}", quoted(&message.r#type)),
        ));
    }
    let unknown_topic = || {
        refused(
            "unknown_topic",
            AppError::bad_request(
                "unknown_topic",
                format!("TopicArn {} is not one of this system's topics", quoted(&message.topic_arn)),
            ),
        )
    };
    let topic = message.topic_name().to_owned();
    if !inner.sns_topics.contains(&topic) {
        return Err(unknown_topic());
    }
    inner.sns_verifier.verify(&message).await.map_err(|e| match e {
        VerifyError::Forged(Forged::UntrustedCertificate(_)) => refused(
            "untrusted_certificate",
            AppError::new(StatusCode::FORBIDDEN, "untrusted_signing_cert", e.to_string()),
        ),
        VerifyError::Forged(_) => refused(
            "invalid_signature",
            AppError::new(StatusCode::FORBIDDEN, "invalid_sns_signature", e.to_string()),
        ),
        VerifyError::CertificateUnavailable(_) => {
            tracing::warn!(error = %e, "SNS signing certificate unavailable");
            AppError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string())
        }
    })?;
    if !inner.sns_known.contains(&message.topic_arn).await? {
        return Err(unknown_topic());
    }
    match message.r#type.as_str() {
        "SubscriptionConfirmation" => {
            let token = message.token.filter(|t| !t.is_empty()).ok_or_else(|| {
                AppError::bad_request("invalid_sns_message", "SubscriptionConfirmation without Token")
            })?;
            let request = ConfirmSnsSubscriptionRequest { topic_arn: message.topic_arn, token };
            state.notifier().confirm_sns_subscription(request).await?;
            Ok(Json(json!({"status": "confirmed"})))
        }
        "Notification" => {
            let published_at = message.published_at().map(prost_types::Timestamp::from);
            let attributes: HashMap<String, String> =
                message.message_attributes.into_iter().map(|(k, a)| (k, a.value)).collect();
            // SNS carries no HTTP trace context: the message attributes do.
            let span = process_span("aws_sns", &topic, &message.message_id, &attributes);
            let request = RecordSnsNotificationRequest {
                message_id: message.message_id,
                topic_arn: message.topic_arn,
                subject: message.subject.unwrap_or_default(),
                message: message.message,
                attributes,
                published_at,
            };
            state.event().record_sns_notification(request).instrument(span).await?;
            Ok(Json(json!({"status": "recorded"})))
        }
        _ => Ok(Json(json!({"status": "ignored"}))),
    }
}
