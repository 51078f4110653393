//! The gateway's one error type. Every failure leaves as
//! `{"error":{"code","message","trace_id"}}` with the status DESIGN.md gives.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use tonic::Code;
use tonic_types::StatusExt;

use ticketmesh_runtime::telemetry;

/// Seconds a client is told to wait before retrying after a 503.
pub const RETRY_AFTER_SECS: u32 = 5;

#[derive(Debug, Clone)]
pub struct AppError {
    pub status: StatusCode,
    /// Stable, machine-readable: what a client branches on.
    pub code: &'static str,
    pub message: String,
    /// `Retry-After` of a 503, in seconds (default [`RETRY_AFTER_SECS`]).
    pub retry_after: Option<u32>,
    /// Close the connection after this answer (`Connection: close`): the
    /// request's body was not read to its end.
    pub close: bool,
}

impl AppError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None, close: false }
    }

    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A gRPC failure of a downstream service, as the HTTP client should see it.
    /// `what` names the service for the message.
    pub fn from_grpc(what: &str, status: &tonic::Status) -> Self {
        match status.code() {
            Code::InvalidArgument => {
                let details = status.get_error_details();
                let code = match details.error_info().map(|i| i.reason.as_str()) {
                    Some("INVALID_JSON") => "invalid_json",
                    _ => "invalid_payload",
                };
                Self::bad_request(code, status.message())
            }
            Code::NotFound => Self::not_found(status.message()),
            Code::DeadlineExceeded | Code::Cancelled => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "deadline_exceeded",
                format!("{what} did not answer in time"),
            ),
            Code::Unimplemented => Self::new(
                StatusCode::NOT_IMPLEMENTED,
                "not_implemented",
                format!("{what}: {}", status.message()),
            ),
            // Unavailable, and anything else that is not the client's fault:
            // the request was not carried out and may be retried as it is.
            _ => {
                tracing::warn!(service = what, code = ?status.code(), message = status.message(), "downstream call failed");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!("{what} is unavailable; retry later"),
                )
            }
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": {"code": self.code, "message": self.message, "trace_id": telemetry::trace_id()}
        });
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            let secs = self.retry_after.unwrap_or(RETRY_AFTER_SECS);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.close {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
