//! A sellable product and its stock, including per-order reservations.

mod aggregate;
#[cfg(test)]
mod bounded_tests;
mod commands;
mod error;
mod events;

pub use aggregate::{
    Product, ProductStatus, Reservation, ReservationState, MAX_CATEGORIES, SETTLED_WINDOW,
};
pub use commands::ProductCommand;
pub use error::ProductError;
pub use events::ProductEvent;
