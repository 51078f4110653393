//! The body of `POST /sns` as the gateway parses it, then the topic name and
//! the publication time it takes from the message.

#![no_main]

use petzi::sns::SnsMessage;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = SnsMessage::parse(data) else {
        return;
    };

    // SNS posts a JSON object.
    assert_eq!(data.trim_ascii_start().first(), Some(&b'{'), "a non-object parsed: {message:?}");

    // The fields are the document's (when serde_json can hold it as a Value:
    // an ignored field may nest deeper than its recursion limit).
    if let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(data) {
        let text = |key: &str| object.get(key).and_then(Value::as_str);
        assert_eq!(text("Type"), Some(message.r#type.as_str()));
        assert_eq!(text("MessageId"), Some(message.message_id.as_str()));
        assert_eq!(text("TopicArn"), Some(message.topic_arn.as_str()));
        assert_eq!(text("Subject"), message.subject.as_deref());
        assert_eq!(text("Token"), message.token.as_deref());
        assert_eq!(text("Message").unwrap_or_default(), message.message);
        assert_eq!(text("Timestamp").unwrap_or_default(), message.timestamp);
        let attributes = object.get("MessageAttributes").and_then(Value::as_object);
        assert_eq!(attributes.map_or(0, |a| a.len()), message.message_attributes.len());
        for (key, attribute) in &message.message_attributes {
            let value = attributes.and_then(|a| a.get(key)).and_then(|a| a.get("Value"));
            assert_eq!(value.and_then(Value::as_str), Some(attribute.value.as_str()));
        }
    }

    // The topic is the ARN's last part: a suffix after the last ':'.
    let topic = message.topic_name();
    assert!(!topic.contains(':'));
    let prefix = message.topic_arn.strip_suffix(topic).expect("the topic is a suffix of the ARN");
    assert!(prefix.is_empty() || prefix.ends_with(':'));

    // Any Timestamp: a time or none, never a panic; and a time read back
    // from its RFC 3339 rendering is the same time.
    if let Some(published) = message.published_at() {
        let text = humantime::format_rfc3339_nanos(published).to_string();
        assert_eq!(humantime::parse_rfc3339_weak(&text).ok(), Some(published), "{text}");
    }
});
