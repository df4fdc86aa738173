use uuid::Uuid;

use crate::values::Money;

#[derive(Debug, Clone, PartialEq)]
pub enum PaymentCommand {
    Request {
        payment_id: Uuid,
        order_id: Uuid,
        amount: Money,
        token: String,
    },
    /// A gateway call failed in a way worth retrying; the payment stays pending.
    RecordFailedAttempt {
        error: String,
    },
    Authorize {
        authorization_id: String,
    },
    /// The gateway refused the payment (e.g. insufficient funds).
    Decline {
        reason: String,
    },
    /// Giving up: retries exhausted or an unrecoverable gateway error.
    Fail {
        reason: String,
    },
    Capture,
    Refund,
}
