use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::Money;
use crate::{EVENT_VERSION, PERSONAL_DATA_VERSION};

#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PaymentEvent {
    PaymentRequested {
        payment_id: Uuid,
        order_id: Uuid,
        amount: Money,
        token: String,
    },
    PaymentAttemptFailed {
        error: String,
    },
    PaymentAuthorized {
        authorization_id: String,
    },
    PaymentDeclined {
        reason: String,
    },
    PaymentFailed {
        reason: String,
    },
    PaymentCaptured {},
    PaymentRefunded {},
}

impl DomainEvent for PaymentEvent {
    fn event_type(&self) -> String {
        match self {
            Self::PaymentRequested { .. } => "PaymentRequested",
            Self::PaymentAttemptFailed { .. } => "PaymentAttemptFailed",
            Self::PaymentAuthorized { .. } => "PaymentAuthorized",
            Self::PaymentDeclined { .. } => "PaymentDeclined",
            Self::PaymentFailed { .. } => "PaymentFailed",
            Self::PaymentCaptured {} => "PaymentCaptured",
            Self::PaymentRefunded {} => "PaymentRefunded",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        match self {
            Self::PaymentRequested { .. } => PERSONAL_DATA_VERSION,
            _ => EVENT_VERSION,
        }
        .to_string()
    }
}
