//! A shopping cart: a guest's (reached by its token) or a customer's, until
//! it is checked out, merged into another, or expires.

mod aggregate;
mod commands;
mod error;
mod events;

pub use aggregate::{order_id_for, Cart, CartLine, CartStatus, MAX_CART_LINES};
pub use commands::{CartCommand, Offer};
pub use error::CartError;
pub use events::CartEvent;
