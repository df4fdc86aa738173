use uuid::Uuid;

use super::{CancelReason, OrderLine};
use crate::address::ShippingAddress;

// One value per command, never stored in bulk: the placed variant's
// address costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum OrderCommand {
    /// Unit prices are taken from the products by the caller at placing time.
    Place {
        order_id: Uuid,
        user_id: Uuid,
        lines: Vec<OrderLine>,
        payment_token: String,
        /// The cart it is placed from, if any.
        cart_id: Option<Uuid>,
        shipping_address: Option<ShippingAddress>,
    },
    AssignPayment {
        payment_id: Uuid,
    },
    Confirm,
    Ship,
    Cancel {
        reason: CancelReason,
        /// The customer's words (0..500 characters), kept as `cancel_note`.
        note: Option<String>,
    },
    /// Its payment was refunded: a confirmed order is cancelled (`refunded`,
    /// its stock returns), a shipped one becomes `refunded` (no stock returns).
    Refund,
}
