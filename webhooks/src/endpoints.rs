//! The endpoints an admin registers and their delivery logs: the SQL of
//! `POST/GET/PATCH/DELETE /webhooks...` (migration `0010_webhooks`).

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::signing::{self, SecretBox, Unsealable};

/// How long the previous secret keeps signing after a rotation.
pub const ROTATION_OVERLAP: Duration = Duration::hours(24);

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("the operating system gave no random bytes: {0}")]
    Random(getrandom::Error),
    #[error(transparent)]
    Unsealable(#[from] Unsealable),
}

impl From<getrandom::Error> for EndpointError {
    fn from(err: getrandom::Error) -> Self {
        Self::Random(err)
    }
}

/// An endpoint as listed (never its secret).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Endpoint {
    pub id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

/// One delivery as `GET /webhooks/{id}/deliveries` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Delivery {
    pub id: Uuid,
    pub event_id: String,
    pub event_type: String,
    pub aggregate_id: Uuid,
    pub status: String,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// What a `PATCH` changes; `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct Changes {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub status: Option<String>,
}

#[derive(Clone)]
pub struct Endpoints {
    pool: PgPool,
    secrets: SecretBox,
}

const COLUMNS: &str = "id, url, events, description, status, created_at";

/// A delivery as listed, from `webhook_deliveries d` and its event.
const DELIVERY: &str = "d.id, d.event_id, e.event_type, d.aggregate_id, d.status, d.attempts, \
    d.last_status_code, d.last_error, \
    CASE WHEN d.status = 'pending' THEN d.next_attempt_at END AS next_attempt_at, \
    d.created_at, d.delivered_at \
    FROM webhook_deliveries d JOIN webhook_events e USING (event_id)";

impl Endpoints {
    pub fn new(pool: PgPool, secrets: SecretBox) -> Self {
        Self { pool, secrets }
    }

    /// Registers an endpoint; returns it with its secret (`whsec_...`),
    /// which is shown only now.
    pub async fn create(
        &self,
        url: &str,
        events: &[String],
        description: Option<&str>,
    ) -> Result<(Endpoint, String), EndpointError> {
        let id = Uuid::now_v7();
        let secret = signing::new_secret()?;
        let sealed = self.secrets.seal(id, &secret)?;
        let endpoint = sqlx::query_as::<_, Endpoint>(&format!(
            "INSERT INTO webhook_endpoints (id, url, events, description, secret) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(url)
        .bind(events)
        .bind(description)
        .bind(sealed)
        .fetch_one(&self.pool)
        .await?;
        Ok((endpoint, signing::encode_secret(&secret)))
    }

    /// Oldest first, after `after`.
    pub async fn list(
        &self,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Endpoint>, EndpointError> {
        Ok(sqlx::query_as::<_, Endpoint>(&format!(
            "SELECT {COLUMNS} FROM webhook_endpoints WHERE $1::uuid IS NULL OR id > $1 \
             ORDER BY id LIMIT $2"
        ))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Endpoint>, EndpointError> {
        Ok(sqlx::query_as::<_, Endpoint>(&format!(
            "SELECT {COLUMNS} FROM webhook_endpoints WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn update(
        &self,
        id: Uuid,
        changes: &Changes,
    ) -> Result<Option<Endpoint>, EndpointError> {
        Ok(sqlx::query_as::<_, Endpoint>(&format!(
            "UPDATE webhook_endpoints SET url = coalesce($2, url), events = coalesce($3, events), \
                description = coalesce($4, description), status = coalesce($5, status), \
                updated_at = now() \
             WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(&changes.url)
        .bind(&changes.events)
        .bind(&changes.description)
        .bind(&changes.status)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Deletes the endpoint and its delivery log; false if there was none.
    pub async fn delete(&self, id: Uuid) -> Result<bool, EndpointError> {
        let deleted = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected() == 1)
    }

    /// A new secret; the current one keeps signing for [`ROTATION_OVERLAP`].
    /// `None` if there is no such endpoint.
    pub async fn rotate(&self, id: Uuid) -> Result<Option<String>, EndpointError> {
        let secret = signing::new_secret()?;
        let sealed = self.secrets.seal(id, &secret)?;
        let rotated = sqlx::query(
            "UPDATE webhook_endpoints SET previous_secret = secret, secret = $2, \
                previous_until = now() + $3::interval, updated_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(sealed)
        .bind(format!("{} seconds", ROTATION_OVERLAP.num_seconds()))
        .execute(&self.pool)
        .await?;
        Ok((rotated.rows_affected() == 1).then(|| signing::encode_secret(&secret)))
    }

    /// The keys that sign a delivery to `id` now: the current secret, and
    /// the previous one within its overlap.
    pub async fn signing_keys(&self, id: Uuid) -> Result<Vec<Vec<u8>>, EndpointError> {
        let row: Option<(Vec<u8>, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT secret, CASE WHEN previous_until > now() THEN previous_secret END \
             FROM webhook_endpoints WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some((current, previous)) = row else {
            return Ok(Vec::new());
        };
        let mut keys = vec![self.secrets.open(id, &current)?];
        if let Some(previous) = previous {
            keys.push(self.secrets.open(id, &previous)?);
        }
        Ok(keys)
    }

    /// Newest first, after `before`, optionally of one status.
    pub async fn deliveries(
        &self,
        endpoint: Uuid,
        status: Option<&str>,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Delivery>, EndpointError> {
        Ok(sqlx::query_as::<_, Delivery>(&format!(
            "SELECT {DELIVERY} WHERE d.endpoint_id = $1 AND ($2::text IS NULL OR d.status = $2) \
                AND ($3::uuid IS NULL OR d.id < $3) \
             ORDER BY d.id DESC LIMIT $4"
        ))
        .bind(endpoint)
        .bind(status)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn delivery(
        &self,
        endpoint: Uuid,
        id: Uuid,
    ) -> Result<Option<Delivery>, EndpointError> {
        Ok(sqlx::query_as::<_, Delivery>(&format!(
            "SELECT {DELIVERY} WHERE d.endpoint_id = $1 AND d.id = $2"
        ))
        .bind(endpoint)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A manual retry: the delivery is pending again and due now, with one
    /// more attempt allowed if it had used them all. `false` if the
    /// endpoint has no such delivery.
    pub async fn retry(&self, endpoint: Uuid, delivery: Uuid) -> Result<bool, EndpointError> {
        let retried = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now(), \
                attempts = least(attempts, $3 - 1), delivered_at = NULL \
             WHERE id = $1 AND endpoint_id = $2",
        )
        .bind(delivery)
        .bind(endpoint)
        .bind(crate::deliver::ATTEMPTS as i32)
        .execute(&self.pool)
        .await?;
        Ok(retried.rows_affected() == 1)
    }
}
