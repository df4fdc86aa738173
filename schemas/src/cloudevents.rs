//! CloudEvents 1.0 attributes of every published event, in the binary
//! content mode of the NATS protocol binding: each attribute is a message
//! header named `ce-<attribute>`, `datacontenttype` is `content-type`, and
//! the body (the [`crate::EventEnvelope`]) is the event's data, unchanged.
//! So any CloudEvents SDK reads our stream without knowing our envelope.
//!
//! The relay sets them; the AsyncAPI document describes them from the same
//! functions, so the two cannot disagree.

pub const SPECVERSION_HEADER: &str = "ce-specversion";
pub const ID_HEADER: &str = "ce-id";
pub const SOURCE_HEADER: &str = "ce-source";
pub const TYPE_HEADER: &str = "ce-type";
pub const SUBJECT_HEADER: &str = "ce-subject";
pub const TIME_HEADER: &str = "ce-time";
/// The binding maps `datacontenttype` to this header, not to a `ce-` one.
pub const CONTENT_TYPE_HEADER: &str = "content-type";

pub const SPECVERSION: &str = "1.0";
pub const CONTENT_TYPE: &str = "application/json";

/// `source`: the deployment, `/agora/<prefix>`. With `id` it names the event
/// uniquely, as the specification asks, even across deployments sharing NATS.
pub fn source(prefix: &str) -> String {
    format!("/agora/{prefix}")
}

/// `type`: `agora.<aggregate_type>.<EventType>.v<major>`, e.g.
/// `agora.order.OrderPlaced.v1`. Only the major version is in it: a minor
/// version adds optional fields, which a consumer of the major one can ignore.
pub fn event_type(aggregate_type: &str, event_type: &str, event_version: &str) -> String {
    format!(
        "agora.{aggregate_type}.{event_type}.v{}",
        major(event_version)
    )
}

/// `subject`: `<aggregate_type>/<id>`, the aggregate the event happened to.
pub fn subject(aggregate_type: &str, aggregate_id: &str) -> String {
    format!("{aggregate_type}/{aggregate_id}")
}

/// The major part of a stored `event_version` (`"2.0"` → `"2"`).
pub fn major(event_version: &str) -> &str {
    event_version
        .split_once('.')
        .map_or(event_version, |(major, _)| major)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_carry_the_major_version_only() {
        assert_eq!(
            event_type("order", "OrderPlaced", "1.0"),
            "agora.order.OrderPlaced.v1"
        );
        assert_eq!(
            event_type("product", "ProductStockAdjusted", "2.0"),
            "agora.product.ProductStockAdjusted.v2"
        );
        assert_eq!(major("3"), "3");
        assert_eq!(source("agora"), "/agora/agora");
        assert_eq!(subject("user", "0191"), "user/0191");
    }
}
