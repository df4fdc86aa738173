use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::{EmailAddress, Name};
use crate::{EVENT_VERSION, PERSONAL_DATA_VERSION};

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
    /// The user was erased: its data key is destroyed with this event, so
    /// none of its personal data can be read again. Carries the email so
    /// its uniqueness claim is given back (sealed, like every copy of it).
    UserErased {
        previous_email: EmailAddress,
    },
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            Self::UserRegistered { .. } => "UserRegistered",
            Self::UserNameChanged { .. } => "UserNameChanged",
            Self::UserEmailChanged { .. } => "UserEmailChanged",
            Self::UserDeactivated {} => "UserDeactivated",
            Self::UserPasswordChanged {} => "UserPasswordChanged",
            Self::UserErased { .. } => "UserErased",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        match self {
            Self::UserRegistered { .. }
            | Self::UserNameChanged { .. }
            | Self::UserEmailChanged { .. } => PERSONAL_DATA_VERSION,
            _ => EVENT_VERSION,
        }
        .to_string()
    }
}
