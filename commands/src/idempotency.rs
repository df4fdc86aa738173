//! `Idempotency-Key` records in Postgres, shared by every API process.
//!
//! A key is first claimed `in_flight`; the answer is stored when the request
//! ends. A repeat with the same body replays the stored answer, one with
//! another body is refused, and one that arrives while the first is running
//! is told so. Records older than 24 hours are reused as if new, and
//! [`sweep`] deletes them in the background, a bounded batch at a time. A
//! claim left `in_flight` by a process that died is taken over after five
//! minutes.
//!
//! A client's scope (its token subject, or its address) is stored as its
//! SHA-256, so a scope of any length fits the primary key's index.

use std::future::Future;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};

use crate::error::StoreError;

/// An answer as it was first sent, to be replayed byte for byte.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    pub status: u16,
    pub etag: Option<String>,
    pub location: Option<String>,
    pub body: Vec<u8>,
}

/// What a request holding an idempotency key may do.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The key is this request's: run it, then `complete` or `abandon`.
    Acquired,
    /// The same request already ran: send this answer again.
    Replay(StoredResponse),
    /// The same request is running right now elsewhere (409).
    InFlight,
    /// The key was used with another request (422).
    Mismatch,
}

#[derive(Clone)]
pub struct IdempotencyStore {
    pool: PgPool,
}

const CLAIM: &str = r#"
INSERT INTO idempotency_keys (scope, key, request_hash, state)
VALUES ($1, $2, $3, 'in_flight')
ON CONFLICT (scope, key) DO UPDATE
   SET request_hash = EXCLUDED.request_hash, state = 'in_flight', status = NULL,
       etag = NULL, location = NULL, body = NULL, created_at = now()
 WHERE idempotency_keys.created_at < now() - interval '24 hours'
    OR (idempotency_keys.state = 'in_flight' AND idempotency_keys.created_at < now() - interval '5 minutes')
RETURNING true
"#;

impl IdempotencyStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// How a client's scope is stored: its SHA-256 in hex.
    pub fn scope_hash(scope: &str) -> String {
        hex::encode(Sha256::digest(scope.as_bytes()))
    }

    /// Deletes up to `batch` records past 24 hours; how many it deleted.
    /// Rows another sweeper holds are skipped, not waited for.
    pub async fn sweep_once(&self, batch: i64) -> Result<u64, StoreError> {
        let deleted = sqlx::query(
            "DELETE FROM idempotency_keys WHERE (scope, key) IN (
                 SELECT scope, key FROM idempotency_keys
                  WHERE created_at < now() - interval '24 hours'
                  ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED)",
        )
        .bind(batch)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(deleted)
    }

    /// The records stored, expired ones not yet swept included.
    pub async fn count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Claims `key` for the request whose fingerprint is `request_hash`.
    /// `scope` separates clients, so two clients never share a key.
    pub async fn claim(
        &self,
        scope: &str,
        key: &str,
        request_hash: &str,
    ) -> Result<Claim, StoreError> {
        // Two attempts: the row seen as taken can vanish between the insert
        // and the select only if it expired in between.
        let scope = &Self::scope_hash(scope);
        for _ in 0..2 {
            let acquired = sqlx::query(CLAIM)
                .bind(scope)
                .bind(key)
                .bind(request_hash)
                .fetch_optional(&self.pool)
                .await?;
            if acquired.is_some() {
                return Ok(Claim::Acquired);
            }
            let Some(row) = sqlx::query(
                "SELECT request_hash, state, status, etag, location, body FROM idempotency_keys WHERE scope = $1 AND key = $2",
            )
            .bind(scope)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            else {
                continue;
            };
            let stored_hash: String = row.try_get("request_hash")?;
            if stored_hash != request_hash {
                return Ok(Claim::Mismatch);
            }
            let state: String = row.try_get("state")?;
            if state == "in_flight" {
                return Ok(Claim::InFlight);
            }
            let status: Option<i16> = row.try_get("status")?;
            return Ok(Claim::Replay(StoredResponse {
                status: status.and_then(|s| u16::try_from(s).ok()).unwrap_or(200),
                etag: row.try_get("etag")?,
                location: row.try_get("location")?,
                body: row
                    .try_get::<Option<Vec<u8>>, _>("body")?
                    .unwrap_or_default(),
            }));
        }
        Ok(Claim::InFlight)
    }

    /// Stores the answer of a request that holds `key`. Only the holder's own
    /// claim is completed: one taken over after going stale belongs to
    /// another request by then.
    pub async fn complete(
        &self,
        scope: &str,
        key: &str,
        request_hash: &str,
        response: &StoredResponse,
    ) -> Result<(), StoreError> {
        let scope = Self::scope_hash(scope);
        sqlx::query(
            "UPDATE idempotency_keys SET state = 'completed', status = $3, etag = $4, location = $5, body = $6 WHERE scope = $1 AND key = $2 AND request_hash = $7 AND state = 'in_flight'",
        )
        .bind(&scope)
        .bind(key)
        .bind(response.status as i16)
        .bind(&response.etag)
        .bind(&response.location)
        .bind(&response.body)
        .bind(request_hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Releases `key` after a failure that should not be replayed (a 5xx),
    /// so the client's retry runs the request again.
    pub async fn abandon(
        &self,
        scope: &str,
        key: &str,
        request_hash: &str,
    ) -> Result<(), StoreError> {
        let scope = Self::scope_hash(scope);
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND request_hash = $3 AND state = 'in_flight'",
        )
        .bind(&scope)
        .bind(key)
        .bind(request_hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// How the background sweep runs.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// Between sweeps (`AGORA_IDEMPOTENCY_SWEEP_INTERVAL_MS`).
    pub interval: Duration,
    /// Rows deleted per statement (`AGORA_IDEMPOTENCY_SWEEP_BATCH`), so no
    /// sweep holds locks on a large part of the table at once.
    pub batch: i64,
}

impl Default for SweepOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            batch: 1000,
        }
    }
}

/// Deletes expired records every `interval`, batch after batch until none
/// is left, and samples the table's size into `agora_idempotency_records`,
/// until `shutdown` resolves. A failed sweep is logged and tried next time.
pub async fn sweep(
    store: IdempotencyStore,
    options: SweepOptions,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut every = tokio::time::interval(options.interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = &mut shutdown => return,
        }
        let batch = options.batch.max(1);
        loop {
            match store.sweep_once(batch).await {
                Ok(deleted) => {
                    metrics::counter!("agora_idempotency_swept_total").increment(deleted);
                    if deleted < batch as u64 {
                        break;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "could not sweep idempotency records");
                    break;
                }
            }
        }
        match store.count().await {
            Ok(records) => metrics::gauge!("agora_idempotency_records").set(records as f64),
            Err(err) => tracing::warn!(error = %err, "could not count idempotency records"),
        }
    }
}
