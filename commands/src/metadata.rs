use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
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
        ])
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "actor": self.actor,
            "time": self.time.to_rfc3339_opts(SecondsFormat::Micros, true),
        })
    }
}
