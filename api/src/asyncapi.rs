//! The AsyncAPI 3.0 document (`GET /asyncapi.json`): what Agora sends
//! without being asked. Three channels:
//!
//! - `events`: every committed event on JetStream, one message per
//!   (aggregate type, event type, stored version) of `schemas::json::EVENTS`,
//!   its payload the envelope around the checked-in schema of that event,
//!   its headers the CloudEvents attributes (`schemas::cloudevents`);
//! - `changes`: core-NATS announcements that a read-model row changed;
//! - `webhooks`: the deliveries to registered endpoints
//!   (`schemas::webhooks`), whose `data` is the resource as the OpenAPI
//!   document's GET answers it.
//!
//! Its schemas are the same as the OpenAPI document's (the checked-in
//! event schemas and the resources' answers), hoisted by the same
//! `Components`.

use serde_json::{json, Map, Value};

use crate::components::{reference, Components};

/// The parts of one event's message, from its line of `schemas::json::EVENTS`.
struct EventMessage {
    /// The message's and its payload schema's key: `<aggregate>.<Type>.v<version>`.
    key: String,
    aggregate_type: &'static str,
    event_type: &'static str,
    event_version: &'static str,
}

fn event_messages() -> Vec<EventMessage> {
    schemas::json::EVENTS
        .iter()
        .map(|e| EventMessage {
            key: format!("{}.{}.v{}", e.aggregate_type, e.event_type, e.event_version),
            aggregate_type: e.aggregate_type,
            event_type: e.event_type,
            event_version: e.event_version,
        })
        .collect()
}

