use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::{EmailAddress, Name};
use crate::EVENT_VERSION;

#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    UserRegistered {
        user_id: Uuid,
        email: EmailAddress,
        name: Name,
    },
    UserNameChanged {
        name: Name,
    },
    /// Carries the previous address so the uniqueness index can release it.
    UserEmailChanged {
        previous_email: EmailAddress,
        email: EmailAddress,
    },
    UserDeactivated {},
    /// The password changed (or was set). Carries nothing: the password and
    /// its hash are kept outside the event stream.
    UserPasswordChanged {},
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            Self::UserRegistered { .. } => "UserRegistered",
            Self::UserNameChanged { .. } => "UserNameChanged",
            Self::UserEmailChanged { .. } => "UserEmailChanged",
            Self::UserDeactivated {} => "UserDeactivated",
            Self::UserPasswordChanged {} => "UserPasswordChanged",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        EVENT_VERSION.to_string()
    }
}
