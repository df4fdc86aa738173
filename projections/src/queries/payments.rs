//! `rm_payments`: one payment.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::{MoneyView, QueryError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentView {
    pub id: Uuid,
    pub order_id: Uuid,
    pub amount: MoneyView,
    /// `pending`, `authorized`, `captured`, `refunded`, `declined` or `failed`.
    #[schemars(extend("enum" = ["pending", "authorized", "captured", "refunded", "declined", "failed"]))]
    pub status: String,
    pub attempts: i32,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    order_id: Uuid,
    amount: i64,
    currency: String,
    status: String,
    attempts: i32,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

pub async fn payment(pool: &PgPool, id: Uuid) -> Result<Option<PaymentView>, QueryError> {
    let row = sqlx::query_as::<_, Row>(
        "SELECT id, order_id, amount, currency, status, attempts, version, created_at, updated_at \
         FROM rm_payments WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| PaymentView {
        id: r.id,
        order_id: r.order_id,
        amount: MoneyView {
            amount: r.amount,
            currency: r.currency,
        },
        status: r.status,
        attempts: r.attempts,
        version: r.version,
        created_at: r.created_at,
        updated_at: r.updated_at,
    }))
}
