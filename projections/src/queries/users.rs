//! `rm_users`: one user, the users with an email, and whether one exists.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::{Page, PageRequest, QueryError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, JsonSchema)]
pub struct UserView {
    pub id: Uuid,
    /// Sealed in the read model, opened by the API; `null` once erased.
    pub email: Option<String>,
    /// Sealed in the read model, opened by the API; `null` once erased.
    pub name: Option<String>,
    /// `active`, `deactivated` or `erased`.
    #[schemars(extend("enum" = ["active", "deactivated", "erased"]))]
    pub status: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, email, name, status, version, created_at, updated_at";

pub async fn user(pool: &PgPool, id: Uuid) -> Result<Option<UserView>, QueryError> {
    let sql = format!("SELECT {COLUMNS} FROM rm_users WHERE id = $1");
    Ok(sqlx::query_as::<_, UserView>(&sql)
        .bind(id)
        .fetch_optional(pool)
        .await?)
}

pub async fn user_exists(pool: &PgPool, id: Uuid) -> Result<bool, QueryError> {
    Ok(
        sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM rm_users WHERE id = $1)")
            .bind(id)
            .fetch_one(pool)
            .await?,
    )
}

/// Users in id order; with `email_claim` (the keyed hash of a normalized
/// email, `commands::Vault::email_claim`), only the user holding that claim:
/// the read model keeps emails sealed, so it cannot be searched by one.
pub async fn users(
    pool: &PgPool,
    email_claim: Option<&str>,
    page: &PageRequest,
) -> Result<Page<UserView>, QueryError> {
    let after = page.id_cursor()?;
    let sql = format!(
        "SELECT {COLUMNS} FROM rm_users \
         WHERE ($1::text IS NULL OR id::text IN (SELECT aggregate_id FROM unique_claims \
             WHERE kind = 'email' AND value = $1 AND aggregate_type = 'user')) \
           AND ($2::uuid IS NULL OR id > $2) \
         ORDER BY id LIMIT $3"
    );
    let rows = sqlx::query_as::<_, UserView>(&sql)
        .bind(email_claim)
        .bind(after)
        .bind(page.fetch())
        .fetch_all(pool)
        .await?;
    page.page(rows, |r| r.id.to_string(), Ok)
}
