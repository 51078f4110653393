//! `POST /sns`: the SNS HTTP subscription endpoint, trusting nothing it is
//! sent. A message is accepted only if its signature (SignatureVersion 1,
//! SHA1withRSA, or 2, SHA256withRSA, over the canonical string AWS documents)
//! verifies against a certificate fetched from an allowed origin, and only if
//! its TopicArn is exactly one the notifier created.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, LazyLock},
    time::{Duration, Instant},
};

use axum::{
    Json,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
};
use base64::Engine as _;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use petzi::{clipped, quoted, sns::SnsMessage};
use prometheus::IntCounterVec;
use serde_json::{Value, json};
use ticketmesh_proto::v1::{
    ConfirmSnsSubscriptionRequest, ListSnsTopicsRequest, RecordSnsNotificationRequest,
    notifier_service_client::NotifierServiceClient,
};
use ticketmesh_runtime::{
    grpc::{self, Channel},
    metrics,
};
use tokio::sync::Mutex;
use tracing::Instrument;

use super::process_span;
use crate::{
    body::read_body,
    error::AppError,
    state::{AppState, answer},
};

/// Why a message is not taken as coming from SNS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Forged {
    #[error("SigningCertURL {0} is not an allowed certificate origin")]
    UntrustedCertificate(String),
    #[error("SignatureVersion {0} is not 1 or 2")]
    UnknownVersion(String),
    #[error("the message lacks {0}, which its signature covers")]
    Incomplete(&'static str),
    #[error("Signature is not base64")]
    NotBase64,
    #[error("the signature does not match the message")]
    Mismatch,
    #[error("the signing certificate is unusable: {0}")]
    BadCertificate(String),
}

