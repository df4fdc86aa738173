//! Applying a batch of events to one subscriber, exactly once each.
//!
//! `projection_applied` holds, per subscriber and aggregate, the last
//! sequence applied; it is read (and locked) and written in the same
//! transaction as the subscriber's own writes, so a redelivered event is
//! recognised and skipped. An event that arrives before its predecessor
//! brings the missing ones from the events table (the source of truth) and
//! is applied after them; only if the store lacks them too does it wait for
//! a later delivery.

use std::collections::{BTreeSet, HashMap};

use schemas::{EventEnvelope, Recorded};
use sqlx::{PgConnection, PgPool};

use crate::changes::Change;
use crate::error::ProjectionError;
use crate::subscriber::{Applied, Subscriber, LOCK_CLASS};

/// What became of one event of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Applied now; these rows changed (possibly none).
    Applied(Vec<Change>),
    /// Applied before (its sequence is not above the last one applied).
    Duplicate,
    /// Not an aggregate this subscriber follows (product events reaching
    /// the notifications projection); nothing to do.
    Skipped,
    /// An earlier event of its aggregate is missing or failed: `last` is the
    /// last sequence applied. Left for a later delivery.
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

/// Decodes `events` and applies them to `subscriber` (see
/// [`apply_recorded`]); an event that cannot be decoded fails as poison.
pub async fn apply_batch(
    pool: &PgPool,
    subscriber: &dyn Subscriber,
    events: &[EventEnvelope],
) -> Result<Vec<Outcome>, ProjectionError> {
    let decoded: Vec<Result<Recorded, String>> = events.iter().map(Recorded::decode).collect();
    let good: Vec<Recorded> = decoded
        .iter()
        .filter_map(|e| e.as_ref().ok().cloned())
        .collect();
    let mut outcomes = apply_recorded(pool, subscriber, &good, None)
        .await?
        .into_iter();
    Ok(decoded
        .into_iter()
        .map(|event| match event {
            Ok(_) => outcomes.next().expect("one outcome per decoded event"),
            Err(error) => Outcome::Failed(ProjectionError::Poison(error)),
        })
        .collect())
}

/// Applies `events` to `subscriber` in one transaction and returns one
/// outcome per event, in the order given. Events are applied in global
/// position order (a redelivered older event goes first). If the database
/// refuses the batch's values (a value it cannot store), every event is
/// applied in a transaction of its own, so the failure is reported for that
/// event only. `Err` means the batch as a whole could not run (the database
/// is unreachable): nothing of it was written.
///
/// With `schema`, `search_path` is `schema, public` (a replay's catch-up
/// writes its shadow copies of the tables) and no lock is taken.
pub(crate) async fn apply_recorded(
    pool: &PgPool,
    subscriber: &dyn Subscriber,
    events: &[Recorded],
    schema: Option<&str>,
) -> Result<Vec<Outcome>, ProjectionError> {
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by_key(|&i| (events[i].position, i));
    match run_settled(pool, subscriber, events, &order, schema).await {
        Ok(outcomes) => Ok(outcomes),
        Err(error @ ProjectionError::Retryable(_)) => Err(error),
        Err(error) if events.len() == 1 => Ok(vec![Outcome::Failed(error)]),
        Err(error) => {
            tracing::warn!(
                subscriber = subscriber.name(),
                %error,
                batch = events.len(),
                "the database refused the batch; applying it one event at a time"
            );
            let mut outcomes = vec![Outcome::Skipped; events.len()];
            for &i in &order {
                outcomes[i] = match run_settled(pool, subscriber, events, &[i], schema).await {
                    Ok(mut one) => one.pop().unwrap_or(Outcome::Skipped),
                    Err(error @ ProjectionError::Retryable(_)) => return Err(error),
                    Err(error) => Outcome::Failed(error),
                };
            }
            Ok(outcomes)
        }
    }
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
    /// The envelope, as stored (readers upcast when they decode it).
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
    }
}

/// The columns of an [`EventRow`], for `SELECT`s of the events table.
pub(crate) const EVENT_COLUMNS: &str = "aggregate_type, aggregate_id, sequence, event_type, \
    event_version, payload, metadata, position, recorded_at";

