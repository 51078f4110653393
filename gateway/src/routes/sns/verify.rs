//! Where a signing certificate may come from, and the [`Verifier`] that
//! fetches each one once (from an allowed origin only) and keeps its key.

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{body::Bytes, http::Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use petzi::{quoted, sns::SnsMessage};
use tokio::sync::Mutex;

use super::signature::{Forged, rsa_public_key, verify_with_key};

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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A certificate is fetched once and its key kept: a second message
    /// signed with it is checked without asking the origin again.
    #[tokio::test]
    async fn a_certificate_is_fetched_once_then_kept() {
        let pem = include_str!("../../../testdata/sns/localstack-cert.pem");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let fetches = Arc::new(AtomicUsize::new(0));
        let counted = fetches.clone();
        tokio::spawn(async move {
            // One request per connection (Connection: close): connections count the fetches.
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, SeqCst);
                let mut head = vec![0; 4096];
                let _ = socket.read(&mut head).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{pem}",
                    pem.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        let verifier = Verifier::new(vec![origin.clone()], Duration::from_secs(5)).unwrap();
        let uri = allowed_certificate_url(
            &format!("{origin}/_aws/sns/SimpleNotificationService-test.pem"),
            &[origin],
        )
        .unwrap();
        let first = verifier.key(uri.clone()).await.unwrap();
        let second = verifier.key(uri).await.unwrap();
        assert_eq!(first, second);
        assert_eq!(fetches.load(SeqCst), 1, "the certificate was fetched again");
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
}
