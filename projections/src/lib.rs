//! Read models, and the machinery that follows the event stream.
//!
//! A [`Subscriber`] follows the events of some aggregate types exactly once,
//! per aggregate in sequence order: each [`Projection`] (a read model) and
//! the saga's intake. Every subscriber runs the same JetStream worker
//! (`worker`), the same exactly-once bookkeeping in the same transaction as
//! its writes (`apply`), and the same repair that finds committed events it
//! has not seen, however the broker lost them, and applies them from the
//! events table (`repair`).
//!
//! A read model is one file under `models/`: its rows and one fold, the only
//! implementation of what each event does to them. Live batches load the
//! rows their events touch, fold, and write back (`table`); `agora replay`
//! folds the whole events table in memory and writes by `COPY` (`replay`).
//! `queries` reads the tables for the API.
//!
//! This crate depends on the published event contract (`schemas`), never on
//! `domain`: read models follow what was recorded, not aggregate internals.

pub mod apply;
pub mod changes;
pub mod error;
mod model;
mod models;
pub mod progress;
pub mod projection;
pub mod queries;
pub mod repair;
pub mod replay;
pub mod subscriber;
mod table;
pub mod worker;

pub use apply::{apply_batch, Outcome};
pub use changes::Change;
pub use error::ProjectionError;
pub use progress::{status, ProjectionStatus};
pub use projection::Projection;
pub use replay::{replay, ReplayError, ReplayOptions, ReplayReport};
pub use subscriber::{Applied, Subscriber};