/// The stored events of `event`'s aggregate after sequence `after` and before
/// `event`, decoded, in order; fewer than the gap if the store lacks some or
/// one cannot be decoded (its own message will be dead-lettered).
async fn fetch_between(
    tx: &mut PgConnection,
    event: &Recorded,
    after: i64,
) -> Result<Vec<Recorded>, sqlx::Error> {
    let rows: Vec<EventRow> = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM events
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 AND sequence < $4
          ORDER BY sequence"
    ))
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
        match Recorded::decode(&row.into_envelope()) {
            Ok(recorded) => found.push(recorded),
            Err(_) => break,
        }
    }
    Ok(found)
}

/// One event of what a batch hands the subscriber: a batch event (its index
/// into `events`), or one brought from the store to fill a gap before it.
enum Planned {
    Batch(usize),
    Fill(Box<Recorded>),
}

/// Why one try of a batch did not commit.
enum Batch {
    /// Another worker applied some of its events meanwhile: try again.
    Raced,
    Failed(ProjectionError),
}

impl From<sqlx::Error> for Batch {
    fn from(error: sqlx::Error) -> Self {
        Batch::Failed(error.into())
    }
}

impl From<ProjectionError> for Batch {
    fn from(error: ProjectionError) -> Self {
        Batch::Failed(error)
    }
}

/// [`run_batch`] until it does not race another worker: each try reads what
/// is applied afresh, so a raced try's events turn out duplicates.
async fn run_settled(
    pool: &PgPool,
    subscriber: &dyn Subscriber,
    events: &[Recorded],
    order: &[usize],
    schema: Option<&str>,
) -> Result<Vec<Outcome>, ProjectionError> {
    let mut tries = 0;
    loop {
        match run_batch(pool, subscriber, events, order, schema).await {
            Ok(outcomes) => return Ok(outcomes),
            Err(Batch::Failed(error)) => return Err(error),
            Err(Batch::Raced) if tries < 16 => tries += 1,
            Err(Batch::Raced) => {
                return Err(ProjectionError::Retryable(format!(
                    "{}: another worker kept applying the same events",
                    subscriber.name()
                )))
            }
        }
    }
}

