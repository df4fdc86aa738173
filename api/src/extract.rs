//! Extractors whose every rejection is an [`ApiError`], so a bad request gets
//! the same problem+json shape as any other failure.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use chrono::Utc;
use commands::CommandMetadata;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::request_id::RequestId;

/// A JSON body: 415 unless `Content-Type` is JSON, 413 past the body limit,
/// 400 when it does not parse into `T` (syntax, types, unknown or missing fields).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "the body must be JSON, sent with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::bad_request(rejection.body_text())
            }
        })?;
        // Strict: an array is never an object, a float never an integer.
        schemas::strict::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|err| ApiError::bad_request(format!("the body is not valid: {err}")))
    }
}

pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        "the body is larger than this server accepts",
    )
}

fn is_json(value: Option<&header::HeaderValue>) -> bool {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The version named by `If-Match`, if any: `"3"` or `W/"3"`, as ETag sends
/// it (the pattern /openapi.json gives). `*`, or an empty header, asks for
/// no particular version; anything else (a bare `3` too) is 400.
pub struct IfMatch(pub Option<usize>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(Self(None));
        };
        let text = value.to_str().unwrap_or("\0").trim();
        if text == "*" || text.is_empty() {
            return Ok(Self(None));
        }
        let tag = text.strip_prefix("W/").unwrap_or(text);
        tag.strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .filter(|digits| {
                (1..=18).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
            })
            .and_then(|digits| digits.parse::<usize>().ok())
            .map(|version| Self(Some(version)))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "If-Match must be a version in quotes, as sent in ETag, e.g. \"3\"",
                )
            })
    }
}

/// The precondition of a create: nothing exists before it, so `If-Match`
/// may name version 0 (`"0"`) and nothing else; any other version, or `*`
/// (which asks for some current version), is 412 and nothing is written.
pub struct IfMatchNothing;

impl<S: Send + Sync> FromRequestParts<S> for IfMatchNothing {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let named = parts
            .headers
            .get(header::IF_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        match named {
            None | Some("") => Ok(Self),
            Some("*") => Err(precondition_failed(
                "If-Match: * asks for a current version, but a create makes a new resource",
            )),
            Some(_) => match IfMatch::from_request_parts(parts, state).await?.0 {
                Some(0) | None => Ok(Self),
                Some(version) => Err(precondition_failed(format!(
                    "If-Match names version {version}, but a create starts at version 0"
                ))),
            },
        }
    }
}

/// 412: a precondition of the request does not hold; nothing was written.
pub fn precondition_failed(detail: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "precondition-failed",
        detail,
    )
}

/// The metadata stored with the events this request causes.
pub struct Context(pub CommandMetadata);

impl<S: Send + Sync> FromRequestParts<S> for Context {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .map(|id| id.0.to_string())
            .unwrap_or_else(|| Uuid::now_v7().to_string());
        Ok(Self(CommandMetadata {
            correlation_id: request_id.clone(),
            causation_id: request_id,
            actor: parts
                .extensions
                .get::<Caller>()
                .map(Caller::actor)
                .unwrap_or_else(|| "anonymous".to_owned()),
            time: Utc::now(),
            traceparent: parts
                .extensions
                .get::<schemas::TraceParent>()
                .copied()
                .unwrap_or_else(schemas::TraceParent::new_root),
        }))
    }
}

/// A path id: anything that is not a UUID names no resource, so it is a 404.
pub fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found(format!("no resource has the id {raw:?}")))
}
