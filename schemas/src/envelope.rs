//! The published form of a committed event: what the relay puts on
//! JetStream and what projections and the saga read. It is the contract
//! between the write side and everything downstream, so it carries the
//! stored row as is (payload and metadata untouched) plus its place in the
//! global order.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventEnvelope {
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// 1-based position in the aggregate's stream; a read model that
    /// reflects this event has `version == sequence`.
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// The event as stored: `{"<event_type>": {...fields}}`.
    pub payload: Value,
    /// `correlation_id`, `causation_id`, `actor`, `time`, and `traceparent`
    /// (absent from events written before tracing).
    pub metadata: Value,
    /// Global commit-order position in the events table.
    pub position: i64,
    pub recorded_at: DateTime<Utc>,
}

impl EventEnvelope {
    /// The event's own fields, without the variant wrapper.
    pub fn data(&self) -> &Value {
        self.payload.get(&self.event_type).unwrap_or(&self.payload)
    }

    /// The stable id JetStream deduplicates by (`Nats-Msg-Id`).
    /// This event at the current version of its type: a stored old version
    /// is upcast (see [`crate::upcast`]). Every reader of envelopes calls it.
    pub fn upcast(mut self) -> Self {
        if let Some(version) =
            crate::upcast::upcast(&self.event_type, &self.event_version, &mut self.payload)
        {
            self.event_version = version.to_owned();
        }
        self
    }

    pub fn message_id(&self) -> String {
        message_id(&self.aggregate_type, &self.aggregate_id, self.sequence)
    }

    pub fn correlation_id(&self) -> Option<&str> {
        self.metadata.get("correlation_id").and_then(Value::as_str)
    }

    pub fn causation_id(&self) -> Option<&str> {
        self.metadata.get("causation_id").and_then(Value::as_str)
    }

    /// The trace the event was written in, if its metadata names a valid one.
    pub fn traceparent(&self) -> Option<crate::TraceParent> {
        self.metadata
            .get("traceparent")
            .and_then(Value::as_str)
            .and_then(|v| v.parse().ok())
    }
}

pub fn message_id(aggregate_type: &str, aggregate_id: &str, sequence: i64) -> String {
    format!("{aggregate_type}:{aggregate_id}:{sequence}")
}
