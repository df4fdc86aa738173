//! A sellable product and its stock, including per-order reservations.

mod aggregate;
mod commands;
mod error;
mod events;

pub use aggregate::{Product, ProductStatus, Reservation, ReservationState, MAX_CATEGORIES};
pub use commands::ProductCommand;
pub use error::ProductError;
pub use events::ProductEvent;
