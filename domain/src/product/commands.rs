use uuid::Uuid;

use crate::values::{Attributes, Description, Money, Name, Sku};

#[derive(Debug, Clone, PartialEq)]
pub enum ProductCommand {
    Create {
        product_id: Uuid,
        sku: Sku,
        name: Name,
        description: Option<Description>,
        price: Money,
        stock: i64,
    },
    /// `None` leaves a field as it is; an empty description clears it;
    /// `attributes` replaces the whole set.
    UpdateDetails {
        name: Option<Name>,
        description: Option<Description>,
        attributes: Option<Attributes>,
    },
    /// Replaces the categories the product is listed in. The caller has
    /// checked that each exists (another aggregate's state).
    SetCategories {
        category_ids: Vec<Uuid>,
    },
    ChangePrice {
        price: Money,
    },
    /// Positive to receive stock, negative to write it off.
    AdjustStock {
        delta: i64,
    },
    Discontinue,
    // Sent by the order saga, keyed by order so that retries are idempotent.
    ReserveStock {
        order_id: Uuid,
        quantity: u32,
    },
    ReleaseReservation {
        order_id: Uuid,
    },
    CommitReservation {
        order_id: Uuid,
    },
    /// `quantity` is the order line's: used only when the product does not
    /// remember the order (committed beyond `SETTLED_WINDOW`), else its own
    /// record counts. The sender guarantees the stock was committed and
    /// sends this once.
    ReturnStock {
        order_id: Uuid,
        quantity: u32,
    },
}
