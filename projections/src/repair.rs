//! Converging after the broker loses messages (anti-entropy).
//!
//! JetStream can lose acknowledged writes (a lazy fsync, a reset stream, a
//! wiped store), and an event the relay saw acknowledged is never published
//! again. The events table is the truth, so each subscriber's repair walks it
//! in the relay's order, `(transaction_id, position)`, from a watermark
//! (`subscriber_watermarks`): every committed event of the aggregates the
//! subscriber follows, before the watermark, is applied (or dead-lettered).
//! Each round reads the events committed since, joined with the subscriber's
//! `projection_applied`; one that is not applied, older than the grace
//! period, while the subscriber's consumer has nothing left to deliver (or
//! NATS is unreachable, or it has waited far too long), was lost: it is
//! applied from the store, exactly once like any other, through the same
//! bookkeeping. The watermark then moves past everything applied. When
//! nothing is missing a round is one indexed range scan of the new events.
//!
//! Only transactions below the snapshot's xmin are read, as the relay does:
//! their rows are final, so the watermark never passes a transaction still
//! in progress.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use schemas::{subjects, EventEnvelope, Recorded};
use sqlx::{Connection, PgPool};

use crate::apply::{settle, EventRow, Retryable, EVENT_COLUMNS};
use crate::error::ProjectionError;
use crate::subscriber::Subscriber;

#[derive(Debug, Clone)]
pub struct RepairOptions {
    /// How often a round runs.
    pub every: Duration,
    /// How old an unapplied event must be before it counts as lost: the
    /// normal path takes milliseconds.
    pub grace: Duration,
    /// How long an unapplied event may wait while the consumer still has
    /// messages pending (a backlog being worked through) before it is
    /// repaired anyway.
    pub patience: Duration,
    /// Events read per round, at most.
    pub window: i64,
}

impl Default for RepairOptions {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(1),
            grace: Duration::from_secs(5),
            patience: Duration::from_secs(60),
            window: 20_000,
        }
    }
}

/// What one round found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// Events read after the watermark.
    pub checked: u64,
    /// Lost events applied from the store now.
    pub repaired: u64,
    /// Lost events that could not be applied: dead-lettered.
    pub dead_lettered: u64,
    /// Events not applied yet that are left to the normal path (young, or
    /// the consumer is still delivering) or to a later round.
    pub waiting: u64,
    /// Another process ran this subscriber's round; this one did nothing.
    pub busy: bool,
}

/// Runs a round every `options.every` until `shutdown` resolves. Trouble is
/// logged and the next round tries again.
pub async fn run(
    pool: PgPool,
    subscriber: Arc<dyn Subscriber>,
    nats: async_nats::Client,
    prefix: String,
    options: RepairOptions,
    shutdown: impl Future,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let jetstream = async_nats::jetstream::new(nats.clone());
    let name = subscriber.name();
    let mut retries: HashMap<i64, u32> = HashMap::new();
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            () = tokio::time::sleep(options.every) => {}
        }
        let idle = consumer_idle(&jetstream, subscriber.as_ref(), &prefix).await;
        let repair = round(&pool, subscriber.as_ref(), &options, idle, &mut retries);
        let outcome = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            outcome = repair => outcome,
        };
        match outcome {
            Ok((round, changes)) => {
                if round.repaired > 0 || round.dead_lettered > 0 {
                    tracing::warn!(
                        projection = name,
                        repaired = round.repaired,
                        dead_lettered = round.dead_lettered,
                        "repaired events the broker never delivered, from the events table"
                    );
                    crate::changes::announce(&nats, &prefix, changes).await;
                }
            }
            Err(error) => tracing::warn!(projection = name, %error, "repair round failed"),
        }
    }
}

/// Whether the subscriber's consumer has nothing left to deliver: no
/// message pending or unacknowledged, or NATS cannot be asked (then nothing
/// is being delivered either).
async fn consumer_idle(
    jetstream: &async_nats::jetstream::Context,
    subscriber: &dyn Subscriber,
    prefix: &str,
) -> bool {
    let asked = async {
        let stream = jetstream.get_stream(subjects::stream(prefix)).await.ok()?;
        let mut consumer: PullConsumer = stream
            .get_consumer(&subjects::consumer(prefix, subscriber.name()))
            .await
            .ok()?;
        let info = consumer.info().await.ok()?;
        Some(info.num_pending == 0 && info.num_ack_pending == 0)
    };
    tokio::time::timeout(Duration::from_secs(2), asked)
        .await
        .ok()
        .flatten()
        .unwrap_or(true)
}

