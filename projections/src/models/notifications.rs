//! `rm_notifications`: what a user is told, one row per (source event, kind).
//!
//! Order and payment events do not carry the user, so this model keeps its
//! own maps (order → user from `OrderPlaced`, payment → order from
//! `PaymentRequested`) instead of reading another projection's tables. An
//! event whose map entry is not there yet (its aggregate's first event is
//! still on its way) is retryable.

use chrono::{DateTime, Utc};
use schemas::EventEnvelope;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{aggregate_uuid, change, decode, event_time};
use crate::changes::Change;
use crate::error::ProjectionError;

const MODEL: &str = "notifications";

#[derive(Deserialize)]
struct OrderPlaced {
    user_id: Uuid,
}

#[derive(Deserialize)]
struct PaymentRequested {
    order_id: Uuid,
}

/// The key that makes a notification exactly-once: the source event and kind.
pub(crate) fn source(event: &EventEnvelope, kind: &str) -> String {
    format!("{}:{kind}", event.message_id())
}

/// A notification's id, derived from its source so a rebuild finds the same
/// (a version 8 UUID over the source's SHA-256).
pub(crate) fn notification_id(source: &str) -> Uuid {
    let digest = Sha256::digest(source.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

pub(crate) async fn apply(
    conn: &mut PgConnection,
    event: &EventEnvelope,
) -> Result<Vec<Change>, ProjectionError> {
    let time = event_time(event);
    match (event.aggregate_type.as_str(), event.event_type.as_str()) {
        ("user", "UserRegistered") => {
            let user_id = aggregate_uuid(event)?;
            notify(conn, event, user_id, "welcome", None, time).await
        }
        ("order", "OrderPlaced") => {
            let order_id = aggregate_uuid(event)?;
            let e: OrderPlaced = decode(event)?;
            sqlx::query(
                "INSERT INTO rm_notification_orders (order_id, user_id) VALUES ($1, $2)
                 ON CONFLICT (order_id) DO NOTHING",
            )
            .bind(order_id)
            .bind(e.user_id)
            .execute(&mut *conn)
            .await?;
            Ok(Vec::new())
        }
        ("order", kind @ ("OrderConfirmed" | "OrderCancelled" | "OrderShipped")) => {
            let order_id = aggregate_uuid(event)?;
            let user_id = order_user(conn, event, order_id).await?;
            let kind = match kind {
                "OrderConfirmed" => "order_confirmed",
                "OrderCancelled" => "order_cancelled",
                _ => "order_shipped",
            };
            notify(conn, event, user_id, kind, Some(order_id), time).await
        }
        ("payment", "PaymentRequested") => {
            let payment_id = aggregate_uuid(event)?;
            let e: PaymentRequested = decode(event)?;
            sqlx::query(
                "INSERT INTO rm_notification_payments (payment_id, order_id) VALUES ($1, $2)
                 ON CONFLICT (payment_id) DO NOTHING",
            )
            .bind(payment_id)
            .bind(e.order_id)
            .execute(&mut *conn)
            .await?;
            Ok(Vec::new())
        }
        ("payment", "PaymentRefunded") => {
            let payment_id = aggregate_uuid(event)?;
            let order_id: Option<Uuid> = sqlx::query_scalar(
                "SELECT order_id FROM rm_notification_payments WHERE payment_id = $1",
            )
            .bind(payment_id)
            .fetch_optional(&mut *conn)
            .await?;
            let Some(order_id) = order_id else {
                return Err(ProjectionError::Retryable(format!(
                    "PaymentRefunded of payment {payment_id}: its PaymentRequested is not applied yet"
                )));
            };
            let user_id = order_user(conn, event, order_id).await?;
            notify(
                conn,
                event,
                user_id,
                "payment_refunded",
                Some(order_id),
                time,
            )
            .await
        }
        _ => Ok(Vec::new()),
    }
}

async fn order_user(
    conn: &mut PgConnection,
    event: &EventEnvelope,
    order_id: Uuid,
) -> Result<Uuid, ProjectionError> {
    let user_id: Option<Uuid> =
        sqlx::query_scalar("SELECT user_id FROM rm_notification_orders WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(&mut *conn)
            .await?;
    user_id.ok_or_else(|| {
        ProjectionError::Retryable(format!(
            "{} of {} {}: order {order_id} has no OrderPlaced applied yet",
            event.event_type, event.aggregate_type, event.aggregate_id
        ))
    })
}

async fn notify(
    conn: &mut PgConnection,
    event: &EventEnvelope,
    user_id: Uuid,
    kind: &str,
    order_id: Option<Uuid>,
    time: DateTime<Utc>,
) -> Result<Vec<Change>, ProjectionError> {
    let source = source(event, kind);
    let inserted = sqlx::query(
        "INSERT INTO rm_notifications (id, user_id, kind, order_id, source, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (source) DO NOTHING",
    )
    .bind(notification_id(&source))
    .bind(user_id)
    .bind(kind)
    .bind(order_id)
    .bind(&source)
    .bind(time)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(if inserted == 0 {
        Vec::new()
    } else {
        vec![change(MODEL, user_id, 0)]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = notification_id("user:1:1:welcome");
        assert_eq!(a, notification_id("user:1:1:welcome"));
        assert_ne!(a, notification_id("user:2:1:welcome"));
        assert_eq!(a.get_version_num(), 8);
    }
}

// The replay's fold: the same changes as `apply`, made in memory, and written
// in bulk into shadow tables. Kept beside the SQL above so the two change
// together; `fold_equals_the_live_path` (projections' tests) holds them to
// the same result.

/// An `rm_notifications` row in memory.
#[derive(Debug, Clone)]
struct Note {
    id: Uuid,
    user_id: Uuid,
    kind: &'static str,
    order_id: Option<Uuid>,
    source: String,
    created_at: DateTime<Utc>,
}

/// The three notification tables in memory.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    notes: Vec<Note>,
    sources: std::collections::HashSet<String>,
    /// `rm_notification_orders`: order → user.
    orders: std::collections::HashMap<Uuid, Uuid>,
    /// `rm_notification_payments`: payment → order.
    payments: std::collections::HashMap<Uuid, Uuid>,
}

/// Applies `event` to `rows`; on `Err` nothing changed.
pub(crate) fn fold(rows: &mut Rows, event: &EventEnvelope) -> Result<(), ProjectionError> {
    let time = event_time(event);
    let order_user = |rows: &Rows, order_id: Uuid| {
        rows.orders.get(&order_id).copied().ok_or_else(|| {
            ProjectionError::Retryable(format!(
                "{} of {} {}: order {order_id} has no OrderPlaced applied yet",
                event.event_type, event.aggregate_type, event.aggregate_id
            ))
        })
    };
    let (user_id, kind, order_id) = match (event.aggregate_type.as_str(), event.event_type.as_str())
    {
        ("user", "UserRegistered") => (aggregate_uuid(event)?, "welcome", None),
        ("order", "OrderPlaced") => {
            let order_id = aggregate_uuid(event)?;
            let e: OrderPlaced = decode(event)?;
            rows.orders.entry(order_id).or_insert(e.user_id);
            return Ok(());
        }
        ("order", kind @ ("OrderConfirmed" | "OrderCancelled" | "OrderShipped")) => {
            let order_id = aggregate_uuid(event)?;
            let user_id = order_user(rows, order_id)?;
            let kind = match kind {
                "OrderConfirmed" => "order_confirmed",
                "OrderCancelled" => "order_cancelled",
                _ => "order_shipped",
            };
            (user_id, kind, Some(order_id))
        }
        ("payment", "PaymentRequested") => {
            let payment_id = aggregate_uuid(event)?;
            let e: PaymentRequested = decode(event)?;
            rows.payments.entry(payment_id).or_insert(e.order_id);
            return Ok(());
        }
        ("payment", "PaymentRefunded") => {
            let payment_id = aggregate_uuid(event)?;
            let Some(&order_id) = rows.payments.get(&payment_id) else {
                return Err(ProjectionError::Retryable(format!(
                    "PaymentRefunded of payment {payment_id}: its PaymentRequested is not applied yet"
                )));
            };
            (
                order_user(rows, order_id)?,
                "payment_refunded",
                Some(order_id),
            )
        }
        _ => return Ok(()),
    };
    let source = source(event, kind);
    if rows.sources.insert(source.clone()) {
        rows.notes.push(Note {
            id: notification_id(&source),
            user_id,
            kind,
            order_id,
            source,
            created_at: time,
        });
    }
    Ok(())
}

/// Writes `rows` into the three tables (of the connection's `search_path`).
pub(crate) async fn write(conn: &mut PgConnection, rows: &Rows) -> Result<(), sqlx::Error> {
    let mut copy = super::CopyText::default();
    for n in &rows.notes {
        copy.uuid(n.id)
            .uuid(n.user_id)
            .text(n.kind)
            .opt_uuid(n.order_id)
            .text(&n.source)
            .time(n.created_at)
            .end();
    }
    copy.copy_into(
        &mut *conn,
        "rm_notifications (id, user_id, kind, order_id, source, created_at)",
    )
    .await?;
    for (target, map) in [
        ("rm_notification_orders (order_id, user_id)", &rows.orders),
        (
            "rm_notification_payments (payment_id, order_id)",
            &rows.payments,
        ),
    ] {
        let mut copy = super::CopyText::default();
        for (key, value) in map {
            copy.uuid(*key).uuid(*value).end();
        }
        copy.copy_into(&mut *conn, target).await?;
    }
    Ok(())
}
