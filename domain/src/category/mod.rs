//! A category of the catalogue: a node of one tree (parent, position), with
//! a slug unique across categories.

mod aggregate;
mod commands;
mod error;
mod events;

pub use aggregate::{Category, MAX_DEPTH};
pub use commands::CategoryCommand;
pub use error::CategoryError;
pub use events::CategoryEvent;
