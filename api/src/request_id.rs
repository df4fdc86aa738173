//! `x-request-id`: taken from the client when sane, else made here; echoed on
//! the response and stored as the correlation id of every event the request
//! causes.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use uuid::Uuid;

pub const HEADER: &str = "x-request-id";

/// The request's id, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

pub async fn request_id(mut req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(HEADER)
        .filter(|v| {
            !v.is_empty() && v.len() <= 200 && v.as_bytes().iter().all(u8::is_ascii_graphic)
        })
        .cloned();
    // The id is on every request's path, so it is built once and shared:
    // the header value as received, or a fresh UUID v7.
    let header = match given {
        Some(value) => value,
        None => HeaderValue::from_str(&Uuid::now_v7().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("invalid")),
    };
    let id: Arc<str> = Arc::from(header.to_str().unwrap_or_default());
    req.extensions_mut().insert(RequestId(Arc::clone(&id)));
    let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), correlation_id = %id);
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let mut response = next.run(req).instrument(span).await;
    let status = response.status().as_u16();
    if status >= 500 {
        tracing::error!(correlation_id = %id, %method, path = uri.path(), status, elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "request failed");
    } else {
        tracing::debug!(correlation_id = %id, %method, path = uri.path(), status, elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "request");
    }
    response.headers_mut().insert(HEADER, header);
    response
}
