//! `rm_products`: one row per product, with its stock split into what can
//! still be ordered (`available`) and what open orders hold (`reserved`).

use chrono::{DateTime, Utc};
use schemas::events::{Event, ProductEvent};
use schemas::Recorded;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{change, newer, no_row, out_of_range, Versioned};
use crate::changes::Change;
use crate::error::ProjectionError;
use crate::model::Model;
use crate::table::{AnyTable, Loads, Mode, Record, Table};

pub(crate) const MODEL: &str = "products";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ProductRow {
    pub id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: Option<String>,
    pub price_amount: i64,
    pub price_currency: String,
    pub available: i64,
    pub reserved: i64,
    pub status: String,
    /// A JSON array of category ids, in the order given.
    pub category_ids: Vec<Uuid>,
    /// A JSON object of attribute strings.
    pub attributes: std::collections::BTreeMap<String, String>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Versioned for ProductRow {
    fn version(&mut self) -> &mut i64 {
        &mut self.version
    }
}

impl Record for ProductRow {
    const TABLE: &'static str = "rm_products";
    const KEY: &'static str = "id";
    fn key(&self) -> Uuid {
        self.id
    }
}

pub(crate) struct Products {
    products: Table<ProductRow>,
}

impl Model for Products {
    fn new(mode: Mode) -> Self {
        Self {
            products: Table::new(mode),
        }
    }

    fn tables(&mut self) -> Vec<&mut dyn AnyTable> {
        vec![&mut self.products]
    }

    fn touches(event: &Recorded, loads: &mut Loads) {
        loads.key::<ProductRow>(event.id);
    }

    fn fold(&mut self, event: &Recorded) -> Result<Vec<Change>, ProjectionError> {
        let product = match &event.event {
            Event::Product(product) => product,
            _ => return Ok(newer(&mut self.products, MODEL, event)),
        };
        let stock_only = matches!(
            product,
            ProductEvent::ProductStockAdjusted { .. }
                | ProductEvent::StockReserved { .. }
                | ProductEvent::StockReservationReleased { .. }
                | ProductEvent::StockReservationCommitted { .. }
                | ProductEvent::StockReturned { .. }
        );
        match product {
            ProductEvent::ProductCreated {
                sku,
                name,
                description,
                price,
                stock,
            } => self.products.put(ProductRow {
                id: event.id,
                sku: sku.clone(),
                name: name.clone(),
                description: description.clone(),
                price_amount: price.amount,
                price_currency: price.currency.clone(),
                available: *stock,
                reserved: 0,
                status: "active".into(),
                category_ids: Vec::new(),
                attributes: Default::default(),
                version: event.sequence,
                created_at: event.time,
                updated_at: event.time,
            }),
            ProductEvent::ProductDetailsUpdated { name, description } => {
                let row = self.update(event)?;
                if let Some(name) = name {
                    row.name = name.clone();
                }
                if description.is_some() {
                    row.description = description.clone();
                }
            }
            ProductEvent::ProductPriceChanged { price } => {
                let row = self.update(event)?;
                row.price_amount = price.amount;
                row.price_currency = price.currency.clone();
            }
            ProductEvent::ProductDiscontinued {} => {
                self.update(event)?.status = "discontinued".into()
            }
            ProductEvent::ProductStockAdjusted { stock_delta } => {
                self.move_stock(event, *stock_delta, 0)?
            }
            ProductEvent::StockReserved { quantity, .. } => {
                let q = i64::from(*quantity);
                self.move_stock(event, -q, q)?;
            }
            ProductEvent::StockReservationReleased { quantity, .. } => {
                let q = i64::from(*quantity);
                self.move_stock(event, q, -q)?;
            }
            ProductEvent::StockReservationCommitted { quantity, .. } => {
                self.move_stock(event, 0, -i64::from(*quantity))?;
            }
            ProductEvent::StockReturned { quantity, .. } => {
                self.move_stock(event, i64::from(*quantity), 0)?;
            }
            ProductEvent::ProductCategoriesSet { category_ids } => {
                self.update(event)?.category_ids = category_ids.clone();
            }
            ProductEvent::ProductAttributesSet { attributes } => {
                self.update(event)?.attributes = attributes.clone();
            }
        }
        Ok(vec![Change {
            stock_only,
            ..change(MODEL, event.id, event.sequence)
        }])
    }
}

impl Products {
    /// The row an event of its stream changes, at the event's version.
    fn update(&mut self, event: &Recorded) -> Result<&mut ProductRow, ProjectionError> {
        let row = self
            .products
            .get_mut(event.id)
            .ok_or_else(|| no_row(ProductRow::TABLE, event))?;
        row.version = event.sequence;
        row.updated_at = event.time;
        Ok(row)
    }

    /// Adds to `available` and `reserved`: the one table of what each stock
    /// event moves.
    fn move_stock(
        &mut self,
        event: &Recorded,
        available: i64,
        reserved: i64,
    ) -> Result<(), ProjectionError> {
        let row = self.update(event)?;
        let (Some(available), Some(reserved)) = (
            row.available.checked_add(available),
            row.reserved.checked_add(reserved),
        ) else {
            return Err(out_of_range(event));
        };
        row.available = available;
        row.reserved = reserved;
        Ok(())
    }
}
