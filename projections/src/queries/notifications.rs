//! `rm_notifications`: a user's notifications, newest first.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::{bad_cursor, Page, PageRequest, QueryError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, JsonSchema)]
pub struct NotificationView {
    pub id: Uuid,
    /// `welcome`, `order_confirmed`, `order_cancelled`, `order_shipped` or
    /// `payment_refunded`.
    #[schemars(extend("enum" = ["welcome", "order_confirmed", "order_cancelled", "order_shipped", "payment_refunded"]))]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// Newest first: by `created_at`, then id, both descending. The cursor is
/// `<created_at in microseconds since the epoch>.<id>` of the last row.
pub async fn notifications_of_user(
    pool: &PgPool,
    user_id: Uuid,
    page: &PageRequest,
) -> Result<Page<NotificationView>, QueryError> {
    let (before_time, before_id) = match page.cursor_text()? {
        None => (None, None),
        Some(text) => {
            let (time, id) = parse_cursor(&text).ok_or_else(bad_cursor)?;
            (Some(time), Some(id))
        }
    };
    let rows = sqlx::query_as::<_, NotificationView>(
        "SELECT id, kind, order_id, created_at FROM rm_notifications \
         WHERE user_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3)) \
         ORDER BY created_at DESC, id DESC LIMIT $4",
    )
    .bind(user_id)
    .bind(before_time)
    .bind(before_id)
    .bind(page.fetch())
    .fetch_all(pool)
    .await?;
    page.page(
        rows,
        |r| format!("{}.{}", r.created_at.timestamp_micros(), r.id),
        Ok,
    )
}

/// A user's notifications after the `after`-th (oldest first, 1-based),
/// each with its ordinal: the ids of the live-update stream. At most `limit`,
/// the newest of them.
pub async fn notifications_after(
    pool: &PgPool,
    user_id: Uuid,
    after: i64,
    limit: i64,
) -> Result<Vec<(i64, NotificationView)>, QueryError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        n: i64,
        #[sqlx(flatten)]
        view: NotificationView,
    }
    let mut rows = sqlx::query_as::<_, Row>(
        "SELECT * FROM (SELECT id, kind, order_id, created_at, \
                row_number() OVER (ORDER BY created_at, id) AS n \
             FROM rm_notifications WHERE user_id = $1) numbered \
         WHERE n > $2 ORDER BY n DESC LIMIT $3",
    )
    .bind(user_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.reverse();
    Ok(rows.into_iter().map(|r| (r.n, r.view)).collect())
}

fn parse_cursor(text: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let (micros, id) = text.split_once('.')?;
    let time = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    Some((time, Uuid::parse_str(id).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip() {
        let time = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let id = Uuid::now_v7();
        let text = format!("{}.{}", time.timestamp_micros(), id);
        assert_eq!(parse_cursor(&text), Some((time, id)));
        assert_eq!(parse_cursor(&id.to_string()), None);
        assert_eq!(parse_cursor("x.y"), None);
    }
}
