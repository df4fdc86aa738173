use std::fmt;
use std::sync::Arc;

/// What went wrong with a command, one variant per way the API answers.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// A business rule refused the command (404, 409 or 422, by the rule).
    #[error(transparent)]
    Rejected(E),
    /// `If-Match` named another version than the stream's (412).
    #[error("the aggregate is at version {current}, not {expected}")]
    PreconditionFailed { expected: usize, current: usize },
    /// A value that must be unique across aggregates is taken (409).
    #[error("{field} is already taken")]
    Duplicate { field: &'static str },
    /// The command kept losing races on one aggregate past the retry budget (409).
    #[error("the aggregate kept changing under the command; try again")]
    Conflict,
    /// The store could not be reached or failed (503 or 500).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Failures of the event store itself, apart from business outcomes. Cheap
/// to clone: one failed append of a batch is every batched command's answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached, or ended the session before the
    /// write could commit (503).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] Arc<sqlx::Error>),
    /// The connection broke after an append was sent: it may or may not
    /// have committed (503, and the client should look before it retries).
    #[error("the connection was lost while a write was in flight: {0}")]
    CommitUnknown(#[source] Arc<sqlx::Error>),
    #[error("database error: {0}")]
    Database(#[source] Arc<sqlx::Error>),
    #[error("stored data could not be read: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::CommitUnknown(_))
    }

    /// Nothing of the failed work committed and another connection may well
    /// do it: the session was lost, not the pool exhausted (a wait of its
    /// own) nor a write in flight.
    pub fn may_retry(&self) -> bool {
        matches!(self, Self::Unavailable(err)
            if !matches!(**err, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed))
    }

    /// The error of a statement that wrote: a lost connection is
    /// [`CommitUnknown`](Self::CommitUnknown) unless the server said it
    /// ended the session (and so rolled the statement back).
    pub(crate) fn of_write(err: sqlx::Error) -> Self {
        match Self::from(err) {
            Self::Unavailable(err) if !server_ended_session(&err) => Self::CommitUnknown(err),
            other => other,
        }
    }
}

impl From<crate::vault::VaultError> for StoreError {
    fn from(err: crate::vault::VaultError) -> Self {
        match err {
            crate::vault::VaultError::Store(err) => Self::from(err),
            other => Self::Corrupt(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Self::Unavailable(Arc::new(err)),
            ref db if server_ended_session(db) => Self::Unavailable(Arc::new(err)),
            other => Self::Database(Arc::new(other)),
        }
    }
}

/// The server ended the session and said why: 57P01 (administrator
/// shutdown: a restart), 57P02 (crash shutdown), 57P03 (cannot connect now:
/// starting up or shutting down) or a connection exception (class 08). The
/// statement it was running, if any, was rolled back.
fn server_ended_session(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03"))
}

impl From<serde_json::Error> for StoreError {
    fn from(err: serde_json::Error) -> Self {
        Self::Corrupt(err.to_string())
    }
}

/// The constraint a write tripped over, read from a unique violation.
pub(crate) enum Violation {
    /// Another writer appended this sequence first.
    Sequence,
    /// A unique claim is held by another aggregate.
    Claim,
}

pub(crate) fn unique_violation(err: &sqlx::Error) -> Option<Violation> {
    let db = err.as_database_error()?;
    if db.code().as_deref() != Some("23505") {
        return None;
    }
    match db.constraint() {
        Some("unique_claims_pkey") => Some(Violation::Claim),
        _ => Some(Violation::Sequence),
    }
}

/// Renders a domain error's message with its cause chain for logs.
pub struct Chain<'a>(pub &'a dyn std::error::Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
