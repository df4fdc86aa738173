//! `rm_payments`: one row per payment, with how many gateway attempts it took.

use schemas::EventEnvelope;
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{aggregate_uuid, bump_version, change, decode, event_time, expect_row, Money};
use crate::changes::Change;
use crate::error::ProjectionError;

const MODEL: &str = "payments";

#[derive(Deserialize)]
struct Requested {
    order_id: Uuid,
    amount: Money,
}

#[derive(Deserialize)]
struct AttemptFailed {
    error: String,
}

#[derive(Deserialize)]
struct Refused {
    reason: String,
}

pub(crate) async fn apply(
    conn: &mut PgConnection,
    event: &EventEnvelope,
) -> Result<Vec<Change>, ProjectionError> {
    if event.aggregate_type != "payment" {
        return Ok(Vec::new());
    }
    let id = aggregate_uuid(event)?;
    let time = event_time(event);
    let version = event.sequence;
    // (new status or NULL to keep it, attempts to add, new last_error or NULL to keep it)
    let (status, attempts, last_error): (Option<&str>, i32, Option<String>) =
        match event.event_type.as_str() {
            "PaymentRequested" => {
                let e: Requested = decode(event)?;
                let rows = sqlx::query(
                    "INSERT INTO rm_payments (id, order_id, amount, currency, status, attempts,
                         last_error, version, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, 'pending', 0, NULL, $5, $6, $6)
                     ON CONFLICT (id) DO UPDATE SET order_id = EXCLUDED.order_id,
                         amount = EXCLUDED.amount, currency = EXCLUDED.currency,
                         status = EXCLUDED.status, attempts = 0, last_error = NULL,
                         version = EXCLUDED.version, created_at = EXCLUDED.created_at,
                         updated_at = EXCLUDED.updated_at",
                )
                .bind(id)
                .bind(e.order_id)
                .bind(e.amount.amount)
                .bind(&e.amount.currency)
                .bind(version)
                .bind(time)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                expect_row(rows, "rm_payments", event)?;
                return Ok(vec![change(MODEL, id, version)]);
            }
            "PaymentAttemptFailed" => (None, 1, Some(decode::<AttemptFailed>(event)?.error)),
            "PaymentAuthorized" => (Some("authorized"), 1, None),
            "PaymentDeclined" => (Some("declined"), 1, Some(decode::<Refused>(event)?.reason)),
            "PaymentFailed" => (Some("failed"), 1, Some(decode::<Refused>(event)?.reason)),
            "PaymentCaptured" => (Some("captured"), 0, None),
            "PaymentRefunded" => (Some("refunded"), 0, None),
            _ => return bump_version(conn, "rm_payments", MODEL, event).await,
        };
    let rows = sqlx::query(
        "UPDATE rm_payments SET status = coalesce($2, status), attempts = attempts + $3,
             last_error = coalesce($4, last_error), version = $5, updated_at = $6 WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(attempts)
    .bind(last_error)
    .bind(version)
    .bind(time)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    expect_row(rows, "rm_payments", event)?;
    Ok(vec![change(MODEL, id, version)])
}
