use uuid::Uuid;

use super::{OrderStatus, MAX_LINES};
use crate::refusal::{Refusal, RefusalKind};
use crate::values::Quantity;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OrderError {
    /// 409 Conflict.
    #[error("order already exists")]
    AlreadyExists,
    /// 404 Not Found.
    #[error("order not found")]
    NotFound,
    /// 422 Unprocessable Content.
    #[error("an order needs at least one line")]
    NoLines,
    /// 422 Unprocessable Content.
    #[error("an order may have at most {MAX_LINES} lines")]
    TooManyLines,
    /// 422 Unprocessable Content.
    #[error(
        "quantity for product {product_id} must be between {} and {}",
        Quantity::MIN,
        Quantity::MAX
    )]
    InvalidQuantity { product_id: Uuid },
    /// 422 Unprocessable Content.
    #[error("unit price for product {product_id} must be greater than zero")]
    InvalidUnitPrice { product_id: Uuid },
    /// 422 Unprocessable Content.
    #[error("product {product_id} appears on more than one line")]
    DuplicateLine { product_id: Uuid },
    /// 422 Unprocessable Content.
    #[error("all lines must be priced in the same currency")]
    CurrencyMismatch,
    /// 422 Unprocessable Content.
    #[error("order total is too large")]
    TotalOverflow,
    /// 422 Unprocessable Content.
    #[error("cannot go from {from} to {to}")]
    InvalidTransition { from: OrderStatus, to: OrderStatus },
    /// 422 Unprocessable Content.
    #[error("a different payment is already assigned to this order")]
    PaymentAlreadyAssigned,
}

impl Refusal for OrderError {
    fn kind(&self) -> RefusalKind {
        match self {
            Self::AlreadyExists => RefusalKind::AlreadyExists,
            Self::NotFound => RefusalKind::NotFound,
            Self::NoLines
            | Self::TooManyLines
            | Self::InvalidQuantity { .. }
            | Self::InvalidUnitPrice { .. }
            | Self::DuplicateLine { .. }
            | Self::TotalOverflow => RefusalKind::Invalid,
            Self::CurrencyMismatch => RefusalKind::CurrencyMismatch,
            Self::InvalidTransition { .. } | Self::PaymentAlreadyAssigned => {
                RefusalKind::InvalidTransition
            }
        }
    }
}
