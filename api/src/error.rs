//! One error type for the HTTP edge, rendered once as RFC 9457 problem+json.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use commands::{CommandError, StoreError};
use domain::{Refusal, RefusalKind};
use schemars::JsonSchema;
use serde::Serialize;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// A field that failed validation, as listed in a 422's `errors`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Every way a request can fail. `slug` becomes `type: /problems/<slug>`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub slug: &'static str,
    pub detail: String,
    pub errors: Vec<FieldError>,
    pub retry_after: Option<u64>,
}

/// RFC 9457 problem details, the body of every error.
#[derive(Serialize, JsonSchema)]
pub(crate) struct Problem<'a> {
    /// `/problems/<slug>`, e.g. `/problems/validation`.
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    /// Every field that failed validation (422 `validation`), else absent.
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
}

impl ApiError {
    pub fn new(status: StatusCode, slug: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            slug,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// 400: the request is not what the route takes (bad JSON, types, fields, query).
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    /// 401 `unauthorized`: no token where one is needed, or a token that is
    /// not valid (bad signature, expired, another algorithm, unknown role).
    /// Answered with `WWW-Authenticate: Bearer`.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// 403 `forbidden`: a valid caller that may not do this.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 429 `rate-limited`, with `Retry-After` in whole seconds (at least 1).
    pub fn rate_limited(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "too many requests from this client; slow down",
            )
        }
    }

    /// 404: no such resource or path.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    /// 409: a value that must be unique is taken, or the same request is in flight.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", detail)
    }

    /// 422 `validation`, with the fields that failed.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            errors,
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", detail)
        }
    }

    /// 422 for a rule the edge itself checks, named by its slug; a domain
    /// refusal goes through [`ApiError::refused`] instead.
    pub fn rule(slug: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, slug, detail)
    }

    /// 503 with `Retry-After`: a dependency is down or the answer is not ready.
    pub fn unavailable(detail: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service-unavailable",
                detail,
            )
        }
    }

    /// 500: a fault of ours. The cause is logged; the client sees no internals.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %commands::error::Chain(cause), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to handle the request",
        )
    }

    /// 408: the body arrived slower than the server waits for. The
    /// connection closes, since the rest of the body is never read.
    pub fn body_too_slow(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "request-timeout", detail)
    }

    /// 414: the request target is longer than the server reads.
    pub fn uri_too_long(limit: usize) -> Self {
        Self::new(
            StatusCode::URI_TOO_LONG,
            "uri-too-long",
            format!("the request target is longer than {limit} bytes"),
        )
    }

    /// 431: the request's header fields are larger than the server reads.
    pub fn headers_too_large(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "header-fields-too-large",
            detail,
        )
    }

    /// 429 `too-many-connections`: this peer address holds as many
    /// connections as one peer may.
    pub fn too_many_connections(limit: usize) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-connections",
                format!("this address already holds {limit} open connections; reuse one"),
            )
        }
    }

    /// An error answer that is not problem+json (an extractor's rejection
    /// written by axum, a parse error written by hyper) in the shape of
    /// every other: same status, a slug named after it, and its text.
    pub fn from_status(status: StatusCode, detail: impl Into<String>) -> Self {
        let slug = match status {
            StatusCode::BAD_REQUEST => "bad-request",
            StatusCode::NOT_FOUND => "not-found",
            StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
            StatusCode::REQUEST_TIMEOUT => "request-timeout",
            StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
            StatusCode::URI_TOO_LONG => "uri-too-long",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "header-fields-too-large",
            StatusCode::SERVICE_UNAVAILABLE => "service-unavailable",
            status if status.is_server_error() => "internal",
            _ => "bad-request",
        };
        Self::new(status, slug, detail)
    }

    fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }

    /// The problem+json document of this error.
    pub fn problem_json(&self) -> Vec<u8> {
        let body = Problem {
            kind: format!("/problems/{}", self.slug),
            title: self.title(),
            status: self.status.as_u16(),
            detail: &self.detail,
            errors: &self.errors,
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let bytes = self.problem_json();
        let mut response = (self.status, bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        // The rest of the request was never read, so the connection cannot
        // carry another.
        if matches!(
            self.status,
            StatusCode::REQUEST_TIMEOUT | StatusCode::PAYLOAD_TOO_LARGE
        ) {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        // RFC 9110: every 401 names the scheme that would be accepted.
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"agora\""),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        if let StoreError::CommitUnknown(_) = err {
            tracing::warn!(error = %err, "event store connection lost mid-write");
            return Self::unavailable(
                "the connection to the event store was lost while this write was in flight: it may or may not have taken effect; read the resource before trying again",
                1,
            );
        }
        if err.is_unavailable() {
            tracing::warn!(error = %err, "event store unavailable");
            Self::unavailable("the event store is unavailable; try again shortly", 1)
        } else {
            Self::internal(&err)
        }
    }
}

impl ApiError {
    /// A domain refusal of `kind`: the one place where kinds become statuses
    /// and problem types.
    pub fn refused(kind: RefusalKind, detail: impl Into<String>) -> Self {
        match kind {
            RefusalKind::NotFound => Self::not_found(detail),
            RefusalKind::AlreadyExists => Self::conflict(detail),
            RefusalKind::Invalid => Self::validation(vec![FieldError::new("body", detail)]),
            RefusalKind::InvalidTransition => Self::rule("invalid-transition", detail),
            RefusalKind::InsufficientStock => Self::rule("insufficient-stock", detail),
            RefusalKind::UserDeactivated => Self::rule("user-deactivated", detail),
            RefusalKind::ProductDiscontinued => Self::rule("product-discontinued", detail),
            RefusalKind::CurrencyMismatch => Self::rule("currency-mismatch", detail),
            RefusalKind::CategoryCycle => Self::rule("category-cycle", detail),
            RefusalKind::CategoryNotEmpty => Self::rule("category-not-empty", detail),
            RefusalKind::CartClosed => Self::rule("cart-closed", detail),
            RefusalKind::CartEmpty => Self::rule("cart-empty", detail),
        }
    }
}

impl From<domain::placement::PlacementError> for ApiError {
    /// A rule about one field of the request names that field.
    fn from(err: domain::placement::PlacementError) -> Self {
        match err.field() {
            Some(field) => Self::validation(vec![FieldError::new(field, err.to_string())]),
            None => Self::refused(err.kind(), err.to_string()),
        }
    }
}

impl<E: Refusal> From<CommandError<E>> for ApiError {
    fn from(err: CommandError<E>) -> Self {
        match err {
            CommandError::Rejected(refusal) => Self::refused(refusal.kind(), refusal.to_string()),
            CommandError::PreconditionFailed { expected, current } => {
                crate::extract::precondition_failed(format!(
                    "If-Match names version {expected}, but the resource is at version {current}"
                ))
            }
            CommandError::Duplicate { field } => Self {
                errors: vec![FieldError::new(field, "is already taken")],
                ..Self::conflict(format!("this {field} is already taken"))
            },
            CommandError::Conflict => Self {
                retry_after: Some(1),
                ..Self::conflict("the resource kept changing under this request; try again")
            },
            CommandError::Store(err) => err.into(),
        }
    }
}
