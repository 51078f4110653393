//! A message's signature: the string SNS signs, the RSA key of the
//! certificate it was signed with, and the check of one against the other.

use base64::Engine as _;
use petzi::{quoted, sns::SnsMessage};

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::Value;

    use super::*;

    /// Two deliveries LocalStack signed (SignatureVersion 1 and 2), with the
    /// certificate it signed them with.
    const CERTIFICATE: &str = include_str!("../../../testdata/sns/localstack-cert.pem");
    const CONFIRMATION_V1: &str = include_str!("../../../testdata/sns/subscription-confirmation-v1.json");
    const NOTIFICATION_V2: &str = include_str!("../../../testdata/sns/notification-v2.json");

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