/// A component name for a resource of `schemas::webhooks` (`order` → `Order`).
fn resource_component(resource: &str) -> String {
    let mut chars = resource.chars();
    chars
        .next()
        .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// The whole document.
pub fn document() -> Value {
    let mut components = Components::new();
    crate::openapi::add_resources(&mut components);
    components.add(
        "EventEnvelope",
        schemas::json::serialized_schema_of::<schemas::EventEnvelope>(),
    );
    components.add("EventHeaders", event_headers());
    components.add("WebhookHeaders", webhook_headers());
    components.add(
        "ChangedVersion",
        json!({
            "type": "string",
            "pattern": "^[0-9]+$",
            "description": "The row's version after the change, in decimal (0 for notifications, \
                and for `all` after a replay).",
        }),
    );

    let mut messages = Map::new();
    let mut event_refs = Map::new();
    for event in event_messages() {
        let schema = schemas::json::EVENTS
            .iter()
            .find(|e| {
                (e.aggregate_type, e.event_type, e.event_version)
                    == (event.aggregate_type, event.event_type, event.event_version)
            })
            .map(|e| (e.schema)())
            .unwrap_or(Value::Null);
        components.add(&event.key, schema);
        let payload = format!("{}.Envelope", event.key);
        components.add(
            &payload,
            json!({
                "allOf": [reference("EventEnvelope")],
                "type": "object",
                "properties": {
                    "aggregate_type": { "const": event.aggregate_type },
                    "event_type": { "const": event.event_type },
                    "event_version": { "const": event.event_version },
                    "payload": reference(&event.key),
                },
            }),
        );
        let ce_type = schemas::cloudevents::event_type(
            event.aggregate_type,
            event.event_type,
            event.event_version,
        );
        messages.insert(
            event.key.clone(),
            json!({
                "name": ce_type,
                "title": format!("{} ({} {})", event.event_type, event.aggregate_type, event.event_version),
                "summary": format!(
                    "{} of a {}, stored at version {}; its CloudEvents type is {ce_type}.",
                    event.event_type, event.aggregate_type, event.event_version
                ),
                "contentType": schemas::cloudevents::CONTENT_TYPE,
                "headers": {
                    "allOf": [reference("EventHeaders")],
                    "type": "object",
                    "properties": { schemas::cloudevents::TYPE_HEADER: { "const": ce_type } },
                },
                "payload": reference(&payload),
                "correlationId": {
                    "description": "The request that caused the event, carried from its x-request-id.",
                    "location": format!("$message.header#/{}", schemas::trace::CORRELATION_HEADER),
                },
                "bindings": { "nats": { "bindingVersion": "0.1.0" } },
            }),
        );
        event_refs.insert(
            event.key.clone(),
            json!({ "$ref": format!("#/components/messages/{}", event.key) }),
        );
    }

    messages.insert(
        "Change".to_owned(),
        json!({
            "name": "change",
            "title": "A read-model row changed",
            "summary": "Sent after a projection commits; readers drop their cached copy and wake \
                requests waiting for this version.",
            "contentType": "text/plain",
            "headers": {
                "type": "object",
                "properties": {
                    "Agora-Change": {
                        "type": "string",
                        "enum": ["stock"],
                        "description": "What changed, when not the whole row: `stock` when only a \
                            product's stock moved, so caches of what does not depend on stock \
                            (search pages without `in_stock`) may keep it. Absent: anything may \
                            have changed.",
                    },
                },
            },
            "payload": reference("ChangedVersion"),
            "bindings": { "nats": { "bindingVersion": "0.1.0" } },
        }),
    );

    let mut webhook_refs = Map::new();
    for webhook in schemas::webhooks::EVENTS {
        let resource = resource_component(webhook.resource);
        // A resource without a GET of its own yet has no shape to send.
        if components.get(&resource).is_none() {
            continue;
        }
        let key = format!("webhook.{}", webhook.name);
        components.add(
            &key,
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["type", "timestamp", "data"],
                "properties": {
                    "type": { "const": webhook.name },
                    "timestamp": {
                        "type": "string",
                        "format": "date-time",
                        "description": "When the event happened (RFC 3339).",
                    },
                    "data": reference(&resource),
                },
            }),
        );
        messages.insert(
            key.clone(),
            json!({
                "name": webhook.name,
                "title": webhook.name,
                "summary": format!(
                    "A delivery of {}: `data` is the {} as its GET shows it after the event.",
                    webhook.name, webhook.resource
                ),
                "contentType": "application/json",
                "headers": reference("WebhookHeaders"),
                "payload": reference(&key),
                "bindings": { "http": { "bindingVersion": "0.3.0" } },
            }),
        );
        webhook_refs.insert(
            key.clone(),
            json!({ "$ref": format!("#/components/messages/{key}") }),
        );
    }

    let channel_messages = |channel: &str, refs: &Map<String, Value>| -> Vec<Value> {
        refs.keys()
            .map(|key| json!({ "$ref": format!("#/channels/{channel}/messages/{key}") }))
            .collect()
    };
    let model_names: Vec<&str> = projections::Projection::ALL
        .iter()
        .map(|p| p.name())
        .collect();

    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Agora events",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "What Agora sends on its own: every committed event on NATS \
                JetStream (CloudEvents 1.0 in the NATS binary binding: `ce-*` headers, the \
                envelope as the body), announcements that a read model changed, and signed \
                webhook deliveries (Standard Webhooks). The HTTP API is in /openapi.json.",
            "license": { "name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0" },
            "contact": { "name": "Agora" },
            "tags": [
                { "name": "events", "description": "The event stream." },
                { "name": "webhooks", "description": "Deliveries to registered endpoints." },
            ],
        },
        "defaultContentType": "application/json",
        "servers": {
            "nats": {
                "host": "{host}",
                "protocol": "nats",
                "description": "The deployment's NATS (NATS_URL); subjects start with its \
                    AGORA_NATS_PREFIX, the JetStream stream is <PREFIX>_EVENTS.",
                "variables": { "host": { "default": "127.0.0.1:4222", "description": "Host and port of NATS_URL." } },
            },
            "receiver": {
                "host": "{host}",
                "protocol": "https",
                "description": "A registered webhook endpoint (POST /webhooks); plain http only to \
                    loopback, with AGORA_WEBHOOKS_ALLOW_LOOPBACK=true.",
                "variables": { "host": { "description": "The host of the endpoint's URL." } },
            },
        },
        "channels": {
            "events": {
                "address": "{prefix}.events.{aggregate_type}.{aggregate_id}",
                "title": "Committed events",
                "description": "Every committed event, once (Nats-Msg-Id = ce-id deduplicates a \
                    re-send), in sequence order per aggregate, in the JetStream stream \
                    <PREFIX>_EVENTS. The body is the envelope: the stored event under `payload`, \
                    unchanged, at the version it was stored.",
                "servers": [{ "$ref": "#/servers/nats" }],
                "parameters": {
                    "prefix": { "description": "AGORA_NATS_PREFIX.", "default": "agora" },
                    "aggregate_type": {
                        "description": "The aggregate's type.",
                        "enum": aggregate_types(),
                    },
                    "aggregate_id": { "description": "The aggregate's id (a UUID)." },
                },
                "messages": event_refs,
            },
            "changes": {
                "address": "{prefix}.changes.{model}.{id}",
                "title": "Read-model changes",
                "description": "Core NATS (not JetStream), at most once: a lost one only delays \
                    a waiting reader. `{id}` is `all` when `agora replay` swapped the whole model.",
                "servers": [{ "$ref": "#/servers/nats" }],
                "parameters": {
                    "prefix": { "description": "AGORA_NATS_PREFIX.", "default": "agora" },
                    "model": { "description": "The read model.", "enum": model_names },
                    "id": { "description": "The row's id (for notifications, the user's), or `all`." },
                },
                "messages": { "Change": { "$ref": "#/components/messages/Change" } },
            },
            "webhooks": {
                "address": null,
                "title": "Webhook deliveries",
                "description": "A POST to each enabled endpoint whose `events` match, at least \
                    once, in event order per endpoint and aggregate, retried with backoff.",
                "servers": [{ "$ref": "#/servers/receiver" }],
                "messages": webhook_refs,
            },
        },
        "operations": {
            "publishEvents": {
                "action": "send",
                "channel": { "$ref": "#/channels/events" },
                "title": "Publish committed events",
                "summary": "The relay publishes each committed event from the events table.",
                "description": "Read them with a durable JetStream consumer on \
                    `<prefix>.events.>`; any CloudEvents SDK decodes the headers.",
                "tags": [{ "name": "events" }],
                "bindings": { "nats": { "bindingVersion": "0.1.0" } },
                "messages": channel_messages("events", &event_refs),
            },
            "announceChanges": {
                "action": "send",
                "channel": { "$ref": "#/channels/changes" },
                "title": "Announce read-model changes",
                "summary": "Projection workers announce each row they changed, at its new version.",
                "description": "Subscribe to `<prefix>.changes.>` to invalidate caches.",
                "tags": [{ "name": "events" }],
                "bindings": { "nats": { "bindingVersion": "0.1.0" } },
                "messages": [{ "$ref": "#/channels/changes/messages/Change" }],
            },
            "deliverWebhooks": {
                "action": "send",
                "channel": { "$ref": "#/channels/webhooks" },
                "title": "Deliver webhooks",
                "summary": "POST each matching event to each endpoint, signed with its secret.",
                "description": "Verify `webhook-signature` with any Standard Webhooks library \
                    and the endpoint's secret; answer 2xx within 10 s.",
                "tags": [{ "name": "webhooks" }],
                "bindings": { "http": { "method": "POST", "bindingVersion": "0.3.0" } },
                "messages": channel_messages("webhooks", &webhook_refs),
            },
        },
        "components": {
            "schemas": components.into_map(),
            "messages": messages,
        },
    })
}

