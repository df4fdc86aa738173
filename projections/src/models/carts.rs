//! `rm_carts`: one row per cart, its lines as product ids and quantities.
//! Prices and availability are not copied here: the query joins today's
//! from `rm_products`, so a price change shows in every cart at once.

use chrono::{DateTime, Utc};
use schemas::events::{CartEvent, CartLine, Event};
use schemas::Recorded;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{change, newer, no_row, Versioned};
use crate::changes::Change;
use crate::error::ProjectionError;
use crate::model::Model;
use crate::table::{AnyTable, Loads, Mode, Record, Table};

pub(crate) const MODEL: &str = "carts";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CartRow {
    pub id: Uuid,
    pub user_id: Option<Uuid>,
    pub token_hash: Option<String>,
    pub status: String,
    /// `jsonb`: `[{product_id, quantity}]`.
    pub lines: Vec<CartLine>,
    pub order_id: Option<Uuid>,
    pub merged_into: Option<Uuid>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Versioned for CartRow {
    fn version(&mut self) -> &mut i64 {
        &mut self.version
    }
}

impl Record for CartRow {
    const TABLE: &'static str = "rm_carts";
    const KEY: &'static str = "id";
    fn key(&self) -> Uuid {
        self.id
    }
}

pub(crate) struct Carts {
    carts: Table<CartRow>,
}

impl Model for Carts {
    fn new(mode: Mode) -> Self {
        Self {
            carts: Table::new(mode),
        }
    }

    fn tables(&mut self) -> Vec<&mut dyn AnyTable> {
        vec![&mut self.carts]
    }

    fn touches(event: &Recorded, loads: &mut Loads) {
        loads.key::<CartRow>(event.id);
    }

    fn fold(&mut self, event: &Recorded) -> Result<Vec<Change>, ProjectionError> {
        let cart = match &event.event {
            Event::Cart(cart) => cart,
            _ => return Ok(newer(&mut self.carts, MODEL, event)),
        };
        match cart {
            CartEvent::CartCreated {
                user_id,
                token_hash,
            } => self.carts.put(CartRow {
                id: event.id,
                user_id: *user_id,
                token_hash: token_hash.clone(),
                status: "open".into(),
                lines: Vec::new(),
                order_id: None,
                merged_into: None,
                version: event.sequence,
                created_at: event.time,
                updated_at: event.time,
            }),
            CartEvent::CartLineSet {
                product_id,
                quantity,
            } => set(&mut self.update(event)?.lines, *product_id, *quantity),
            CartEvent::CartLineRemoved { product_id } => {
                self.update(event)?
                    .lines
                    .retain(|l| l.product_id != *product_id);
            }
            CartEvent::CartClaimed { user_id } => self.update(event)?.user_id = Some(*user_id),
            CartEvent::CartMerged { into } => {
                let row = self.update(event)?;
                row.status = "merged".into();
                row.merged_into = Some(*into);
            }
            CartEvent::CartLinesMerged { lines } => {
                let row = self.update(event)?;
                for line in lines {
                    set(&mut row.lines, line.product_id, line.quantity);
                }
            }
            CartEvent::CartCheckedOut { order_id } => {
                let row = self.update(event)?;
                row.status = "checked_out".into();
                row.order_id = Some(*order_id);
            }
            CartEvent::CartExpired {} => self.update(event)?.status = "expired".into(),
        }
        Ok(vec![change(MODEL, event.id, event.sequence)])
    }
}

/// Sets a line's quantity, appending a new line at the end.
fn set(lines: &mut Vec<CartLine>, product_id: Uuid, quantity: u32) {
    match lines.iter_mut().find(|l| l.product_id == product_id) {
        Some(line) => line.quantity = quantity,
        None => lines.push(CartLine {
            product_id,
            quantity,
        }),
    }
}

impl Carts {
    /// The row an event of its stream changes, at the event's version.
    fn update(&mut self, event: &Recorded) -> Result<&mut CartRow, ProjectionError> {
        let row = self
            .carts
            .get_mut(event.id)
            .ok_or_else(|| no_row(CartRow::TABLE, event))?;
        row.version = event.sequence;
        row.updated_at = event.time;
        Ok(row)
    }
}
