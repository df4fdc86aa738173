//! A subscriber's worker: a durable JetStream pull consumer feeding
//! `apply_recorded`, acknowledging what is done, asking again later for what
//! must wait, dead-lettering what can never apply, and announcing every
//! committed row change on core NATS. The one consume loop of the system:
//! every projection and the saga's intake run it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::message::Message;
use async_nats::jetstream::AckKind;
use futures::StreamExt;
use schemas::{subjects, trace, EventEnvelope, Recorded, TraceParent};
use sqlx::PgPool;
use tracing::Instrument;

use crate::apply::{apply_recorded, mark_skipped, Outcome};
use crate::changes::Change;
use crate::error::ProjectionError;
use crate::subscriber::Subscriber;

/// Deliveries of one message before the server stops offering it (the worker
/// dead-letters it on that last delivery). Deliveries are mostly spent by
/// events waiting for a predecessor, and by messages handed to a worker that
/// was killed; neither is a reason to give up on an event, so the cap is
/// high. Failing events are dead-lettered much sooner, at `RETRY_LIMIT`.
pub const MAX_DELIVER: i64 = 1000;
/// Deliveries of an event whose application keeps failing before it is
/// dead-lettered.
pub const RETRY_LIMIT: i64 = 5;
/// How long a delivered message may stay unacknowledged before redelivery:
/// how quickly the messages a dead worker held come back. A batch that takes
/// longer is redelivered while still being applied, which costs only work:
/// applying is idempotent.
pub const ACK_WAIT: Duration = Duration::from_secs(5);
/// Redelivery delays after an acknowledgement timeout, by delivery count.
/// The server takes the first as the acknowledgement wait, so it equals
/// `ACK_WAIT`. (Failures the worker sees itself are nak'd with their own
/// delay: `redelivery_delay` and `gap_delay`.)
pub const BACKOFF: [Duration; 5] = [
    ACK_WAIT,
    ACK_WAIT,
    Duration::from_secs(10),
    Duration::from_secs(10),
    Duration::from_secs(15),
];
/// How long a pull request stays open. A worker that dies leaves its request
/// behind, and messages sent to it come back only after `ACK_WAIT`; a short
/// expiry bounds how long such a request soaks them up.
pub const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// Messages delivered and not yet acknowledged, at most.
pub const MAX_ACK_PENDING: i64 = 4000;
/// Messages applied in one transaction, at most. A batch costs a handful of
/// round trips whatever its size, so behind a backlog big batches are what
/// makes catching up fast.
pub const BATCH_SIZE: usize = 1000;
/// How long a batch that came in large (a backlog is being delivered) waits
/// for the rest of what the server is sending; a small one (the steady
/// trickle of new events) never waits.
const LINGER: Duration = Duration::from_millis(3);

/// The consumer a subscriber reads through.
pub fn consumer_config(subscriber: &dyn Subscriber, prefix: &str) -> pull::Config {
    pull::Config {
        durable_name: Some(subjects::consumer(prefix, subscriber.name())),
        description: Some(format!("subscriber: {}", subscriber.name())),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_deliver: MAX_DELIVER,
        backoff: BACKOFF.to_vec(),
        filter_subject: subscriber.filter_subject(prefix),
        max_ack_pending: MAX_ACK_PENDING,
        ..Default::default()
    }
}

/// Creates the subscriber's durable consumer, or brings an existing one to
/// `consumer_config`.
pub async fn ensure_consumer(
    jetstream: &async_nats::jetstream::Context,
    subscriber: &dyn Subscriber,
    prefix: &str,
) -> Result<PullConsumer, async_nats::Error> {
    let consumer = jetstream
        .create_consumer_on_stream(
            consumer_config(subscriber, prefix),
            subjects::stream(prefix),
        )
        .await?;
    Ok(consumer)
}

