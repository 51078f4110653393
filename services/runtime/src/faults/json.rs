//! The rules as JSON, as the admin port's `/faults` lists and takes them.

use serde_json::{Value, json};

use super::{
    Fault, Rule, RuleError, Targets,
    grammar::{fmt_duration, parse_fault, parse_rate, parse_rule},
};

/// A rule as JSON: `{"target", "fault", "rate", "delay", "delay_p99", "rule"}`.
pub fn rule_json(rule: &Rule) -> Value {
    let mut v = json!({"target": rule.target, "fault": rule.fault.kind(), "rate": rule.rate, "rule": rule.to_string()});
    if let Fault::Delay { p50, p99 } = rule.fault {
        v["delay"] = json!(fmt_duration(p50));
        v["delay_p99"] = json!(fmt_duration(p99));
    }
    v
}

/// The body of `PUT /faults`: `{"rules": [...]}`, each rule either a string
/// in the grammar or an object `{"target", "fault", "rate"?, "delay"?,
/// "delay_p99"?}` (`fault` is an error name or `delay`).
pub fn parse_json(body: &[u8], targets: &Targets) -> Result<Vec<Rule>, RuleError> {
    let value: Value = serde_json::from_slice(body).map_err(RuleError::NotJson)?;
    let rules = value.get("rules").and_then(Value::as_array).ok_or(RuleError::NoRulesArray)?;
    rules
        .iter()
        .enumerate()
        .map(|(index, r)| {
            rule_from_json(r, targets).map_err(|error| RuleError::InBody { index, error: Box::new(error) })
        })
        .collect()
}

fn rule_from_json(value: &Value, targets: &Targets) -> Result<Rule, RuleError> {
    if let Some(text) = value.as_str() {
        return parse_rule(text, targets);
    }
    let obj = value.as_object().ok_or(RuleError::NotStringOrObject)?;
    for key in obj.keys() {
        if !["target", "fault", "rate", "delay", "delay_p99", "rule"].contains(&key.as_str()) {
            return Err(RuleError::UnknownField(key.clone()));
        }
    }
    let text = |field: &'static str| -> Result<Option<&str>, RuleError> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(RuleError::WrongType { field, wanted: "a string", value: other.clone() }),
        }
    };
    let target = text("target")?.ok_or(RuleError::Missing("target"))?;
    let fault = text("fault")?.ok_or(RuleError::Missing("fault"))?;
    let rate = match obj.get("rate") {
        None | Some(Value::Null) => 1.0,
        Some(Value::Number(n)) => parse_rate(&n.to_string())?,
        Some(other) => {
            return Err(RuleError::WrongType { field: "rate", wanted: "a number", value: other.clone() });
        }
    };
    let fault = if fault == "delay" {
        let p50 = text("delay")?.ok_or(RuleError::NoDelay)?;
        match text("delay_p99")? {
            Some(p99) => parse_fault(&format!("delay:{p50}/{p99}"), targets)?,
            None => parse_fault(&format!("delay:{p50}"), targets)?,
        }
    } else {
        parse_fault(fault, targets)?
    };
    Ok(Rule { target: targets.resolve(target)?, fault, rate })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::time::Duration;

    use super::*;
    use crate::faults::tests::storage;

    #[test]
    fn json_rules_are_checked_the_same_way() {
        let ok = parse_json(
            br#"{"rules": ["GetStats=unavailable@0.5", {"target": "*", "fault": "delay", "delay": "20ms", "delay_p99": "90ms"}, {"target": "db", "fault": "unavailable", "rate": 0.1}]}"#,
            &storage(),
        )
        .unwrap();
        assert_eq!(ok.len(), 3);
        assert_eq!(
            ok[1].fault,
            Fault::Delay { p50: Duration::from_millis(20), p99: Duration::from_millis(90) }
        );
        let cases: [(&[u8], &str); 6] = [
            (b"{not json", "the body is not JSON"),
            (b"{\"rule\": []}", "a \"rules\" array"),
            (
                br#"{"rules": [{"target": "GetStats", "fault": "unavailable", "rate": 2}]}"#,
                "rules[0]: rate \"2\" is outside 0..1",
            ),
            (
                br#"{"rules": [{"target": "Nope", "fault": "unavailable"}]}"#,
                "rules[0]: unknown method \"Nope\"",
            ),
            (
                br#"{"rules": ["*=delay:1ms", {"target": "*", "fault": "delay", "delay": "-1s"}]}"#,
                "rules[1]: delay \"-1s\" is negative",
            ),
            (
                br#"{"rules": [{"target": "*", "fault": "unavailable", "ratio": 1}]}"#,
                "rules[0]: unknown field \"ratio\"",
            ),
        ];
        for (body, wanted) in cases {
            let message = parse_json(body, &storage()).unwrap_err().to_string();
            assert!(message.contains(wanted), "{message:?} does not contain {wanted:?}");
        }
    }
}
