//! Names stored with every event, so every reader spells them one way.
//!
//! An aggregate's type name is stored with each of its events and never
//! changes (`domain`'s `Aggregate::TYPE` holds the same strings; the test
//! below keeps them equal, since `domain` depends on nothing). Event type
//! names are the variants of [`crate::events`]' enums.

/// Aggregate type names, as stored in `events.aggregate_type`.
pub mod aggregate {
    pub const USER: &str = "user";
    pub const PRODUCT: &str = "product";
    pub const ORDER: &str = "order";
    pub const PAYMENT: &str = "payment";
    pub const CATEGORY: &str = "category";
    pub const CART: &str = "cart";

    /// Every aggregate type whose stream `GET /aggregates/{type}/{id}/events` reads.
    pub const ALL: [&str; 6] = [USER, PRODUCT, ORDER, PAYMENT, CATEGORY, CART];
}

#[cfg(test)]
mod tests {
    use cqrs_es::Aggregate;

    #[test]
    fn the_domain_stores_the_same_names() {
        assert_eq!(domain::User::TYPE, super::aggregate::USER);
        assert_eq!(domain::Product::TYPE, super::aggregate::PRODUCT);
        assert_eq!(domain::Order::TYPE, super::aggregate::ORDER);
        assert_eq!(domain::Payment::TYPE, super::aggregate::PAYMENT);
        assert_eq!(domain::Category::TYPE, super::aggregate::CATEGORY);
        assert_eq!(domain::Cart::TYPE, super::aggregate::CART);
    }
}
