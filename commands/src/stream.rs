//! An aggregate's stream exactly as stored, for `GET /aggregates/{type}/{id}/events`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

use crate::error::StoreError;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct StoredEvent {
    /// 1-based position in the aggregate's stream.
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// The event as stored, `{"<event_type>": {...}}`; its JSON Schema is
    /// `schemas/json/events/<aggregate>/<event_type>.v<event_version>.json`.
    pub payload: Value,
    /// `correlation_id`, `causation_id`, `actor`, `time`.
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
    pub position: i64,
}

pub async fn read_stream(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<StoredEvent>, StoreError> {
    Ok(sqlx::query_as::<_, StoredEvent>(
        "SELECT sequence, event_type, event_version, payload, metadata, recorded_at, position FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_all(pool)
    .await?)
}
