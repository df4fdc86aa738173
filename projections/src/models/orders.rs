//! `rm_orders`: one row per order, lines as placed (with their unit prices).

use chrono::{DateTime, Utc};
use schemas::events::{Event, OrderEvent, OrderLine};
use schemas::Recorded;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{change, newer, no_row, Versioned};
use crate::changes::Change;
use crate::error::ProjectionError;
use crate::model::Model;
use crate::table::{AnyTable, Loads, Mode, Record, Table};

pub(crate) const MODEL: &str = "orders";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct OrderRow {
    pub id: Uuid,
    pub user_id: Uuid,
    /// `jsonb`: `[{product_id, quantity, unit_price}]`.
    pub lines: Vec<OrderLine>,
    pub total_amount: i64,
    pub total_currency: String,
    pub status: String,
    pub cancel_reason: Option<String>,
    pub cancel_note: Option<String>,
    pub payment_id: Option<Uuid>,
    pub cart_id: Option<Uuid>,
    /// `jsonb`.
    /// Sealed (`schemas::sealed`), or in clear from an order placed before
    /// version 2.0 of `OrderPlaced`.
    pub shipping_address: Option<serde_json::Value>,
    pub version: i64,
    pub placed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Versioned for OrderRow {
    fn version(&mut self) -> &mut i64 {
        &mut self.version
    }
}

impl Record for OrderRow {
    const TABLE: &'static str = "rm_orders";
    const KEY: &'static str = "id";
    const JSON_STRINGS: &'static [&'static str] = &["shipping_address"];
    fn key(&self) -> Uuid {
        self.id
    }
}

pub(crate) struct Orders {
    orders: Table<OrderRow>,
}

impl Model for Orders {
    fn new(mode: Mode) -> Self {
        Self {
            orders: Table::new(mode),
        }
    }

    fn tables(&mut self) -> Vec<&mut dyn AnyTable> {
        vec![&mut self.orders]
    }

    fn touches(event: &Recorded, loads: &mut Loads) {
        loads.key::<OrderRow>(event.id);
    }

    fn fold(&mut self, event: &Recorded) -> Result<Vec<Change>, ProjectionError> {
        let order = match &event.event {
            Event::Order(order) => order,
            _ => return Ok(newer(&mut self.orders, MODEL, event)),
        };
        match order {
            OrderEvent::OrderPlaced {
                user_id,
                lines,
                total,
                cart_id,
                shipping_address,
            } => self.orders.put(OrderRow {
                id: event.id,
                user_id: *user_id,
                lines: lines.clone(),
                total_amount: total.amount,
                total_currency: total.currency.clone(),
                status: "pending".into(),
                cancel_reason: None,
                cancel_note: None,
                payment_id: None,
                cart_id: *cart_id,
                // Sealed as is; an address in clear (before 2.0) with
                // every field, as answers show it.
                shipping_address: shipping_address.as_ref().map(|address| {
                    serde_json::from_value::<schemas::events::ShippingAddress>(address.clone())
                        .ok()
                        .and_then(|a| serde_json::to_value(a).ok())
                        .unwrap_or_else(|| address.clone())
                }),
                version: event.sequence,
                placed_at: event.time,
                updated_at: event.time,
            }),
            OrderEvent::OrderPaymentAssigned { payment_id } => {
                self.update(event)?.payment_id = Some(*payment_id);
            }
            OrderEvent::OrderConfirmed {} => self.update(event)?.status = "confirmed".into(),
            OrderEvent::OrderShipped {} => self.update(event)?.status = "shipped".into(),
            // Before `OrderRefunded` existed, refunding a shipped order was
            // stored as this cancellation; it means what `OrderRefunded` means.
            OrderEvent::OrderCancelled {
                reason,
                previous_status,
                ..
            } if reason == "refunded" && previous_status.as_deref() == Some("shipped") => {
                self.update(event)?.status = "refunded".into();
            }
            OrderEvent::OrderCancelled { reason, note, .. } => {
                let row = self.update(event)?;
                row.status = "cancelled".into();
                row.cancel_reason = Some(reason.clone());
                row.cancel_note = note.clone();
            }
            OrderEvent::OrderRefunded {} => self.update(event)?.status = "refunded".into(),
        }
        Ok(vec![change(MODEL, event.id, event.sequence)])
    }
}

impl Orders {
    /// The row an event of its stream changes, at the event's version.
    fn update(&mut self, event: &Recorded) -> Result<&mut OrderRow, ProjectionError> {
        let row = self
            .orders
            .get_mut(event.id)
            .ok_or_else(|| no_row(OrderRow::TABLE, event))?;
        row.version = event.sequence;
        row.updated_at = event.time;
        Ok(row)
    }
}
