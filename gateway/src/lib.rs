//! The test payment gateway (`agora gateway`): a small HTTP service that
//! stands for an external card processor, so the saga's calls cross a real
//! network boundary with real timeouts, errors and restarts.
//!
//! Every charge and refund needs an `Idempotency-Key` header: a repeat of a
//! key gets the first answer again and never moves money twice. The ledger
//! lives in Postgres (schema `gateway`, created on start), so it survives a
//! restart of the gateway. Tokens: `tok_ok` approves, `tok_decline` declines,
//! `tok_slow` approves after a delay (2 s), `tok_flaky` answers 502 on the
//! first two tries of a key and then approves; any other token is declined.
//!
//! Every route, test aids and `/healthz` included, takes only requests that
//! carry `Authorization: Bearer <AGORA_GATEWAY_TOKEN>` (401 otherwise), as a
//! real processor takes only its merchants' keys: whoever reaches the port
//! could otherwise switch charging off, refund behind Agora's back, or read
//! every token. Without a token it is open, which `agora gateway` allows only
//! with `AGORA_AUTH=off`.
//!
//! Test aids: `GET /charges` and `GET /refunds` list the ledger,
//! `GET /admin/requests` counts the requests received since start, and
//! `POST /admin/outage {"down": true}` makes every charge and refund answer
//! 503 until it is turned off again.
//!
//! The gateway knows nothing of orders or events: it depends on no other
//! crate of the workspace.

mod ledger;
mod routes;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::net::TcpListener;

pub use ledger::{ChargeRecord, RefundRecord};

/// How the gateway runs.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    pub pool: PgPool,
    /// How long `tok_slow` takes to approve.
    pub slow_delay: Duration,
    /// The bearer token every request must carry; `None` leaves it open.
    pub token: Option<String>,
}

impl GatewayOptions {
    pub fn new(pool: PgPool, token: Option<String>) -> Self {
        Self {
            pool,
            slow_delay: Duration::from_secs(2),
            token,
        }
    }
}

#[derive(Clone)]
pub(crate) struct State {
    pool: PgPool,
    slow_delay: Duration,
    down: Arc<AtomicBool>,
    charge_requests: Arc<AtomicU64>,
    refund_requests: Arc<AtomicU64>,
}

/// Creates the ledger tables if they are missing, then serves on `listener`
/// until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    options: GatewayOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    ledger::create(&options.pool).await?;
    let state = State {
        pool: options.pool,
        slow_delay: options.slow_delay,
        down: Arc::new(AtomicBool::new(false)),
        charge_requests: Arc::new(AtomicU64::new(0)),
        refund_requests: Arc::new(AtomicU64::new(0)),
    };
    let app = routes::router(state, options.token.map(Arc::from));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "payment gateway listening");
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(GatewayError::Serve)
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot prepare the gateway ledger: {0}")]
    Ledger(#[from] sqlx::Error),
    #[error("serving HTTP failed: {0}")]
    Serve(#[source] std::io::Error),
}
