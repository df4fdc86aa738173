//! The relay: every committed event, from the events table to JetStream.
//!
//! The events table is the outbox. The relay tails it in the order
//! `(transaction_id, position)`, reading only rows of transactions older than
//! the current snapshot's xmin. Every transaction still open, or not yet
//! begun, has an id at or above that xmin, so it sorts after everything
//! already relayed: a slow transaction holding a low position is waited for,
//! never skipped (a plain `position > last` tail would skip it). Per aggregate
//! the order is the stream's, since a stream's next event is written only
//! after the previous one committed.
//!
//! Each event is published as a `schemas::EventEnvelope` with `Nats-Msg-Id = type:id:sequence`, so a batch
//! re-sent after a crash between publish and checkpoint is dropped by
//! JetStream's duplicate window, and downstream applies by sequence anyway.
//! Its headers also carry the CloudEvents attributes (`schemas::cloudevents`,
//! `ce-id` = the message id), so consumers need no knowledge of our envelope.
//! Batches are pipelined: all publishes go out, then all acks are awaited,
//! then the checkpoint moves. One relay per deployment is active, holding a
//! Postgres advisory lock; the others wait to take over.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures::StreamExt;
use schemas::{subjects, trace};
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgPool, Row};
use tokio::sync::{watch, Notify};

/// How long JetStream remembers message ids to drop re-sent duplicates.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// On shutdown, how long the relay may take to confirm the batch it has in
/// flight and store its checkpoint. Bounded, since a broker that is down
/// never acknowledges; then the batch is re-sent after a restart, and the
/// duplicate window drops it.
pub const STOP_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// The deployment's NATS prefix; also names the checkpoint and the lock.
    pub prefix: String,
    /// Events read and published per round.
    pub batch: i64,
    /// Safety net: look for events this often even without a wake-up.
    pub idle_check: Duration,
}

impl RelayOptions {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            // Two batches may be in flight at once: keep both under the
            // client's 5000 unacknowledged publishes.
            batch: 2000,
            idle_check: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("jetstream: {0}")]
    JetStream(String),
    #[error("the relay lost its leadership lock")]
    LostLock,
}

/// Creates (or updates) the deployment's event stream: file storage, one
/// subject per aggregate under the prefix, and a duplicate window.
pub async fn ensure_stream(js: &jetstream::Context, prefix: &str) -> Result<(), RelayError> {
    let config = stream::Config {
        name: subjects::stream(prefix),
        subjects: vec![subjects::events_wildcard(prefix)],
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    };
    match js.get_stream(&config.name).await {
        Ok(_) => js
            .update_stream(config)
            .await
            .map(|_| ())
            .map_err(|e| RelayError::JetStream(e.to_string())),
        Err(_) => js
            .create_stream(config)
            .await
            .map(|_| ())
            .map_err(|e| RelayError::JetStream(e.to_string())),
    }
}

const SELECT_BATCH: &str = r#"
SELECT aggregate_type, aggregate_id, sequence, event_type, event_version,
       payload::text AS payload, metadata::text AS metadata,
       metadata->>'correlation_id' AS correlation_id,
       metadata->>'causation_id' AS causation_id,
       metadata->>'traceparent' AS traceparent,
       position, recorded_at, transaction_id::text AS transaction_text
  FROM events
 WHERE (transaction_id, position) > ($1::text::xid8, $2)
   AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
 ORDER BY events.transaction_id, events.position  -- the xid8 column, numerically; never the text alias
 LIMIT $3
"#;

