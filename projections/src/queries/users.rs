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
    pub email: String,
    pub name: String,
    /// `active` or `deactivated`.
    #[schemars(extend("enum" = ["active", "deactivated"]))]
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

/// Users in id order, only those with `email` (case-insensitive) when given.
pub async fn users(
    pool: &PgPool,
    email: Option<&str>,
    page: &PageRequest,
) -> Result<Page<UserView>, QueryError> {
    let after = page.id_cursor()?;
    let sql = format!(
        "SELECT {COLUMNS} FROM rm_users \
         WHERE ($1::text IS NULL OR email_lower = $1) AND ($2::uuid IS NULL OR id > $2) \
         ORDER BY id LIMIT $3"
    );
    let rows = sqlx::query_as::<_, UserView>(&sql)
        .bind(email.map(str::to_lowercase))
        .bind(after)
        .bind(page.fetch())
        .fetch_all(pool)
        .await?;
    page.page(rows, |r| r.id.to_string(), Ok)
}
