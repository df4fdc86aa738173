use uuid::Uuid;

use super::CartLine;
use crate::values::Currency;

/// What a product offers a cart now, as the caller read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    pub active: bool,
    pub currency: Currency,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CartCommand {
    /// A guest cart has `token_hash` (the SHA-256 of its token) and no user.
    Create {
        cart_id: Uuid,
        user_id: Option<Uuid>,
        token_hash: Option<String>,
    },
    /// Sets a line's quantity; 0 removes it.
    SetLine {
        product_id: Uuid,
        quantity: u32,
        offer: Offer,
    },
    RemoveLine {
        product_id: Uuid,
    },
    /// A guest cart becomes the customer's.
    Claim {
        user_id: Uuid,
    },
    /// A guest cart gives its lines to the customer's open cart `into`.
    MergeInto {
        into: Uuid,
        user_id: Uuid,
    },
    /// The customer's cart takes the lines of the guest cart `from`; once
    /// per guest cart, so a retried claim adds nothing twice.
    Absorb {
        from: Uuid,
        lines: Vec<CartLine>,
        currency: Option<Currency>,
    },
    /// The order `order_id` was placed from this cart.
    CheckOut {
        order_id: Uuid,
    },
    /// Unchanged for the configured time; a closed cart stays as it is.
    Expire,
}
