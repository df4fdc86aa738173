//! `rm_carts`, with each line's price and stock joined from `rm_products`
//! when read: a cart shows today's prices, never the ones it was filled at.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{MoneyView, Page, PageRequest, QueryError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CartView {
    pub id: Uuid,
    /// None for a guest cart.
    pub user_id: Option<Uuid>,
    #[schemars(extend("enum" = ["open", "checked_out", "merged", "expired"]))]
    pub status: String,
    pub lines: Vec<CartLineView>,
    /// The sum of the line totals; null while the cart is empty or a line's
    /// product is not known (yet) or priced in another currency.
    pub subtotal: Option<MoneyView>,
    /// The sum of the quantities.
    pub item_count: i64,
    /// The order it was checked out as.
    pub order_id: Option<Uuid>,
    /// The customer's cart a merged guest cart went into.
    pub merged_into: Option<Uuid>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When an open cart expires unless it changes; null once it is closed.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A line with its product as the product is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CartLineView {
    pub product_id: Uuid,
    pub sku: Option<String>,
    pub name: Option<String>,
    pub quantity: i64,
    pub unit_price: Option<MoneyView>,
    pub line_total: Option<MoneyView>,
    /// The product's available stock now (0 once discontinued).
    pub available: i64,
}

/// A cart and what proves access to it (the guest token's hash, never shown).
#[derive(Debug, Clone, PartialEq)]
pub struct FoundCart {
    pub view: CartView,
    pub token_hash: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    user_id: Option<Uuid>,
    token_hash: Option<String>,
    status: String,
    lines: serde_json::Value,
    order_id: Option<Uuid>,
    merged_into: Option<Uuid>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct StoredLine {
    product_id: Uuid,
    quantity: i64,
}

#[derive(sqlx::FromRow)]
struct ProductRow {
    id: Uuid,
    sku: String,
    name: String,
    price_amount: i64,
    price_currency: String,
    available: i64,
    status: String,
}

const COLUMNS: &str =
    "id, user_id, token_hash, status, lines, order_id, merged_into, version, created_at, updated_at";

pub async fn cart(pool: &PgPool, id: Uuid, ttl: Duration) -> Result<Option<FoundCart>, QueryError> {
    let sql = format!("SELECT {COLUMNS} FROM rm_carts WHERE id = $1");
    let Some(row) = sqlx::query_as::<_, Row>(&sql)
        .bind(id)
        .fetch_optional(pool)
        .await?
    else {
        return Ok(None);
    };
    let mut found = views(pool, vec![row], ttl).await?;
    Ok(found.pop())
}

/// A customer's carts, newest first (ids are UUID v7).
pub async fn carts_of_user(
    pool: &PgPool,
    user_id: Uuid,
    page: &PageRequest,
    ttl: Duration,
) -> Result<Page<CartView>, QueryError> {
    let before = page.id_cursor()?;
    let sql = format!(
        "SELECT {COLUMNS} FROM rm_carts \
         WHERE user_id = $1 AND ($2::uuid IS NULL OR id < $2) \
         ORDER BY id DESC LIMIT $3"
    );
    let rows = sqlx::query_as::<_, Row>(&sql)
        .bind(user_id)
        .bind(before)
        .bind(page.fetch())
        .fetch_all(pool)
        .await?;
    let page = page.page(rows, |r| r.id.to_string(), Ok)?;
    let items = views(pool, page.items, ttl).await?;
    Ok(Page {
        items: items.into_iter().map(|f| f.view).collect(),
        next_cursor: page.next_cursor,
    })
}

/// The customer's newest open cart, if any.
pub async fn open_cart_of_user(pool: &PgPool, user_id: Uuid) -> Result<Option<Uuid>, QueryError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM rm_carts WHERE user_id = $1 AND status = 'open' ORDER BY id DESC LIMIT 1",
    )
    .bind(user_id)
    .fetch_optional(pool)
    .await?)
}

/// Open carts unchanged since before `idle_since`, at most `limit`, locked
/// (`FOR UPDATE SKIP LOCKED`) in the caller's transaction, so several
/// processes share the work and no cart is handed to two at once. Each comes
/// with the version it was seen at.
pub async fn due_carts(
    tx: &mut PgConnection,
    idle_since: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(Uuid, i64)>, QueryError> {
    Ok(sqlx::query_as(
        "SELECT id, version FROM rm_carts \
         WHERE status = 'open' AND updated_at < $1 \
         ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(idle_since)
    .bind(limit)
    .fetch_all(tx)
    .await?)
}

async fn views(pool: &PgPool, rows: Vec<Row>, ttl: Duration) -> Result<Vec<FoundCart>, QueryError> {
    let mut carts = Vec::with_capacity(rows.len());
    let mut wanted = Vec::new();
    for row in rows {
        let lines: Vec<StoredLine> =
            serde_json::from_value(row.lines.clone()).map_err(|err| QueryError::Malformed {
                model: "carts",
                id: row.id,
                reason: format!("lines: {err}"),
            })?;
        wanted.extend(lines.iter().map(|l| l.product_id));
        carts.push((row, lines));
    }
    let products: HashMap<Uuid, ProductRow> = if wanted.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as::<_, ProductRow>(
            "SELECT id, sku, name, price_amount, price_currency, available, status \
             FROM rm_products WHERE id = ANY($1)",
        )
        .bind(&wanted)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|p| (p.id, p))
        .collect()
    };
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    Ok(carts
        .into_iter()
        .map(|(row, lines)| {
            let lines: Vec<CartLineView> = lines
                .into_iter()
                .map(|line| {
                    let product = products.get(&line.product_id);
                    line_view(line, product)
                })
                .collect();
            let item_count = lines.iter().map(|l| l.quantity).sum();
            let subtotal = subtotal(&lines);
            FoundCart {
                token_hash: row.token_hash,
                view: CartView {
                    id: row.id,
                    user_id: row.user_id,
                    expires_at: (row.status == "open")
                        .then(|| row.updated_at.checked_add_signed(ttl))
                        .flatten(),
                    status: row.status,
                    lines,
                    subtotal,
                    item_count,
                    order_id: row.order_id,
                    merged_into: row.merged_into,
                    version: row.version,
                    created_at: row.created_at,
                    updated_at: row.updated_at,
                },
            }
        })
        .collect())
}

fn line_view(line: StoredLine, product: Option<&ProductRow>) -> CartLineView {
    let unit_price = product.map(|p| MoneyView {
        amount: p.price_amount,
        currency: p.price_currency.clone(),
    });
    let line_total = unit_price.as_ref().and_then(|price| {
        price
            .amount
            .checked_mul(line.quantity)
            .map(|amount| MoneyView {
                amount,
                currency: price.currency.clone(),
            })
    });
    CartLineView {
        product_id: line.product_id,
        sku: product.map(|p| p.sku.clone()),
        name: product.map(|p| p.name.clone()),
        quantity: line.quantity,
        unit_price,
        line_total,
        available: product
            .filter(|p| p.status == "active")
            .map_or(0, |p| p.available),
    }
}

fn subtotal(lines: &[CartLineView]) -> Option<MoneyView> {
    let first = lines.first()?.line_total.as_ref()?;
    let mut amount: i64 = 0;
    for line in lines {
        let total = line.line_total.as_ref()?;
        if total.currency != first.currency {
            return None;
        }
        amount = amount.checked_add(total.amount)?;
    }
    Some(MoneyView {
        amount,
        currency: first.currency.clone(),
    })
}
