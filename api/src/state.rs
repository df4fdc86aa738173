use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use commands::idempotency::IdempotencyStore;
use commands::Aggregates;
use sqlx::PgPool;

/// Limits of the HTTP edge.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub body_limit: usize,
    pub request_timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            body_limit: 64 * 1024,
            request_timeout: crate::DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub aggregates: Aggregates,
    pub idempotency: IdempotencyStore,
    pub nats: Option<async_nats::Client>,
    pub options: HttpOptions,
    draining: Arc<AtomicBool>,
}

impl AppState {
    pub fn new(
        pool: PgPool,
        aggregates: Aggregates,
        nats: Option<async_nats::Client>,
        options: HttpOptions,
    ) -> Self {
        Self {
            idempotency: IdempotencyStore::new(pool.clone()),
            pool,
            aggregates,
            nats,
            options,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Marks the process as shutting down: `/readyz` answers 503 from now
    /// on, so load balancers stop sending before connections close.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