/// One transaction over `events[order[..]]`, applied in that order.
async fn run_batch(
    pool: &PgPool,
    subscriber: &dyn Subscriber,
    events: &[Recorded],
    order: &[usize],
    schema: Option<&str>,
) -> Result<Vec<Outcome>, Batch> {
    // Nothing it follows (product events reaching the notifications
    // projection): nothing to write, not even a checkpoint.
    if !order
        .iter()
        .any(|&i| subscriber.follows(&events[i].aggregate_type))
    {
        return Ok(vec![Outcome::Skipped; events.len()]);
    }
    // On the live tables (no schema) the lock is taken: a replay swapping
    // this projection holds it exclusively, so this waits for the swap and
    // then writes the new tables, where `projection_applied` tells what is
    // done.
    let mut tx = pool.begin_with(begin_for(subscriber, schema)).await?;

    let keys: BTreeSet<(&str, &str)> = order
        .iter()
        .map(|&i| &events[i])
        .filter(|e| subscriber.follows(&e.aggregate_type))
        .map(|e| (e.aggregate_type.as_str(), e.aggregate_id.as_str()))
        .collect();
    let applied_before = read_applied(&mut tx, subscriber.name(), &keys).await?;

    // What to hand the subscriber, and the outcomes decided without it.
    let mut outcomes: Vec<Option<Outcome>> = vec![None; events.len()];
    let mut plan: Vec<Planned> = Vec::new();
    let mut next: HashMap<(&str, &str), i64> = HashMap::new();
    let mut blocked: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut skipped_position = None;
    for &index in order {
        let event = &events[index];
        if !subscriber.follows(&event.aggregate_type) {
            skipped_position = skipped_position.max(Some(event.position));
            outcomes[index] = Some(Outcome::Skipped);
            continue;
        }
        let key = (event.aggregate_type.as_str(), event.aggregate_id.as_str());
        let before = applied_before.get(&key).copied().unwrap_or(0);
        let seen = next.get(&key).copied().unwrap_or(before);
        if event.sequence <= seen {
            outcomes[index] = Some(Outcome::Duplicate);
            continue;
        }
        if blocked.contains(&key) {
            outcomes[index] = Some(Outcome::Gap { last: seen });
            continue;
        }
        if event.sequence > seen + 1 {
            // The events between the last applied and this one were
            // committed before it, so the store has them: apply them from
            // there rather than wait for their messages, whose redelivery
            // (after a worker died with them in hand, or never, if the
            // broker lost them) can take a while. Those messages then arrive
            // as duplicates.
            let missing = fetch_between(&mut tx, event, seen).await?;
            if missing.len() as i64 != event.sequence - seen - 1 {
                blocked.insert(key);
                outcomes[index] = Some(Outcome::Gap { last: seen });
                continue;
            }
            plan.extend(missing.into_iter().map(|e| Planned::Fill(Box::new(e))));
        }
        plan.push(Planned::Batch(index));
        next.insert(key, event.sequence);
    }

    let handed: Vec<&Recorded> = plan
        .iter()
        .map(|planned| match planned {
            Planned::Batch(index) => &events[*index],
            Planned::Fill(event) => event,
        })
        .collect();
    let results = if handed.is_empty() {
        Vec::new()
    } else {
        subscriber.apply(&mut tx, &handed).await?
    };
    if results.len() != handed.len() {
        return Err(Batch::Failed(ProjectionError::Retryable(format!(
            "{} answered {} of {} events",
            subscriber.name(),
            results.len(),
            handed.len()
        ))));
    }

    // Per aggregate: the last sequence now applied, and the changes of
    // filled events, reported with the batch event they preceded.
    let mut last: HashMap<(&str, &str), i64> = HashMap::new();
    let mut filled: HashMap<(&str, &str), Vec<Change>> = HashMap::new();
    let mut applied = 0i64;
    let mut position = skipped_position;
    for ((planned, event), result) in plan.iter().zip(&handed).zip(results) {
        let key = (event.aggregate_type.as_str(), event.aggregate_id.as_str());
        match (planned, result) {
            (_, Applied::Done(changes)) => {
                applied += 1;
                position = position.max(Some(event.position));
                last.insert(key, event.sequence);
                let mut all = filled.remove(&key).unwrap_or_default();
                all.extend(changes);
                match planned {
                    Planned::Fill(_) => {
                        filled.insert(key, all);
                    }
                    Planned::Batch(index) => outcomes[*index] = Some(Outcome::Applied(all)),
                }
            }
            (Planned::Batch(index), Applied::Failed(error)) => {
                outcomes[*index] = Some(Outcome::Failed(error));
            }
            (Planned::Batch(index), Applied::Held) => {
                let before = applied_before.get(&key).copied().unwrap_or(0);
                let last = last.get(&key).copied().unwrap_or(before);
                outcomes[*index] = Some(Outcome::Gap { last });
            }
            // A filled event that failed is its own message's to report
            // (or the repair's, if the broker lost it); the subscriber holds
            // the batch event after it, which waits.
            (Planned::Fill(_), _) => {}
        }
    }

    // One statement: each advanced aggregate moves from the sequence read
    // above to its new one, and the checkpoint with them. A row that moved
    // meanwhile (another worker applied some of these events: a redelivery
    // raced its original) does not match, and the whole batch is done again.
    // Each row is found by its key (a lookup per aggregate, `LIMIT 1` so
    // the planner cannot make it a join) and updated by its address, as in
    // `read_applied`.
    let advanced: Vec<(&(&str, &str), &i64)> = last.iter().collect();
    if !advanced.is_empty() || position.is_some() {
        let types: Vec<&str> = advanced.iter().map(|(k, _)| k.0).collect();
        let ids: Vec<&str> = advanced.iter().map(|(k, _)| k.1).collect();
        let sequences: Vec<i64> = advanced.iter().map(|(_, s)| **s).collect();
        let read: Vec<i64> = advanced
            .iter()
            .map(|(k, _)| applied_before.get(*k).copied().unwrap_or(-1))
            .collect();
        let moved: i64 = sqlx::query_scalar(
            "WITH u AS (
                 SELECT * FROM unnest($2::text[], $3::text[], $4::int8[], $5::int8[]) AS u(t, i, s, was)
             ), updated AS (
                 UPDATE projection_applied p SET sequence = f.s
                   FROM (SELECT u.s, x.ctid AS at FROM u CROSS JOIN LATERAL (
                             SELECT q.ctid FROM projection_applied q
                              WHERE q.projection = $1 AND q.aggregate_type = u.t
                                AND q.aggregate_id = u.i AND q.sequence = u.was
                              LIMIT 1) x
                          WHERE u.was >= 0) f
                  WHERE p.ctid = f.at
                 RETURNING 1
             ), inserted AS (
                 INSERT INTO projection_applied (projection, aggregate_type, aggregate_id, sequence)
                 SELECT $1, u.t, u.i, u.s FROM u WHERE u.was < 0 ORDER BY u.t, u.i
                 ON CONFLICT DO NOTHING
                 RETURNING 1
             ), checkpoint AS (
                 INSERT INTO projection_checkpoints (projection, position, events_applied, updated_at)
                 SELECT $1, $6, $7, now() WHERE $6 IS NOT NULL
                 ON CONFLICT (projection) DO UPDATE SET
                     position = greatest(projection_checkpoints.position, EXCLUDED.position),
                     events_applied = projection_checkpoints.events_applied + EXCLUDED.events_applied,
                     updated_at = now()
             )
             SELECT (SELECT count(*) FROM updated) + (SELECT count(*) FROM inserted)",
        )
        .bind(subscriber.name())
        .bind(&types)
        .bind(&ids)
        .bind(&sequences)
        .bind(&read)
        .bind(position)
        .bind(applied)
        .fetch_one(&mut *tx)
        .await?;
        if moved != advanced.len() as i64 {
            tx.rollback().await?;
            return Err(Batch::Raced);
        }
    }
    tx.commit().await?;
    if applied > 0 {
        subscriber.committed();
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Outcome::Gap { last: -1 }))
        .collect())
}

