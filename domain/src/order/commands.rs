use uuid::Uuid;

use super::{CancelReason, OrderLine};

#[derive(Debug, Clone, PartialEq)]
pub enum OrderCommand {
    /// Unit prices are taken from the products by the caller at placing time.
    Place {
        order_id: Uuid,
        user_id: Uuid,
        lines: Vec<OrderLine>,
        payment_token: String,
    },
    AssignPayment {
        payment_id: Uuid,
    },
    Confirm,
    Ship,
    Cancel {
        reason: CancelReason,
    },
    /// Its payment was refunded: a confirmed order is cancelled (`refunded`,
    /// its stock returns), a shipped one becomes `refunded` (no stock returns).
    Refund,
}
