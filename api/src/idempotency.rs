//! `Idempotency-Key` on POST: the first request with a key runs and its answer
//! is stored; a repeat with the same body gets that answer again and writes
//! nothing; the same key with another body is 422; a repeat while the first
//! still runs is 409. Only answers worth replaying are stored ([`worth_replaying`]):
//! any other releases the key, so a retry runs again.

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use commands::idempotency::{Claim, StoredResponse};
use sha2::{Digest, Sha256};

use crate::auth::ClientKey;
use crate::error::{ApiError, PROBLEM_JSON};
use crate::extract::too_large;
use crate::state::AppState;

pub const HEADER: &str = "idempotency-key";

/// Runs the request through `next` under its `Idempotency-Key`, if any.
/// A step of [`crate::edge::edge`], after the caller is known.
pub async fn idempotency(state: &AppState, req: Request, next: Next) -> Response {
    if req.method() != Method::POST || crate::auth::carries_secrets(req.uri().path()) {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get(HEADER) else {
        return next.run(req).await;
    };
    let key = match key.to_str() {
        // `to_str` lets tabs through; a key is printable ASCII only.
        Ok(key) if (1..=255).contains(&key.len()) && !key.contains('\t') => key.to_owned(),
        _ => {
            return ApiError::bad_request(
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )
            .into_response()
        }
    };
    // Keys are per client (token subject, else peer address), so two
    // clients never see each other's answers.
    let scope = req
        .extensions()
        .get::<ClientKey>()
        .cloned()
        .unwrap_or(ClientKey::Address(None))
        .to_string();
    let scope: &str = &scope;
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, state.options.body_limit).await else {
        return too_large().into_response();
    };
    let fingerprint = fingerprint(&parts.method, parts.uri.path(), &parts.headers, &bytes);
    // Keyed, so that a stored fingerprint of a body with a password in it
    // (`POST /users`) is no fast hash of that password.
    let fingerprint = hex::encode(state.identity.keyed_hash(fingerprint.as_bytes()));

    match state.idempotency.claim(scope, &key, &fingerprint).await {
        Ok(Claim::Acquired) => {}
        Ok(Claim::Replay(stored)) => return replay(stored),
        Ok(Claim::InFlight) => {
            return ApiError::conflict(
                "a request with this Idempotency-Key is still being processed",
            )
            .into_response()
        }
        Ok(Claim::Mismatch) => {
            return ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "this Idempotency-Key was already used with a different request",
            )
            .into_response()
        }
        Err(err) => return ApiError::from(err).into_response(),
    }

    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (parts, body) = response.into_parts();
    // Our own answers are small JSON documents; the cap only guards memory.
    let body = match to_bytes(body, 16 * 1024 * 1024).await {
        Ok(body) => body,
        Err(err) => {
            let _ = state.idempotency.abandon(scope, &key, &fingerprint).await;
            return ApiError::internal(&err).into_response();
        }
    };
    let outcome = if !worth_replaying(parts.status, &parts.headers) {
        state.idempotency.abandon(scope, &key, &fingerprint).await
    } else {
        let stored = StoredResponse {
            status: parts.status.as_u16(),
            etag: header_text(&parts.headers, header::ETAG),
            location: header_text(&parts.headers, header::LOCATION),
            body: body.to_vec(),
        };
        state
            .idempotency
            .complete(scope, &key, &fingerprint, &stored)
            .await
    };
    if let Err(err) = outcome {
        // The command itself went through; only its record failed. Answer it,
        // and let a repeat see the key as stale in-flight and retry later.
        tracing::warn!(error = %err, "could not record the idempotent answer");
    }
    Response::from_parts(parts, Body::from(body))
}

/// An answer is stored for replay when a repeat of the request would get it
/// again because of what the request did or found: a success, or a refusal
/// that depends on the state (404, 409 a taken value, 412, 422). A refusal of
/// the request itself (400, 401, 403, 413, 415, ...) costs nothing to give
/// again and would only fill the table; an answer that says to try again
/// (`Retry-After`: a 409 of a command that kept losing races, a 503) must
/// let the retry run.
pub fn worth_replaying(status: StatusCode, headers: &axum::http::HeaderMap) -> bool {
    let depends_on_state = status.is_success()
        || matches!(
            status,
            StatusCode::NOT_FOUND
                | StatusCode::CONFLICT
                | StatusCode::PRECONDITION_FAILED
                | StatusCode::UNPROCESSABLE_ENTITY
        );
    depends_on_state && !headers.contains_key(header::RETRY_AFTER)
}

fn fingerprint(
    method: &Method,
    path: &str,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(method.as_str());
    hasher.update([0]);
    hasher.update(path);
    hasher.update([0]);
    // A precondition changes what the request means, so it is part of it.
    if let Some(value) = headers.get(header::IF_MATCH) {
        hasher.update(value.as_bytes());
    }
    hasher.update([0]);
    hasher.update(body);
    hex::encode(hasher.finalize())
}

fn header_text(headers: &axum::http::HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, stored.body).into_response();
    let headers = response.headers_mut();
    let content_type = if status.is_success() {
        "application/json"
    } else {
        PROBLEM_JSON
    };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (name, value) in [
        (header::ETAG, stored.etag),
        (header::LOCATION, stored.location),
    ] {
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(name, value);
        }
    }
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}
