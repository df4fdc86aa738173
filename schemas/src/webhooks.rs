//! The webhook contract (api.md, Webhooks): the event names an endpoint can
//! subscribe to, each with the resource whose current state (as its GET
//! shows it) is the delivery's `data`, and the Standard Webhooks headers
//! every delivery carries. The AsyncAPI document describes each delivery
//! from this table.

/// One event name and the resource it carries.
pub struct WebhookEvent {
    /// `<resource>.<what happened>`, e.g. `order.placed`.
    pub name: &'static str,
    /// `user`, `product`, `order`, `payment` or `cart`.
    pub resource: &'static str,
}

const fn event(name: &'static str, resource: &'static str) -> WebhookEvent {
    WebhookEvent { name, resource }
}

pub const EVENTS: &[WebhookEvent] = &[
    event("user.registered", "user"),
    event("user.updated", "user"),
    event("user.deactivated", "user"),
    event("user.erased", "user"),
    event("product.created", "product"),
    event("product.updated", "product"),
    event("product.price_changed", "product"),
    event("product.stock_changed", "product"),
    event("product.discontinued", "product"),
    event("order.placed", "order"),
    event("order.confirmed", "order"),
    event("order.cancelled", "order"),
    event("order.shipped", "order"),
    event("payment.captured", "payment"),
    event("payment.refunded", "payment"),
    event("cart.checked_out", "cart"),
];

/// Standard Webhooks: one id per event and endpoint, the same on every retry.
pub const ID_HEADER: &str = "webhook-id";
/// Standard Webhooks: Unix seconds of this attempt.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Standard Webhooks: `v1,<base64 HMAC-SHA256>`, space-separated when two
/// secrets are valid (for 24 h after a rotation).
pub const SIGNATURE_HEADER: &str = "webhook-signature";
