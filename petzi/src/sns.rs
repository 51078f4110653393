//! The message SNS POSTs to an HTTP subscription (sent as text/plain JSON):
//! a notification, or a subscription's confirmation request. Reading it
//! trusts nothing; the gateway verifies its signature before acting on it.

use std::{collections::HashMap, time::SystemTime};

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnsMessage {
    pub r#type: String,
    pub message_id: String,
    pub topic_arn: String,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub timestamp: String,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default, rename = "SubscribeURL")]
    pub subscribe_url: Option<String>,
    #[serde(default)]
    pub signature_version: String,
    #[serde(default)]
    pub signature: String,
    #[serde(default, rename = "SigningCertURL")]
    pub signing_cert_url: String,
    #[serde(default)]
    pub message_attributes: HashMap<String, SnsAttribute>,
}

#[derive(Debug, Deserialize)]
pub struct SnsAttribute {
    #[serde(rename = "Value")]
    pub value: String,
}

impl SnsMessage {
    /// The body of a `POST /sns`.
    pub fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        // serde's derive also reads a struct from a JSON array, field by field
        // in order; SNS posts an object, so an array is not a message.
        if body.trim_ascii_start().first() == Some(&b'[') {
            return Err(serde::de::Error::invalid_type(serde::de::Unexpected::Seq, &"an SNS message object"));
        }
        serde_json::from_slice(body)
    }

    /// When SNS published the message, if its `Timestamp` is an RFC 3339 time.
    pub fn published_at(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339_weak(&self.timestamp).ok()
    }

    /// The topic's name: the last `:`-separated part of its ARN.
    pub fn topic_name(&self) -> &str {
        self.topic_arn.rsplit(':').next().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_sns_message_is_an_object_not_an_array() {
        let object = br#"{"Type": "Notification", "MessageId": "m-1", "TopicArn": "arn:aws:sns:us-east-1:0:ticket-events"}"#;
        let message = SnsMessage::parse(object).unwrap();
        assert_eq!((message.r#type.as_str(), message.topic_name()), ("Notification", "ticket-events"));
        // Found by the sns_message fuzz target's invariant: serde read this
        // array as the same message, by position.
        let array = br#" ["Notification", "m-1", "arn:aws:sns:us-east-1:0:ticket-events"]"#;
        let error = SnsMessage::parse(array).unwrap_err().to_string();
        assert_eq!(error, "invalid type: sequence, expected an SNS message object");
    }

    #[test]
    fn the_topic_is_the_arns_last_part() {
        let arn = |topic_arn: &str| SnsMessage {
            topic_arn: topic_arn.into(),
            ..SnsMessage::parse(br#"{"Type": "Notification", "MessageId": "m", "TopicArn": ""}"#).unwrap()
        };
        assert_eq!(
            arn("arn:aws:sns:eu-central-1:000000000000:hello-world-topic").topic_name(),
            "hello-world-topic"
        );
        assert_eq!(arn("no-colon").topic_name(), "no-colon");
        assert_eq!(arn("ends:").topic_name(), "");
    }
}
