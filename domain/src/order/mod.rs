//! A customer's order and its lifecycle.

mod aggregate;
mod commands;
mod error;
mod events;

pub use aggregate::{CancelReason, Order, OrderLine, OrderStatus, MAX_LINES};
pub use commands::OrderCommand;
pub use error::OrderError;
pub use events::OrderEvent;
