//! Wire formats: the JSON bodies clients send with commands, the envelope of a
//! published event, and the NATS names everything agrees on.
//!
//! Command bodies only describe shape; they reject unknown fields so a typo
//! never silently does nothing, and leave value rules (email syntax, price > 0)
//! to the domain's parsers, which the API applies to build commands.

pub mod commands;
pub mod envelope;
pub mod subjects;
pub mod upcast;

pub use envelope::EventEnvelope;
