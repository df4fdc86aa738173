//! The saga's durable JetStream consumer: turns the events it cares about
//! into rows of `saga_orders` and acknowledges each message only after its
//! row is committed. Everything else is acknowledged and ignored.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::message::Message;
use async_nats::jetstream::AckKind;
use futures::StreamExt;
use schemas::{subjects, EventEnvelope};
use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::store::{self, Wake};

/// The durable consumer's name under the deployment's prefix.
pub fn consumer_name(prefix: &str) -> String {
    subjects::consumer(prefix, "saga")
}

/// Writing a batch of rows is quick; a message unacknowledged this long
/// belonged to a process that died, and comes back.
const ACK_WAIT: Duration = Duration::from_secs(10);
const PULL_EXPIRES: Duration = Duration::from_secs(5);
const BATCH: usize = 256;

pub fn consumer_config(prefix: &str) -> pull::Config {
    pull::Config {
        durable_name: Some(consumer_name(prefix)),
        description: Some("the order saga".to_owned()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        filter_subject: subjects::events_wildcard(prefix),
        max_ack_pending: 1000,
        ..Default::default()
    }
}

pub async fn ensure_consumer(
    jetstream: &async_nats::jetstream::Context,
    prefix: &str,
) -> Result<PullConsumer, async_nats::Error> {
    Ok(jetstream
        .create_consumer_on_stream(consumer_config(prefix), subjects::stream(prefix))
        .await?)
}

/// What an event asks of the saga, if anything.
pub fn wake_for(event: &EventEnvelope) -> Option<Wake> {
    let id = Uuid::parse_str(&event.aggregate_id).ok()?;
    match (event.aggregate_type.as_str(), event.event_type.as_str()) {
        ("order", "OrderPlaced") => Some(Wake::Placed {
            order_id: id,
            at: event.recorded_at,
            correlation_id: event.correlation_id().map(str::to_owned),
            traceparent: event.traceparent().map(|t| t.to_string()),
        }),
        ("order", "OrderCancelled") => Some(Wake::Compensate {
            order_id: id,
            at: event.recorded_at,
        }),
        ("payment", "PaymentRefunded") => Some(Wake::Refunded { payment_id: id }),
        _ => None,
    }
}

/// Consumes until `shutdown` resolves. NATS and database trouble is logged
/// and retried; it never ends the consumer.
pub async fn run(
    pool: PgPool,
    jetstream: async_nats::jetstream::Context,
    prefix: String,
    wake: Arc<Notify>,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut failures = 0u32;
    'connect: loop {
        if failures > 0 {
            let pause = Duration::from_millis(250u64 << failures.min(5));
            tokio::select! {
                biased;
                () = &mut shutdown => break 'connect,
                () = tokio::time::sleep(pause) => {}
            }
        }
        let consumer = tokio::select! {
            biased;
            () = &mut shutdown => break 'connect,
            consumer = ensure_consumer(&jetstream, &prefix) => consumer,
        };
        let consumer = match consumer {
            Ok(consumer) => consumer,
            Err(error) => {
                tracing::warn!(%error, "saga: cannot create the consumer; retrying");
                failures += 1;
                continue;
            }
        };
        let messages = match consumer
            .stream()
            .max_messages_per_batch(BATCH)
            .expires(PULL_EXPIRES)
            .heartbeat(PULL_EXPIRES / 3)
            .messages()
            .await
        {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "saga: cannot pull messages; retrying");
                failures += 1;
                continue;
            }
        };
        let mut chunks = messages.ready_chunks(BATCH);
        loop {
            let chunk = tokio::select! {
                biased;
                () = &mut shutdown => break 'connect,
                chunk = chunks.next() => chunk,
            };
            let Some(chunk) = chunk else {
                failures += 1;
                continue 'connect;
            };
            let mut batch = Vec::with_capacity(chunk.len());
            let mut broken = None;
            for item in chunk {
                match item {
                    Ok(message) => batch.push(message),
                    Err(error) => broken = Some(error),
                }
            }
            if !batch.is_empty() {
                handle(&pool, &wake, batch).await;
                failures = 0;
            }
            if let Some(error) = broken {
                use async_nats::jetstream::consumer::pull::MessagesErrorKind;
                if error.kind() != MessagesErrorKind::MissingHeartbeat {
                    tracing::warn!(%error, "saga: pull failed; reconnecting");
                    failures += 1;
                    continue 'connect;
                }
            }
        }
    }
    tracing::info!("saga consumer stopped");
}

async fn handle(pool: &PgPool, wake: &Notify, batch: Vec<Message>) {
    let mut wakes = Vec::new();
    for message in &batch {
        match serde_json::from_slice::<EventEnvelope>(&message.payload) {
            Ok(event) => wakes.extend(wake_for(&event)),
            // Nothing the saga could ever do with it; the projections
            // dead-letter it where an operator looks.
            Err(error) => {
                tracing::error!(subject = %message.subject, %error, "saga: undecodable event skipped")
            }
        }
    }
    if !wakes.is_empty() {
        if let Err(error) = store::wake(pool, &wakes).await {
            tracing::warn!(%error, "saga: cannot record the batch; it will be redelivered");
            for message in &batch {
                ack(message, AckKind::Nak(Some(Duration::from_secs(1)))).await;
            }
            return;
        }
        wake.notify_one();
    }
    for message in &batch {
        ack(message, AckKind::Ack).await;
    }
}

async fn ack(message: &Message, kind: AckKind) {
    if let Err(error) = message.ack_with(kind).await {
        tracing::warn!(subject = %message.subject, %error, "saga: cannot acknowledge a message");
    }
}

/// Messages the saga's consumer has not been handed yet.
pub async fn pending(
    jetstream: &async_nats::jetstream::Context,
    prefix: &str,
) -> Result<u64, async_nats::Error> {
    let stream = jetstream.get_stream(subjects::stream(prefix)).await?;
    let mut consumer: PullConsumer = stream.get_consumer(&consumer_name(prefix)).await?;
    let info = consumer.info().await?;
    Ok(info.num_pending + info.num_ack_pending as u64)
}
