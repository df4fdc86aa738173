//! How far each subscriber has come, measured against the events table.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::subscriber::Subscriber;

/// The most unapplied events a status counts; past it the lag reads as this.
pub const LAG_CAP: i64 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectionStatus {
    pub name: String,
    /// The highest global position applied (0 before the first event).
    pub position: i64,
    /// Committed events of the aggregates it follows that it has not
    /// applied (nor dead-lettered) yet, counted in the events table (up to
    /// [`LAG_CAP`]): 0 means caught up with the store, whatever the broker
    /// delivered or lost.
    pub lag: i64,
    pub events_applied: i64,
    /// Events the repair found missing and applied from the events table.
    pub repaired: i64,
    /// Messages this subscriber gave up on.
    pub dead_letters: i64,
    /// When it last applied something; `None` before the first event.
    pub updated_at: Option<DateTime<Utc>>,
}

/// The status of each subscriber, in the order given.
///
/// The lag counts the committed events of the aggregates it follows that it
/// has not applied: those past the furthest one applied (an index range,
/// cheap however long), and those before it but after the repair's
/// watermark whose sequence is above what it applied of their aggregate
/// (what the broker skipped or lost; the repair keeps the watermark within a
/// second or so of the newest applied event, so a few rows).
pub async fn status(
    pool: &PgPool,
    subscribers: &[&dyn Subscriber],
) -> Result<Vec<ProjectionStatus>, sqlx::Error> {
    let mut statuses = Vec::with_capacity(subscribers.len());
    for subscriber in subscribers {
        let name = subscriber.name();
        type Row = (i64, i64, i64, i64, Option<DateTime<Utc>>);
        let (position, events_applied, repaired, dead_letters, updated_at): Row = sqlx::query_as(
            "SELECT coalesce(c.position, 0), coalesce(c.events_applied, 0),
                    coalesce((SELECT repaired FROM subscriber_watermarks WHERE name = $1), 0),
                    (SELECT count(*) FROM dead_letters d WHERE d.projection = $1),
                    c.updated_at
               FROM (SELECT 1) one
               LEFT JOIN projection_checkpoints c ON c.projection = $1",
        )
        .bind(name)
        .fetch_one(pool)
        .await?;
        // Unapplied between the watermark and the furthest event applied (what
        // the broker skipped or lost), then everything past it. Looked up
        // per event, as the repair does (see there why).
        let missing: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (
                 SELECT 1 FROM events e
                 LEFT JOIN LATERAL (
                      SELECT q.sequence FROM projection_applied q
                       WHERE q.projection = $1 AND q.aggregate_type = e.aggregate_type
                         AND q.aggregate_id = e.aggregate_id
                       LIMIT 1) p ON TRUE
                 WHERE e.position > coalesce((SELECT position FROM subscriber_watermarks WHERE name = $1), 0)
                   AND e.position <= $2
                   AND (e.aggregate_type = ANY($3)) IS TRUE
                   AND coalesce(p.sequence, 0) < e.sequence
                 LIMIT $4) unapplied",
        )
        .bind(name)
        .bind(position)
        .bind(subscriber.aggregate_types())
        .bind(LAG_CAP)
        .fetch_one(pool)
        .await?;
        let ahead: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (
                 SELECT 1 FROM events WHERE position > $1 AND aggregate_type = ANY($2) LIMIT $3
             ) ahead",
        )
        .bind(position)
        .bind(subscriber.aggregate_types())
        .bind(LAG_CAP)
        .fetch_one(pool)
        .await?;
        let lag = (missing + ahead).min(LAG_CAP);
        statuses.push(ProjectionStatus {
            name: name.to_owned(),
            position,
            lag,
            events_applied,
            repaired,
            dead_letters,
            updated_at,
        });
    }
    Ok(statuses)
}

/// Sets the subscriber gauges (`agora_projection_position`, `_lag_events`,
/// `_dead_letters`, `_repaired_events`) from the statuses, as `agora
/// projections` would print them. A sampler calls it periodically in
/// processes running projectors or the saga.
pub fn record_metrics(statuses: &[ProjectionStatus]) {
    for status in statuses {
        let projection = status.name.clone();
        metrics::gauge!("agora_projection_position", "projection" => projection.clone())
            .set(status.position as f64);
        metrics::gauge!("agora_projection_lag_events", "projection" => projection.clone())
            .set(status.lag as f64);
        metrics::gauge!("agora_projection_repaired_events", "projection" => projection.clone())
            .set(status.repaired as f64);
        metrics::gauge!("agora_projection_dead_letters", "projection" => projection)
            .set(status.dead_letters as f64);
    }
}