/// The statement that opens a transaction holding the subscriber's advisory
/// lock, shared, until it ends: one round trip for both. Live batches take
/// it, so a replay holding it exclusively knows no worker writes the live
/// tables. (The lock is its own statement, so what the transaction reads
/// next is read after the lock was granted: after a swap it waited for.)
pub(crate) fn begin_shared(lock_id: i32) -> String {
    format!("BEGIN; SELECT pg_advisory_xact_lock_shared({LOCK_CLASS}, {lock_id})")
}

/// The statement that opens a transaction writing the tables of `schema`
/// (a replay's shadow copies) before the live ones.
pub(crate) fn begin_in(schema: &str) -> String {
    format!(
        "BEGIN; SET LOCAL search_path TO {}, public",
        quote_ident(schema)
    )
}

/// [`begin_in`] `schema` if given, else [`begin_shared`].
fn begin_for(subscriber: &dyn Subscriber, schema: Option<&str>) -> String {
    match schema {
        Some(schema) => begin_in(schema),
        None => begin_shared(subscriber.lock_id()),
    }
}

pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The `projection_applied` sequences of `keys` (absent: nothing applied
/// yet). Read without a lock: the batch's last statement advances only rows
/// still at these values.
async fn read_applied<'k>(
    conn: &mut PgConnection,
    name: &str,
    keys: &BTreeSet<(&'k str, &'k str)>,
) -> Result<HashMap<(&'k str, &'k str), i64>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let types: Vec<&str> = keys.iter().map(|k| k.0).collect();
    let ids: Vec<&str> = keys.iter().map(|k| k.1).collect();
    // One index lookup per key. As a join, the planner (with statistics
    // from when the table was small: a new shop, a flash sale's first
    // minute) hashed the keys and read every row of the projection, a cost
    // that grew with the number of aggregates (11,000 rows, 5 ms a batch);
    // `LIMIT 1` keeps the subquery from being flattened into such a join.
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT k.t, k.i, p.sequence FROM unnest($2::text[], $3::text[]) AS k(t, i)
           CROSS JOIN LATERAL (
               SELECT q.sequence FROM projection_applied q
                WHERE q.projection = $1 AND q.aggregate_type = k.t AND q.aggregate_id = k.i
                LIMIT 1) p
          ORDER BY k.t COLLATE \"C\", k.i COLLATE \"C\"",
    )
    .bind(name)
    .bind(&types)
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    // Both in byte order: one pass pairs each row with its key.
    let mut found = HashMap::with_capacity(rows.len());
    let mut wanted = keys.iter().peekable();
    for (t, i, s) in rows {
        while wanted
            .next_if(|k| (k.0, k.1) < (t.as_str(), i.as_str()))
            .is_some()
        {}
        if let Some(key) = wanted.next_if(|k| (k.0, k.1) == (t.as_str(), i.as_str())) {
            found.insert(*key, s);
        }
    }
    Ok(found)
}

