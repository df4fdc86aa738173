//! The HTTP edge, and the only crate that knows HTTP.
//!
//! Routes parse and validate bodies into domain commands, hand them to the
//! aggregate stores of `commands`, and render every outcome, including every
//! error, as JSON or RFC 9457 problem+json. Queries read the read models
//! (`projections::queries`) through an in-process cache that the change
//! listener (`changes`) keeps fresh. Nothing here holds business rules.

pub mod asyncapi;
pub mod auth;
pub mod body;
pub mod cache;
pub mod changes;
pub mod components;
pub mod edge;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod metrics;
pub mod openapi;
pub mod rate_limit;
pub mod request_id;
pub mod routes;
pub mod server;
pub mod state;
pub mod trace;

use std::future::Future;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::Router;
use tokio::net::TcpListener;

pub use error::ApiError;
pub use server::ConnectionLimits;
pub use state::{AppState, HttpOptions};

/// Every route of the API, behind the edge ([`edge::edge`]).
pub fn router(state: AppState) -> Router {
    let body_limit = state.options.body_limit;
    routes::routes()
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(from_fn_with_state(state.clone(), edge::edge))
        .with_state(state)
}

/// The router of a process without the API role: `/healthz`, `/readyz` and
/// `/metrics`, behind the same edge (which never limits nor authenticates
/// these paths).
pub fn operations_router(state: AppState) -> Router {
    routes::operations()
        .fallback(routes::not_found)
        .layer(from_fn_with_state(state.clone(), edge::edge))
        .with_state(state)
}

/// Serves `app` on `listener` under `limits` until `shutdown` resolves,
/// then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve(listener, app, limits, shutdown).await
}

/// Serves the API on `listener` until `shutdown` resolves, then stops taking
/// new connections and lets requests in flight finish.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.options.connections.clone();
    serve(listener, router(state), limits, shutdown).await
}

/// Default request timeout: longer than the read-your-writes wait.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Default longest wait of a read with `?min_version=` (`AGORA_CONSISTENCY_WAIT_MS`).
pub const DEFAULT_CONSISTENCY_WAIT: Duration = Duration::from_millis(3000);

/// `AGORA_CART_TTL`'s default: a cart unchanged for 30 days expires.
pub const DEFAULT_CART_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
