//! The webhook intake: a subscriber (see `projections::subscriber`) that
//! turns each event with a webhook name into one delivery row per enabled
//! endpoint subscribed to it, in the same transaction as the bookkeeping
//! that makes each event count once. So every matching event is enqueued
//! exactly once per endpoint, however often the broker delivers it, and the
//! repair enqueues one the broker lost.

use std::sync::Arc;

use async_trait::async_trait;
use projections::{Applied, Subscriber};
use schemas::names::aggregate;
use schemas::{subjects, Recorded};
use sqlx::PgConnection;
use tokio::sync::Notify;
use uuid::Uuid;

/// Its durable consumer is `<prefix>_webhooks`.
pub const NAME: &str = "webhooks";

/// The second key of its advisory lock; fixed forever, distinct from every
/// other subscriber's (`lock_id_is_its_own`).
pub const LOCK_ID: i32 = 8;

pub fn consumer_name(prefix: &str) -> String {
    subjects::consumer(prefix, NAME)
}

/// Rings the delivery loop of this process when deliveries were enqueued.
#[derive(Clone, Default)]
pub struct Intake {
    pub wake: Arc<Notify>,
}

#[async_trait]
impl Subscriber for Intake {
    fn name(&self) -> &'static str {
        NAME
    }

    fn lock_id(&self) -> i32 {
        LOCK_ID
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[
            aggregate::USER,
            aggregate::PRODUCT,
            aggregate::ORDER,
            aggregate::PAYMENT,
            aggregate::CART,
        ]
    }

    fn filter_subject(&self, prefix: &str) -> String {
        subjects::events_wildcard(prefix)
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        events: &[&Recorded],
    ) -> Result<Vec<Applied>, sqlx::Error> {
        let named: Vec<(&Recorded, &'static str)> = events
            .iter()
            .filter_map(|e| crate::event_name(&e.event).map(|name| (*e, name)))
            .collect();
        if !named.is_empty() {
            enqueue(tx, &named).await?;
        }
        Ok(events.iter().map(|_| Applied::Done(Vec::new())).collect())
    }

    fn committed(&self) {
        self.wake.notify_one();
    }
}

/// The endpoints subscribed to each event, as delivery rows; the event's
/// row (its name, later its body) once, whatever number of endpoints.
async fn enqueue(
    tx: &mut PgConnection,
    named: &[(&Recorded, &'static str)],
) -> Result<(), sqlx::Error> {
    let endpoints: Vec<(Uuid, Vec<String>)> =
        sqlx::query_as("SELECT id, events FROM webhook_endpoints WHERE status = 'enabled'")
            .fetch_all(&mut *tx)
            .await?;
    if endpoints.is_empty() {
        return Ok(());
    }
    let mut events = Events::default();
    let mut deliveries = Deliveries::default();
    for (event, name) in named {
        let wanted: Vec<Uuid> = endpoints
            .iter()
            .filter(|(_, patterns)| crate::matches(patterns, name))
            .map(|(id, _)| *id)
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let event_id = event.message_id();
        events.ids.push(event_id.clone());
        events.names.push((*name).to_owned());
        events.types.push(event.aggregate_type.clone());
        events.aggregates.push(event.id);
        events.sequences.push(event.sequence);
        events.times.push(event.time);
        for endpoint in wanted {
            deliveries.ids.push(Uuid::now_v7());
            deliveries.endpoints.push(endpoint);
            deliveries.events.push(event_id.clone());
            deliveries.aggregates.push(event.id);
            deliveries.sequences.push(event.sequence);
        }
    }
    if events.ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO webhook_events (event_id, event_type, aggregate_type, aggregate_id, sequence, occurred_at) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::bigint[], $6::timestamptz[]) \
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&events.ids)
    .bind(&events.names)
    .bind(&events.types)
    .bind(&events.aggregates)
    .bind(&events.sequences)
    .bind(&events.times)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, aggregate_id, sequence) \
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::bigint[]) \
         ON CONFLICT (endpoint_id, event_id) DO NOTHING",
    )
    .bind(&deliveries.ids)
    .bind(&deliveries.endpoints)
    .bind(&deliveries.events)
    .bind(&deliveries.aggregates)
    .bind(&deliveries.sequences)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[derive(Default)]
struct Events {
    ids: Vec<String>,
    names: Vec<String>,
    types: Vec<String>,
    aggregates: Vec<Uuid>,
    sequences: Vec<i64>,
    times: Vec<chrono::DateTime<chrono::Utc>>,
}

#[derive(Default)]
struct Deliveries {
    ids: Vec<Uuid>,
    endpoints: Vec<Uuid>,
    events: Vec<String>,
    aggregates: Vec<Uuid>,
    sequences: Vec<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use projections::Projection;

    #[test]
    fn lock_id_is_its_own() {
        for projection in Projection::ALL {
            assert_ne!(projection.lock_id(), LOCK_ID, "{projection}");
        }
        // 0 is the replay's; 64 the saga's intake.
        assert_ne!(LOCK_ID, 0);
        assert_ne!(LOCK_ID, 64);
        assert_eq!(LOCK_ID, 8, "pinned: never change it");
    }
}
