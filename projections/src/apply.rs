//! Applying a batch of events to one projection, exactly once each.
//!
//! `projection_applied` holds, per projection and aggregate, the last sequence
//! applied; it is read (and locked) and written in the same transaction as the
//! read-model rows, so a redelivered event is recognised and skipped. An
//! event that arrives before its predecessor brings the missing ones from the
//! events table (the source of truth) and is applied after them; only if the
//! store lacks them too does it wait for a later delivery.

use std::collections::{BTreeSet, HashMap, HashSet};

use schemas::EventEnvelope;
use sqlx::{PgConnection, PgPool};

use crate::changes::Change;
use crate::error::ProjectionError;
use crate::projection::Projection;

/// What became of one event of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Applied now; these rows changed (possibly none).
    Applied(Vec<Change>),
    /// Applied before (its sequence is not above the last one applied).
    Duplicate,
    /// Not an aggregate this projection follows (product events reaching the
    /// notifications projection); nothing to do.
    Skipped,
    /// An earlier event of its aggregate is missing: `last` is the last
    /// sequence applied. Left for a later delivery.
    Gap { last: i64 },
    /// Could not be applied; nothing of it was written.
    Failed(ProjectionError),
}

impl Outcome {
    /// Done with: the message can be acknowledged.
    pub fn is_done(&self) -> bool {
        matches!(self, Self::Applied(_) | Self::Duplicate | Self::Skipped)
    }
}

/// Applies `events` to `projection` in one transaction and returns one
/// outcome per event, in the order given. Events are applied in global
/// position order (a redelivered older event goes first). If one event fails,
/// the batch is rolled back and every event is retried in a transaction of its
/// own, so the failure is reported for that event only. `Err` means the batch
/// as a whole could not run (the database is unreachable): nothing is known
/// about the events, and some of them may have been applied.
pub async fn apply_batch(
    pool: &PgPool,
    projection: Projection,
    events: &[EventEnvelope],
) -> Result<Vec<Outcome>, ProjectionError> {
    apply_batch_in(pool, projection, events, None).await
}

enum BatchError {
    /// The event at this index (into `events`) failed; the batch was rolled back.
    Event {
        index: usize,
        error: ProjectionError,
    },
    /// Not due to one event: begin, lock, bookkeeping or commit failed.
    Batch(ProjectionError),
}

/// `apply_batch`, with `search_path` set to `schema, public` when given (a
/// rebuild writes another schema's copies of the tables).
pub(crate) async fn apply_batch_in(
    pool: &PgPool,
    projection: Projection,
    events: &[EventEnvelope],
    schema: Option<&str>,
) -> Result<Vec<Outcome>, ProjectionError> {
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by_key(|&i| (events[i].position, i));

    let mut outcomes: Vec<Option<Outcome>> = vec![None; events.len()];
    let failed = match run_batch(pool, projection, events, &order, schema).await {
        Ok(done) => {
            for (index, outcome) in done {
                outcomes[index] = Some(outcome);
            }
            None
        }
        Err(BatchError::Event { index, error }) => Some((Some(index), error)),
        // A value the database refuses (a NUL byte in an id) fails the
        // bookkeeping statements for the whole batch: find the event.
        Err(BatchError::Batch(error @ ProjectionError::Poison(_))) => Some((None, error)),
        Err(BatchError::Batch(error)) => return Err(error),
    };
    if let Some((index, error)) = failed {
        if events.len() == 1 {
            outcomes[0] = Some(Outcome::Failed(error));
        } else {
            let event = index.map(|i| &events[i]);
            tracing::warn!(
                projection = projection.name(),
                aggregate_type = event.map(|e| e.aggregate_type.as_str()),
                aggregate_id = event.map(|e| e.aggregate_id.as_str()),
                sequence = event.map(|e| e.sequence),
                correlation_id = event.and_then(EventEnvelope::correlation_id),
                %error,
                batch = events.len(),
                "applying the batch one event at a time after a failure"
            );
            for &i in &order {
                outcomes[i] = Some(
                    match run_batch(pool, projection, events, &[i], schema).await {
                        Ok(mut done) => done.pop().map(|(_, o)| o).expect("one outcome"),
                        Err(BatchError::Event { error, .. })
                        | Err(BatchError::Batch(error @ ProjectionError::Poison(_))) => {
                            Outcome::Failed(error)
                        }
                        Err(BatchError::Batch(error)) => return Err(error),
                    },
                );
            }
        }
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.expect("every event has an outcome"))
        .collect())
}

/// A row of the events table, as projections read it from the store.
#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: serde_json::Value,
    metadata: serde_json::Value,
    position: i64,
    recorded_at: chrono::DateTime<chrono::Utc>,
}

impl EventRow {
    /// The envelope at the event's current version (a stored old version
    /// is upcast).
    pub(crate) fn into_envelope(self) -> EventEnvelope {
        EventEnvelope {
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            sequence: self.sequence,
            event_type: self.event_type,
            event_version: self.event_version,
            payload: self.payload,
            metadata: self.metadata,
            position: self.position,
            recorded_at: self.recorded_at,
        }
        .upcast()
    }
}

