use super::PaymentStatus;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PaymentError {
    /// 409 Conflict.
    #[error("payment already exists")]
    AlreadyExists,
    /// 404 Not Found.
    #[error("payment not found")]
    NotFound,
    /// 422 Unprocessable Content.
    #[error("payment amount must be greater than zero")]
    InvalidAmount,
    /// 422 Unprocessable Content.
    #[error("cannot go from {from} to {to}")]
    InvalidTransition {
        from: PaymentStatus,
        to: PaymentStatus,
    },
}

impl PaymentError {
    /// Problem-type slug for API error responses.
    pub fn rule(&self) -> &'static str {
        match self {
            Self::AlreadyExists => "already-exists",
            Self::NotFound => "not-found",
            Self::InvalidAmount => "validation",
            Self::InvalidTransition { .. } => "invalid-transition",
        }
    }
}