/// The aggregate types that have events, in table order.
fn aggregate_types() -> Vec<&'static str> {
    let mut types: Vec<&'static str> = Vec::new();
    for event in schemas::json::EVENTS {
        if !types.contains(&event.aggregate_type) {
            types.push(event.aggregate_type);
        }
    }
    types
}

/// The headers of every event message: CloudEvents attributes, the
/// JetStream message id, and the trace and causality of the write.
fn event_headers() -> Value {
    use schemas::cloudevents as ce;
    use schemas::trace;

    json!({
        "type": "object",
        "required": [
            "Nats-Msg-Id", ce::SPECVERSION_HEADER, ce::ID_HEADER, ce::SOURCE_HEADER,
            ce::TYPE_HEADER, ce::SUBJECT_HEADER, ce::TIME_HEADER, ce::CONTENT_TYPE_HEADER,
        ],
        "properties": {
            "Nats-Msg-Id": {
                "type": "string",
                "description": "`<aggregate_type>:<aggregate_id>:<sequence>`; JetStream drops a re-sent duplicate.",
            },
            ce::SPECVERSION_HEADER: { "const": ce::SPECVERSION },
            ce::ID_HEADER: { "type": "string", "description": "= Nats-Msg-Id." },
            ce::SOURCE_HEADER: {
                "type": "string",
                "pattern": "^/agora/",
                "description": "`/agora/<prefix>`: the deployment.",
            },
            ce::TYPE_HEADER: {
                "type": "string",
                "pattern": "^agora\\.[a-z_]+\\.[A-Za-z]+\\.v[0-9]+$",
                "description": "`agora.<aggregate_type>.<EventType>.v<major of the stored version>`.",
            },
            ce::SUBJECT_HEADER: { "type": "string", "description": "`<aggregate_type>/<aggregate_id>`." },
            ce::TIME_HEADER: {
                "type": "string",
                "format": "date-time",
                "description": "When the event was stored (RFC 3339, UTC); = the envelope's recorded_at.",
            },
            ce::CONTENT_TYPE_HEADER: { "const": ce::CONTENT_TYPE },
            trace::TRACEPARENT_HEADER: {
                "type": "string",
                "description": "W3C trace context of the write, when it had one.",
            },
            trace::CORRELATION_HEADER: { "type": "string", "description": "The originating request's id." },
            trace::CAUSATION_HEADER: { "type": "string", "description": "The message that caused the write." },
        },
    })
}

/// The Standard Webhooks headers of every delivery.
fn webhook_headers() -> Value {
    use schemas::webhooks::{ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};

    json!({
        "type": "object",
        "required": [ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER, "content-type"],
        "properties": {
            ID_HEADER: {
                "type": "string",
                "description": "One per event and endpoint, the same on every retry: deduplicate by it.",
            },
            TIMESTAMP_HEADER: {
                "type": "string",
                "pattern": "^[0-9]+$",
                "description": "Unix seconds of this attempt; refuse one too far from now.",
            },
            SIGNATURE_HEADER: {
                "type": "string",
                "pattern": "^v1,[A-Za-z0-9+/]+=*( v1,[A-Za-z0-9+/]+=*)*$",
                "description": "`v1,<base64 HMAC-SHA256 of \"<webhook-id>.<webhook-timestamp>.<body>\" \
                    keyed by the secret's decoded bytes>`; two, space-separated, for 24 h after a rotation.",
            },
            "content-type": { "const": "application/json" },
        },
    })
}
