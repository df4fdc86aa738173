//! Stored events as their readers see them: the published contract, typed.
//!
//! Everything downstream of the events table (projections, `agora replay`,
//! the saga's intake) decodes each event once, here, into [`Recorded`]: the
//! row's place in the streams plus the event as a typed value at its current
//! version (an old stored version is upcast first, see [`crate::upcast`]).
//! These types are the readers' own: they name only the fields readers use,
//! ignore the rest, and never import `domain`, so a read model follows what
//! was recorded rather than aggregate internals. The test at the end of this
//! file decodes a sample of every stored event type the domain writes.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::envelope::EventEnvelope;
use crate::names::aggregate;
use crate::TraceParent;

/// `{"amount": 1999, "currency": "EUR"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub amount: i64,
    pub currency: String,
}

/// A line of a placed order, with the unit price taken at placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: Uuid,
    pub quantity: u32,
    pub unit_price: Money,
}

/// A shipping address as stored with an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShippingAddress {
    pub name: String,
    pub line1: String,
    #[serde(default)]
    pub line2: Option<String>,
    pub city: String,
    #[serde(default)]
    pub region: Option<String>,
    pub postal_code: String,
    pub country: String,
}

/// A cart line: a product and how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLine {
    pub product_id: Uuid,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub enum CartEvent {
    CartCreated {
        user_id: Option<Uuid>,
        token_hash: Option<String>,
    },
    CartLineSet {
        product_id: Uuid,
        quantity: u32,
    },
    CartLineRemoved {
        product_id: Uuid,
    },
    CartClaimed {
        user_id: Uuid,
    },
    CartMerged {
        into: Uuid,
    },
    CartLinesMerged {
        lines: Vec<CartLine>,
    },
    CartCheckedOut {
        order_id: Uuid,
    },
    CartExpired {},
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub enum UserEvent {
    /// `email` and `name` are sealed (`crate::sealed`) from version 2.0 on,
    /// cleartext before; readers keep them as they are.
    UserRegistered {
        email: String,
        name: String,
    },
    UserNameChanged {
        name: String,
    },
    UserEmailChanged {
        email: String,
    },
    UserDeactivated {},
    UserPasswordChanged {},
    /// The user's key was destroyed: none of its personal data can be
    /// opened again.
    UserErased {},
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub enum ProductEvent {
    ProductCreated {
        sku: String,
        name: String,
        #[serde(default)]
        description: Option<String>,
        price: Money,
        stock: i64,
    },
    ProductDetailsUpdated {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        description: Option<String>,
    },
    ProductPriceChanged {
        price: Money,
    },
    ProductStockAdjusted {
        stock_delta: i64,
    },
    ProductDiscontinued {},
    StockReserved {
        order_id: Uuid,
        quantity: u32,
    },
    StockReservationReleased {
        order_id: Uuid,
        quantity: u32,
    },
    StockReservationCommitted {
        order_id: Uuid,
        quantity: u32,
    },
    StockReturned {
        order_id: Uuid,
        quantity: u32,
    },
    ProductCategoriesSet {
        category_ids: Vec<Uuid>,
    },
    ProductAttributesSet {
        attributes: std::collections::BTreeMap<String, String>,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub enum CategoryEvent {
    CategoryCreated {
        slug: String,
        name: String,
        #[serde(default)]
        parent_id: Option<Uuid>,
        position: i32,
    },
    CategoryUpdated {
        #[serde(default)]
        slug: Option<String>,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        position: Option<i32>,
    },
    CategoryMoved {
        #[serde(default)]
        parent_id: Option<Uuid>,
    },
    CategoryDeleted {},
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub enum OrderEvent {
    OrderPlaced {
        user_id: Uuid,
        lines: Vec<OrderLine>,
        total: Money,
        #[serde(default)]
        cart_id: Option<Uuid>,
        /// A sealed string from version 2.0 on, a [`ShippingAddress`]
        /// object in clear before.
        #[serde(default)]
        shipping_address: Option<Value>,
    },
    OrderPaymentAssigned {
        payment_id: Uuid,
    },
    OrderConfirmed {},
    OrderShipped {},
    OrderCancelled {
        reason: String,
        /// Absent from no stored cancellation; a refund of a shipped order
        /// was stored as a cancellation before `OrderRefunded` existed.
        #[serde(default)]
        previous_status: Option<String>,
        /// The customer's note of a `customer_request` cancellation.
        #[serde(default)]
        note: Option<String>,
    },
    OrderRefunded {},
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub enum PaymentEvent {
    PaymentRequested { order_id: Uuid, amount: Money },
    PaymentAttemptFailed { error: String },
    PaymentAuthorized {},
    PaymentDeclined { reason: String },
    PaymentFailed { reason: String },
    PaymentCaptured {},
    PaymentRefunded {},
}

/// One stored event, typed by its aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    User(UserEvent),
    Product(ProductEvent),
    Order(OrderEvent),
    Payment(PaymentEvent),
    Category(CategoryEvent),
    Cart(CartEvent),
    /// A type this build does not know (written by a newer one): a reader's
    /// only use of it is that the aggregate's stream is one event longer.
    Unknown,
}

/// A stored event, decoded once: where it sits in its aggregate's stream and
/// in the global order, when it happened, what request caused it, and the
/// event itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// `aggregate_id` as a UUID, which every aggregate's id is.
    pub id: Uuid,
    /// 1-based position in the aggregate's stream.
    pub sequence: i64,
    /// Global commit-order position in the events table.
    pub position: i64,
    pub event_type: String,
    /// When it happened: the metadata's `time`, else when it was recorded,
    /// to the microsecond (what Postgres keeps), so a value read back from a
    /// table equals the one folded in memory.
    pub time: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub correlation_id: Option<String>,
    pub traceparent: Option<TraceParent>,
    pub event: Event,
}

impl Recorded {
    /// Decodes an envelope, upcasting an old stored version first. An error
    /// names what is wrong; such an event can never be read (poison).
    pub fn decode(envelope: &EventEnvelope) -> Result<Recorded, String> {
        let id = Uuid::parse_str(&envelope.aggregate_id).map_err(|err| {
            format!(
                "aggregate id {:?} of {} is not a UUID: {err}",
                envelope.aggregate_id, envelope.aggregate_type
            )
        })?;
        let upcast;
        let payload = if crate::upcast::needs_upcast(&envelope.event_type, &envelope.event_version)
        {
            let mut payload = envelope.payload.clone();
            crate::upcast::upcast(&envelope.event_type, &envelope.event_version, &mut payload);
            upcast = payload;
            &upcast
        } else {
            &envelope.payload
        };
        let event = Event::decode(&envelope.aggregate_type, &envelope.event_type, payload)
            .map_err(|err| {
                format!(
                    "cannot decode {} of {} {} (sequence {}): {err}",
                    envelope.event_type,
                    envelope.aggregate_type,
                    envelope.aggregate_id,
                    envelope.sequence
                )
            })?;
        let time = envelope
            .metadata
            .get("time")
            .and_then(Value::as_str)
            .and_then(|time| DateTime::parse_from_rfc3339(time).ok())
            .map_or(envelope.recorded_at, |time| time.with_timezone(&Utc))
            .trunc_subsecs(6);
        Ok(Recorded {
            aggregate_type: envelope.aggregate_type.clone(),
            aggregate_id: envelope.aggregate_id.clone(),
            id,
            sequence: envelope.sequence,
            position: envelope.position,
            event_type: envelope.event_type.clone(),
            time,
            recorded_at: envelope.recorded_at,
            correlation_id: envelope.correlation_id().map(str::to_owned),
            traceparent: envelope.traceparent(),
            event,
        })
    }

    /// The id JetStream deduplicates this event by (`Nats-Msg-Id`).
    pub fn message_id(&self) -> String {
        crate::envelope::message_id(&self.aggregate_type, &self.aggregate_id, self.sequence)
    }
}

impl Event {
    /// The event of `payload` (`{"<event_type>": {fields}}`, at its current
    /// version). A type the published schemas do not list is `Unknown`; a
    /// listed one that does not have its shape is an error.
    pub fn decode(
        aggregate_type: &str,
        event_type: &str,
        payload: &Value,
    ) -> Result<Event, String> {
        if !crate::json::EVENTS
            .iter()
            .any(|e| e.aggregate_type == aggregate_type && e.event_type == event_type)
        {
            return Ok(Event::Unknown);
        }
        if payload.get(event_type).is_none() {
            return Err(format!("the payload is not a {event_type}"));
        }
        let event = match aggregate_type {
            aggregate::USER => UserEvent::deserialize(payload).map(Event::User),
            aggregate::PRODUCT => ProductEvent::deserialize(payload).map(Event::Product),
            aggregate::ORDER => OrderEvent::deserialize(payload).map(Event::Order),
            aggregate::PAYMENT => PaymentEvent::deserialize(payload).map(Event::Payment),
            aggregate::CATEGORY => CategoryEvent::deserialize(payload).map(Event::Category),
            aggregate::CART => CartEvent::deserialize(payload).map(Event::Cart),
            _ => return Ok(Event::Unknown),
        };
        event.map_err(|err| err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::DomainEvent;
    use domain::values::{Currency, Description, EmailAddress, Name, Sku};
    use serde_json::json;

    fn envelope(
        aggregate_type: &str,
        event_type: &str,
        version: &str,
        payload: Value,
    ) -> EventEnvelope {
        EventEnvelope {
            aggregate_type: aggregate_type.into(),
            aggregate_id: Uuid::nil().to_string(),
            sequence: 1,
            event_type: event_type.into(),
            event_version: version.into(),
            payload,
            metadata: json!({"time": "2023-05-06T07:08:09.123456789Z", "correlation_id": "c-1"}),
            position: 7,
            recorded_at: DateTime::parse_from_rfc3339("2024-01-02T03:04:05Z")
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    fn stored<E: DomainEvent>(aggregate_type: &str, event: E) -> EventEnvelope {
        envelope(
            aggregate_type,
            &event.event_type(),
            &event.event_version(),
            serde_json::to_value(&event).unwrap(),
        )
    }

    /// One of every event the domain writes, as it stores them.
    fn every_domain_event() -> Vec<EventEnvelope> {
        use domain::{
            CartEvent as Ca, CategoryEvent as C, OrderEvent as O, PaymentEvent as P,
            ProductEvent as Pr, UserEvent as U,
        };
        let id = Uuid::now_v7();
        let email = || EmailAddress::parse("ada@example.com").unwrap();
        let name = || Name::parse("Ada").unwrap();
        let slug = || domain::Slug::parse("pens").unwrap();
        let money = || domain::values::Money::new(1999, Currency::parse("EUR").unwrap());
        let line = domain::OrderLine {
            product_id: id,
            quantity: 2,
            unit_price: money(),
        };
        let events = vec![
            stored(
                "user",
                U::UserRegistered {
                    user_id: id,
                    email: email(),
                    name: name(),
                },
            ),
            stored("user", U::UserNameChanged { name: name() }),
            stored(
                "user",
                U::UserEmailChanged {
                    previous_email: email(),
                    email: email(),
                },
            ),
            stored("user", U::UserDeactivated {}),
            stored("user", U::UserPasswordChanged {}),
            stored(
                "user",
                U::UserErased {
                    previous_email: email(),
                },
            ),
            stored(
                "product",
                Pr::ProductCreated {
                    product_id: id,
                    sku: Sku::parse("PEN-1").unwrap(),
                    name: name(),
                    description: Some(Description::parse("ink").unwrap()),
                    price: money(),
                    stock: 3,
                },
            ),
            stored(
                "product",
                Pr::ProductDetailsUpdated {
                    name: None,
                    description: None,
                },
            ),
            stored("product", Pr::ProductPriceChanged { price: money() }),
            stored("product", Pr::ProductStockAdjusted { stock_delta: -2 }),
            stored("product", Pr::ProductDiscontinued {}),
            stored(
                "order",
                O::OrderPlaced {
                    order_id: id,
                    user_id: id,
                    lines: vec![line],
                    total: money(),
                    payment_token: "tok_ok".into(),
                    cart_id: Some(id),
                    shipping_address: Some(domain::ShippingAddress {
                        name: "Ada".into(),
                        line1: "1 Way".into(),
                        line2: None,
                        city: "London".into(),
                        region: None,
                        postal_code: "N1".into(),
                        country: "GB".into(),
                    }),
                },
            ),
            stored("order", O::OrderPaymentAssigned { payment_id: id }),
            stored("order", O::OrderConfirmed {}),
            stored("order", O::OrderShipped {}),
            stored("order", O::OrderRefunded {}),
            stored(
                "order",
                O::OrderCancelled {
                    reason: domain::CancelReason::CustomerRequest,
                    previous_status: domain::OrderStatus::Pending,
                    note: Some("changed my mind".into()),
                },
            ),
            stored(
                "cart",
                Ca::CartCreated {
                    cart_id: id,
                    user_id: None,
                    token_hash: Some("ab".repeat(32)),
                },
            ),
            stored(
                "cart",
                Ca::CartLineSet {
                    product_id: id,
                    quantity: 2,
                    currency: Currency::parse("EUR").unwrap(),
                },
            ),
            stored("cart", Ca::CartLineRemoved { product_id: id }),
            stored("cart", Ca::CartClaimed { user_id: id }),
            stored(
                "cart",
                Ca::CartMerged {
                    into: id,
                    user_id: id,
                },
            ),
            stored(
                "cart",
                Ca::CartLinesMerged {
                    from: id,
                    lines: vec![domain::CartLine {
                        product_id: id,
                        quantity: 3,
                    }],
                    currency: Some(Currency::parse("EUR").unwrap()),
                },
            ),
            stored("cart", Ca::CartCheckedOut { order_id: id }),
            stored("cart", Ca::CartExpired {}),
            stored(
                "payment",
                P::PaymentRequested {
                    payment_id: id,
                    order_id: id,
                    amount: money(),
                    token: "tok_ok".into(),
                },
            ),
            stored(
                "payment",
                P::PaymentAttemptFailed {
                    error: "timeout".into(),
                },
            ),
            stored(
                "payment",
                P::PaymentAuthorized {
                    authorization_id: "a-1".into(),
                },
            ),
            stored(
                "payment",
                P::PaymentDeclined {
                    reason: "no".into(),
                },
            ),
            stored(
                "payment",
                P::PaymentFailed {
                    reason: "no".into(),
                },
            ),
            stored("payment", P::PaymentCaptured {}),
            stored("payment", P::PaymentRefunded {}),
            stored(
                "product",
                Pr::StockReserved {
                    order_id: id,
                    quantity: 1,
                },
            ),
            stored(
                "product",
                Pr::StockReservationReleased {
                    order_id: id,
                    quantity: 1,
                },
            ),
            stored(
                "product",
                Pr::StockReservationCommitted {
                    order_id: id,
                    quantity: 1,
                },
            ),
            stored(
                "product",
                Pr::StockReturned {
                    order_id: id,
                    quantity: 1,
                },
            ),
            stored(
                "product",
                Pr::ProductCategoriesSet {
                    category_ids: vec![id],
                },
            ),
            stored(
                "product",
                Pr::ProductAttributesSet {
                    attributes: domain::Attributes::parse(
                        [("ink".to_owned(), "gel".to_owned())].into(),
                    )
                    .unwrap(),
                },
            ),
            stored(
                "category",
                C::CategoryCreated {
                    category_id: id,
                    slug: slug(),
                    name: name(),
                    parent_id: Some(id),
                    position: 1,
                },
            ),
            stored(
                "category",
                C::CategoryUpdated {
                    slug: Some(slug()),
                    previous_slug: Some(slug()),
                    name: None,
                    position: Some(2),
                },
            ),
            stored("category", C::CategoryMoved { parent_id: None }),
            stored("category", C::CategoryDeleted { slug: slug() }),
        ];
        events
    }

    #[test]
    fn every_published_event_type_decodes_from_what_the_domain_stores() {
        let events = every_domain_event();
        for schema in crate::json::EVENTS {
            let current = crate::upcast::UPCASTS
                .iter()
                .all(|(t, from, _)| !(*t == schema.event_type && *from == schema.event_version));
            if !current {
                continue;
            }
            let sample = events
                .iter()
                .find(|e| {
                    e.aggregate_type == schema.aggregate_type && e.event_type == schema.event_type
                })
                .unwrap_or_else(|| {
                    panic!(
                        "no sample of {} {}: add one",
                        schema.aggregate_type, schema.event_type
                    )
                });
            let recorded = Recorded::decode(sample).unwrap();
            assert_ne!(recorded.event, Event::Unknown, "{}", schema.event_type);
        }
        for event in &events {
            let recorded = Recorded::decode(event).unwrap_or_else(|err| panic!("{err}"));
            assert_ne!(recorded.event, Event::Unknown, "{}", event.event_type);
        }
    }

    #[test]
    fn decoding_upcasts_keeps_the_metadata_and_truncates_the_time() {
        let old = envelope(
            "product",
            "ProductStockAdjusted",
            "1.0",
            json!({"ProductStockAdjusted": {"delta": -3}}),
        );
        let recorded = Recorded::decode(&old).unwrap();
        assert_eq!(
            recorded.event,
            Event::Product(ProductEvent::ProductStockAdjusted { stock_delta: -3 })
        );
        assert_eq!(
            recorded.time.to_rfc3339(),
            "2023-05-06T07:08:09.123456+00:00"
        );
        assert_eq!(recorded.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(recorded.position, 7);
        assert_eq!(recorded.message_id(), format!("product:{}:1", Uuid::nil()));
    }

    #[test]
    fn unknown_types_are_unknown_and_malformed_known_ones_are_refused() {
        let newer = envelope(
            "user",
            "UserMovedToMars",
            "1.0",
            json!({"UserMovedToMars": {}}),
        );
        assert_eq!(Recorded::decode(&newer).unwrap().event, Event::Unknown);
        let malformed = envelope(
            "user",
            "UserRegistered",
            "1.0",
            json!({"UserRegistered": {"email": 5}}),
        );
        assert!(Recorded::decode(&malformed)
            .unwrap_err()
            .contains("UserRegistered"));
        let wrapped_wrong = envelope(
            "user",
            "UserRegistered",
            "1.0",
            json!({"UserDeactivated": {}}),
        );
        assert!(Recorded::decode(&wrapped_wrong).is_err());
        let mut not_a_uuid = envelope(
            "user",
            "UserDeactivated",
            "1.0",
            json!({"UserDeactivated": {}}),
        );
        not_a_uuid.aggregate_id = "u-1".into();
        assert!(Recorded::decode(&not_a_uuid)
            .unwrap_err()
            .contains("not a UUID"));
    }
}
