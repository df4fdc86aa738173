//! A projection built in memory from a stream of events, then written in bulk:
//! the fast path of a replay. Each model's fold sits beside its SQL in
//! `models/`; this is the bookkeeping around them, which mirrors
//! `apply_batch` (per aggregate the last sequence done, failures skipped and
//! recorded, as the live worker's dead letters are).

use std::collections::HashMap;

use schemas::EventEnvelope;
use sqlx::PgConnection;

use crate::error::ProjectionError;
use crate::models;
use crate::projection::Projection;

/// An event a replay could not apply.
#[derive(Debug, Clone)]
pub struct Failure {
    pub projection: Projection,
    pub event: EventEnvelope,
    pub error: String,
}

impl Failure {
    pub fn describe(&self) -> String {
        format!(
            "{}: {} {} sequence {} ({}, position {}): {}",
            self.projection.name(),
            self.event.aggregate_type,
            self.event.aggregate_id,
            self.event.sequence,
            self.event.event_type,
            self.event.position,
            self.error
        )
    }
}

enum Rows {
    Users(models::users::Rows),
    Products(models::products::Rows),
    Orders(models::orders::Rows),
    Payments(models::payments::Rows),
    Notifications(models::notifications::Rows),
}

pub(crate) struct Fold {
    pub projection: Projection,
    rows: Rows,
    /// Per aggregate, the last sequence done (applied or failed):
    /// `projection_applied`.
    last: HashMap<(String, String), i64>,
    /// Events of the aggregate types this projection receives.
    pub received: u64,
    pub applied: u64,
    pub failures: Vec<Failure>,
}

impl Fold {
    pub fn new(projection: Projection) -> Fold {
        let rows = match projection {
            Projection::Users => Rows::Users(Default::default()),
            Projection::Products => Rows::Products(Default::default()),
            Projection::Orders => Rows::Orders(Default::default()),
            Projection::Payments => Rows::Payments(Default::default()),
            Projection::Notifications => Rows::Notifications(Default::default()),
        };
        Fold {
            projection,
            rows,
            last: HashMap::new(),
            received: 0,
            applied: 0,
            failures: Vec::new(),
        }
    }

    /// Applies one event, read in global position order.
    pub fn apply(&mut self, event: &EventEnvelope) {
        let projection = self.projection;
        if !projection
            .aggregate_types()
            .contains(&event.aggregate_type.as_str())
        {
            return;
        }
        self.received += 1;
        if !projection.tracks(&event.aggregate_type) {
            return;
        }
        let key = (event.aggregate_type.clone(), event.aggregate_id.clone());
        let seen = self.last.get(&key).copied().unwrap_or(0);
        if event.sequence <= seen {
            return;
        }
        let result = if event.sequence != seen + 1 {
            // What `apply_batch` waits for, and a rebuild reports, when the
            // store itself has a hole.
            Err(ProjectionError::Poison(format!(
                "an earlier event is missing (last done: {seen})"
            )))
        } else {
            match &mut self.rows {
                Rows::Users(rows) => models::users::fold(rows, event),
                Rows::Products(rows) => models::products::fold(rows, event),
                Rows::Orders(rows) => models::orders::fold(rows, event),
                Rows::Payments(rows) => models::payments::fold(rows, event),
                Rows::Notifications(rows) => models::notifications::fold(rows, event),
            }
        };
        self.last.insert(key, event.sequence);
        match result {
            Ok(()) => self.applied += 1,
            Err(error) => self.failures.push(Failure {
                projection,
                event: event.clone(),
                error: error.to_string(),
            }),
        }
    }

    /// Writes the rows, the last sequence per aggregate and the checkpoint
    /// into the tables of the connection's `search_path` (a shadow schema,
    /// whose tables start empty).
    pub async fn write(&self, conn: &mut PgConnection, position: i64) -> Result<(), sqlx::Error> {
        match &self.rows {
            Rows::Users(rows) => models::users::write(conn, rows).await?,
            Rows::Products(rows) => models::products::write(conn, rows).await?,
            Rows::Orders(rows) => models::orders::write(conn, rows).await?,
            Rows::Payments(rows) => models::payments::write(conn, rows).await?,
            Rows::Notifications(rows) => models::notifications::write(conn, rows).await?,
        }
        let mut copy = models::CopyText::default();
        for ((aggregate_type, aggregate_id), sequence) in &self.last {
            copy.text(self.projection.name())
                .text(aggregate_type)
                .text(aggregate_id)
                .int(*sequence)
                .end();
        }
        copy.copy_into(
            &mut *conn,
            "projection_applied (projection, aggregate_type, aggregate_id, sequence)",
        )
        .await?;
        sqlx::query(
            "INSERT INTO projection_checkpoints (projection, position, events_applied, updated_at)
             VALUES ($1, $2, $3, now())",
        )
        .bind(self.projection.name())
        .bind(position)
        .bind(i64::try_from(self.applied).unwrap_or(i64::MAX))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
