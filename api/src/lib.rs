//! The HTTP edge, and the only crate that knows HTTP.
//!
//! Routes parse and validate bodies into domain commands, hand them to the
//! aggregate stores of `commands`, and render every outcome, including every
//! error, as JSON or RFC 9457 problem+json. Queries read the read models
//! (`projections::queries`) through an in-process cache that the change
//! listener (`changes`) keeps fresh. Nothing here holds business rules.

pub mod auth;
pub mod cache;
pub mod changes;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod metrics;
pub mod openapi;
pub mod rate_limit;
pub mod request_id;
pub mod routes;
pub mod state;
pub mod trace;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;

pub use error::ApiError;
pub use state::{AppState, HttpOptions};

/// Every route of the API, with its middleware.
pub fn router(state: AppState) -> Router {
    let body_limit = state.options.body_limit;
    let timeout = state.options.request_timeout;
    metrics::install();
    routes::routes()
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(from_fn_with_state(state.clone(), idempotency::idempotency))
        .layer(DefaultBodyLimit::max(body_limit))
        // Authentication first, so the limit counts a verified subject;
        // and both before the idempotency record, whose scope is the client.
        .layer(from_fn_with_state(state.clone(), rate_limit::limit))
        .layer(from_fn_with_state(state.clone(), auth::authenticate))
        .layer(from_fn_with_state(timeout, time_limit))
        .layer(axum::middleware::from_fn(request_id::request_id))
        .layer(axum::middleware::from_fn(trace::trace))
        .layer(axum::middleware::from_fn(metrics::track))
        .with_state(state)
}

/// Answers 503 problem+json when a request runs past `limit`. The handler
/// is dropped mid-way, so a write may or may not have happened; the answer
/// says so.
async fn time_limit(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
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

/// The router of a process without the API role: `/healthz` and `/readyz`.
pub fn operations_router(state: AppState) -> Router {
    metrics::install();
    routes::operations()
        .fallback(routes::not_found)
        .layer(axum::middleware::from_fn(request_id::request_id))
        .layer(axum::middleware::from_fn(trace::trace))
        .layer(axum::middleware::from_fn(metrics::track))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests
/// in flight finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The peer address names anonymous clients for rate limits.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Serves the API on `listener` until `shutdown` resolves, then stops taking
/// new connections and lets requests in flight finish.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve(listener, router(state), shutdown).await
}

/// Default request timeout: longer than the read-your-writes wait.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Default longest wait of a read with `?min_version=` (`AGORA_CONSISTENCY_WAIT_MS`).
pub const DEFAULT_CONSISTENCY_WAIT: Duration = Duration::from_millis(3000);
