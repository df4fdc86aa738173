//! What kind of refusal a domain error is.
//!
//! Every aggregate's error names its kind, and the HTTP edge maps each kind
//! to one status and problem type in one place, so a refusal reaches a
//! client through a type, never by matching names as strings. A new rule
//! with a problem type of its own is a new kind here.

/// The kinds of refusal, by what a client should do about them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalKind {
    /// The aggregate does not exist.
    NotFound,
    /// The aggregate exists already.
    AlreadyExists,
    /// A value of the command breaks a rule of its own (a count, a price).
    Invalid,
    /// The aggregate's status does not allow the command.
    InvalidTransition,
    /// Not enough stock is available.
    InsufficientStock,
    /// The user is deactivated.
    UserDeactivated,
    /// The product is discontinued.
    ProductDiscontinued,
    /// Lines priced in more than one currency.
    CurrencyMismatch,
    /// A category moved under itself or one of its descendants.
    CategoryCycle,
    /// A category to delete still has children or products.
    CategoryNotEmpty,
    /// The cart is no longer open (checked out, merged or expired).
    CartClosed,
    /// The cart has no lines to check out.
    CartEmpty,
}

/// A domain error that knows its kind.
pub trait Refusal: std::error::Error {
    fn kind(&self) -> RefusalKind;
}