/// How long an event waiting for its predecessor is held back: short, since
/// the predecessor is usually only a redelivery away; 200 ms doubling, at
/// most 2 s.
pub fn gap_delay(delivered: i64) -> Duration {
    redelivery_delay(delivered).min(Duration::from_secs(2))
}

/// How long a message whose application failed is held back before its next delivery: 200 ms, doubling
/// with every delivery, at most 30 s (about 80 s over all `MAX_DELIVER`).
pub fn redelivery_delay(delivered: i64) -> Duration {
    let doublings = delivered.clamp(1, 16) - 1;
    Duration::from_millis(200u64 << doublings).min(Duration::from_secs(30))
}

/// Runs the subscriber until `shutdown` resolves: pulls batches, applies
/// them, acknowledges. NATS and database trouble is logged and retried; it
/// never ends the worker. A batch being applied when `shutdown` resolves is
/// finished first, unless the database is down, then it is left for
/// redelivery.
pub async fn run(
    subscriber: Arc<dyn Subscriber>,
    pool: PgPool,
    jetstream: async_nats::jetstream::Context,
    nats: async_nats::Client,
    prefix: &str,
    shutdown: impl Future,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let name = subscriber.name();
    let worker = Worker {
        subscriber,
        pool,
        nats,
        prefix: prefix.to_owned(),
    };
    tracing::info!(projection = name, prefix, "worker starting");
    let mut failures = 0u32;
    'connect: loop {
        if failures > 0 {
            let pause = Duration::from_millis(250u64 << failures.min(5));
            tokio::select! {
                biased;
                _ = &mut shutdown => break 'connect,
                () = tokio::time::sleep(pause) => {}
            }
        }
        let consumer = tokio::select! {
            biased;
            _ = &mut shutdown => break 'connect,
            consumer = ensure_consumer(&jetstream, worker.subscriber.as_ref(), prefix) => consumer,
        };
        let consumer = match consumer {
            Ok(consumer) => consumer,
            Err(error) => {
                tracing::warn!(projection = name, %error, "cannot create the consumer; retrying");
                failures += 1;
                continue;
            }
        };
        let messages = consumer
            .stream()
            .max_messages_per_batch(BATCH_SIZE)
            .expires(PULL_EXPIRES)
            .heartbeat(PULL_EXPIRES / 3)
            .messages()
            .await;
        let messages = match messages {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(projection = name, %error, "cannot pull messages; retrying");
                failures += 1;
                continue;
            }
        };
        tracing::debug!(projection = name, "consuming");
        let mut chunks = messages.ready_chunks(BATCH_SIZE);
        loop {
            let chunk = tokio::select! {
                biased;
                _ = &mut shutdown => break 'connect,
                chunk = chunks.next() => chunk,
            };
            let Some(mut chunk) = chunk else {
                tracing::warn!(projection = name, "message stream ended; reconnecting");
                failures += 1;
                continue 'connect;
            };
            if chunk.len() >= BATCH_SIZE / 8 {
                while chunk.len() < BATCH_SIZE {
                    match tokio::time::timeout(LINGER, chunks.next()).await {
                        Ok(Some(more)) => chunk.extend(more),
                        _ => break,
                    }
                }
            }
            let mut batch = Vec::with_capacity(chunk.len());
            let mut error = None;
            for item in chunk {
                match item {
                    Ok(message) => batch.push(message),
                    Err(err) => error = Some(err),
                }
            }
            if !batch.is_empty() {
                worker.handle(batch, &mut shutdown).await;
                failures = 0;
            }
            if let Some(error) = error {
                use async_nats::jetstream::consumer::pull::MessagesErrorKind;
                if error.kind() == MessagesErrorKind::MissingHeartbeat {
                    tracing::warn!(projection = name, %error, "missed a heartbeat; going on");
                } else {
                    tracing::warn!(projection = name, %error, "pull failed; reconnecting");
                    failures += 1;
                    continue 'connect;
                }
            }
        }
    }
    tracing::info!(projection = name, "worker stopped");
}

