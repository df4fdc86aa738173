use uuid::Uuid;

use crate::refusal::{Refusal, RefusalKind};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProductError {
    /// 409 Conflict.
    #[error("product already exists")]
    AlreadyExists,
    /// 404 Not Found.
    #[error("product not found")]
    NotFound,
    /// 422 Unprocessable Content.
    #[error("product is discontinued")]
    Discontinued,
    /// 422 Unprocessable Content.
    #[error("insufficient stock: {available} available, {requested} requested")]
    InsufficientStock { available: i64, requested: i64 },
    /// 422 Unprocessable Content.
    #[error("price amount must be greater than zero")]
    InvalidPrice,
    /// 422 Unprocessable Content.
    #[error("initial stock must not be negative")]
    InvalidStock,
    /// 422 Unprocessable Content.
    #[error("quantity must not be zero")]
    ZeroDelta,
    /// 422 Unprocessable Content.
    #[error("stock level would exceed the supported maximum")]
    StockOverflow,
    /// 422 Unprocessable Content.
    #[error("a product is listed in at most {max} categories, each once")]
    InvalidCategories { max: usize },
    /// 422 Unprocessable Content.
    #[error("no matching reservation for order {order_id}")]
    UnknownReservation { order_id: Uuid },
}

impl Refusal for ProductError {
    fn kind(&self) -> RefusalKind {
        match self {
            Self::AlreadyExists => RefusalKind::AlreadyExists,
            Self::NotFound => RefusalKind::NotFound,
            Self::Discontinued => RefusalKind::ProductDiscontinued,
            Self::InsufficientStock { .. } => RefusalKind::InsufficientStock,
            Self::InvalidPrice
            | Self::InvalidStock
            | Self::ZeroDelta
            | Self::StockOverflow
            | Self::InvalidCategories { .. } => RefusalKind::Invalid,
            Self::UnknownReservation { .. } => RefusalKind::InvalidTransition,
        }
    }
}