/// The stored events of `event`'s aggregate after sequence `after` and before
/// `event`, in order; fewer than the gap if the store lacks some.
async fn fetch_between(
    tx: &mut PgConnection,
    event: &EventEnvelope,
    after: i64,
) -> Result<Vec<EventEnvelope>, sqlx::Error> {
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload,
                metadata, position, recorded_at
           FROM events
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 AND sequence < $4
          ORDER BY sequence",
    )
    .bind(&event.aggregate_type)
    .bind(&event.aggregate_id)
    .bind(after)
    .bind(event.sequence)
    .fetch_all(&mut *tx)
    .await?;
    let mut found = Vec::with_capacity(rows.len());
    for (row, expected) in rows.into_iter().zip(after + 1..) {
        if row.sequence != expected {
            break;
        }
        found.push(row.into_envelope());
    }
    Ok(found)
}

/// Applies events fetched from the store inside a savepoint: true if all
/// applied, false (and nothing of them kept) if one of them failed.
async fn fill(
    tx: &mut PgConnection,
    projection: Projection,
    missing: &[EventEnvelope],
    changes: &mut Vec<Change>,
) -> Result<bool, sqlx::Error> {
    sqlx::query("SAVEPOINT fill").execute(&mut *tx).await?;
    let mut found = Vec::new();
    for event in missing {
        match projection.apply(&mut *tx, event).await {
            Ok(more) => found.extend(more),
            Err(error) => {
                tracing::warn!(
                    projection = projection.name(),
                    aggregate_id = %event.aggregate_id,
                    sequence = event.sequence,
                    %error,
                    "a missing event from the store cannot be applied"
                );
                sqlx::query("ROLLBACK TO SAVEPOINT fill")
                    .execute(&mut *tx)
                    .await?;
                return Ok(false);
            }
        }
    }
    sqlx::query("RELEASE SAVEPOINT fill")
        .execute(&mut *tx)
        .await?;
    changes.extend(found);
    Ok(true)
}

/// One transaction over `events[order[..]]`, applied in that order.
async fn run_batch(
    pool: &PgPool,
    projection: Projection,
    events: &[EventEnvelope],
    order: &[usize],
    schema: Option<&str>,
) -> Result<Vec<(usize, Outcome)>, BatchError> {
    let batch = |err: sqlx::Error| BatchError::Batch(err.into());
    let mut tx = pool.begin().await.map_err(batch)?;
    match schema {
        Some(schema) => set_search_path(&mut tx, schema).await.map_err(batch)?,
        // The live tables: a replay swapping this projection holds the lock
        // exclusively, so this waits for the swap and then writes the new
        // tables, where `projection_applied` tells what is done.
        None => crate::replay::hold_shared(&mut tx, projection)
            .await
            .map_err(batch)?,
    }

    let keys: BTreeSet<(&str, &str)> = order
        .iter()
        .map(|&i| &events[i])
        .filter(|e| projection.tracks(&e.aggregate_type))
        .map(|e| (e.aggregate_type.as_str(), e.aggregate_id.as_str()))
        .collect();
    let mut last = lock_applied(&mut tx, projection, &keys)
        .await
        .map_err(batch)?;

    let mut done = Vec::with_capacity(order.len());
    let mut blocked: HashSet<(String, String)> = HashSet::new();
    let mut advanced: HashSet<(String, String)> = HashSet::new();
    let mut applied = 0i64;
    let mut position: Option<i64> = None;
    for &index in order {
        let event = &events[index];
        if !projection.tracks(&event.aggregate_type) {
            position = position.max(Some(event.position));
            done.push((index, Outcome::Skipped));
            continue;
        }
        let key = (event.aggregate_type.clone(), event.aggregate_id.clone());
        let seen = last.get(&key).copied().unwrap_or(0);
        // The events between the last applied and this one were committed
        // before it, so the store has them: apply them from there rather than
        // wait for their messages, whose redelivery (after a worker died with
        // them in hand) can take a while. Those messages then arrive as
        // duplicates.
        let missing = if event.sequence > seen + 1 && !blocked.contains(&key) {
            fetch_between(&mut tx, event, seen).await.map_err(batch)?
        } else {
            Vec::new()
        };
        let mut changes = Vec::new();
        let filled = event.sequence == seen + 1 + missing.len() as i64
            && !blocked.contains(&key)
            && (missing.is_empty()
                || fill(&mut tx, projection, &missing, &mut changes)
                    .await
                    .map_err(batch)?);
        let outcome = if event.sequence <= seen {
            Outcome::Duplicate
        } else if !filled {
            // A missing event that cannot be applied either is its own
            // message's problem (it will be dead-lettered): this one waits.
            blocked.insert(key);
            Outcome::Gap { last: seen }
        } else {
            match projection.apply(&mut tx, event).await {
                Ok(more) => changes.extend(more),
                Err(error) => return Err(BatchError::Event { index, error }),
            }
            applied += 1 + missing.len() as i64;
            position = position.max(Some(event.position));
            last.insert(key.clone(), event.sequence);
            advanced.insert(key);
            Outcome::Applied(changes)
        };
        done.push((index, outcome));
    }

    if !advanced.is_empty() {
        let mut types = Vec::with_capacity(advanced.len());
        let mut ids = Vec::with_capacity(advanced.len());
        let mut sequences = Vec::with_capacity(advanced.len());
        for key in &advanced {
            sequences.push(last[key]);
            types.push(key.0.as_str());
            ids.push(key.1.as_str());
        }
        sqlx::query(
            "UPDATE projection_applied p SET sequence = u.s
             FROM unnest($2::text[], $3::text[], $4::int8[]) AS u(t, i, s)
             WHERE p.projection = $1 AND p.aggregate_type = u.t AND p.aggregate_id = u.i",
        )
        .bind(projection.name())
        .bind(&types)
        .bind(&ids)
        .bind(&sequences)
        .execute(&mut *tx)
        .await
        .map_err(batch)?;
    }
    if let Some(position) = position {
        sqlx::query(
            "INSERT INTO projection_checkpoints (projection, position, events_applied, updated_at)
             VALUES ($1, $2, $3, now())
             ON CONFLICT (projection) DO UPDATE SET
                 position = greatest(projection_checkpoints.position, EXCLUDED.position),
                 events_applied = projection_checkpoints.events_applied + EXCLUDED.events_applied,
                 updated_at = now()",
        )
        .bind(projection.name())
        .bind(position)
        .bind(applied)
        .execute(&mut *tx)
        .await
        .map_err(batch)?;
    }
    tx.commit().await.map_err(batch)?;
    Ok(done)
}

