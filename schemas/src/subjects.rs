//! NATS names, all under the deployment's prefix (`AGORA_NATS_PREFIX`) so two
//! deployments can share one NATS.

/// The JetStream stream holding every committed event.
pub fn stream(prefix: &str) -> String {
    format!("{}_EVENTS", prefix.to_ascii_uppercase().replace('-', "_"))
}

/// Subjects of the event stream: one per aggregate, in order.
pub fn events_wildcard(prefix: &str) -> String {
    format!("{prefix}.events.>")
}

pub fn event(prefix: &str, aggregate_type: &str, aggregate_id: &str) -> String {
    format!("{prefix}.events.{aggregate_type}.{aggregate_id}")
}

/// Durable consumer name of a projection.
pub fn consumer(prefix: &str, projection: &str) -> String {
    format!("{}_{projection}", prefix.replace('.', "_"))
}

/// Core NATS subject announcing that a read-model row changed:
/// `<prefix>.changes.<model>.<id>`, payload the row's new version.
pub fn change(prefix: &str, model: &str, id: &str) -> String {
    format!("{prefix}.changes.{model}.{id}")
}

/// The header of a change announcement that says what changed, when not
/// the whole row.
pub const CHANGE_HEADER: &str = "Agora-Change";
/// [`CHANGE_HEADER`]'s value when only a product's stock moved.
pub const STOCK_ONLY: &str = "stock";

pub fn changes_wildcard(prefix: &str) -> String {
    format!("{prefix}.changes.>")
}

/// The id in a change subject that means every row of the model may have
/// changed (`agora replay` swapped it): readers drop everything cached of it.
/// Not a UUID, so it names no row.
pub const ALL_ROWS: &str = "all";
