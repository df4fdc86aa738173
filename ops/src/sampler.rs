//! Gauges that are cheaper to sample than to track on every event: how far
//! the relay and the projections are behind, and how many dead letters wait.
//! Each process samples only what its roles run, every few seconds (the
//! saga samples its own intake).

use std::time::Duration;

use projections::Projection;
use sqlx::PgPool;

/// How often the gauges are refreshed: often enough for an alert on lag,
/// rarely enough that the counting queries cost nothing.
pub const EVERY: Duration = Duration::from_secs(5);

/// Refreshes the relay and/or projection gauges every `every` until
/// `shutdown` resolves. Failures are logged and the next round tries again.
pub async fn run(
    pool: PgPool,
    prefix: String,
    relay: bool,
    projections: bool,
    every: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        if relay {
            match commands::relay::lag(&pool, &prefix).await {
                Ok(lag) => metrics::gauge!("agora_relay_lag_events").set(lag as f64),
                Err(error) => tracing::warn!(%error, "cannot sample the relay's lag"),
            }
        }
        if projections {
            match projections::status(&pool, &Projection::subscribers()).await {
                Ok(statuses) => projections::progress::record_metrics(&statuses),
                Err(error) => tracing::warn!(%error, "cannot sample the projections' progress"),
            }
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
