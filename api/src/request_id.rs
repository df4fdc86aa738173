//! `x-request-id`: taken from the client when sane, else made here; echoed on
//! the response and stored as the correlation id of every event the request
//! causes.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use uuid::Uuid;

pub const HEADER: &str = "x-request-id";

/// The request's id, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| Uuid::now_v7().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), correlation_id = %id);
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut response = next.run(req).instrument(span).await;
    let status = response.status().as_u16();
    if status >= 500 {
        tracing::error!(correlation_id = %id, %method, %path, status, elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "request failed");
    } else {
        tracing::debug!(correlation_id = %id, %method, %path, status, elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "request");
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}
