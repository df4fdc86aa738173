//! W3C trace context at the HTTP edge: a valid incoming `traceparent` is
//! continued, anything else starts a new trace. The request's own
//! `traceparent` is handed to handlers (it goes into the metadata of every
//! event the request causes), put on the request's span, and returned on the
//! response so a client can find its trace. Steps of [`crate::edge::edge`].

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::Response;
use schemas::TraceParent;

pub const HEADER: &str = schemas::trace::TRACEPARENT_HEADER;

/// The request's own step of its trace, carried by `span` (which has empty
/// `trace_id` and `span_id` fields to fill); put into the request for the
/// handlers.
pub fn assign(span: &tracing::Span, req: &mut Request) -> TraceParent {
    let incoming = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<TraceParent>().ok());
    let trace = schemas::trace::step(span, incoming);
    // Formatting the ids costs two allocations: only for a span someone sees.
    if !span.is_disabled() {
        span.record("trace_id", trace.trace_id_hex());
        span.record("span_id", trace.span_id_hex());
    }
    req.extensions_mut().insert(trace);
    trace
}

/// Puts the request's `traceparent` on the response.
pub fn echo(trace: TraceParent, response: &mut Response) {
    if let Ok(value) = HeaderValue::from_str(&trace.to_string()) {
        response.headers_mut().insert(HEADER, value);
    }
}
