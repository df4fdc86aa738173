//! The saga's intake: a subscriber (see `projections::subscriber`) that turns
//! the events the saga cares about into rows of `saga_orders`, in the same
//! transaction as the bookkeeping that makes each event count once. It runs
//! on the same worker as the projections, and the same repair finds an
//! `OrderPlaced` the broker lost, so no order is left without its row.

use std::sync::Arc;

use async_trait::async_trait;
use projections::{Applied, Subscriber};
use schemas::events::{Event, OrderEvent, PaymentEvent};
use schemas::names::aggregate;
use schemas::{subjects, Recorded};
use sqlx::PgConnection;
use tokio::sync::Notify;

use crate::store::{self, Wake};

/// The intake's name: its durable consumer is `<prefix>_saga`.
pub const NAME: &str = "saga";

/// The second key of its advisory lock; fixed forever, and distinct from
/// every projection's (`lock_id_is_its_own`).
pub const LOCK_ID: i32 = 64;

/// The durable consumer's name under the deployment's prefix.
pub fn consumer_name(prefix: &str) -> String {
    subjects::consumer(prefix, NAME)
}

pub struct Intake {
    /// Rings the step loop after a batch with work commits.
    pub(crate) wake: Arc<Notify>,
}

impl Intake {
    /// An intake whose commits wake no one (for status and repair).
    pub fn new() -> Intake {
        Intake {
            wake: Arc::new(Notify::new()),
        }
    }
}

impl Default for Intake {
    fn default() -> Self {
        Self::new()
    }
}

/// What an event asks of the saga, if anything.
pub fn wake_for(event: &Recorded) -> Option<Wake> {
    match &event.event {
        Event::Order(OrderEvent::OrderPlaced { .. }) => Some(Wake::Placed {
            order_id: event.id,
            at: event.recorded_at,
            correlation_id: event.correlation_id.clone(),
            traceparent: event.traceparent.map(|t| t.to_string()),
        }),
        Event::Order(OrderEvent::OrderCancelled { .. }) => Some(Wake::Compensate {
            order_id: event.id,
            at: event.recorded_at,
        }),
        Event::Payment(PaymentEvent::PaymentRefunded {}) => Some(Wake::Refunded {
            payment_id: event.id,
        }),
        _ => None,
    }
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
        &[aggregate::ORDER, aggregate::PAYMENT]
    }

    fn filter_subject(&self, prefix: &str) -> String {
        subjects::events_wildcard(prefix)
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        events: &[&Recorded],
    ) -> Result<Vec<Applied>, sqlx::Error> {
        let wakes: Vec<Wake> = events.iter().filter_map(|e| wake_for(e)).collect();
        store::wake(tx, &wakes).await?;
        Ok(events.iter().map(|_| Applied::Done(Vec::new())).collect())
    }

    fn committed(&self) {
        self.wake.notify_one();
    }
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
        // 0 is the replay's own lock.
        assert_ne!(LOCK_ID, 0);
    }
}