pub(crate) async fn set_search_path(
    conn: &mut PgConnection,
    schema: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "SET LOCAL search_path TO {}, public",
        quote_ident(schema)
    ))
    .execute(conn)
    .await
    .map(|_| ())
}

pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Locks the `projection_applied` rows of `keys` (creating missing ones at 0
/// first, so two workers racing on a new aggregate serialize on its row) and
/// returns their sequences.
async fn lock_applied(
    conn: &mut PgConnection,
    projection: Projection,
    keys: &BTreeSet<(&str, &str)>,
) -> Result<HashMap<(String, String), i64>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let types: Vec<&str> = keys.iter().map(|k| k.0).collect();
    let ids: Vec<&str> = keys.iter().map(|k| k.1).collect();
    sqlx::query(
        "INSERT INTO projection_applied (projection, aggregate_type, aggregate_id, sequence)
         SELECT $1, k.t, k.i, 0 FROM unnest($2::text[], $3::text[]) AS k(t, i) ORDER BY k.t, k.i
         ON CONFLICT (projection, aggregate_type, aggregate_id) DO NOTHING",
    )
    .bind(projection.name())
    .bind(&types)
    .bind(&ids)
    .execute(&mut *conn)
    .await?;
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT p.aggregate_type, p.aggregate_id, p.sequence FROM projection_applied p
         JOIN unnest($2::text[], $3::text[]) AS k(t, i) ON p.aggregate_type = k.t AND p.aggregate_id = k.i
         WHERE p.projection = $1
         ORDER BY p.aggregate_type, p.aggregate_id
         FOR UPDATE OF p",
    )
    .bind(projection.name())
    .bind(&types)
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|(t, i, s)| ((t, i), s)).collect())
}

/// Records events as done without applying them (they were dead-lettered),
/// so the later events of their aggregates are not held up behind them
/// forever. Never moves a sequence backwards.
pub(crate) async fn mark_skipped(
    conn: &mut PgConnection,
    projection: Projection,
    events: &[(String, String, i64)],
) -> Result<(), sqlx::Error> {
    let events: Vec<_> = events
        .iter()
        .filter(|(aggregate_type, _, _)| projection.tracks(aggregate_type))
        .collect();
    if events.is_empty() {
        return Ok(());
    }
    let types: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    let ids: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    let sequences: Vec<i64> = events.iter().map(|e| e.2).collect();
    sqlx::query(
        "INSERT INTO projection_applied (projection, aggregate_type, aggregate_id, sequence)
         SELECT $1, k.t, k.i, max(k.s) FROM unnest($2::text[], $3::text[], $4::int8[]) AS k(t, i, s)
         GROUP BY k.t, k.i ORDER BY k.t, k.i
         ON CONFLICT (projection, aggregate_type, aggregate_id) DO UPDATE
             SET sequence = greatest(projection_applied.sequence, EXCLUDED.sequence)",
    )
    .bind(projection.name())
    .bind(&types)
    .bind(&ids)
    .bind(&sequences)
    .execute(conn)
    .await?;
    Ok(())
}
