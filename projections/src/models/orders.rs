//! `rm_orders`: one row per order, lines as placed (with their unit prices).

use schemas::EventEnvelope;
use serde::Deserialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{aggregate_uuid, bump_version, change, decode, event_time, expect_row, Money};
use crate::changes::Change;
use crate::error::ProjectionError;

const MODEL: &str = "orders";

#[derive(Deserialize)]
struct Placed {
    user_id: Uuid,
    lines: Vec<Line>,
    total: Money,
}

/// Decoded to check the shape; stored as given.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Line {
    product_id: Uuid,
    quantity: u32,
    unit_price: Money,
}

#[derive(Deserialize)]
struct PaymentAssigned {
    payment_id: Uuid,
}

#[derive(Deserialize)]
struct Cancelled {
    reason: String,
}

pub(crate) async fn apply(
    conn: &mut PgConnection,
    event: &EventEnvelope,
) -> Result<Vec<Change>, ProjectionError> {
    if event.aggregate_type != "order" {
        return Ok(Vec::new());
    }
    let id = aggregate_uuid(event)?;
    let time = event_time(event);
    let version = event.sequence;
    let rows = match event.event_type.as_str() {
        "OrderPlaced" => {
            let e: Placed = decode(event)?;
            // `[{product_id, quantity, unit_price}]`, exactly as recorded.
            let lines = event.data().get("lines").cloned().unwrap_or(Value::Null);
            debug_assert_eq!(lines.as_array().map(Vec::len), Some(e.lines.len()));
            sqlx::query(
                "INSERT INTO rm_orders (id, user_id, lines, total_amount, total_currency, status,
                     cancel_reason, payment_id, version, placed_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, 'pending', NULL, NULL, $6, $7, $7)
                 ON CONFLICT (id) DO UPDATE SET user_id = EXCLUDED.user_id, lines = EXCLUDED.lines,
                     total_amount = EXCLUDED.total_amount, total_currency = EXCLUDED.total_currency,
                     status = EXCLUDED.status, cancel_reason = NULL, payment_id = NULL,
                     version = EXCLUDED.version, placed_at = EXCLUDED.placed_at,
                     updated_at = EXCLUDED.updated_at",
            )
            .bind(id)
            .bind(e.user_id)
            .bind(lines)
            .bind(e.total.amount)
            .bind(&e.total.currency)
            .bind(version)
            .bind(time)
            .execute(&mut *conn)
            .await?
            .rows_affected()
        }
        "OrderPaymentAssigned" => {
            let e: PaymentAssigned = decode(event)?;
            sqlx::query(
                "UPDATE rm_orders SET payment_id = $2, version = $3, updated_at = $4 WHERE id = $1",
            )
            .bind(id)
            .bind(e.payment_id)
            .bind(version)
            .bind(time)
            .execute(&mut *conn)
            .await?
            .rows_affected()
        }
        "OrderConfirmed" | "OrderShipped" => {
            let status = if event.event_type == "OrderConfirmed" {
                "confirmed"
            } else {
                "shipped"
            };
            sqlx::query(
                "UPDATE rm_orders SET status = $2, version = $3, updated_at = $4 WHERE id = $1",
            )
            .bind(id)
            .bind(status)
            .bind(version)
            .bind(time)
            .execute(&mut *conn)
            .await?
            .rows_affected()
        }
        "OrderCancelled" => {
            let e: Cancelled = decode(event)?;
            sqlx::query(
                "UPDATE rm_orders SET status = 'cancelled', cancel_reason = $2, version = $3,
                     updated_at = $4 WHERE id = $1",
            )
            .bind(id)
            .bind(&e.reason)
            .bind(version)
            .bind(time)
            .execute(&mut *conn)
            .await?
            .rows_affected()
        }
        _ => return bump_version(conn, "rm_orders", MODEL, event).await,
    };
    expect_row(rows, "rm_orders", event)?;
    Ok(vec![change(MODEL, id, version)])
}
