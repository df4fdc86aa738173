//! `rm_products`: one row per product, with its stock split into what can
//! still be ordered (`available`) and what open orders hold (`reserved`).

use schemas::EventEnvelope;
use serde::Deserialize;
use sqlx::PgConnection;

use super::{aggregate_uuid, bump_version, change, decode, event_time, expect_row, Money};
use crate::changes::Change;
use crate::error::ProjectionError;

const MODEL: &str = "products";

#[derive(Deserialize)]
struct Created {
    sku: String,
    name: String,
    #[serde(default)]
    description: Option<String>,
    price: Money,
    stock: i64,
}

#[derive(Deserialize)]
struct DetailsUpdated {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct PriceChanged {
    price: Money,
}

#[derive(Deserialize)]
struct StockAdjusted {
    stock_delta: i64,
}

#[derive(Deserialize)]
struct StockMoved {
    quantity: u32,
}

pub(crate) async fn apply(
    conn: &mut PgConnection,
    event: &EventEnvelope,
) -> Result<Vec<Change>, ProjectionError> {
    if event.aggregate_type != "product" {
        return Ok(Vec::new());
    }
    let id = aggregate_uuid(event)?;
    let time = event_time(event);
    let version = event.sequence;
    let rows = match event.event_type.as_str() {
        "ProductCreated" => {
            let e: Created = decode(event)?;
            sqlx::query(
                "INSERT INTO rm_products (id, sku, name, description, price_amount, price_currency,
                     available, reserved, status, version, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 'active', $8, $9, $9)
                 ON CONFLICT (id) DO UPDATE SET sku = EXCLUDED.sku, name = EXCLUDED.name,
                     description = EXCLUDED.description, price_amount = EXCLUDED.price_amount,
                     price_currency = EXCLUDED.price_currency, available = EXCLUDED.available,
                     reserved = EXCLUDED.reserved, status = EXCLUDED.status, version = EXCLUDED.version,
                     created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at",
            )
            .bind(id)
            .bind(&e.sku)
            .bind(&e.name)
            .bind(&e.description)
            .bind(e.price.amount)
            .bind(&e.price.currency)
            .bind(e.stock)
            .bind(version)
            .bind(time)
            .execute(&mut *conn)
            .await?
            .rows_affected()
        }
        "ProductDetailsUpdated" => {
            let e: DetailsUpdated = decode(event)?;
            sqlx::query(
                "UPDATE rm_products SET name = coalesce($2, name), description = coalesce($3, description),
                     version = $4, updated_at = $5 WHERE id = $1",
            )
            .bind(id)
            .bind(&e.name)
            .bind(&e.description)
            .bind(version)
            .bind(time)
            .execute(&mut *conn)
            .await?
            .rows_affected()
        }
        "ProductPriceChanged" => {
            let e: PriceChanged = decode(event)?;
            sqlx::query(
                "UPDATE rm_products SET price_amount = $2, price_currency = $3, version = $4, updated_at = $5
                 WHERE id = $1",
            )
            .bind(id)
            .bind(e.price.amount)
            .bind(&e.price.currency)
            .bind(version)
            .bind(time)
            .execute(&mut *conn)
            .await?
            .rows_affected()
        }
        "ProductDiscontinued" => sqlx::query(
            "UPDATE rm_products SET status = 'discontinued', version = $2, updated_at = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(version)
        .bind(time)
        .execute(&mut *conn)
        .await?
        .rows_affected(),
        other => {
            // What the stock events add to `available` and `reserved`.
            let (available, reserved) = match other {
                "ProductStockAdjusted" => (decode::<StockAdjusted>(event)?.stock_delta, 0),
                "StockReserved" | "StockReservationReleased" | "StockReservationCommitted"
                | "StockReturned" => {
                    let q = i64::from(decode::<StockMoved>(event)?.quantity);
                    match other {
                        "StockReserved" => (-q, q),
                        "StockReservationReleased" => (q, -q),
                        "StockReservationCommitted" => (0, -q),
                        _ => (q, 0),
                    }
                }
                _ => return bump_version(conn, "rm_products", MODEL, event).await,
            };
            sqlx::query(
                "UPDATE rm_products SET available = available + $2, reserved = reserved + $3,
                     version = $4, updated_at = $5 WHERE id = $1",
            )
            .bind(id)
            .bind(available)
            .bind(reserved)
            .bind(version)
            .bind(time)
            .execute(&mut *conn)
            .await?
            .rows_affected()
        }
    };
    expect_row(rows, "rm_products", event)?;
    Ok(vec![change(MODEL, id, version)])
}

// The replay's fold: the same changes as `apply`, made to rows in memory, and
// written in bulk into a shadow table. Kept beside the SQL above so the two
// change together; `fold_equals_the_live_path` (projections' tests) holds
// them to the same result.

/// An `rm_products` row in memory.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    sku: String,
    name: String,
    description: Option<String>,
    price_amount: i64,
    price_currency: String,
    available: i64,
    reserved: i64,
    status: &'static str,
    version: i64,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

pub(crate) type Rows = std::collections::HashMap<uuid::Uuid, Row>;

/// Applies `event` to `rows`; on `Err` nothing changed.
pub(crate) fn fold(rows: &mut Rows, event: &EventEnvelope) -> Result<(), ProjectionError> {
    let id = aggregate_uuid(event)?;
    let time = event_time(event);
    let version = event.sequence;
    let row = |rows| super::fold_row(rows, id, "rm_products", event);
    let (available, reserved) = match event.event_type.as_str() {
        "ProductCreated" => {
            let e: Created = decode(event)?;
            rows.insert(
                id,
                Row {
                    sku: e.sku,
                    name: e.name,
                    description: e.description,
                    price_amount: e.price.amount,
                    price_currency: e.price.currency,
                    available: e.stock,
                    reserved: 0,
                    status: "active",
                    version,
                    created_at: time,
                    updated_at: time,
                },
            );
            return Ok(());
        }
        "ProductDetailsUpdated" => {
            let e: DetailsUpdated = decode(event)?;
            let row = row(rows)?;
            if let Some(name) = e.name {
                row.name = name;
            }
            if e.description.is_some() {
                row.description = e.description;
            }
            row.version = version;
            row.updated_at = time;
            return Ok(());
        }
        "ProductPriceChanged" => {
            let e: PriceChanged = decode(event)?;
            let row = row(rows)?;
            row.price_amount = e.price.amount;
            row.price_currency = e.price.currency;
            row.version = version;
            row.updated_at = time;
            return Ok(());
        }
        "ProductDiscontinued" => {
            let row = row(rows)?;
            row.status = "discontinued";
            row.version = version;
            row.updated_at = time;
            return Ok(());
        }
        "ProductStockAdjusted" => (decode::<StockAdjusted>(event)?.stock_delta, 0),
        other @ ("StockReserved"
        | "StockReservationReleased"
        | "StockReservationCommitted"
        | "StockReturned") => {
            let q = i64::from(decode::<StockMoved>(event)?.quantity);
            match other {
                "StockReserved" => (-q, q),
                "StockReservationReleased" => (q, -q),
                "StockReservationCommitted" => (0, -q),
                _ => (q, 0),
            }
        }
        _ => {
            super::fold_bump_version(rows.get_mut(&id).map(|r| &mut r.version), event);
            return Ok(());
        }
    };
    let row = row(rows)?;
    let (Some(available), Some(reserved)) = (
        row.available.checked_add(available),
        row.reserved.checked_add(reserved),
    ) else {
        return Err(ProjectionError::Poison(format!(
            "{} (sequence {}) of {}: bigint out of range",
            event.event_type, event.sequence, event.aggregate_id
        )));
    };
    row.available = available;
    row.reserved = reserved;
    row.version = version;
    row.updated_at = time;
    Ok(())
}

/// Writes `rows` into `rm_products` (of the connection's `search_path`).
pub(crate) async fn write(conn: &mut PgConnection, rows: &Rows) -> Result<(), sqlx::Error> {
    let mut copy = super::CopyText::default();
    for (id, r) in rows {
        copy.uuid(*id)
            .text(&r.sku)
            .text(&r.name)
            .opt_text(r.description.as_deref())
            .int(r.price_amount)
            .text(&r.price_currency)
            .int(r.available)
            .int(r.reserved)
            .text(r.status)
            .int(r.version)
            .time(r.created_at)
            .time(r.updated_at)
            .end();
    }
    copy.copy_into(
        conn,
        "rm_products (id, sku, name, description, price_amount, price_currency, available,
             reserved, status, version, created_at, updated_at)",
    )
    .await
}
