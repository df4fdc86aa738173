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
        "OrderConfirmed" | "OrderShipped" | "OrderRefunded" => {
            let status = match event.event_type.as_str() {
                "OrderConfirmed" => "confirmed",
                "OrderShipped" => "shipped",
                _ => "refunded",
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

// The replay's fold: the same changes as `apply`, made to rows in memory, and
// written in bulk into a shadow table. Kept beside the SQL above so the two
// change together; `fold_equals_the_live_path` (projections' tests) holds
// them to the same result.

/// An `rm_orders` row in memory.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    user_id: Uuid,
    lines: Value,
    total_amount: i64,
    total_currency: String,
    status: &'static str,
    cancel_reason: Option<String>,
    payment_id: Option<Uuid>,
    version: i64,
    placed_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

pub(crate) type Rows = std::collections::HashMap<Uuid, Row>;

/// Applies `event` to `rows`; on `Err` nothing changed.
pub(crate) fn fold(rows: &mut Rows, event: &EventEnvelope) -> Result<(), ProjectionError> {
    let id = aggregate_uuid(event)?;
    let time = event_time(event);
    let version = event.sequence;
    let row = |rows| super::fold_row(rows, id, "rm_orders", event);
    let row = match event.event_type.as_str() {
        "OrderPlaced" => {
            let e: Placed = decode(event)?;
            let lines = event.data().get("lines").cloned().unwrap_or(Value::Null);
            rows.insert(
                id,
                Row {
                    user_id: e.user_id,
                    lines,
                    total_amount: e.total.amount,
                    total_currency: e.total.currency,
                    status: "pending",
                    cancel_reason: None,
                    payment_id: None,
                    version,
                    placed_at: time,
                    updated_at: time,
                },
            );
            return Ok(());
        }
        "OrderPaymentAssigned" => {
            let e: PaymentAssigned = decode(event)?;
            let row = row(rows)?;
            row.payment_id = Some(e.payment_id);
            row
        }
        "OrderConfirmed" => {
            let row = row(rows)?;
            row.status = "confirmed";
            row
        }
        "OrderShipped" => {
            let row = row(rows)?;
            row.status = "shipped";
            row
        }
        "OrderRefunded" => {
            let row = row(rows)?;
            row.status = "refunded";
            row
        }
        "OrderCancelled" => {
            let e: Cancelled = decode(event)?;
            let row = row(rows)?;
            row.status = "cancelled";
            row.cancel_reason = Some(e.reason);
            row
        }
        _ => {
            super::fold_bump_version(rows.get_mut(&id).map(|r| &mut r.version), event);
            return Ok(());
        }
    };
    row.version = version;
    row.updated_at = time;
    Ok(())
}

/// Writes `rows` into `rm_orders` (of the connection's `search_path`).
pub(crate) async fn write(conn: &mut PgConnection, rows: &Rows) -> Result<(), sqlx::Error> {
    let mut copy = super::CopyText::default();
    for (id, r) in rows {
        copy.uuid(*id)
            .uuid(r.user_id)
            .json(&r.lines)
            .int(r.total_amount)
            .text(&r.total_currency)
            .text(r.status)
            .opt_text(r.cancel_reason.as_deref())
            .opt_uuid(r.payment_id)
            .int(r.version)
            .time(r.placed_at)
            .time(r.updated_at)
            .end();
    }
    copy.copy_into(
        conn,
        "rm_orders (id, user_id, lines, total_amount, total_currency, status, cancel_reason,
             payment_id, version, placed_at, updated_at)",
    )
    .await
}