/// The string SNS signs: the message's fields, by name, in this order, each
/// as `Name\nvalue\n` (AWS: "Verifying the signatures of Amazon SNS messages").
pub fn canonical(m: &SnsMessage) -> Result<String, Forged> {
    let mut fields: Vec<(&str, &str)> = vec![("Message", &m.message), ("MessageId", &m.message_id)];
    match m.r#type.as_str() {
        "Notification" => {
            if let Some(subject) = &m.subject {
                fields.push(("Subject", subject));
            }
        }
        _ => {
            let url = m.subscribe_url.as_deref().ok_or(Forged::Incomplete("SubscribeURL"))?;
            fields.push(("SubscribeURL", url));
        }
    }
    fields.push(("Timestamp", &m.timestamp));
    if m.r#type != "Notification" {
        fields.push(("Token", m.token.as_deref().ok_or(Forged::Incomplete("Token"))?));
    }
    fields.extend([("TopicArn", m.topic_arn.as_str()), ("Type", m.r#type.as_str())]);
    Ok(fields.iter().map(|(name, value)| format!("{name}\n{value}\n")).collect())
}

/// Where a signing certificate may come from: AWS's SNS hosts over HTTPS, or
/// one of `origins` (`scheme://host:port`, e.g. LocalStack's). Never from
/// whatever other URL a message names.
pub fn allowed_certificate_url(url: &str, origins: &[String]) -> Result<Uri, Forged> {
    let untrusted = || Forged::UntrustedCertificate(quoted(url));
    let uri: Uri = url.parse().map_err(|_| untrusted())?;
    let (scheme, host) = (uri.scheme_str().unwrap_or_default(), uri.host().unwrap_or_default());
    if !uri.path().ends_with(".pem") || uri.query().is_some() {
        return Err(untrusted());
    }
    let aws = scheme == "https"
        && uri.port().is_none()
        && host.strip_prefix("sns.").is_some_and(|rest| {
            let region =
                rest.strip_suffix(".amazonaws.com").or_else(|| rest.strip_suffix(".amazonaws.com.cn"));
            region.is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        });
    let origin = format!("{scheme}://{}", uri.authority().map(|a| a.as_str()).unwrap_or_default());
    if aws || origins.iter().any(|o| o.trim_end_matches('/') == origin) { Ok(uri) } else { Err(untrusted()) }
}

/// The RSA public key (PKCS#1 DER) of a PEM certificate.
pub fn rsa_public_key(pem: &[u8]) -> Result<Vec<u8>, Forged> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    let bad = |e: &dyn std::fmt::Display| Forged::BadCertificate(e.to_string());
    let der = CertificateDer::from_pem_slice(pem).map_err(|e| bad(&e))?;
    let cert = webpki::EndEntityCert::try_from(&der).map_err(|e| bad(&e))?;
    let spki = cert.subject_public_key_info();
    // SubjectPublicKeyInfo ::= SEQUENCE { algorithm SEQUENCE, subjectPublicKey BIT STRING }
    let inner = der_value(spki.as_ref(), 0x30).ok_or_else(|| bad(&"no SubjectPublicKeyInfo"))?;
    let algorithm_len = der_len(inner, 0x30).ok_or_else(|| bad(&"no algorithm"))?;
    let bits = der_value(&inner[algorithm_len..], 0x03).ok_or_else(|| bad(&"no public key"))?;
    match bits.split_first() {
        Some((0, key)) => Ok(key.to_vec()),
        _ => Err(bad(&"a public key that is not whole bytes")),
    }
}

/// The total length of a DER element with tag `tag` at the start of `bytes`.
fn der_len(bytes: &[u8], tag: u8) -> Option<usize> {
    let (header, len) = der_header(bytes, tag)?;
    header.checked_add(len).filter(|end| *end <= bytes.len())
}

/// The value of a DER element with tag `tag` at the start of `bytes`.
fn der_value(bytes: &[u8], tag: u8) -> Option<&[u8]> {
    let (header, len) = der_header(bytes, tag)?;
    bytes.get(header..header.checked_add(len)?)
}

/// (header length, value length) of a DER element with tag `tag`.
fn der_header(bytes: &[u8], tag: u8) -> Option<(usize, usize)> {
    if *bytes.first()? != tag {
        return None;
    }
    match *bytes.get(1)? {
        short @ 0..=0x7f => Some((2, usize::from(short))),
        long @ 0x81..=0x84 => {
            let n = usize::from(long & 0x7f);
            let len = bytes.get(2..2 + n)?.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            Some((2 + n, len))
        }
        _ => None,
    }
}

/// Checks the message's signature against the RSA public key of its certificate.
pub fn verify_with_key(m: &SnsMessage, key: &[u8]) -> Result<(), Forged> {
    use ring::signature;
    let algorithm: &dyn signature::VerificationAlgorithm = match m.signature_version.as_str() {
        "1" => &signature::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY,
        "2" => &signature::RSA_PKCS1_2048_8192_SHA256,
        other => return Err(Forged::UnknownVersion(quoted(other))),
    };
    let tag =
        base64::engine::general_purpose::STANDARD.decode(&m.signature).map_err(|_| Forged::NotBase64)?;
    signature::UnparsedPublicKey::new(algorithm, key)
        .verify(canonical(m)?.as_bytes(), &tag)
        .map_err(|_| Forged::Mismatch)
}

static REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    metrics::counter_vec(
        "sns_messages_refused_total",
        "POST /sns messages refused: untrusted_certificate, invalid_signature, unknown_topic",
        &["reason"],
    )
});

