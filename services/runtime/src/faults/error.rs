//! Why a fault rule is refused. The texts are what `--faults` and a 400 from
//! `PUT /faults` answer, so they name the bad part as it was written.

use std::time::Duration;

use humantime::format_duration;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{0:?} is not target=fault[@rate]")]
    NotARule(String),
    #[error("unknown {kind} {target:?} (known: *, {})", .known.join(", "))]
    UnknownTarget {
        /// `method`, or `route` on the gateway.
        kind: &'static str,
        target: String,
        known: Vec<String>,
    },
    #[error("{target:?} is ambiguous: {}", .matches.join(", "))]
    AmbiguousTarget { target: String, matches: Vec<String> },
    #[error(
        "unknown fault {0:?} (known: unavailable, internal, deadline_exceeded, resource_exhausted, delay:DURATION, delay:P50/P99)"
    )]
    UnknownFault(String),
    #[error("fault {0:?}: an HTTP route fails with unavailable (503) only")]
    NotOverHttp(String),
    #[error("rate {0:?} is not a number")]
    RateNotANumber(String),
    #[error("rate {0:?} is outside 0..1")]
    RateOutOfRange(String),
    #[error("{what} {text:?} is negative")]
    NegativeDuration { what: &'static str, text: String },
    #[error("{what} {text:?} is not a duration ({error})")]
    NotADuration { what: &'static str, text: String, error: humantime::DurationError },
    #[error("delay p99 {} is below its p50 {}", format_duration(*.p99), format_duration(*.p50))]
    P99BelowP50 { p50: Duration, p99: Duration },
    /// A rule of `--faults`, counted from 1.
    #[error("rule {position} ({text:?}): {error}")]
    InSpec { position: usize, text: String, error: Box<RuleError> },

    // The JSON form (the body of `PUT /faults`).
    #[error("the body is not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("the body must be an object with a \"rules\" array")]
    NoRulesArray,
    #[error("a rule is a string or an object")]
    NotStringOrObject,
    #[error("unknown field {0:?}")]
    UnknownField(String),
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{field} must be {wanted}, not {value}")]
    WrongType { field: &'static str, wanted: &'static str, value: Value },
    #[error("a delay needs \"delay\" (e.g. \"300ms\")")]
    NoDelay,
    /// A rule of the `rules` array, counted from 0.
    #[error("rules[{index}]: {error}")]
    InBody { index: usize, error: Box<RuleError> },
}
