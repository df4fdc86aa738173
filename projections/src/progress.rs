//! How far each projection has come.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::projection::Projection;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectionStatus {
    pub name: String,
    /// The highest global position applied (0 before the first event).
    pub position: i64,
    /// How far the newest event this projection receives is ahead of
    /// `position` (0 when caught up).
    pub lag: i64,
    pub events_applied: i64,
    /// Messages this projection gave up on.
    pub dead_letters: i64,
    /// When it last applied something; `None` before the first event.
    pub updated_at: Option<DateTime<Utc>>,
}

/// The status of every projection of `Projection::ALL`, in that order.
///
/// The lag is `max(events.position) - position`, where the maximum is taken
/// over the events of the aggregate types the projection receives, so a
/// projection that has seen all of its events reports 0 even when others'
/// events came after. Only events past `position` are looked at (through the
/// position index), so this stays cheap while projections keep up.
pub async fn status(pool: &PgPool) -> Result<Vec<ProjectionStatus>, sqlx::Error> {
    let mut statuses = Vec::with_capacity(Projection::ALL.len());
    let names: Vec<&str> = Projection::ALL.iter().map(Projection::name).collect();
    type Row = (String, i64, i64, i64, Option<DateTime<Utc>>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT p.name, coalesce(c.position, 0), coalesce(c.events_applied, 0),
                (SELECT count(*) FROM dead_letters d WHERE d.projection = p.name),
                c.updated_at
         FROM unnest($1::text[]) WITH ORDINALITY AS p(name, ord)
         LEFT JOIN projection_checkpoints c ON c.projection = p.name
         ORDER BY p.ord",
    )
    .bind(&names)
    .fetch_all(pool)
    .await?;
    for (projection, (name, position, events_applied, dead_letters, updated_at)) in
        Projection::ALL.iter().zip(rows)
    {
        let newest: Option<i64> = sqlx::query_scalar(
            "SELECT max(position) FROM events WHERE position > $1 AND aggregate_type = ANY($2)",
        )
        .bind(position)
        .bind(projection.aggregate_types())
        .fetch_one(pool)
        .await?;
        statuses.push(ProjectionStatus {
            name,
            position,
            lag: newest.map_or(0, |newest| (newest - position).max(0)),
            events_applied,
            dead_letters,
            updated_at,
        });
    }
    Ok(statuses)
}

/// Sets the projection gauges (`agora_projection_position`, `_lag_events`,
/// `_dead_letters`) from the statuses, as `agora projections` would print
/// them. A sampler calls it periodically in processes running projectors.
pub fn record_metrics(statuses: &[ProjectionStatus]) {
    for status in statuses {
        let projection = status.name.clone();
        metrics::gauge!("agora_projection_position", "projection" => projection.clone())
            .set(status.position as f64);
        metrics::gauge!("agora_projection_lag_events", "projection" => projection.clone())
            .set(status.lag as f64);
        metrics::gauge!("agora_projection_dead_letters", "projection" => projection)
            .set(status.dead_letters as f64);
    }
}