/// Most certificates kept; SNS signs with one per region at a time.
const CERTIFICATES_KEPT: usize = 16;
/// Largest certificate read.
const CERTIFICATE_BYTES: usize = 64 * 1024;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Verifies messages, fetching each signing certificate once (from an
/// allowed origin only) and keeping its key.
pub struct Verifier {
    client: HttpsClient,
    origins: Vec<String>,
    timeout: Duration,
    keys: Mutex<HashMap<String, Arc<Vec<u8>>>>,
}

impl Verifier {
    pub fn new(origins: Vec<String>, timeout: Duration) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider.clone())
        {
            Ok(builder) => builder,
            Err(error) => {
                // No CA bundle: AWS's certificates cannot be fetched, LocalStack's (http) still can.
                tracing::warn!(%error, "no trusted roots: SNS certificates can be fetched over http only");
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let connector = builder.https_or_http().enable_http1().build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self { client, origins, timeout, keys: Mutex::new(HashMap::new()) })
    }

    pub async fn verify(&self, m: &SnsMessage) -> Result<(), VerifyError> {
        let uri = allowed_certificate_url(&m.signing_cert_url, &self.origins)?;
        let key = self.key(uri).await?;
        Ok(verify_with_key(m, &key)?)
    }

    async fn key(&self, uri: Uri) -> Result<Arc<Vec<u8>>, VerifyError> {
        let url = uri.to_string();
        if let Some(key) = self.keys.lock().await.get(&url) {
            return Ok(key.clone());
        }
        let unavailable =
            |why: String| VerifyError::CertificateUnavailable(format!("{}: {why}", quoted(&url)));
        let fetch = async {
            let response = self.client.get(uri).await.map_err(|e| unavailable(e.to_string()))?;
            if !response.status().is_success() {
                return Err(unavailable(format!("answered {}", response.status())));
            }
            let body = Limited::new(response.into_body(), CERTIFICATE_BYTES).collect().await;
            Ok(body.map_err(|e| unavailable(e.to_string()))?.to_bytes())
        };
        let pem = tokio::time::timeout(self.timeout, fetch)
            .await
            .map_err(|_| unavailable(format!("no answer in {:?}", self.timeout)))??;
        let key = Arc::new(rsa_public_key(&pem)?);
        let mut keys = self.keys.lock().await;
        if keys.len() >= CERTIFICATES_KEPT {
            keys.clear();
        }
        keys.insert(url, key.clone());
        Ok(key)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Forged(#[from] Forged),
    #[error("the signing certificate could not be fetched: {0}")]
    CertificateUnavailable(String),
}

/// The ARNs of the notifier's topics, asked again at most once a second
/// when a message names one not known yet (a topic created after start).
pub struct Topics {
    notifier: NotifierServiceClient<Channel>,
    timeout: Duration,
    known: Mutex<(Option<Instant>, HashSet<String>)>,
}

impl Topics {
    pub fn new(notifier: NotifierServiceClient<Channel>, timeout: Duration) -> Self {
        Self { notifier, timeout, known: Mutex::new((None, HashSet::new())) }
    }

    async fn contains(&self, arn: &str) -> Result<bool, AppError> {
        let mut known = self.known.lock().await;
        if known.1.contains(arn) || known.0.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
            return Ok(known.1.contains(arn));
        }
        let list = answer(
            "the notifier service",
            self.notifier
                .clone()
                .list_sns_topics(grpc::with_deadline(ListSnsTopicsRequest {}, self.timeout))
                .await,
        )?;
        *known = (Some(Instant::now()), list.topic_arns.into_iter().collect());
        Ok(known.1.contains(arn))
    }
}

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
            answer(
                "the notifier service",
                inner
                    .notifier
                    .clone()
                    .confirm_sns_subscription(grpc::with_deadline(request, inner.timeout))
                    .await,
            )?;
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
            answer(
                "the event service",
                inner
                    .event
                    .clone()
                    .record_sns_notification(grpc::with_deadline(request, inner.timeout))
                    .instrument(span)
                    .await,
            )?;
            Ok(Json(json!({"status": "recorded"})))
        }
        _ => Ok(Json(json!({"status": "ignored"}))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Two deliveries LocalStack signed (SignatureVersion 1 and 2), with the
    /// certificate it signed them with.
    const CERTIFICATE: &str = include_str!("../../testdata/sns/localstack-cert.pem");
    const CONFIRMATION_V1: &str = include_str!("../../testdata/sns/subscription-confirmation-v1.json");
    const NOTIFICATION_V2: &str = include_str!("../../testdata/sns/notification-v2.json");

    fn message(text: &str) -> SnsMessage {
        SnsMessage::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn localstack_signatures_of_both_versions_verify() {
        let key = rsa_public_key(CERTIFICATE.as_bytes()).unwrap();
        for text in [CONFIRMATION_V1, NOTIFICATION_V2] {
            assert_eq!(verify_with_key(&message(text), &key), Ok(()), "{text}");
        }
    }

    #[test]
    fn any_signed_field_changed_breaks_the_signature() {
        let key = rsa_public_key(CERTIFICATE.as_bytes()).unwrap();
        for (field, value) in [
            ("Message", "a message of the attacker's"),
            ("MessageId", "m-2"),
            ("Subject", "other"),
            ("Timestamp", "2026-12-01T05:00:00.000Z"),
            ("TopicArn", "arn:aws:sns:us-east-1:111111111111:hello-world-topic"),
        ] {
            let mut v: Value = serde_json::from_str(NOTIFICATION_V2).unwrap();
            v[field] = value.into();
            let m = message(&v.to_string());
            assert_eq!(verify_with_key(&m, &key), Err(Forged::Mismatch), "{field} changed");
        }
        let mut v: Value = serde_json::from_str(CONFIRMATION_V1).unwrap();
        v["Token"] = "0000".into();
        assert_eq!(verify_with_key(&message(&v.to_string()), &key), Err(Forged::Mismatch));
        // The version names the hash: a v2 signature checked as v1 fails.
        let mut v: Value = serde_json::from_str(NOTIFICATION_V2).unwrap();
        v["SignatureVersion"] = "1".into();
        assert_eq!(verify_with_key(&message(&v.to_string()), &key), Err(Forged::Mismatch));
        v["SignatureVersion"] = "3".into();
        assert!(matches!(verify_with_key(&message(&v.to_string()), &key), Err(Forged::UnknownVersion(_))));
        v["SignatureVersion"] = "2".into();
        v["Signature"] = "not base64!".into();
        assert_eq!(verify_with_key(&message(&v.to_string()), &key), Err(Forged::NotBase64));
    }

    #[test]
    fn certificates_come_only_from_sns_hosts_or_the_configured_origins() {
        let local = vec!["http://127.0.0.1:4566".to_owned()];
        for good in [
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
            "http://127.0.0.1:4566/_aws/sns/SimpleNotificationService-6c6f63616c.pem",
        ] {
            assert!(allowed_certificate_url(good, &local).is_ok(), "{good}");
        }
        for bad in [
            "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
            "https://evil.example/sns.us-east-1.amazonaws.com/cert.pem",
            "https://sns..amazonaws.com/cert.pem",
            "https://sns.us-east-1.amazonaws.com:8443/cert.pem",
            "https://sns.us-east-1.amazonaws.com/cert.txt",
            "https://sns.us-east-1.amazonaws.com/cert.pem?x=1",
            "http://127.0.0.1:4567/_aws/sns/cert.pem",
            "https://127.0.0.1:4566/_aws/sns/cert.pem",
            "http://169.254.169.254/latest/meta-data.pem",
            "",
            "not a url",
        ] {
            assert!(allowed_certificate_url(bad, &local).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_canonical_string_follows_the_type() {
        let n = message(NOTIFICATION_V2);
        let text = canonical(&n).unwrap();
        assert!(text.starts_with("Message\nhello\nMessageId\n"), "{text}");
        assert!(text.contains("\nSubject\nsubj\nTimestamp\n"), "{text}");
        assert!(text.ends_with("\nType\nNotification\n"), "{text}");
        let c = message(CONFIRMATION_V1);
        let text = canonical(&c).unwrap();
        assert!(text.contains("\nSubscribeURL\n") && text.contains("\nToken\n"), "{text}");
        let mut v: Value = serde_json::from_str(CONFIRMATION_V1).unwrap();
        v.as_object_mut().unwrap().remove("SubscribeURL");
        assert_eq!(canonical(&message(&v.to_string())), Err(Forged::Incomplete("SubscribeURL")));
    }
}
