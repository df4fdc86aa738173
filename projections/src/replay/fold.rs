//! A projection built in memory from a stream of events, then written in bulk:
//! the fast path of a replay. The models' folds are the live ones
//! (`models/`); this is the bookkeeping around them, which mirrors
//! `apply_recorded` (per aggregate the last sequence done, failures skipped
//! and recorded, as the live worker's dead letters are).

use std::collections::HashMap;

use schemas::{EventEnvelope, Recorded};
use sqlx::PgConnection;

use crate::model::AnyModel;
use crate::projection::Projection;
use crate::subscriber::Subscriber;
use crate::table::{AnyTable, Mode};

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

pub(crate) struct Fold {
    pub projection: Projection,
    model: Box<dyn AnyModel>,
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
        Fold {
            projection,
            model: projection.model(Mode::Whole),
            last: HashMap::new(),
            received: 0,
            applied: 0,
            failures: Vec::new(),
        }
    }

    /// Applies one event, read in global position order: `event` is its
    /// decoding, and an error there is a failure of this event like any other.
    pub fn apply(&mut self, envelope: &EventEnvelope, event: &Result<Recorded, String>) {
        let projection = self.projection;
        if !projection.follows(&envelope.aggregate_type) {
            return;
        }
        self.received += 1;
        let key = (
            envelope.aggregate_type.clone(),
            envelope.aggregate_id.clone(),
        );
        let seen = self.last.get(&key).copied().unwrap_or(0);
        if envelope.sequence <= seen {
            return;
        }
        let result = if envelope.sequence != seen + 1 {
            // What a live batch waits for, and a replay reports, when the
            // store itself has a hole.
            Err(format!("an earlier event is missing (last done: {seen})"))
        } else {
            match event {
                Ok(event) => self
                    .model
                    .fold(event)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(error) => Err(format!("poison: {error}")),
            }
        };
        self.last.insert(key, envelope.sequence);
        match result {
            Ok(()) => self.applied += 1,
            Err(error) => self.failures.push(Failure {
                projection,
                event: envelope.clone(),
                error,
            }),
        }
    }

    /// The model's tables, to write by `COPY`.
    pub fn tables(&mut self) -> Vec<&mut dyn AnyTable> {
        self.model.tables()
    }

    /// Writes the last sequence per aggregate and the checkpoint into the
    /// tables of the connection's `search_path` (a shadow schema, whose
    /// tables start empty). The rows are written by [`Fold::tables`].
    pub async fn write_bookkeeping(
        &self,
        conn: &mut PgConnection,
        position: i64,
    ) -> Result<(), sqlx::Error> {
        let mut copy = crate::table::CopyText::default();
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
