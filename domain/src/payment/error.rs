use super::PaymentStatus;
use crate::refusal::{Refusal, RefusalKind};

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

impl Refusal for PaymentError {
    fn kind(&self) -> RefusalKind {
        match self {
            Self::AlreadyExists => RefusalKind::AlreadyExists,
            Self::NotFound => RefusalKind::NotFound,
            Self::InvalidAmount => RefusalKind::Invalid,
            Self::InvalidTransition { .. } => RefusalKind::InvalidTransition,
        }
    }
}
