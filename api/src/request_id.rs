//! `x-request-id`: taken from the client when sane, else made here; echoed on
//! the response and stored as the correlation id of every event the request
//! causes. Steps of [`crate::edge::edge`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use uuid::Uuid;

pub const HEADER: &str = "x-request-id";

/// The request's id, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The request's id, as sent or made here; put into the request for the
/// handlers.
pub fn assign(req: &mut Request) -> RequestId {
    let given = req
        .headers()
        .get(HEADER)
        .filter(|v| {
            !v.is_empty() && v.len() <= 200 && v.as_bytes().iter().all(u8::is_ascii_graphic)
        })
        .and_then(|v| v.to_str().ok());
    let id = match given {
        Some(given) => RequestId(Arc::from(given)),
        // A fresh UUID v7, formatted on the stack: this is on every
        // request's path.
        None => RequestId(Arc::from(
            &*Uuid::now_v7()
                .hyphenated()
                .encode_lower(&mut Uuid::encode_buffer()),
        )),
    };
    req.extensions_mut().insert(id.clone());
    id
}

/// Puts the id on the response, so a client can quote it.
pub fn echo(id: &RequestId, response: &mut Response) {
    // Only visible ASCII gets here (checked above, or a UUID).
    if let Ok(value) = HeaderValue::from_str(&id.0) {
        response.headers_mut().insert(HEADER, value);
    }
}

/// One line per request, in its span (which names the method, path and
/// correlation id): an error for a 5xx, else at debug level.
pub fn log_outcome(status: StatusCode, elapsed: Duration) {
    let (status, elapsed_ms) = (status.as_u16(), elapsed.as_secs_f64() * 1e3);
    if status >= 500 {
        tracing::error!(status, elapsed_ms, "request failed");
    } else {
        tracing::debug!(status, elapsed_ms, "request");
    }
}