/// Records events as done without applying them (they were dead-lettered),
/// so the later events of their aggregates are not held up behind them
/// forever. Never moves a sequence backwards.
pub(crate) async fn mark_skipped(
    conn: &mut PgConnection,
    subscriber: &dyn Subscriber,
    events: &[(String, String, i64)],
) -> Result<(), sqlx::Error> {
    let events: Vec<_> = events
        .iter()
        .filter(|(aggregate_type, _, _)| subscriber.follows(aggregate_type))
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
    .bind(subscriber.name())
    .bind(&types)
    .bind(&ids)
    .bind(&sequences)
    .execute(conn)
    .await?;
    Ok(())
}

/// What [`settle`] did with a list of events.
#[derive(Debug, Default)]
pub(crate) struct Settled {
    /// Events applied now.
    pub applied: u64,
    /// The rows that changed, to announce.
    pub changes: Vec<Change>,
    /// Events given up on: recorded as done without their effect (the
    /// caller keeps them as dead letters), so their aggregates' later events
    /// could apply.
    pub failed: Vec<(Recorded, String)>,
    /// Events that failed in a way worth another try later, left as they are
    /// (only with [`Retryable::Keep`]).
    pub kept: Vec<Recorded>,
}

/// Whether [`settle`] gives up on an event that failed in a retryable way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retryable {
    GiveUp,
    Keep,
}

/// Applies `events` until each one is applied, a duplicate, or given up on,
/// as the live worker ends up doing after its redeliveries: a failed event
/// is marked done without its effect and the events that waited behind it
/// are applied after it; an event still waiting when nothing else can move
/// has a hole in the store before it. Used where events come from the
/// store rather than the broker: a replay's catch-up and the repair.
pub(crate) async fn settle(
    pool: &PgPool,
    subscriber: &dyn Subscriber,
    mut pending: Vec<Recorded>,
    retryable: Retryable,
    schema: Option<&str>,
) -> Result<Settled, ProjectionError> {
    let mut settled = Settled::default();
    while !pending.is_empty() {
        let outcomes = apply_recorded(pool, subscriber, &pending, schema).await?;
        let mut skipped = Vec::new();
        let mut waiting = Vec::new();
        for (event, outcome) in pending.into_iter().zip(outcomes) {
            match outcome {
                Outcome::Applied(changes) => {
                    settled.applied += 1;
                    settled.changes.extend(changes);
                }
                Outcome::Duplicate | Outcome::Skipped => {}
                Outcome::Gap { .. } => waiting.push(event),
                Outcome::Failed(ProjectionError::Retryable(_)) if retryable == Retryable::Keep => {
                    settled.kept.push(event);
                }
                Outcome::Failed(error) => {
                    skipped.push((
                        event.aggregate_type.clone(),
                        event.aggregate_id.clone(),
                        event.sequence,
                    ));
                    settled.failed.push((event, error.to_string()));
                }
            }
        }
        if skipped.is_empty() {
            if retryable == Retryable::Keep && !settled.kept.is_empty() {
                // They wait for a kept event, which is tried again later.
                settled.kept.extend(waiting);
                break;
            }
            // Nothing the waiting events wait for will come: the store has a hole.
            for event in waiting.drain(..) {
                skipped.push((
                    event.aggregate_type.clone(),
                    event.aggregate_id.clone(),
                    event.sequence,
                ));
                settled
                    .failed
                    .push((event, "an earlier event is missing".to_owned()));
            }
        }
        if !skipped.is_empty() {
            let mut tx = pool.begin_with(begin_for(subscriber, schema)).await?;
            mark_skipped(&mut tx, subscriber, &skipped).await?;
            tx.commit().await?;
        }
        pending = waiting;
    }
    Ok(settled)
}
