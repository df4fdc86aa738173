//! `Idempotency-Key` records in Postgres, shared by every API process.
//!
//! A key is first claimed `in_flight`; the answer is stored when the request
//! ends. A repeat with the same body replays the stored answer, one with
//! another body is refused, and one that arrives while the first is running
//! is told so. Records older than 24 hours are reused as if new. A claim left
//! `in_flight` by a process that died is taken over after `STALE_AFTER`.

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
        sqlx::query(
            "UPDATE idempotency_keys SET state = 'completed', status = $3, etag = $4, location = $5, body = $6 WHERE scope = $1 AND key = $2 AND request_hash = $7 AND state = 'in_flight'",
        )
        .bind(scope)
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
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND request_hash = $3 AND state = 'in_flight'",
        )
        .bind(scope)
        .bind(key)
        .bind(request_hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
