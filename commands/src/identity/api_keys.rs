//! API keys for other systems: `agk_` and 256 random bits, base64url.
//! Only the key's SHA-256 is stored; the key is shown once, in the answer
//! that creates it. A deleted key keeps its row, marked revoked, so the
//! events it caused still name something.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::{random_token, sha256};
use crate::error::StoreError;

/// Every key starts with it, so a leaked one is recognised (and secret
/// scanners can be taught to look for it).
pub const PREFIX: &str = "agk_";

/// What a key may do (api.md, Auth).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKeyRole {
    Admin,
    /// Products, prices and stock, nothing else.
    Catalog,
}

impl ApiKeyRole {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "admin" => Some(Self::Admin),
            "catalog" => Some(Self::Catalog),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Catalog => "catalog",
        }
    }
}

/// A key as listed: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    pub role: ApiKeyRole,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

#[derive(Clone)]
pub struct ApiKeys {
    pool: PgPool,
}

impl ApiKeys {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// A new key: its record, and the key, to be shown once.
    pub async fn create(
        &self,
        name: &str,
        role: ApiKeyRole,
        created_by: &str,
    ) -> Result<(ApiKey, String), StoreError> {
        let id = Uuid::now_v7();
        let (key, hash) = random_token(PREFIX)?;
        let created_at: DateTime<Utc> = sqlx::query_scalar(
            "INSERT INTO api_keys (id, name, role, key_hash, created_by) VALUES ($1, $2, $3, $4, $5)
             RETURNING created_at",
        )
        .bind(id)
        .bind(name)
        .bind(role.as_str())
        .bind(&hash[..])
        .bind(created_by)
        .fetch_one(&self.pool)
        .await?;
        let record = ApiKey {
            id,
            name: name.to_owned(),
            role,
            created_at,
            last_used_at: None,
        };
        Ok((record, key))
    }

    /// Live keys in the order they were made, `limit` of them after `after`.
    pub async fn list(&self, after: Option<Uuid>, limit: i64) -> Result<Vec<ApiKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, role, created_at, last_used_at FROM api_keys
              WHERE revoked_at IS NULL AND ($1::uuid IS NULL OR id > $1)
              ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record).collect()
    }

    /// The live key `key` is, if any.
    pub async fn find(&self, key: &str) -> Result<Option<ApiKey>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, role, created_at, last_used_at FROM api_keys
              WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(&sha256(key.as_bytes())[..])
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(record).transpose()
    }

    /// Revokes a live key; `false` if there is no such live key.
    pub async fn revoke(&self, id: Uuid) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records a use, unless one was recorded within the last minute (by
    /// any process): callers touch at most once a minute each, and this
    /// writes at most once a minute in all.
    pub async fn touch(&self, id: Uuid) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE api_keys SET last_used_at = now()
              WHERE id = $1 AND revoked_at IS NULL
                AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

fn record(row: &sqlx::postgres::PgRow) -> Result<ApiKey, StoreError> {
    let role: String = row.try_get("role")?;
    Ok(ApiKey {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: ApiKeyRole::parse(&role)
            .ok_or_else(|| StoreError::Corrupt(format!("api key role {role:?}")))?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}
