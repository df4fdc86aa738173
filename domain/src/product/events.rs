use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::{Attributes, Description, Money, Name, Sku};
use crate::{EVENT_VERSION, PRODUCT_STOCK_ADJUSTED_VERSION};

#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ProductEvent {
    ProductCreated {
        product_id: Uuid,
        sku: Sku,
        name: Name,
        description: Option<Description>,
        price: Money,
        stock: i64,
    },
    /// Only the fields that changed are `Some`.
    ProductDetailsUpdated {
        name: Option<Name>,
        description: Option<Description>,
    },
    ProductPriceChanged {
        price: Money,
    },
    /// Version 2 (`PRODUCT_STOCK_ADJUSTED_VERSION`): version 1 named the
    /// field `delta`; stored v1 events are upcast on read
    /// (`schemas::upcast`).
    ProductStockAdjusted {
        stock_delta: i64,
    },
    ProductDiscontinued {},
    StockReserved {
        order_id: Uuid,
        quantity: u32,
    },
    StockReservationReleased {
        order_id: Uuid,
        quantity: u32,
    },
    StockReservationCommitted {
        order_id: Uuid,
        quantity: u32,
    },
    StockReturned {
        order_id: Uuid,
        quantity: u32,
    },
    /// The whole list, in the order given.
    ProductCategoriesSet {
        category_ids: Vec<Uuid>,
    },
    /// The whole set of attributes.
    ProductAttributesSet {
        attributes: Attributes,
    },
}

impl DomainEvent for ProductEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ProductCreated { .. } => "ProductCreated",
            Self::ProductDetailsUpdated { .. } => "ProductDetailsUpdated",
            Self::ProductPriceChanged { .. } => "ProductPriceChanged",
            Self::ProductStockAdjusted { .. } => "ProductStockAdjusted",
            Self::ProductDiscontinued {} => "ProductDiscontinued",
            Self::StockReserved { .. } => "StockReserved",
            Self::StockReservationReleased { .. } => "StockReservationReleased",
            Self::StockReservationCommitted { .. } => "StockReservationCommitted",
            Self::StockReturned { .. } => "StockReturned",
            Self::ProductCategoriesSet { .. } => "ProductCategoriesSet",
            Self::ProductAttributesSet { .. } => "ProductAttributesSet",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        match self {
            Self::ProductStockAdjusted { .. } => PRODUCT_STOCK_ADJUSTED_VERSION,
            _ => EVENT_VERSION,
        }
        .to_string()
    }
}