struct Worker {
    subscriber: Arc<dyn Subscriber>,
    pool: PgPool,
    nats: async_nats::Client,
    prefix: String,
}

/// One delivered message, decoded.
struct Delivery {
    message: Message,
    delivered: i64,
    stream_sequence: u64,
    /// The envelope, if it parses: names the aggregate of a dead letter even
    /// when its event cannot be decoded.
    envelope: Option<EventEnvelope>,
    event: Result<Recorded, String>,
}

/// A message given up on.
struct DeadLetter {
    index: usize,
    error: String,
}

impl Worker {
    async fn handle(&self, messages: Vec<Message>, shutdown: &mut (impl Future + Unpin)) {
        let name = self.subscriber.name();
        let deliveries: Vec<Delivery> = messages
            .into_iter()
            .map(|message| {
                let (delivered, stream_sequence) = message
                    .info()
                    .map(|info| (info.delivered, info.stream_sequence))
                    .unwrap_or((1, 0));
                // The relay publishes stored rows as they are: an old event
                // version is upcast when decoded, as every reader does.
                let envelope = serde_json::from_slice::<EventEnvelope>(&message.payload)
                    .map_err(|err| format!("cannot decode the event envelope: {err}"));
                let event = envelope
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(Recorded::decode);
                Delivery {
                    message,
                    delivered,
                    stream_sequence,
                    envelope: envelope.ok(),
                    event,
                }
            })
            .collect();

        // Indexes into `deliveries` of the decoded events, in order.
        let decoded: Vec<usize> = (0..deliveries.len())
            .filter(|&i| deliveries[i].event.is_ok())
            .collect();
        let events: Vec<Recorded> = decoded
            .iter()
            .filter_map(|&i| deliveries[i].event.as_ref().ok().cloned())
            .collect();
        let Some(outcomes) = self.apply_patiently(&deliveries, &events, shutdown).await else {
            // Shutting down mid-retry: the messages will be redelivered.
            return;
        };

        let mut changes = Vec::new();
        let mut dead = Vec::new();
        let mut final_gaps = Vec::new();
        for (i, delivery) in deliveries.iter().enumerate() {
            if let Err(error) = &delivery.event {
                dead.push(DeadLetter {
                    index: i,
                    error: error.clone(),
                });
            }
        }
        for (&i, outcome) in decoded.iter().zip(outcomes) {
            let delivery = &deliveries[i];
            let Ok(event) = delivery.event.as_ref() else {
                continue;
            };
            let last_try = delivery.delivered >= MAX_DELIVER;
            let out_of_retries = delivery.delivered >= RETRY_LIMIT;
            // Everything logged about this message happens inside its span;
            // an instrumented block, since a span guard must not be held
            // across the acks' awaits.
            let span = message_span(name, delivery);
            let (changes, dead, final_gaps) = (&mut changes, &mut dead, &mut final_gaps);
            async move {
                tracing::debug!(
                    projection = name,
                    aggregate_type = %event.aggregate_type,
                    aggregate_id = %event.aggregate_id,
                    sequence = event.sequence,
                    event_type = %event.event_type,
                    correlation_id = event.correlation_id.as_deref().unwrap_or(""),
                    delivered = delivery.delivered,
                    ?outcome,
                    "event"
                );
                match outcome {
                    Outcome::Applied(applied) => {
                        applied_total(name).increment(1);
                        changes.extend(applied);
                        ack(&delivery.message, AckKind::Ack, name).await;
                    }
                    Outcome::Duplicate | Outcome::Skipped => {
                        ack(&delivery.message, AckKind::Ack, name).await;
                    }
                    Outcome::Gap { .. } if last_try => final_gaps.push(i),
                    Outcome::Gap { last } => {
                        let delay = gap_delay(delivery.delivered);
                        tracing::debug!(
                            projection = name,
                            aggregate_id = %event.aggregate_id,
                            sequence = event.sequence,
                            last_applied = last,
                            correlation_id = event.correlation_id.as_deref().unwrap_or(""),
                            ?delay,
                            "waiting for an earlier event"
                        );
                        ack(&delivery.message, AckKind::Nak(Some(delay)), name).await;
                    }
                    Outcome::Failed(ProjectionError::Retryable(error)) if !out_of_retries => {
                        let delay = redelivery_delay(delivery.delivered);
                        tracing::warn!(
                            projection = name,
                            aggregate_type = %event.aggregate_type,
                            aggregate_id = %event.aggregate_id,
                            sequence = event.sequence,
                            correlation_id = event.correlation_id.as_deref().unwrap_or(""),
                            delivered = delivery.delivered,
                            %error,
                            ?delay,
                            "event failed; it will be retried"
                        );
                        ack(&delivery.message, AckKind::Nak(Some(delay)), name).await;
                    }
                    Outcome::Failed(ProjectionError::Retryable(error)) => dead.push(DeadLetter {
                        index: i,
                        error: format!(
                            "still failing after {} deliveries: {error}",
                            delivery.delivered
                        ),
                    }),
                    Outcome::Failed(ProjectionError::Poison(error)) => {
                        dead.push(DeadLetter { index: i, error })
                    }
                }
            }
            .instrument(span)
            .await;
        }
        self.publish_changes(changes).await;

        let wrote_dead_letters = !dead.is_empty();
        self.dead_letter(&deliveries, dead).await;

        // Messages out of deliveries while still waiting for a predecessor:
        // that predecessor may just have been dead-lettered (and so marked
        // done), so try once more before giving up on them too.
        if final_gaps.is_empty() {
            return;
        }
        let mut outcomes = Vec::new();
        if wrote_dead_letters {
            let events: Vec<Recorded> = final_gaps
                .iter()
                .filter_map(|&i| deliveries[i].event.as_ref().ok().cloned())
                .collect();
            outcomes = apply_recorded(&self.pool, self.subscriber.as_ref(), &events, None)
                .await
                .unwrap_or_else(|err| vec![Outcome::Failed(err); events.len()]);
        }
        outcomes.resize(final_gaps.len(), Outcome::Gap { last: -1 });
        let mut changes = Vec::new();
        let mut dead = Vec::new();
        for (&i, outcome) in final_gaps.iter().zip(outcomes) {
            let delivery = &deliveries[i];
            let Ok(event) = delivery.event.as_ref() else {
                continue;
            };
            match outcome {
                Outcome::Applied(applied) => {
                    applied_total(name).increment(1);
                    changes.extend(applied);
                    ack(&delivery.message, AckKind::Ack, name).await;
                }
                Outcome::Duplicate | Outcome::Skipped => {
                    ack(&delivery.message, AckKind::Ack, name).await;
                }
                Outcome::Gap { .. } => dead.push(DeadLetter {
                    index: i,
                    error: format!(
                        "sequence {} still waits for an earlier event of {} {} after {} deliveries",
                        event.sequence,
                        event.aggregate_type,
                        event.aggregate_id,
                        delivery.delivered
                    ),
                }),
                Outcome::Failed(error) => dead.push(DeadLetter {
                    index: i,
                    error: error.to_string(),
                }),
            }
        }
        self.publish_changes(changes).await;
        self.dead_letter(&deliveries, dead).await;
    }

