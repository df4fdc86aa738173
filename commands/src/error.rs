use std::fmt;

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

/// Failures of the event store itself, apart from business outcomes.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("stored data could not be read: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Self::Unavailable(err),
            other => Self::Database(other),
        }
    }
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
