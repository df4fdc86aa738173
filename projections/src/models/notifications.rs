//! `rm_notifications`: what a user is told, one row per (source event, kind).
//!
//! Order and payment events do not carry the user, so this model keeps its
//! own maps (order → user from `OrderPlaced`, payment → order and user from
//! `PaymentRequested`) instead of reading another projection's tables. An
//! event whose map entry is not there yet (its aggregate's first event is
//! still on its way) is retryable.

use chrono::{DateTime, Utc};
use schemas::events::{Event, OrderEvent, PaymentEvent, UserEvent};
use schemas::Recorded;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::change;
use crate::changes::Change;
use crate::error::ProjectionError;
use crate::model::Model;
use crate::table::{AnyTable, Loads, Mode, Record, Table};

pub(crate) const MODEL: &str = "notifications";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct NotificationRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub kind: String,
    pub order_id: Option<Uuid>,
    /// The source event and kind: what makes a notification exactly-once.
    pub source: String,
    pub created_at: DateTime<Utc>,
}

impl Record for NotificationRow {
    const TABLE: &'static str = "rm_notifications";
    const KEY: &'static str = "id";
    fn key(&self) -> Uuid {
        self.id
    }
}

/// `rm_notification_orders`: whose order it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct OrderOwner {
    pub order_id: Uuid,
    pub user_id: Uuid,
}

impl Record for OrderOwner {
    const TABLE: &'static str = "rm_notification_orders";
    const KEY: &'static str = "order_id";
    fn key(&self) -> Uuid {
        self.order_id
    }
}

/// `rm_notification_payments`: which order, and whose, a payment is for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PaymentOwner {
    pub payment_id: Uuid,
    pub order_id: Uuid,
    pub user_id: Uuid,
}

impl Record for PaymentOwner {
    const TABLE: &'static str = "rm_notification_payments";
    const KEY: &'static str = "payment_id";
    fn key(&self) -> Uuid {
        self.payment_id
    }
}

pub(crate) struct Notifications {
    notifications: Table<NotificationRow>,
    orders: Table<OrderOwner>,
    payments: Table<PaymentOwner>,
}

/// A notification's id, derived from its source so a rebuild finds the same
/// (a version 8 UUID over the source's SHA-256).
pub(crate) fn notification_id(source: &str) -> Uuid {
    let digest = Sha256::digest(source.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

impl Model for Notifications {
    fn new(mode: Mode) -> Self {
        Self {
            notifications: Table::new(mode),
            orders: Table::new(mode),
            payments: Table::new(mode),
        }
    }

    fn tables(&mut self) -> Vec<&mut dyn AnyTable> {
        vec![
            &mut self.notifications,
            &mut self.orders,
            &mut self.payments,
        ]
    }

    fn touches(event: &Recorded, loads: &mut Loads) {
        match &event.event {
            Event::Order(
                OrderEvent::OrderConfirmed {}
                | OrderEvent::OrderCancelled { .. }
                | OrderEvent::OrderShipped {},
            ) => loads.key::<OrderOwner>(event.id),
            Event::Payment(PaymentEvent::PaymentRequested { order_id, .. }) => {
                loads.key::<OrderOwner>(*order_id)
            }
            Event::Payment(PaymentEvent::PaymentRefunded {}) => loads.key::<PaymentOwner>(event.id),
            Event::User(UserEvent::UserErased {}) => {
                loads.by::<NotificationRow>("user_id", event.id)
            }
            _ => {}
        }
    }

    fn fold(&mut self, event: &Recorded) -> Result<Vec<Change>, ProjectionError> {
        let (user_id, kind, order_id) = match &event.event {
            Event::User(UserEvent::UserRegistered { .. }) => (event.id, "welcome", None),
            // An erased user's notifications go with it.
            Event::User(UserEvent::UserErased {}) => {
                let gone: Vec<Uuid> = self
                    .notifications
                    .rows()
                    .filter(|row| row.user_id == event.id)
                    .map(|row| row.id)
                    .collect();
                for id in gone {
                    self.notifications.remove(id);
                }
                return Ok(vec![change(MODEL, event.id, 0)]);
            }
            Event::Order(OrderEvent::OrderPlaced { user_id, .. }) => {
                self.orders.put(OrderOwner {
                    order_id: event.id,
                    user_id: *user_id,
                });
                return Ok(Vec::new());
            }
            Event::Order(OrderEvent::OrderConfirmed {}) => (
                self.owner(event, event.id)?,
                "order_confirmed",
                Some(event.id),
            ),
            Event::Order(OrderEvent::OrderCancelled { .. }) => (
                self.owner(event, event.id)?,
                "order_cancelled",
                Some(event.id),
            ),
            Event::Order(OrderEvent::OrderShipped {}) => (
                self.owner(event, event.id)?,
                "order_shipped",
                Some(event.id),
            ),
            Event::Payment(PaymentEvent::PaymentRequested { order_id, .. }) => {
                let user_id = self.owner(event, *order_id)?;
                self.payments.put(PaymentOwner {
                    payment_id: event.id,
                    order_id: *order_id,
                    user_id,
                });
                return Ok(Vec::new());
            }
            Event::Payment(PaymentEvent::PaymentRefunded {}) => {
                let Some(payment) = self.payments.get(event.id) else {
                    return Err(ProjectionError::Retryable(format!(
                        "PaymentRefunded of payment {}: its PaymentRequested is not applied yet",
                        event.id
                    )));
                };
                (payment.user_id, "payment_refunded", Some(payment.order_id))
            }
            _ => return Ok(Vec::new()),
        };
        let source = format!("{}:{kind}", event.message_id());
        self.notifications.put(NotificationRow {
            id: notification_id(&source),
            user_id,
            kind: kind.into(),
            order_id,
            source,
            created_at: event.time,
        });
        Ok(vec![change(MODEL, user_id, 0)])
    }
}

impl Notifications {
    /// Whose order `order_id` is, from its `OrderPlaced`.
    fn owner(&self, event: &Recorded, order_id: Uuid) -> Result<Uuid, ProjectionError> {
        self.orders
            .get(order_id)
            .map(|owner| owner.user_id)
            .ok_or_else(|| {
                ProjectionError::Retryable(format!(
                    "{} of {} {}: order {order_id} has no OrderPlaced applied yet",
                    event.event_type, event.aggregate_type, event.aggregate_id
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = notification_id("user:1:1:welcome");
        assert_eq!(a, notification_id("user:1:1:welcome"));
        assert_ne!(a, notification_id("user:2:1:welcome"));
        assert_eq!(a.get_version_num(), 8);
    }
}
