//! Why an event could not be applied, and what the worker should do about it.

/// An event could not be applied to a read model.
///
/// `Retryable` is worth another delivery (the database is unreachable, a row
/// another aggregate's event creates is not there yet): the worker naks the
/// message with a delay. `Poison` will never apply (undecodable payload,
/// impossible data): the worker dead-letters it at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectionError {
    #[error("retryable: {0}")]
    Retryable(String),
    #[error("poison: {0}")]
    Poison(String),
}

impl ProjectionError {
    pub fn is_poison(&self) -> bool {
        matches!(self, Self::Poison(_))
    }

    /// The message without the kind prefix.
    pub fn message(&self) -> &str {
        match self {
            Self::Retryable(message) | Self::Poison(message) => message,
        }
    }
}

impl From<sqlx::Error> for ProjectionError {
    /// Connection, pool and server trouble is retryable; values that cannot
    /// be decoded or stored (a decode error, SQLSTATE class 22 "data
    /// exception", a NOT NULL or CHECK violation) will fail the same way on
    /// every delivery, so they are poison.
    fn from(err: sqlx::Error) -> Self {
        let text = err.to_string();
        match &err {
            sqlx::Error::Decode(_)
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::TypeNotFound { .. } => Self::Poison(text),
            sqlx::Error::Database(db) => match db.code() {
                Some(code) if code.starts_with("22") || code == "23502" || code == "23514" => {
                    Self::Poison(text)
                }
                _ => Self::Retryable(text),
            },
            _ => Self::Retryable(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_and_connection_errors_are_retryable() {
        assert!(matches!(
            ProjectionError::from(sqlx::Error::PoolTimedOut),
            ProjectionError::Retryable(_)
        ));
        assert!(matches!(
            ProjectionError::from(sqlx::Error::PoolClosed),
            ProjectionError::Retryable(_)
        ));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(matches!(
            ProjectionError::from(sqlx::Error::Io(io)),
            ProjectionError::Retryable(_)
        ));
    }

    #[test]
    fn decode_errors_are_poison() {
        let err = sqlx::Error::Decode("bad bytes".into());
        assert!(ProjectionError::from(err).is_poison());
        let err = sqlx::Error::ColumnDecode {
            index: "0".into(),
            source: "bad".into(),
        };
        assert!(ProjectionError::from(err).is_poison());
    }
}
