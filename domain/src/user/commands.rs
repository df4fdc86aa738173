use uuid::Uuid;

use crate::values::{EmailAddress, Name};

#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    Register {
        user_id: Uuid,
        email: EmailAddress,
        name: Name,
    },
    /// `None` leaves a field as it is.
    UpdateProfile {
        name: Option<Name>,
        email: Option<EmailAddress>,
    },
    Deactivate,
    /// Records that the user's password changed. The password itself never
    /// reaches the aggregate: the write side hashes and keeps it apart.
    ChangePassword,
    /// Erases the user (GDPR art. 17): records `UserErased`; the write side
    /// then destroys its data key. Erasing an erased user changes nothing.
    Erase,
}
