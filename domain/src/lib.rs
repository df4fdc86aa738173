//! The domain model of the shop: aggregates, commands, events and business
//! rules, on top of `cqrs-es`.
//!
//! This crate is pure. It depends on no other crate of the workspace and does
//! no I/O: it reads no clock and generates no randomness, so ids and times
//! arrive through commands and event metadata. All business logic lives in
//! each aggregate's `handle`, which validates a command completely before
//! writing any event, so a refused command records nothing. `apply` only folds
//! already-accepted events into state and never fails.

pub mod address;
pub mod cart;
pub mod category;
pub mod order;
pub mod payment;
pub mod placement;
pub mod product;
pub mod refusal;
pub mod user;
pub mod values;

pub use address::ShippingAddress;
pub use cart::{Cart, CartCommand, CartError, CartEvent, CartLine, CartStatus};
pub use category::{Category, CategoryCommand, CategoryError, CategoryEvent, MAX_DEPTH};
pub use order::{
    CancelReason, Order, OrderCommand, OrderError, OrderEvent, OrderLine, OrderStatus,
};
pub use payment::{Payment, PaymentCommand, PaymentError, PaymentEvent, PaymentStatus};
pub use product::{
    Product, ProductCommand, ProductError, ProductEvent, ProductStatus, Reservation,
    ReservationState,
};
pub use refusal::{Refusal, RefusalKind};
pub use user::{User, UserCommand, UserError, UserEvent, UserStatus};
pub use values::{
    normalize_email, Attributes, Currency, Description, EmailAddress, Money, Name, Password,
    Quantity, Sku, Slug, ValidationError,
};

/// Version recorded with every event. Bump when an event's payload changes
/// shape, together with an upcaster for the old version.
pub const EVENT_VERSION: &str = "1.0";

/// `ProductStockAdjusted` is at version 2 (`delta` became `stock_delta`);
/// every other event is at `EVENT_VERSION`.
pub const PRODUCT_STOCK_ADJUSTED_VERSION: &str = "2.0";

/// The events that carry personal data or a payment token (`UserRegistered`,
/// `UserNameChanged`, `UserEmailChanged`, `OrderPlaced`, `PaymentRequested`)
/// are at version 2: the same fields, stored sealed (`schemas::sealed`).
pub const PERSONAL_DATA_VERSION: &str = "2.0";
