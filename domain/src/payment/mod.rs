//! A payment for one order, driven through the payment gateway by the saga.

mod aggregate;
mod commands;
mod error;
mod events;

pub use aggregate::{Payment, PaymentStatus};
pub use commands::PaymentCommand;
pub use error::PaymentError;
pub use events::PaymentEvent;
