//! A registered customer account.

mod aggregate;
mod commands;
mod error;
mod events;

pub use aggregate::{User, UserStatus};
pub use commands::UserCommand;
pub use error::UserError;
pub use events::UserEvent;
