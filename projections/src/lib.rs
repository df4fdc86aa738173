//! Read models and the workers that build them.
//!
//! Each projection is a durable JetStream consumer that applies published
//! events to its tables in Postgres, recording in the same transaction which
//! event of each aggregate it applied last, so every event takes effect
//! exactly once however often it is delivered. `queries` reads those tables
//! for the API.
//!
//! This crate depends on the published event contract (`schemas`), never on
//! `domain`: read models follow what was recorded, not aggregate internals.

pub mod apply;
pub mod changes;
pub mod error;
mod models;
pub mod progress;
pub mod projection;
pub mod queries;
pub mod rebuild;
pub mod replay;
pub mod worker;

pub use apply::{apply_batch, Outcome};
pub use changes::Change;
pub use error::ProjectionError;
pub use progress::{status, ProjectionStatus};
pub use projection::Projection;
pub use rebuild::{diff, rebuild_into_schema, RebuildError, RebuildReport};
pub use replay::{replay, ReplayError, ReplayOptions, ReplayReport};