/// One round (see the module docs). `idle` says the consumer has nothing
/// left to deliver; `retries` counts, per position, the rounds an event
/// failed in a retryable way, so one that keeps failing is dead-lettered as
/// the worker would.
pub async fn round(
    pool: &PgPool,
    subscriber: &dyn Subscriber,
    options: &RepairOptions,
    idle: bool,
    retries: &mut HashMap<i64, u32>,
) -> Result<(Round, Vec<crate::Change>), ProjectionError> {
    let name = subscriber.name();
    sqlx::query("INSERT INTO subscriber_watermarks (name) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(name)
        .execute(pool)
        .await?;
    let mut conn = pool.acquire().await?;
    // Dead letters and skipped events change what a replay swaps.
    let mut tx = conn
        .begin_with(crate::apply::begin_shared(subscriber.lock_id()))
        .await?;
    let mark: Option<(String, i64)> = sqlx::query_as(
        "SELECT transaction_id::text, position FROM subscriber_watermarks
          WHERE name = $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((mark_transaction, mark_position)) = mark else {
        return Ok((
            Round {
                busy: true,
                ..Round::default()
            },
            Vec::new(),
        ));
    };

    type Row = (
        String,
        String,
        i64,
        String,
        i64,
        i64,
        DateTime<Utc>,
        DateTime<Utc>,
    );
    // The last event every transaction before it has ended for (below the
    // snapshot's xmin): the round vouches for events up to here. Taken
    // first, so the scan's later snapshot sees every committed event up to
    // it. With nothing of this subscriber's aggregates between the
    // watermark and this bound, the watermark moves to the bound: else a
    // subscriber of rarely written aggregates (users, during a flash sale)
    // rescanned every event since its last one each round, a scan that grew
    // with history and kept both cores' worth of Postgres busy. Ordered by
    // the xid8 column, not the text alias of the same name, which sorted
    // every event as text (`999` after `1000`) instead of reading one off
    // the index.
    let bound: Option<(String, i64)> = sqlx::query_as(
        "SELECT transaction_id::text, position FROM events
          WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot())
          ORDER BY events.transaction_id DESC, events.position DESC LIMIT 1",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some((bound_transaction, bound_position)) = bound else {
        tx.commit().await?;
        return Ok((Round::default(), Vec::new()));
    };
    // Read lazily, in the index's order, and stop at the first event that
    // cannot be vouched for yet: behind a backlog, a round costs the events
    // applied since the last one, not the whole window.
    let grace = chrono::Duration::from_std(options.grace).unwrap_or(chrono::Duration::MAX);
    let patience = chrono::Duration::from_std(options.patience).unwrap_or(chrono::Duration::MAX);
    let mut rows: Vec<Row> = Vec::new();
    let mut lost = Vec::new();
    let mut stop: Option<usize> = None;
    let mut round = Round::default();
    // The window is read in the order of the (transaction, position)
    // index, each event's applied sequence looked up by its key. With
    // statistics from when the tables were small the planner did otherwise:
    // it hashed every row of the subscriber's projection_applied, or
    // intersected the window with every event of the aggregate types
    // through the primary key (25,000 entries for 256 events), and once
    // compared each event with each row (2 million, 335 ms). The lateral
    // `LIMIT 1` cannot be made such a join, and the aggregate types, as a
    // test (`IS TRUE`) rather than an index condition, only filter.
    {
        let mut scan = sqlx::query_as::<_, Row>(
            "SELECT e.aggregate_type, e.aggregate_id, e.sequence, e.transaction_id::text, e.position,
                    coalesce(p.sequence, 0), e.recorded_at, now()
               FROM events e
               LEFT JOIN LATERAL (
                    SELECT q.sequence FROM projection_applied q
                     WHERE q.projection = $1 AND q.aggregate_type = e.aggregate_type
                       AND q.aggregate_id = e.aggregate_id
                     LIMIT 1) p ON TRUE
              WHERE (e.transaction_id, e.position) > ($2::text::xid8, $3)
                AND (e.transaction_id, e.position) <= ($6::text::xid8, $7)
                AND (e.aggregate_type = ANY($4)) IS TRUE
              ORDER BY e.transaction_id, e.position
              LIMIT $5",
        )
        .bind(name)
        .bind(&mark_transaction)
        .bind(mark_position)
        .bind(subscriber.aggregate_types())
        .bind(options.window)
        .bind(&bound_transaction)
        .bind(bound_position)
        .fetch(&mut *tx);
        while let Some(row) = scan.try_next().await? {
            let (_, _, sequence, _, position, applied, recorded_at, now) = &row;
            if applied < sequence {
                let age = *now - *recorded_at;
                if age >= grace && (idle || age >= patience) {
                    lost.push((rows.len(), *position));
                } else {
                    // The watermark stops just before it.
                    round.waiting += 1;
                    stop = Some(rows.len());
                    rows.push(row);
                    break;
                }
            }
            rows.push(row);
        }
    }
    round.checked = rows.len() as u64;

    let mut changes = Vec::new();
    if !lost.is_empty() {
        let positions: Vec<i64> = lost.iter().map(|(_, p)| *p).collect();
        let envelopes: Vec<EventEnvelope> = sqlx::query_as::<_, EventRow>(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE position = ANY($1) ORDER BY position"
        ))
        .bind(&positions)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(EventRow::into_envelope)
        .collect();
        let mut events = Vec::with_capacity(envelopes.len());
        let mut dead: Vec<(EventEnvelope, String)> = Vec::new();
        for envelope in &envelopes {
            match Recorded::decode(envelope) {
                Ok(event) => events.push(event),
                Err(error) => dead.push((envelope.clone(), format!("poison: {error}"))),
            }
        }
        if !dead.is_empty() {
            // Committed before `settle` locks the same aggregates' rows
            // from its own transactions.
            let skipped: Vec<(String, String, i64)> = dead
                .iter()
                .map(|(e, _)| (e.aggregate_type.clone(), e.aggregate_id.clone(), e.sequence))
                .collect();
            let mut own = pool
                .begin_with(crate::apply::begin_shared(subscriber.lock_id()))
                .await?;
            crate::apply::mark_skipped(&mut own, subscriber, &skipped).await?;
            own.commit().await?;
        }
        let settled = settle(pool, subscriber, events, Retryable::Keep, None).await?;
        round.repaired = settled.applied;
        changes = settled.changes;
        for (event, error) in settled.failed {
            if let Some(envelope) = envelopes.iter().find(|e| e.position == event.position) {
                dead.push((envelope.clone(), error));
            }
        }
        // Retryable failures wait for a later round, a few times.
        let mut kept_positions = Vec::new();
        let mut give_up = Vec::new();
        for event in settled.kept {
            let tries = retries.entry(event.position).or_insert(0);
            *tries += 1;
            if *tries >= crate::worker::RETRY_LIMIT as u32 {
                retries.remove(&event.position);
                if let Some(envelope) = envelopes.iter().find(|e| e.position == event.position) {
                    give_up.push((
                        event.aggregate_type.clone(),
                        event.aggregate_id.clone(),
                        event.sequence,
                    ));
                    dead.push((
                        envelope.clone(),
                        "still failing after repeated repairs".to_owned(),
                    ));
                }
            } else {
                kept_positions.push(event.position);
            }
        }
        if !give_up.is_empty() {
            crate::apply::mark_skipped(&mut tx, subscriber, &give_up).await?;
        }
        round.dead_lettered = dead.len() as u64;
        record_dead_letters(&mut tx, name, &dead).await?;
        if let Some(first) = rows.iter().position(|row| kept_positions.contains(&row.4)) {
            stop = Some(stop.map_or(first, |s| s.min(first)));
            round.waiting += kept_positions.len() as u64;
        }
    }

    // Everything before `stop` is applied or dead-lettered now; with no stop
    // and the window not full, everything up to the bound is.
    let whole = stop.is_none() && (rows.len() as i64) < options.window;
    let through = match stop {
        _ if whole => Some((bound_transaction.as_str(), bound_position)),
        Some(0) => None,
        Some(i) => rows.get(i - 1).map(|row| (row.3.as_str(), row.4)),
        None => rows.last().map(|row| (row.3.as_str(), row.4)),
    };
    if let Some((transaction, position)) = through {
        sqlx::query(
            "UPDATE subscriber_watermarks SET transaction_id = $2::text::xid8, position = $3,
                 repaired = repaired + $4, checked_at = now()
             WHERE name = $1",
        )
        .bind(name)
        .bind(transaction)
        .bind(position)
        .bind(round.repaired as i64)
        .execute(&mut *tx)
        .await?;
    } else if round.repaired > 0 {
        sqlx::query(
            "UPDATE subscriber_watermarks SET repaired = repaired + $2, checked_at = now() WHERE name = $1",
        )
        .bind(name)
        .bind(round.repaired as i64)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok((round, changes))
}

/// Events the repair could not apply, as dead letters: `subject` is
/// `repair` and `stream_sequence` the event's position negated (they never
/// came from the stream).
async fn record_dead_letters(
    conn: &mut sqlx::PgConnection,
    name: &str,
    dead: &[(EventEnvelope, String)],
) -> Result<(), sqlx::Error> {
    for (event, error) in dead {
        tracing::error!(
            projection = name,
            aggregate_type = %event.aggregate_type,
            aggregate_id = %event.aggregate_id,
            sequence = event.sequence,
            %error,
            "dead-lettering an event the repair could not apply"
        );
        sqlx::query(
            "INSERT INTO dead_letters (projection, subject, stream_sequence, aggregate_type,
                 aggregate_id, sequence, message, error, deliveries)
             VALUES ($1, 'repair', $2, $3, $4, $5, $6, $7, 0)
             ON CONFLICT (projection, stream_sequence) DO UPDATE SET error = EXCLUDED.error,
                 failed_at = now()",
        )
        .bind(name)
        .bind(-event.position)
        .bind(&event.aggregate_type)
        .bind(&event.aggregate_id)
        .bind(event.sequence)
        .bind(
            serde_json::to_string(event)
                .unwrap_or_default()
                .replace('\0', "\u{FFFD}"),
        )
        .bind(error.replace('\0', "\u{FFFD}"))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
