//! What follows the event stream: each projection, and the saga's intake.
//!
//! A subscriber sees every event of the aggregate types it follows exactly
//! once, per aggregate in sequence order, however often the broker delivers
//! it, and even when the broker loses it: the same bookkeeping
//! (`projection_applied`, [`crate::apply`]), the same JetStream worker
//! ([`crate::worker`]) and the same repair from the events table
//! ([`crate::repair`]) serve every subscriber. What differs is only what
//! applying a batch writes.

use async_trait::async_trait;
use schemas::Recorded;
use sqlx::PgConnection;

use crate::changes::Change;
use crate::error::ProjectionError;

/// Advisory lock class of Agora's subscriber locks ("agor"); the second key
/// is the subscriber's [`Subscriber::lock_id`].
pub const LOCK_CLASS: i32 = 0x6167_6f72;

/// What became of one event a subscriber was asked to apply.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// Applied; these rows changed.
    Done(Vec<Change>),
    /// Could not be applied; nothing of it was written.
    Failed(ProjectionError),
    /// Not applied because an earlier event of its aggregate in the same
    /// batch failed: it waits for that one.
    Held,
}

#[async_trait]
pub trait Subscriber: Send + Sync + 'static {
    /// The stable name: its durable consumer, bookkeeping rows, dead
    /// letters, checkpoints and metrics are all under it.
    fn name(&self) -> &'static str;

    /// The second key of its advisory lock (class [`LOCK_CLASS`]). A
    /// constant written beside the subscriber, never derived from an order
    /// of subscribers: during a rolling deploy old and new binaries must
    /// take the same lock, or a live batch could straddle a replay's swap.
    fn lock_id(&self) -> i32;

    /// The aggregate types whose events it follows; events of other types
    /// that reach it are acknowledged and skipped.
    fn aggregate_types(&self) -> &'static [&'static str];

    /// The one subject filter of its JetStream consumer.
    fn filter_subject(&self, prefix: &str) -> String;

    /// Applies `events` in this order inside the caller's transaction, one
    /// answer per event. Each event's predecessors in its stream are
    /// applied, in the database or earlier in `events`. Once an event fails,
    /// the later events of its aggregate must be [`Applied::Held`]. `Err`
    /// means the batch as a whole failed; the caller rolls it back.
    async fn apply(
        &self,
        tx: &mut PgConnection,
        events: &[&Recorded],
    ) -> Result<Vec<Applied>, sqlx::Error>;

    /// A batch that applied events committed: wake whoever waits on them.
    fn committed(&self) {}

    fn follows(&self, aggregate_type: &str) -> bool {
        self.aggregate_types().contains(&aggregate_type)
    }
}
