//! Read models and the workers that build them.
//!
//! This crate depends on the published event contract (`schemas`), never on
//! `domain`: read models follow what was recorded, not aggregate internals.
//! It is empty until the event pipeline lands: today every read of the API is
//! answered from the event store (`GET /aggregates/{type}/{id}/events`).
