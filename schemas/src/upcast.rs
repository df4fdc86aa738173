//! Old stored versions of events, and how each becomes the current one.
//!
//! Stored events are never rewritten: a reader upcasts an old version when it
//! reads it. Every reader shares these functions, so the command side (through
//! a cqrs-es `EventUpcaster` in `commands`), the projection workers (events
//! from NATS), the projections' reads of the events table and `agora replay`
//! all see the same, current shape. The envelope on NATS stays the stored row
//! as is: consumers upcast, not the relay, so the relay keeps splicing stored
//! JSON without parsing it, and a consumer that knows v1 could still read it.
//!
//! A payload is stored as `{"<EventType>": {fields}}` (cqrs-es's enum form).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `ProductStockAdjusted` version 1: `{"delta": n}`. Version 2 renamed the
/// field `stock_delta`: other aggregates gained deltas of their own (prices,
/// reservations) and a bare `delta` no longer said what it moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductStockAdjustedV1 {
    pub delta: i64,
}

/// `ProductStockAdjusted` version 2, the current one (the domain's
/// `ProductEvent::ProductStockAdjusted`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductStockAdjustedV2 {
    pub stock_delta: i64,
}

impl From<ProductStockAdjustedV1> for ProductStockAdjustedV2 {
    fn from(v1: ProductStockAdjustedV1) -> Self {
        Self {
            stock_delta: v1.delta,
        }
    }
}

/// The versions stored events were written with before the current one:
/// (event type, old version, current version).
///
/// The events that gained sealed personal data (see [`crate::sealed`]) kept
/// their fields at 2.0; their 1.0 payloads hold the same fields in clear, so
/// reading one is only its version moving on: a reader opens what is sealed
/// and leaves cleartext as it is.
pub const UPCASTS: &[(&str, &str, &str)] = &[
    ("ProductStockAdjusted", "1.0", "2.0"),
    ("UserRegistered", "1.0", "2.0"),
    ("UserNameChanged", "1.0", "2.0"),
    ("UserEmailChanged", "1.0", "2.0"),
    ("OrderPlaced", "1.0", "2.0"),
    ("PaymentRequested", "1.0", "2.0"),
];

/// Whether a stored event of this type and version must be upcast on read.
pub fn needs_upcast(event_type: &str, event_version: &str) -> bool {
    UPCASTS
        .iter()
        .any(|(t, from, _)| *t == event_type && *from == event_version)
}

/// Brings a stored payload to the current version of its event, and returns
/// that version; `None` (and the payload untouched) when it is current
/// already or is not an upcast this knows. A v1 payload that does not have
/// the v1 shape is left as it is, so the reader reports it as undecodable.
pub fn upcast(event_type: &str, event_version: &str, payload: &mut Value) -> Option<&'static str> {
    match (event_type, event_version) {
        ("ProductStockAdjusted", "1.0") => {
            let data = payload.get(event_type)?;
            let v1 = ProductStockAdjustedV1::deserialize(data).ok()?;
            let v2 = ProductStockAdjustedV2::from(v1);
            let value = serde_json::to_value(v2).ok()?;
            *payload = serde_json::json!({ event_type: value });
            Some("2.0")
        }
        (
            "UserRegistered" | "UserNameChanged" | "UserEmailChanged" | "OrderPlaced"
            | "PaymentRequested",
            "1.0",
        ) => payload
            .get(event_type)
            .map(|_| crate::sealed::SEALED_VERSION),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_v1_stock_adjustment_becomes_v2() {
        let mut payload = json!({"ProductStockAdjusted": {"delta": -3}});
        assert_eq!(
            upcast("ProductStockAdjusted", "1.0", &mut payload),
            Some("2.0")
        );
        assert_eq!(
            payload,
            json!({"ProductStockAdjusted": {"stock_delta": -3}})
        );
    }

    #[test]
    fn current_and_unknown_versions_are_left_alone() {
        let v2 = json!({"ProductStockAdjusted": {"stock_delta": 4}});
        let mut payload = v2.clone();
        assert_eq!(upcast("ProductStockAdjusted", "2.0", &mut payload), None);
        assert_eq!(payload, v2);
        let mut other = json!({"ProductPriceChanged": {"price": {"amount": 1, "currency": "EUR"}}});
        assert_eq!(upcast("ProductPriceChanged", "1.0", &mut other), None);
        assert!(needs_upcast("ProductStockAdjusted", "1.0"));
        assert!(!needs_upcast("ProductStockAdjusted", "2.0"));
    }

    #[test]
    fn cleartext_v1_personal_data_is_read_as_v2_unchanged() {
        let v1 =
            json!({"UserRegistered": {"user_id": "0190", "email": "a@b.example", "name": "A"}});
        let mut payload = v1.clone();
        assert!(needs_upcast("UserRegistered", "1.0"));
        assert_eq!(upcast("UserRegistered", "1.0", &mut payload), Some("2.0"));
        assert_eq!(payload, v1);
        assert!(!needs_upcast("UserRegistered", "2.0"));
    }

    #[test]
    fn a_malformed_v1_is_left_for_the_reader_to_refuse() {
        let bad = json!({"ProductStockAdjusted": {"delta": "many"}});
        let mut payload = bad.clone();
        assert_eq!(upcast("ProductStockAdjusted", "1.0", &mut payload), None);
        assert_eq!(payload, bad);
    }
}
