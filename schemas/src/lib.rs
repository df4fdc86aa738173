//! Wire formats: the JSON bodies clients send with commands.
//!
//! These types only describe shape; they reject unknown fields so a typo never
//! silently does nothing, and leave value rules (email syntax, price > 0) to the
//! domain's parsers, which the API applies to build commands.

pub mod commands;
