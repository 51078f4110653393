//! The rules as text (`--faults`, `FAULTS`, a string in `PUT /faults`):
//! parsing, and printing back in the same grammar (see the module docs of
//! [`super`]).

use std::{fmt, time::Duration};

use tonic::Code;

use super::{Fault, Rule, RuleError, Targets};

const ERRORS: [(&str, Code); 4] = [
    ("unavailable", Code::Unavailable),
    ("internal", Code::Internal),
    ("deadline_exceeded", Code::DeadlineExceeded),
    ("resource_exhausted", Code::ResourceExhausted),
];

/// The grammar's name of an error a rule can inject.
pub(super) fn code_name(code: Code) -> &'static str {
    ERRORS.iter().find(|(_, c)| *c == code).map_or("unknown", |(n, _)| n)
}

pub(super) fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=", self.target)?;
        match self.fault {
            Fault::Error(code) => write!(f, "{}", code_name(code))?,
            Fault::Delay { p50, p99 } if p50 == p99 => write!(f, "delay:{}", fmt_duration(p50))?,
            Fault::Delay { p50, p99 } => write!(f, "delay:{}/{}", fmt_duration(p50), fmt_duration(p99))?,
        }
        if self.rate < 1.0 { write!(f, "@{}", self.rate) } else { Ok(()) }
    }
}

fn parse_duration(text: &str, what: &'static str) -> Result<Duration, RuleError> {
    if text.trim_start().starts_with('-') {
        return Err(RuleError::NegativeDuration { what, text: text.to_owned() });
    }
    humantime::parse_duration(text.trim()).map_err(|error| RuleError::NotADuration {
        what,
        text: text.to_owned(),
        error,
    })
}

pub(super) fn parse_rate(text: &str) -> Result<f64, RuleError> {
    let text = text.trim();
    let (number, scale) = match text.strip_suffix('%') {
        Some(n) => (n, 100.0),
        None => (text, 1.0),
    };
    let rate = number.trim().parse::<f64>().map_err(|_| RuleError::RateNotANumber(text.to_owned()))? / scale;
    if !(0.0..=1.0).contains(&rate) {
        return Err(RuleError::RateOutOfRange(text.to_owned()));
    }
    Ok(rate)
}

pub(super) fn parse_fault(text: &str, targets: &Targets) -> Result<Fault, RuleError> {
    let text = text.trim();
    if let Some(spec) = text.strip_prefix("delay:") {
        let (p50, p99) = match spec.split_once('/') {
            Some((a, b)) => (parse_duration(a, "delay")?, parse_duration(b, "delay p99")?),
            None => {
                let d = parse_duration(spec, "delay")?;
                (d, d)
            }
        };
        if p99 < p50 {
            return Err(RuleError::P99BelowP50 { p50, p99 });
        }
        return Ok(Fault::Delay { p50, p99 });
    }
    let code = ERRORS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|(_, code)| *code)
        .ok_or_else(|| RuleError::UnknownFault(text.to_owned()))?;
    if targets.http && code != Code::Unavailable {
        return Err(RuleError::NotOverHttp(text.to_owned()));
    }
    Ok(Fault::Error(code))
}

/// One rule in the grammar (`target=fault[@rate]`).
pub fn parse_rule(text: &str, targets: &Targets) -> Result<Rule, RuleError> {
    let (target, rest) = text.split_once('=').ok_or_else(|| RuleError::NotARule(text.to_owned()))?;
    let (fault, rate) = match rest.rsplit_once('@') {
        Some((fault, rate)) => (fault, parse_rate(rate)?),
        None => (rest, 1.0),
    };
    let target = targets.resolve(target.trim())?;
    Ok(Rule { fault: parse_fault(fault, targets)?, target, rate })
}

/// Rules in the grammar, separated by `;` (empty: none). The first bad rule
/// is named with its position.
pub fn parse_rules(text: &str, targets: &Targets) -> Result<Vec<Rule>, RuleError> {
    text.split(';')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .enumerate()
        .map(|(i, r)| {
            parse_rule(r, targets).map_err(|error| RuleError::InSpec {
                position: i + 1,
                text: r.to_owned(),
                error: Box::new(error),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::faults::tests::{gateway, storage};

    #[test]
    fn valid_rules_parse_and_print_back() {
        let rules = parse_rules(
            "GetStats=unavailable@0.3; *=delay:300ms ;db=internal@25%;SaveEvent=delay:50ms/800ms",
            &storage(),
        )
        .unwrap();
        assert_eq!(
            rules[0],
            Rule {
                target: "StorageService/GetStats".into(),
                fault: Fault::Error(Code::Unavailable),
                rate: 0.3
            }
        );
        assert_eq!(
            rules[1].fault,
            Fault::Delay { p50: Duration::from_millis(300), p99: Duration::from_millis(300) }
        );
        assert_eq!((rules[2].target.as_str(), rules[2].rate), ("db", 0.25));
        assert_eq!(
            rules[3].fault,
            Fault::Delay { p50: Duration::from_millis(50), p99: Duration::from_millis(800) }
        );
        let printed: Vec<String> = rules.iter().map(Rule::to_string).collect();
        assert_eq!(
            printed,
            [
                "StorageService/GetStats=unavailable@0.3",
                "*=delay:300ms",
                "db=internal@0.25",
                "StorageService/SaveEvent=delay:50ms/800ms"
            ]
        );
        let again = parse_rules(&printed.join(";"), &storage()).unwrap();
        assert_eq!(again, rules, "a printed rule parses back to itself");
        assert!(parse_rules(" ; ", &storage()).unwrap().is_empty());
        let http = parse_rules("POST /webhook=unavailable@10%", &gateway()).unwrap();
        assert_eq!((http[0].target.as_str(), http[0].rate), ("POST /webhook", 0.1));
    }

    #[test]
    fn each_bad_rule_is_named_with_its_bad_part() {
        let error = |text: &str, targets: &Targets| parse_rules(text, targets).unwrap_err().to_string();
        let cases = [
            ("GetStat=unavailable", "unknown method \"GetStat\""),
            ("GetStats=unavailable@1.5", "rate \"1.5\" is outside 0..1"),
            ("GetStats=unavailable@-0.1", "rate \"-0.1\" is outside 0..1"),
            ("GetStats=unavailable@often", "rate \"often\" is not a number"),
            ("GetStats=delay:-5ms", "delay \"-5ms\" is negative"),
            ("GetStats=delay:soon", "delay \"soon\" is not a duration"),
            ("GetStats=delay:800ms/50ms", "delay p99 50ms is below its p50 800ms"),
            ("GetStats=broken", "unknown fault \"broken\""),
            ("GetStats", "\"GetStats\" is not target=fault[@rate]"),
            ("*=delay:1ms; redis=unavailable", "rule 2 (\"redis=unavailable\"): unknown method \"redis\""),
        ];
        for (text, wanted) in cases {
            let message = error(text, &storage());
            assert!(message.contains(wanted), "{text}: {message:?} does not contain {wanted:?}");
        }
        assert!(error("POST /webhook=internal", &gateway()).contains("unavailable (503) only"));
        assert!(error("GET /nope=unavailable", &gateway()).contains("unknown route \"GET /nope\""));
    }
}
