//! The cart expiry timer: an open cart unchanged for the TTL
//! (`AGORA_CART_TTL`) is expired by an `Expire` command.
//!
//! It keeps no state of its own: every round reads the carts read model's
//! open carts by last change (`projections::queries::due_carts`, an index
//! range), so it survives any restart. The rows come locked `FOR UPDATE SKIP
//! LOCKED` in the round's transaction, so processes running it side by side
//! share the carts, never hand one cart to two; and each `Expire` carries
//! the version the row was seen at as its `If-Match`, so a cart changed since
//! (or expired already, by a round whose change is not projected yet) is
//! left alone: a cart expires once, and only if it really stayed unchanged.

use std::future::Future;
use std::time::Duration;

use commands::{Aggregates, CommandError, CommandMetadata};
use domain::cart::CartCommand;
use sqlx::PgPool;

/// How often and how much.
#[derive(Debug, Clone)]
pub struct ExpiryOptions {
    /// Unchanged this long, an open cart expires (`AGORA_CART_TTL`, 30d).
    pub ttl: Duration,
    /// Between rounds (`AGORA_CART_EXPIRY_INTERVAL_MS`, 60 s).
    pub interval: Duration,
    /// Carts per round at most.
    pub batch: i64,
}

impl Default for ExpiryOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30 * 24 * 3600),
            interval: Duration::from_secs(60),
            batch: 500,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExpiryError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Query(#[from] projections::queries::QueryError),
    #[error(transparent)]
    Store(#[from] commands::StoreError),
}

/// One round: expires the due carts this process could lock; how many.
pub async fn expire_due(
    pool: &PgPool,
    aggregates: &Aggregates,
    options: &ExpiryOptions,
) -> Result<usize, ExpiryError> {
    let ttl = chrono::Duration::from_std(options.ttl).unwrap_or(chrono::Duration::MAX);
    let Some(idle_since) = chrono::Utc::now().checked_sub_signed(ttl) else {
        return Ok(0);
    };
    let mut tx = pool.begin().await?;
    let due = projections::queries::due_carts(&mut tx, idle_since, options.batch).await?;
    let mut expired = 0;
    for (id, version) in due {
        let metadata = CommandMetadata {
            actor: "cart-expiry".to_owned(),
            ..CommandMetadata::system()
        };
        let seen = usize::try_from(version).ok();
        match aggregates
            .carts
            .execute(&id.to_string(), CartCommand::Expire, seen, &metadata)
            .await
        {
            Ok(done) if !done.events.is_empty() => expired += 1,
            Ok(_) => {}
            // Changed since the row was read: not idle after all, or
            // expired already; the row shows it once projected.
            Err(CommandError::PreconditionFailed { .. }) => {}
            Err(CommandError::Store(err)) => return Err(err.into()),
            Err(err) => tracing::warn!(cart_id = %id, error = %err, "cart not expired"),
        }
    }
    tx.commit().await?;
    if expired > 0 {
        tracing::info!(expired, "carts expired");
        metrics::counter!("agora_carts_expired_total").increment(expired as u64);
    }
    Ok(expired)
}

/// Rounds every `interval` until `shutdown`.
pub async fn run(
    pool: PgPool,
    aggregates: Aggregates,
    options: ExpiryOptions,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        if let Err(err) = expire_due(&pool, &aggregates, &options).await {
            tracing::warn!(error = %err, "cart expiry round failed; trying again next round");
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(options.interval) => {}
        }
    }
}
