//! Webhooks (api.md, Webhooks), following the Standard Webhooks
//! specification.
//!
//! - `endpoints`: the endpoints an admin registers, their sealed secrets.
//! - `intake`: a subscriber (on the projections' worker and repair) that
//!   turns each domain event with a webhook name into one delivery row per
//!   matching endpoint, in the transaction that records the event as applied.
//! - `deliver`: the delivery loop: claims due rows (`FOR UPDATE SKIP
//!   LOCKED`), builds the body once from the read model, signs, POSTs with a
//!   10 s timeout, and reschedules on the spec's backoff.
//! - `address`: which URLs an endpoint may have (SSRF), checked when it is
//!   registered and again on every connection.
//! - `signing`: secrets (`whsec_...`) and `webhook-signature`.

pub mod address;
pub mod deliver;
pub mod endpoints;
pub mod intake;
pub mod signing;

use schemas::events::{CartEvent, Event, OrderEvent, PaymentEvent, ProductEvent, UserEvent};

pub use address::{AddressError, AddressPolicy};
pub use endpoints::{Endpoint, EndpointError, Endpoints};
pub use signing::SecretBox;

/// The webhook name of a domain event (api.md's list), if it has one.
///
/// `user.erased` carries the user as `GET /users/{id}` shows it after the
/// erasure (`email` and `name` null). Of a cart's events only its checkout
/// is announced: the others are a shopper's edits.
pub fn event_name(event: &Event) -> Option<&'static str> {
    Some(match event {
        Event::User(event) => match event {
            UserEvent::UserRegistered { .. } => "user.registered",
            UserEvent::UserNameChanged { .. } | UserEvent::UserEmailChanged { .. } => {
                "user.updated"
            }
            UserEvent::UserDeactivated {} => "user.deactivated",
            UserEvent::UserErased {} => "user.erased",
            UserEvent::UserPasswordChanged {} => return None,
        },
        Event::Product(event) => match event {
            ProductEvent::ProductCreated { .. } => "product.created",
            ProductEvent::ProductDetailsUpdated { .. }
            | ProductEvent::ProductCategoriesSet { .. }
            | ProductEvent::ProductAttributesSet { .. } => "product.updated",
            ProductEvent::ProductPriceChanged { .. } => "product.price_changed",
            // Every change of `stock: {available, reserved}` as GET shows it.
            ProductEvent::ProductStockAdjusted { .. }
            | ProductEvent::StockReserved { .. }
            | ProductEvent::StockReservationReleased { .. }
            | ProductEvent::StockReservationCommitted { .. }
            | ProductEvent::StockReturned { .. } => "product.stock_changed",
            ProductEvent::ProductDiscontinued {} => "product.discontinued",
        },
        Event::Order(event) => match event {
            OrderEvent::OrderPlaced { .. } => "order.placed",
            OrderEvent::OrderConfirmed {} => "order.confirmed",
            OrderEvent::OrderCancelled { .. } => "order.cancelled",
            OrderEvent::OrderShipped {} => "order.shipped",
            OrderEvent::OrderPaymentAssigned { .. } | OrderEvent::OrderRefunded {} => return None,
        },
        Event::Payment(event) => match event {
            PaymentEvent::PaymentCaptured {} => "payment.captured",
            PaymentEvent::PaymentRefunded {} => "payment.refunded",
            _ => return None,
        },
        Event::Cart(CartEvent::CartCheckedOut { .. }) => "cart.checked_out",
        Event::Category(_) | Event::Cart(_) | Event::Unknown => return None,
    })
}

/// Whether `pattern` (an event name, `<resource>.*` or `*`) is one an
/// endpoint may subscribe to.
pub fn is_valid_pattern(pattern: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(resource) = pattern.strip_suffix(".*") {
        return schemas::webhooks::EVENTS
            .iter()
            .any(|e| e.resource == resource);
    }
    schemas::webhooks::EVENTS.iter().any(|e| e.name == pattern)
}

/// Whether an endpoint subscribed to `patterns` wants `name`.
pub fn matches(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|pattern| {
        pattern == "*"
            || pattern == name
            || pattern
                .strip_suffix(".*")
                .is_some_and(|resource| name.split_once('.').is_some_and(|(r, _)| r == resource))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let subscribed = vec!["order.*".to_owned(), "user.registered".to_owned()];
        assert!(matches(&subscribed, "order.placed"));
        assert!(matches(&subscribed, "user.registered"));
        assert!(!matches(&subscribed, "user.updated"));
        assert!(!matches(&subscribed, "orders.placed"));
        assert!(matches(&["*".to_owned()], "payment.refunded"));
        assert!(is_valid_pattern("*"));
        assert!(is_valid_pattern("cart.*"));
        assert!(is_valid_pattern("product.stock_changed"));
        assert!(!is_valid_pattern("order"));
        assert!(!is_valid_pattern("order.nope"));
        assert!(!is_valid_pattern("nope.*"));
        assert!(!is_valid_pattern("*.placed"));
    }

    /// Every name this build emits is one of the contract's.
    #[test]
    fn names_are_the_contracts() {
        use schemas::events::Money;
        let money = Money {
            amount: 1,
            currency: "EUR".into(),
        };
        let events = [
            Event::User(UserEvent::UserRegistered {
                email: String::new(),
                name: String::new(),
            }),
            Event::User(UserEvent::UserDeactivated {}),
            Event::Product(ProductEvent::ProductPriceChanged { price: money }),
            Event::Order(OrderEvent::OrderConfirmed {}),
            Event::Payment(PaymentEvent::PaymentCaptured {}),
        ];
        for event in &events {
            let name = event_name(event).expect("a name");
            assert!(
                schemas::webhooks::EVENTS.iter().any(|e| e.name == name),
                "{name}"
            );
        }
    }
}
