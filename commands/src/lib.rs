//! Command handling on the Postgres event store.
//!
//! A command arrives from the API, is run by its cqrs-es aggregate, and the
//! events it yields are appended to the `events` table in one statement,
//! together with any uniqueness claims and snapshot they imply. Loaded
//! aggregates stay in an in-process cache keyed by id, with their version, so a
//! command on a long stream costs one round trip, not a reload. The table is
//! also the outbox: this crate never publishes anywhere. `identity` keeps what
//! must never be an event: password hashes, refresh tokens and API keys.

pub mod aggregates;
pub mod error;
pub mod idempotency;
pub mod identity;
pub mod metadata;
pub mod migrate;
pub mod relay;
pub mod store;
pub mod stream;
pub mod vault;

pub use aggregates::{Aggregates, StoredAggregate, UniqueChange};
pub use error::{CommandError, StoreError};
pub use metadata::CommandMetadata;
pub use store::{AggregateStore, AppendHook, Committed, Loaded, StoreOptions};
pub use vault::{MasterKey, Vault};
