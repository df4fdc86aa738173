//! `rm_payments`: one row per payment, with how many gateway attempts it took.

use chrono::{DateTime, Utc};
use schemas::events::{Event, PaymentEvent};
use schemas::Recorded;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{change, newer, no_row, out_of_range, Versioned};
use crate::changes::Change;
use crate::error::ProjectionError;
use crate::model::Model;
use crate::table::{AnyTable, Loads, Mode, Record, Table};

pub(crate) const MODEL: &str = "payments";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PaymentRow {
    pub id: Uuid,
    pub order_id: Uuid,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Versioned for PaymentRow {
    fn version(&mut self) -> &mut i64 {
        &mut self.version
    }
}

impl Record for PaymentRow {
    const TABLE: &'static str = "rm_payments";
    const KEY: &'static str = "id";
    fn key(&self) -> Uuid {
        self.id
    }
}

pub(crate) struct Payments {
    payments: Table<PaymentRow>,
}

impl Model for Payments {
    fn new(mode: Mode) -> Self {
        Self {
            payments: Table::new(mode),
        }
    }

    fn tables(&mut self) -> Vec<&mut dyn AnyTable> {
        vec![&mut self.payments]
    }

    fn touches(event: &Recorded, loads: &mut Loads) {
        loads.key::<PaymentRow>(event.id);
    }

    fn fold(&mut self, event: &Recorded) -> Result<Vec<Change>, ProjectionError> {
        // What each event does: (new status, attempts it adds, new last error).
        let (status, attempts, last_error) = match &event.event {
            Event::Payment(PaymentEvent::PaymentRequested { order_id, amount }) => {
                self.payments.put(PaymentRow {
                    id: event.id,
                    order_id: *order_id,
                    amount: amount.amount,
                    currency: amount.currency.clone(),
                    status: "pending".into(),
                    attempts: 0,
                    last_error: None,
                    version: event.sequence,
                    created_at: event.time,
                    updated_at: event.time,
                });
                return Ok(vec![change(MODEL, event.id, event.sequence)]);
            }
            Event::Payment(PaymentEvent::PaymentAttemptFailed { error }) => (None, 1, Some(error)),
            Event::Payment(PaymentEvent::PaymentAuthorized {}) => (Some("authorized"), 1, None),
            Event::Payment(PaymentEvent::PaymentDeclined { reason }) => {
                (Some("declined"), 1, Some(reason))
            }
            Event::Payment(PaymentEvent::PaymentFailed { reason }) => {
                (Some("failed"), 1, Some(reason))
            }
            Event::Payment(PaymentEvent::PaymentCaptured {}) => (Some("captured"), 0, None),
            Event::Payment(PaymentEvent::PaymentRefunded {}) => (Some("refunded"), 0, None),
            _ => return Ok(newer(&mut self.payments, MODEL, event)),
        };
        let row = self
            .payments
            .get_mut(event.id)
            .ok_or_else(|| no_row(PaymentRow::TABLE, event))?;
        row.attempts = row
            .attempts
            .checked_add(attempts)
            .ok_or_else(|| out_of_range(event))?;
        if let Some(status) = status {
            row.status = status.into();
        }
        if let Some(error) = last_error {
            row.last_error = Some(error.clone());
        }
        row.version = event.sequence;
        row.updated_at = event.time;
        Ok(vec![change(MODEL, event.id, event.sequence)])
    }
}