    /// `apply_batch`, retried in place (keeping the messages in progress)
    /// while the database as a whole is failing, so an outage does not use up
    /// the messages' deliveries. `None` if shutdown came first.
    async fn apply_patiently(
        &self,
        deliveries: &[Delivery],
        events: &[Recorded],
        shutdown: &mut (impl Future + Unpin),
    ) -> Option<Vec<Outcome>> {
        if events.is_empty() {
            return Some(Vec::new());
        }
        let mut attempt = 0u32;
        loop {
            match apply_recorded(&self.pool, self.subscriber.as_ref(), events, None).await {
                Ok(outcomes) => return Some(outcomes),
                Err(error) => {
                    attempt += 1;
                    let pause = Duration::from_millis(100u64 << attempt.min(7));
                    tracing::error!(
                        projection = self.subscriber.name(),
                        %error,
                        attempt,
                        batch = events.len(),
                        ?pause,
                        "cannot apply a batch; retrying"
                    );
                    for delivery in deliveries {
                        ack(&delivery.message, AckKind::Progress, self.subscriber.name()).await;
                    }
                    tokio::select! {
                        biased;
                        _ = &mut *shutdown => return None,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }

    async fn publish_changes(&self, changes: Vec<Change>) {
        crate::changes::announce(&self.nats, &self.prefix, changes).await;
    }

    /// Records the messages in `dead_letters` (and their events as done, so
    /// their aggregates' later events go on), then terminates them. If the
    /// record cannot be written, they are nak'd instead, to come back.
    async fn dead_letter(&self, deliveries: &[Delivery], dead: Vec<DeadLetter>) {
        if dead.is_empty() {
            return;
        }
        let name = self.subscriber.name();
        for letter in &dead {
            let delivery = &deliveries[letter.index];
            let event = delivery.envelope.as_ref();
            let _span = message_span(name, delivery).entered();
            tracing::error!(
                projection = name,
                subject = %delivery.message.subject,
                stream_sequence = delivery.stream_sequence,
                aggregate_type = event.map(|e| e.aggregate_type.as_str()),
                aggregate_id = event.map(|e| e.aggregate_id.as_str()),
                sequence = event.map(|e| e.sequence),
                correlation_id = event.and_then(EventEnvelope::correlation_id),
                deliveries = delivery.delivered,
                error = %letter.error,
                "dead-lettering a message"
            );
        }
        match self.write_dead_letters(deliveries, &dead).await {
            Ok(()) => {
                for letter in &dead {
                    ack(&deliveries[letter.index].message, AckKind::Term, name).await;
                }
            }
            Err(error) => {
                tracing::error!(projection = name, %error, "cannot record dead letters; they will come back");
                for letter in &dead {
                    let delivery = &deliveries[letter.index];
                    let delay = redelivery_delay(delivery.delivered);
                    ack(&delivery.message, AckKind::Nak(Some(delay)), name).await;
                }
            }
        }
    }

    async fn write_dead_letters(
        &self,
        deliveries: &[Delivery],
        dead: &[DeadLetter],
    ) -> Result<(), sqlx::Error> {
        // One row per stream message (a message redelivered into the same
        // chunk appears twice).
        let mut rows: HashMap<u64, &DeadLetter> = HashMap::new();
        for letter in dead {
            rows.insert(deliveries[letter.index].stream_sequence, letter);
        }
        let mut subjects = Vec::new();
        let mut stream_sequences = Vec::new();
        let mut aggregate_types = Vec::new();
        let mut aggregate_ids = Vec::new();
        let mut sequences = Vec::new();
        let mut texts = Vec::new();
        let mut errors = Vec::new();
        let mut counts = Vec::new();
        let mut skipped = Vec::new();
        for (stream_sequence, letter) in rows {
            let delivery = &deliveries[letter.index];
            let event = delivery.envelope.as_ref();
            subjects.push(clean(delivery.message.subject.as_str()));
            stream_sequences.push(i64::try_from(stream_sequence).unwrap_or(i64::MAX));
            aggregate_types.push(event.map(|e| clean(&e.aggregate_type)));
            aggregate_ids.push(event.map(|e| clean(&e.aggregate_id)));
            sequences.push(event.map(|e| e.sequence));
            texts.push(clean(&String::from_utf8_lossy(&delivery.message.payload)));
            errors.push(clean(&letter.error));
            counts.push(delivery.delivered);
            if let Some(e) = event {
                skipped.push((clean(&e.aggregate_type), clean(&e.aggregate_id), e.sequence));
            }
        }
        // Not while a replay swaps this projection (it replaces the dead letters).
        let mut tx = self
            .pool
            .begin_with(crate::apply::begin_shared(self.subscriber.lock_id()))
            .await?;
        sqlx::query(
            "INSERT INTO dead_letters (projection, subject, stream_sequence, aggregate_type,
                 aggregate_id, sequence, message, error, deliveries)
             SELECT $1, d.* FROM unnest($2::text[], $3::int8[], $4::text[], $5::text[], $6::int8[],
                 $7::text[], $8::text[], $9::int8[]) AS d
             ON CONFLICT (projection, stream_sequence) DO UPDATE SET error = EXCLUDED.error,
                 deliveries = EXCLUDED.deliveries, failed_at = now()",
        )
        .bind(self.subscriber.name())
        .bind(&subjects)
        .bind(&stream_sequences)
        .bind(&aggregate_types)
        .bind(&aggregate_ids)
        .bind(&sequences)
        .bind(&texts)
        .bind(&errors)
        .bind(&counts)
        .execute(&mut *tx)
        .await?;
        mark_skipped(&mut tx, self.subscriber.as_ref(), &skipped).await?;
        tx.commit().await
    }
}

fn applied_total(projection: &'static str) -> metrics::Counter {
    metrics::counter!("agora_projection_applied_total", "projection" => projection)
}

/// The span under which one message is handled: the trace it belongs to
/// (continued as a new step), the correlation id of the request that started
/// it, and the message that caused this step. Read from the headers the relay
/// sets, else from the event's metadata.
fn message_span(projection: &'static str, delivery: &Delivery) -> tracing::Span {
    let header = |name: &str| {
        delivery
            .message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(name))
            .map(ToString::to_string)
    };
    let event = delivery.envelope.as_ref();
    let correlation_id = header(trace::CORRELATION_HEADER).or_else(|| {
        event
            .and_then(EventEnvelope::correlation_id)
            .map(str::to_owned)
    });
    let parent = header(trace::TRACEPARENT_HEADER)
        .and_then(|value| value.parse::<TraceParent>().ok())
        .or_else(|| event.and_then(EventEnvelope::traceparent));
    let causation_id = header("Nats-Msg-Id").or_else(|| event.map(EventEnvelope::message_id));
    let span = tracing::info_span!(
        "projection_message",
        projection,
        correlation_id = correlation_id.as_deref().unwrap_or(""),
        causation_id = causation_id.as_deref().unwrap_or(""),
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        parent_span_id = parent.map(|p| p.span_id_hex()),
    );
    let step = trace::step(&span, parent);
    span.record("trace_id", step.trace_id_hex());
    span.record("span_id", step.span_id_hex());
    span
}

/// Postgres text cannot hold NUL.
fn clean(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

async fn ack(message: &Message, kind: AckKind, projection: &str) {
    if let Err(error) = message.ack_with(kind).await {
        tracing::warn!(projection, subject = %message.subject, %error, "cannot acknowledge a message");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_are_capped() {
        assert_eq!(redelivery_delay(1), Duration::from_millis(200));
        assert_eq!(redelivery_delay(2), Duration::from_millis(400));
        assert_eq!(redelivery_delay(9), Duration::from_secs(30));
        assert_eq!(redelivery_delay(1000), Duration::from_secs(30));
        assert_eq!(redelivery_delay(0), Duration::from_millis(200));
    }

    #[test]
    fn backoff_fits_the_server_rules() {
        assert!((BACKOFF.len() as i64) < MAX_DELIVER);
        assert_eq!(BACKOFF[0], ACK_WAIT);
        let config = consumer_config(&crate::Projection::Orders, "agora");
        assert_eq!(config.durable_name.as_deref(), Some("agora_orders"));
        assert_eq!(config.filter_subject, "agora.events.order.>");
        assert_eq!(config.max_deliver, MAX_DELIVER);
    }
}
