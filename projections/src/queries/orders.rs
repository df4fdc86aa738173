//! `rm_orders`: one order, and a user's orders newest first.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::{MoneyView, Page, PageRequest, QueryError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderView {
    pub id: Uuid,
    pub user_id: Uuid,
    pub lines: Vec<OrderLineView>,
    pub total: MoneyView,
    /// `pending`, `confirmed`, `shipped`, `cancelled` or `refunded`.
    #[schemars(extend("enum" = ["pending", "confirmed", "shipped", "cancelled", "refunded"]))]
    pub status: String,
    #[schemars(extend("enum" = ["out_of_stock", "payment_declined", "payment_unavailable", "customer_request", "refunded", null]))]
    pub cancel_reason: Option<String>,
    /// The customer's words when it cancelled, if any.
    pub cancel_note: Option<String>,
    pub payment_id: Option<Uuid>,
    /// As the read model keeps it: sealed (`schemas::sealed`) until the
    /// API opens it at the edge (`null` once the customer is erased).
    #[schemars(with = "Option<ShippingAddressView>")]
    pub shipping_address: Option<serde_json::Value>,
    /// The cart the order was placed from, if any.
    pub cart_id: Option<Uuid>,
    pub version: i64,
    pub placed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `{name, line1, line2, city, region, postal_code, country}` (ISO 3166-1 alpha-2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "ShippingAddress")]
pub struct ShippingAddressView {
    pub name: String,
    pub line1: String,
    #[serde(default)]
    pub line2: Option<String>,
    pub city: String,
    #[serde(default)]
    pub region: Option<String>,
    pub postal_code: String,
    pub country: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderLineView {
    pub product_id: Uuid,
    pub quantity: i64,
    pub unit_price: MoneyView,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    user_id: Uuid,
    lines: serde_json::Value,
    total_amount: i64,
    total_currency: String,
    status: String,
    cancel_reason: Option<String>,
    cancel_note: Option<String>,
    payment_id: Option<Uuid>,
    shipping_address: Option<serde_json::Value>,
    cart_id: Option<Uuid>,
    version: i64,
    placed_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<Row> for OrderView {
    type Error = QueryError;

    fn try_from(r: Row) -> Result<Self, QueryError> {
        let lines = serde_json::from_value(r.lines).map_err(|err| QueryError::Malformed {
            model: "orders",
            id: r.id,
            reason: format!("lines: {err}"),
        })?;
        let shipping_address = r.shipping_address;
        Ok(Self {
            id: r.id,
            user_id: r.user_id,
            lines,
            total: MoneyView {
                amount: r.total_amount,
                currency: r.total_currency,
            },
            status: r.status,
            cancel_reason: r.cancel_reason,
            cancel_note: r.cancel_note,
            payment_id: r.payment_id,
            shipping_address,
            cart_id: r.cart_id,
            version: r.version,
            placed_at: r.placed_at,
            updated_at: r.updated_at,
        })
    }
}

const COLUMNS: &str = "id, user_id, lines, total_amount, total_currency, status, cancel_reason, \
                       cancel_note, payment_id, shipping_address, cart_id, version, placed_at, \
                       updated_at";

pub async fn order(pool: &PgPool, id: Uuid) -> Result<Option<OrderView>, QueryError> {
    let sql = format!("SELECT {COLUMNS} FROM rm_orders WHERE id = $1");
    let row = sqlx::query_as::<_, Row>(&sql)
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.map(OrderView::try_from).transpose()
}

/// A user's orders, newest first (ids are UUID v7, so id order is time order).
pub async fn orders_of_user(
    pool: &PgPool,
    user_id: Uuid,
    page: &PageRequest,
) -> Result<Page<OrderView>, QueryError> {
    let before = page.id_cursor()?;
    let sql = format!(
        "SELECT {COLUMNS} FROM rm_orders \
         WHERE user_id = $1 AND ($2::uuid IS NULL OR id < $2) \
         ORDER BY id DESC LIMIT $3"
    );
    let rows = sqlx::query_as::<_, Row>(&sql)
        .bind(user_id)
        .bind(before)
        .bind(page.fetch())
        .fetch_all(pool)
        .await?;
    page.page(rows, |r| r.id.to_string(), OrderView::try_from)
}

/// How many orders are in each status (for the saga's gauges).
pub async fn orders_by_status(pool: &PgPool) -> Result<Vec<(String, i64)>, QueryError> {
    Ok(
        sqlx::query_as("SELECT status, count(*) FROM rm_orders GROUP BY status")
            .fetch_all(pool)
            .await?,
    )
}
