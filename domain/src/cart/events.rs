use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::CartLine;
use crate::values::Currency;
use crate::EVENT_VERSION;

#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CartEvent {
    /// `token_hash`: the hex SHA-256 of a guest cart's token (256 random
    /// bits, so the hash tells nothing about it); none for a customer's.
    CartCreated {
        cart_id: Uuid,
        user_id: Option<Uuid>,
        token_hash: Option<String>,
    },
    /// `currency` is the product's when the line was set: the cart's
    /// currency is its lines'.
    CartLineSet {
        product_id: Uuid,
        quantity: u32,
        currency: Currency,
    },
    CartLineRemoved {
        product_id: Uuid,
    },
    CartClaimed {
        user_id: Uuid,
    },
    /// This guest cart's lines went to the customer's cart `into`.
    CartMerged {
        into: Uuid,
        user_id: Uuid,
    },
    /// The lines of guest cart `from` joined this one: `lines` are the
    /// changed lines with their new quantities.
    CartLinesMerged {
        from: Uuid,
        lines: Vec<CartLine>,
        currency: Option<Currency>,
    },
    CartCheckedOut {
        order_id: Uuid,
    },
    CartExpired {},
}

impl DomainEvent for CartEvent {
    fn event_type(&self) -> String {
        match self {
            Self::CartCreated { .. } => "CartCreated",
            Self::CartLineSet { .. } => "CartLineSet",
            Self::CartLineRemoved { .. } => "CartLineRemoved",
            Self::CartClaimed { .. } => "CartClaimed",
            Self::CartMerged { .. } => "CartMerged",
            Self::CartLinesMerged { .. } => "CartLinesMerged",
            Self::CartCheckedOut { .. } => "CartCheckedOut",
            Self::CartExpired {} => "CartExpired",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        EVENT_VERSION.to_string()
    }
}
