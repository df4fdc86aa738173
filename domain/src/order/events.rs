use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{CancelReason, OrderLine, OrderStatus};
use crate::address::ShippingAddress;
use crate::values::Money;
use crate::{EVENT_VERSION, PERSONAL_DATA_VERSION};

// One value per command, never stored in bulk: the placed variant's
// address costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OrderEvent {
    OrderPlaced {
        order_id: Uuid,
        user_id: Uuid,
        lines: Vec<OrderLine>,
        total: Money,
        payment_token: String,
        /// Absent from orders placed before carts existed, and from orders
        /// not placed from a cart.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cart_id: Option<Uuid>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shipping_address: Option<ShippingAddress>,
    },
    OrderPaymentAssigned {
        payment_id: Uuid,
    },
    OrderConfirmed {},
    OrderShipped {},
    /// The payment of a shipped order was refunded; no stock returns.
    OrderRefunded {},
    /// `previous_status` tells consumers what to undo (release a reservation
    /// or return committed stock).
    OrderCancelled {
        reason: CancelReason,
        previous_status: OrderStatus,
        /// The customer's note of a `customer_request` cancellation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> String {
        match self {
            Self::OrderPlaced { .. } => "OrderPlaced",
            Self::OrderPaymentAssigned { .. } => "OrderPaymentAssigned",
            Self::OrderConfirmed {} => "OrderConfirmed",
            Self::OrderShipped {} => "OrderShipped",
            Self::OrderRefunded {} => "OrderRefunded",
            Self::OrderCancelled { .. } => "OrderCancelled",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        match self {
            Self::OrderPlaced { .. } => PERSONAL_DATA_VERSION,
            _ => EVENT_VERSION,
        }
        .to_string()
    }
}
