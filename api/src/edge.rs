//! The one middleware every request passes through before its route. In
//! order: metrics, the request id, the trace context and the request's span,
//! the head's limits (414, 431), authentication, the rate limit, the body
//! (413 at once for a declared length over the limit, 408 for a trickle; see
//! `body`), then the time limit around the `Idempotency-Key` check and the
//! route. Last, any error answer that is not problem+json (an axum
//! extractor's plain-text rejection) is made one.
//!
//! They are steps of one function, not one axum layer each, because every
//! layer costs every request a boxed future and a clone of the service
//! below it: as seven layers they took cached reads from 0.78 to 0.47 of a
//! bare handler (README, Performance).

use std::future::Future;
use std::time::Duration;

use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::field::Empty;
use tracing::Instrument;

use crate::error::{ApiError, PROBLEM_JSON};
use crate::server::ConnectionLimits;
use crate::state::AppState;
use crate::{auth, body, idempotency, metrics, rate_limit, request_id, trace};

pub async fn edge(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let timer = metrics::RequestTimer::start(&req);
    let id = request_id::assign(&mut req);
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        correlation_id = %id,
        trace_id = Empty,
        span_id = Empty,
    );
    let traceparent = trace::assign(&span, &mut req);
    let response = admit_and_run(&state, req, next)
        .instrument(span.clone())
        .await;
    let mut response = as_problem(response).await;
    span.in_scope(|| request_id::log_outcome(response.status(), timer.elapsed()));
    request_id::echo(&id, &mut response);
    trace::echo(traceparent, &mut response);
    timer.finish(response.status());
    response
}

async fn admit_and_run(state: &AppState, mut req: Request, next: Next) -> Response {
    if let Err(refused) = check_head(&state.options.connections, &req) {
        return refused.into_response();
    }
    if let Err(refused) = auth::authenticate(state, &mut req).await {
        // A refused credential counts against its sender's address, so
        // guessing tokens is rate limited like any other request.
        if refused.status == axum::http::StatusCode::UNAUTHORIZED {
            if let Err(limited) = rate_limit::admit_key(state, &auth::ClientKey::peer(&req)) {
                return limited.into_response();
            }
        }
        return refused.into_response();
    }
    if let Err(refused) = rate_limit::admit(state, &req)
        .and_then(|()| body::check_declared_length(&state.options, &req))
    {
        return refused.into_response();
    }
    let req = match body::buffer(&state.options, req).await {
        Ok(req) => req,
        Err(refused) => return refused.into_response(),
    };
    let limit = state.options.request_timeout;
    time_limit(limit, idempotency::idempotency(state, req, next)).await
}

/// 414 past the longest request target, 431 past the largest header block,
/// each counted as sent (`name: value\r\n`). hyper refuses far larger heads
/// itself (see `server`).
fn check_head(limits: &ConnectionLimits, req: &Request) -> Result<(), ApiError> {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > limits.max_uri_bytes {
        return Err(ApiError::uri_too_long(limits.max_uri_bytes));
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > limits.max_header_bytes {
        return Err(ApiError::headers_too_large(format!(
            "the header fields take {header_bytes} bytes; at most {} are read",
            limits.max_header_bytes
        )));
    }
    Ok(())
}

/// Every error the server answers is JSON, problem+json but for the one
/// documented document of its own (`/readyz`'s 503 lists its checks).
/// axum's own rejections (a path segment that is not UTF-8, say) are plain
/// text: they keep their status and their text, in the shape of every other
/// error.
async fn as_problem(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| {
            let v = v.as_bytes();
            v == PROBLEM_JSON.as_bytes() || v == b"application/json"
        });
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = to_bytes(body, 4096)
        .await
        .ok()
        .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok())
        .filter(|text| !text.trim().is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    let mut problem = ApiError::from_status(status, text).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().insert(name.clone(), value.clone());
        }
    }
    problem
}

/// Answers 503 problem+json when a request runs past `limit`. The handler
/// is dropped mid-way, so a write may or may not have happened; the answer
/// says so.
async fn time_limit(limit: Duration, run: impl Future<Output = Response>) -> Response {
    match tokio::time::timeout(limit, run).await {
        Ok(response) => response,
        Err(_) => {
            // Inside the request's span, which names the method and path.
            tracing::warn!(limit_ms = limit.as_millis() as u64, "request timed out");
            ApiError::unavailable(
                format!(
                    "the request took longer than {} ms and was abandoned; it may or may not have taken effect",
                    limit.as_millis()
                ),
                1,
            )
            .into_response()
        }
    }
}
