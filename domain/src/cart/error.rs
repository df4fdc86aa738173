use super::{CartStatus, MAX_CART_LINES};
use crate::refusal::{Refusal, RefusalKind};
use crate::values::Quantity;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CartError {
    #[error("cart already exists")]
    AlreadyExists,
    #[error("cart not found")]
    NotFound,
    #[error("the cart is {0}; only an open cart changes")]
    Closed(CartStatus),
    #[error("quantity must be between 0 and {}", Quantity::MAX)]
    InvalidQuantity,
    #[error("a cart may have at most {MAX_CART_LINES} lines")]
    TooManyLines,
    #[error("the product is discontinued")]
    ProductDiscontinued,
    #[error("every line of a cart must be priced in the cart's currency")]
    CurrencyMismatch,
    #[error("the cart has no lines")]
    Empty,
    #[error("the cart belongs to a customer already")]
    NotAGuestCart,
    #[error("the cart was checked out as another order")]
    OtherOrder,
}

impl Refusal for CartError {
    fn kind(&self) -> RefusalKind {
        match self {
            Self::AlreadyExists => RefusalKind::AlreadyExists,
            Self::NotFound => RefusalKind::NotFound,
            Self::Closed(_) => RefusalKind::CartClosed,
            Self::InvalidQuantity | Self::TooManyLines => RefusalKind::Invalid,
            Self::ProductDiscontinued => RefusalKind::ProductDiscontinued,
            Self::CurrencyMismatch => RefusalKind::CurrencyMismatch,
            Self::Empty => RefusalKind::CartEmpty,
            Self::NotAGuestCart | Self::OtherOrder => RefusalKind::InvalidTransition,
        }
    }
}
