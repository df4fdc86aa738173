use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use schemas::{EventEnvelope, TraceParent};
use uuid::Uuid;

/// Who caused a command and why: stored with every event it yields, and carried
/// across NATS so one request can be followed through every process.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandMetadata {
    /// The id of the originating request (`x-request-id`), shared by every
    /// event that request causes, however far downstream.
    pub correlation_id: String,
    /// The id of the message that directly caused this command: the request
    /// itself, or the event a saga reacted to.
    pub causation_id: String,
    /// The token's subject, or `system` for the processes' own commands.
    pub actor: String,
    pub time: DateTime<Utc>,
    /// The W3C trace of the step that issued the command: the request's (a
    /// valid incoming `traceparent` continued, else a new trace), or the
    /// event's that a saga reacted to. The relay passes it on as the NATS
    /// `traceparent` header.
    pub traceparent: TraceParent,
}

impl CommandMetadata {
    /// Metadata for a command the system issues itself, with a fresh correlation id.
    pub fn system() -> Self {
        let id = Uuid::now_v7().to_string();
        Self {
            correlation_id: id.clone(),
            causation_id: id,
            actor: "system".to_owned(),
            time: Utc::now(),
            traceparent: TraceParent::new_root(),
        }
    }

    /// Metadata for a command the system issues in reaction to `event` (the
    /// saga's): the same correlation id and trace, and the event's message
    /// id as the cause, so the chain can be followed back to the request.
    /// An event without a usable trace (written before tracing) starts one.
    pub fn caused_by(event: &EventEnvelope) -> Self {
        Self {
            correlation_id: event
                .correlation_id()
                .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned),
            causation_id: event.message_id(),
            actor: "system".to_owned(),
            time: Utc::now(),
            traceparent: event
                .traceparent()
                .map_or_else(TraceParent::new_root, |parent| parent.child()),
        }
    }

    pub fn to_map(&self) -> HashMap<String, String> {
        HashMap::from([
            ("correlation_id".to_owned(), self.correlation_id.clone()),
            ("causation_id".to_owned(), self.causation_id.clone()),
            ("actor".to_owned(), self.actor.clone()),
            (
                "time".to_owned(),
                self.time.to_rfc3339_opts(SecondsFormat::Micros, true),
            ),
            ("traceparent".to_owned(), self.traceparent.to_string()),
        ])
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "actor": self.actor,
            "time": self.time.to_rfc3339_opts(SecondsFormat::Micros, true),
            "traceparent": self.traceparent.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(metadata: serde_json::Value) -> EventEnvelope {
        EventEnvelope {
            aggregate_type: "order".to_owned(),
            aggregate_id: "o-1".to_owned(),
            sequence: 3,
            event_type: "OrderPlaced".to_owned(),
            event_version: "1.0".to_owned(),
            payload: serde_json::json!({}),
            metadata,
            position: 9,
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn a_caused_command_keeps_the_correlation_and_trace_and_names_the_event() {
        let parent = TraceParent::new_root();
        let event = envelope(serde_json::json!({
            "correlation_id": "req-1",
            "causation_id": "req-1",
            "traceparent": parent.to_string(),
        }));
        let caused = CommandMetadata::caused_by(&event);
        assert_eq!(caused.correlation_id, "req-1");
        assert_eq!(caused.causation_id, "order:o-1:3");
        assert_eq!(caused.actor, "system");
        assert_eq!(caused.traceparent.trace_id, parent.trace_id);
        assert_ne!(caused.traceparent.span_id, parent.span_id);
        assert_eq!(
            caused.to_json()["traceparent"],
            caused.traceparent.to_string()
        );
    }

    #[test]
    fn an_event_without_trace_or_correlation_starts_fresh_ones() {
        let event = envelope(serde_json::json!({ "traceparent": "not-a-traceparent" }));
        let caused = CommandMetadata::caused_by(&event);
        assert!(!caused.correlation_id.is_empty());
        assert_eq!(caused.causation_id, "order:o-1:3");
        let reparsed: TraceParent = caused.traceparent.to_string().parse().unwrap();
        assert_eq!(reparsed, caused.traceparent);
    }
}