/// Runs the relay until `shutdown` resolves: waits for the leadership lock,
/// then publishes every committed event, woken by `wake` (commits in this
/// process), by `<prefix>.appended` hints from other processes, and at the
/// latest every `idle_check`.
pub async fn run(
    pool: PgPool,
    nats: async_nats::Client,
    options: RelayOptions,
    wake: Arc<Notify>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let js = jetstream::new(nats.clone());
    tokio::pin!(shutdown);
    let (stopping, stop) = watch::channel(false);
    loop {
        let round = lead(&pool, &nats, &js, &options, &wake, stop.clone());
        tokio::pin!(round);
        tokio::select! {
            () = &mut shutdown => {
                let _ = stopping.send(true);
                if tokio::time::timeout(STOP_LIMIT, &mut round).await.is_err() {
                    tracing::warn!("relay stopped before its last batch was acknowledged");
                }
                return;
            }
            result = &mut round => {
                if let Err(err) = result {
                    tracing::warn!(error = %err, "relay interrupted; retrying");
                }
            }
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// One term as leader: take the lock (or wait for it), then relay until an
/// error, or until `stop` turns true: then the batch in flight is confirmed
/// (its checkpoint stored) and nothing more is published.
async fn lead(
    pool: &PgPool,
    nats: &async_nats::Client,
    js: &jetstream::Context,
    options: &RelayOptions,
    wake: &Notify,
    mut stop: watch::Receiver<bool>,
) -> Result<(), RelayError> {
    let mut lock = pool.acquire().await?.detach();
    let key = format!("agora-relay:{}", options.prefix);
    loop {
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
            .bind(&key)
            .fetch_one(&mut lock)
            .await?;
        if locked {
            break;
        }
        if *stop.borrow() {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => {}
        }
    }
    tracing::info!(prefix = %options.prefix, "relay active");
    let _leader = Leader::mark();
    ensure_stream(js, &options.prefix).await?;
    let mut hints = nats
        .subscribe(appended_subject(&options.prefix))
        .await
        .map_err(|e| RelayError::JetStream(e.to_string()))?;
    let (mut transaction_id, mut position) = checkpoint(pool, &options.prefix).await?;
    // The batch published but not yet acknowledged: reading the next batch
    // overlaps with waiting for its acks.
    let mut in_flight: Option<InFlight> = None;
    loop {
        let rows = read_batch(pool, &transaction_id, position, options.batch).await?;
        if let Some(batch) = in_flight.take() {
            batch.confirm(pool, &options.prefix).await?;
        }
        if *stop.borrow() {
            return Ok(());
        }
        if rows.is_empty() {
            // Still the leader? A dropped lock connection means another relay may run.
            lock.ping().await.map_err(|_| RelayError::LostLock)?;
            tokio::select! {
                () = wake.notified() => {}
                hint = hints.next() => {
                    if hint.is_none() {
                        return Err(RelayError::JetStream("hint subscription closed".to_owned()));
                    }
                }
                () = tokio::time::sleep(options.idle_check) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let full = rows.len() as i64 == options.batch;
        let batch = publish(js, &options.prefix, &rows).await?;
        transaction_id = batch.transaction_id.clone();
        position = batch.position;
        tracing::debug!(events = rows.len(), position, "relaying");
        in_flight = Some(batch);
        if !full {
            // Drain hints that arrived for what we just read.
            while let Some(Some(_)) = futures::FutureExt::now_or_never(hints.next()) {}
        }
    }
}

/// `agora_relay_leader` is 1 while this process holds the lock: set when it
/// is taken, cleared however the term ends (error, lost lock, shutdown).
struct Leader;

impl Leader {
    fn mark() -> Self {
        metrics::gauge!("agora_relay_leader").set(1.0);
        Self
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        metrics::gauge!("agora_relay_leader").set(0.0);
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The next committed events after the cursor `(transaction_id, position)`,
/// in relay order; none of a transaction that might still commit.
pub async fn read_batch(
    pool: &PgPool,
    transaction_id: &str,
    position: i64,
    limit: i64,
) -> Result<Vec<PgRow>, sqlx::Error> {
    sqlx::query(SELECT_BATCH)
        .bind(transaction_id)
        .bind(position)
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// A batch handed to JetStream: its acks, and the cursor of its last row.
pub struct InFlight {
    acks: Vec<jetstream::context::PublishAckFuture>,
    pub transaction_id: String,
    pub position: i64,
}

impl InFlight {
    /// Waits for every ack of the batch, then stores its cursor as the
    /// checkpoint: only what JetStream holds is ever marked relayed.
    pub async fn confirm(self, pool: &PgPool, name: &str) -> Result<(), RelayError> {
        let published = self.acks.len() as u64;
        for ack in self.acks {
            ack.await
                .map_err(|e| RelayError::JetStream(e.to_string()))?;
        }
        metrics::counter!("agora_relay_published_total").increment(published);
        metrics::gauge!("agora_relay_last_publish_timestamp_seconds").set(unix_now());
        sqlx::query(
            "INSERT INTO relay_checkpoints (name, transaction_id, position, updated_at) VALUES ($1, $2::text::xid8, $3, now())
             ON CONFLICT (name) DO UPDATE SET transaction_id = EXCLUDED.transaction_id, position = EXCLUDED.position, updated_at = now()",
        )
        .bind(name)
        .bind(&self.transaction_id)
        .bind(self.position)
        .execute(pool)
        .await?;
        Ok(())
    }
}

/// Publishes a batch pipelined, without waiting for its acks.
///
/// The envelope is written straight from the row: payload and metadata are
/// spliced in as the JSON text Postgres returns, never parsed and
/// re-serialized.
pub async fn publish(
    js: &jetstream::Context,
    prefix: &str,
    rows: &[PgRow],
) -> Result<InFlight, RelayError> {
    let mut acks = Vec::with_capacity(rows.len());
    let mut last = (String::new(), 0);
    let source = schemas::cloudevents::source(prefix);
    for row in rows {
        let aggregate_type: &str = row.try_get("aggregate_type")?;
        let aggregate_id: &str = row.try_get("aggregate_id")?;
        let sequence: i64 = row.try_get("sequence")?;
        let event_type: &str = row.try_get("event_type")?;
        let event_version: &str = row.try_get("event_version")?;
        let position: i64 = row.try_get("position")?;
        let recorded_at: chrono::DateTime<chrono::Utc> = row.try_get("recorded_at")?;
        let time = recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let body = envelope_json(
            aggregate_type,
            aggregate_id,
            sequence,
            event_type,
            event_version,
            row.try_get("payload")?,
            row.try_get("metadata")?,
            position,
            &time,
        );
        let headers = headers(&Published {
            source: &source,
            aggregate_type,
            aggregate_id,
            sequence,
            event_type,
            event_version,
            time,
            correlation_id: row.try_get("correlation_id")?,
            causation_id: row.try_get("causation_id")?,
            traceparent: row.try_get("traceparent")?,
        });
        let subject = subjects::event(prefix, aggregate_type, aggregate_id);
        let ack = js
            .publish_with_headers(subject, headers, Bytes::from(body))
            .await
            .map_err(|e| RelayError::JetStream(e.to_string()))?;
        acks.push(ack);
        last = (row.try_get("transaction_text")?, position);
    }
    Ok(InFlight {
        acks,
        transaction_id: last.0,
        position: last.1,
    })
}

/// What the headers of one published event are made of.
pub struct Published<'a> {
    /// `schemas::cloudevents::source` of the deployment's prefix.
    pub source: &'a str,
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: i64,
    pub event_type: &'a str,
    pub event_version: &'a str,
    /// `recorded_at`, RFC 3339: the envelope's text, and `ce-time`.
    pub time: String,
    pub correlation_id: Option<&'a str>,
    pub causation_id: Option<&'a str>,
    pub traceparent: Option<&'a str>,
}

/// The headers of one published event: `Nats-Msg-Id`, the CloudEvents
/// attributes in the binary binding (`ce-id` is the message id; the
/// envelope is the event's data), and the write's trace and causality, so a
/// consumer can open its span before (or without) decoding the body.
pub fn headers(event: &Published<'_>) -> async_nats::HeaderMap {
    use async_nats::header::HeaderName;
    use schemas::cloudevents as ce;

    let id =
        schemas::envelope::message_id(event.aggregate_type, event.aggregate_id, event.sequence);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id.as_str());
    headers.insert(HeaderName::from_static(ce::ID_HEADER), id);
    headers.insert(
        HeaderName::from_static(ce::SPECVERSION_HEADER),
        ce::SPECVERSION,
    );
    headers.insert(HeaderName::from_static(ce::SOURCE_HEADER), event.source);
    headers.insert(
        HeaderName::from_static(ce::TYPE_HEADER),
        ce::event_type(event.aggregate_type, event.event_type, event.event_version),
    );
    headers.insert(
        HeaderName::from_static(ce::SUBJECT_HEADER),
        ce::subject(event.aggregate_type, event.aggregate_id),
    );
    headers.insert(
        HeaderName::from_static(ce::TIME_HEADER),
        event.time.as_str(),
    );
    headers.insert(
        HeaderName::from_static(ce::CONTENT_TYPE_HEADER),
        ce::CONTENT_TYPE,
    );
    for (value, header) in [
        (event.correlation_id, trace::CORRELATION_HEADER),
        (event.causation_id, trace::CAUSATION_HEADER),
        (event.traceparent, trace::TRACEPARENT_HEADER),
    ] {
        if let Some(value) = value {
            headers.insert(header, value);
        }
    }
    headers
}

/// A [`schemas::EventEnvelope`] as JSON, with `payload` and `metadata` given as JSON
/// text and `recorded_at` as RFC 3339 (the same text as `ce-time`). Decodes
/// to the same `EventEnvelope` as serializing one would give.
#[allow(clippy::too_many_arguments)]
fn envelope_json(
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
    event_type: &str,
    event_version: &str,
    payload: &str,
    metadata: &str,
    position: i64,
    recorded_at: &str,
) -> Vec<u8> {
    let text = |value: &str| serde_json::to_string(value).unwrap_or_else(|_| "\"\"".to_owned());
    format!(
        r#"{{"aggregate_type":{},"aggregate_id":{},"sequence":{sequence},"event_type":{},"event_version":{},"payload":{payload},"metadata":{metadata},"position":{position},"recorded_at":{}}}"#,
        text(aggregate_type),
        text(aggregate_id),
        text(event_type),
        text(event_version),
        text(recorded_at),
    )
    .into_bytes()
}

async fn checkpoint(pool: &PgPool, name: &str) -> Result<(String, i64), RelayError> {
    let row: Option<(String, i64)> = sqlx::query_as(
        "SELECT transaction_id::text, position FROM relay_checkpoints WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?;
    Ok(row.unwrap_or_else(|| ("0".to_owned(), 0)))
}

/// Core NATS subject on which committing processes hint that events were appended.
pub fn appended_subject(prefix: &str) -> String {
    format!("{prefix}.appended")
}

/// How far the relay is behind: events committed but not yet relayed.
pub async fn lag(pool: &PgPool, prefix: &str) -> Result<i64, sqlx::Error> {
    let (transaction_id, position) = checkpoint(pool, prefix).await.map_err(|e| match e {
        RelayError::Database(e) => e,
        other => sqlx::Error::Protocol(other.to_string()),
    })?;
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE (transaction_id, position) > ($1::text::xid8, $2)",
    )
    .bind(transaction_id)
    .bind(position)
    .fetch_one(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spliced_envelope_decodes_like_a_serialized_one() {
        let recorded_at = chrono::DateTime::parse_from_rfc3339("2026-11-22T03:04:05.123456Z")
            .map(|t| t.with_timezone(&chrono::Utc))
            .expect("a time");
        let body = envelope_json(
            "product",
            "id \"with\" quotes\\",
            7,
            "ProductStockAdjusted",
            "1.0",
            r#"{"ProductStockAdjusted": {"delta": -2}}"#,
            r#"{"actor": "système", "correlation_id": "c-1"}"#,
            42,
            &recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        );
        let decoded: schemas::EventEnvelope = serde_json::from_slice(&body).expect("valid JSON");
        let expected = schemas::EventEnvelope {
            aggregate_type: "product".to_owned(),
            aggregate_id: "id \"with\" quotes\\".to_owned(),
            sequence: 7,
            event_type: "ProductStockAdjusted".to_owned(),
            event_version: "1.0".to_owned(),
            payload: serde_json::json!({"ProductStockAdjusted": {"delta": -2}}),
            metadata: serde_json::json!({"actor": "système", "correlation_id": "c-1"}),
            position: 42,
            recorded_at,
        };
        assert_eq!(decoded, expected);
    }
}
