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
}
