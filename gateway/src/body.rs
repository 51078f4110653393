//! Reading a request body within bounds: its size, its time, and what is
//! refused drained first so the client gets its answer.

use std::time::Duration;

use axum::{
    body::{Body, Bytes},
    http::{HeaderMap, StatusCode, header},
};
use tokio_stream::StreamExt;

use crate::{error::AppError, server};

/// How much of an oversized body is read and thrown away before the 413 is
/// sent: enough for a client that writes its whole body before it reads the
/// answer to get that answer, instead of a broken pipe.
const DRAIN_BYTES: usize = 4 * 1024 * 1024;

enum BodyError {
    TooLarge,
    Unreadable(axum::Error),
}

/// Reads a body of at most `limit` bytes within `timeout`: 413 when larger
/// (by its declared length before reading anything, or while reading), after
/// reading and discarding up to [`DRAIN_BYTES`] more in the time left; 408
/// when the client is too slow. Either way the connection is then closed.
/// Not tower-http's `RequestBodyLimitLayer`: its 413 is plain text, undrained, unbounded in time.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, AppError> {
    let until = tokio::time::Instant::now() + timeout;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let mut chunks = body.into_data_stream();
    let mut read = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    let reading = async {
        if declared.is_some_and(|n| n > limit) {
            return Err(BodyError::TooLarge);
        }
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(BodyError::Unreadable)?;
            if read.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge);
            }
            read.extend_from_slice(&chunk);
        }
        Ok(())
    };
    match tokio::time::timeout_at(until, reading).await {
        Ok(Ok(())) => Ok(read.into()),
        Ok(Err(BodyError::TooLarge)) => {
            let mut drained = 0;
            let drain = async {
                while let Some(Ok(chunk)) = chunks.next().await {
                    drained += chunk.len();
                    if drained > DRAIN_BYTES {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout_at(until, drain).await;
            Err(AppError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than {limit} bytes"),
            )
            .closing())
        }
        Ok(Err(BodyError::Unreadable(e))) => {
            Err(AppError::bad_request("unreadable_body", format!("the body could not be read: {e}"))
                .closing())
        }
        Err(_) => {
            server::body_timed_out();
            Err(AppError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("the body did not arrive within {timeout:?}"),
            )
            .closing())
        }
    }
}
