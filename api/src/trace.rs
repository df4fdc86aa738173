//! W3C trace context at the HTTP edge: a valid incoming `traceparent` is
//! continued, anything else starts a new trace. The request's own
//! `traceparent` is handed to handlers (it goes into the metadata of every
//! event the request causes), put on the logs' span, and returned on the
//! response so a client can find its trace.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use schemas::TraceParent;
use tracing::Instrument;

pub const HEADER: &str = schemas::trace::TRACEPARENT_HEADER;

pub async fn trace(mut req: Request, next: Next) -> Response {
    let incoming = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<TraceParent>().ok());
    let span = tracing::info_span!(
        "trace",
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    let trace = schemas::trace::step(&span, incoming);
    span.record("trace_id", trace.trace_id_hex());
    span.record("span_id", trace.span_id_hex());
    req.extensions_mut().insert(trace);
    let mut response = next.run(req).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&trace.to_string()) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}
