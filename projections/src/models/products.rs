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
    delta: i64,
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
                "ProductStockAdjusted" => (decode::<StockAdjusted>(event)?.delta, 0),
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
