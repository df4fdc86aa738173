//! Wire formats: the JSON bodies clients send with commands, the envelope of a
//! published event and its typed, decoded form (`events`), the names stored
//! with every event (`names`), and the NATS names everything agrees on.
//!
//! Command bodies only describe shape; they reject unknown fields so a typo
//! never silently does nothing, and leave value rules (email syntax, price > 0)
//! to the domain's parsers, which the API applies to build commands. `json`
//! holds the JSON Schemas of those bodies and of every stored event, per
//! version, checked in under `schemas/json/`; `cloudevents` the CloudEvents
//! attributes every published event carries as NATS headers.

pub mod cloudevents;
pub mod commands;
pub mod envelope;
pub mod events;
pub mod json;
pub mod names;
pub mod sealed;
pub mod strict;
pub mod subjects;
pub mod trace;
pub mod upcast;
pub mod webhooks;

pub use envelope::EventEnvelope;
pub use events::{Event, Recorded};
pub use trace::TraceParent;
