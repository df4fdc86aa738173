//! The OpenAPI 3.1 document, generated from the route table
//! (`routes::table`) that also builds the router, so a route cannot exist
//! without its description. Every schema in it is a JSON Schema derived from
//! the Rust types with schemars: request bodies are exactly the files under
//! `schemas/json/commands/` (`schemas::json::COMMANDS`), answers are the
//! types the handlers serialize.
//!
//! What each operation can answer follows from what it is, the way the
//! handlers and middleware behave (the contract's `docs/api.md`): a body
//! means 413/415 and 400; a path id means 404; every POST takes
//! `Idempotency-Key` (400, 409 in flight, 413, 422 reused); a write on an
//! existing aggregate takes `If-Match` (412); every API route may be refused
//! by auth (401/403) and the rate limit (429) and may answer 503.

use axum::http::Method;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::components::{self, Components};
use crate::routes::Route;

/// Who may call an operation (api.md, Auth).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Operations paths: no token, no rate limit.
    Operations,
    /// Anyone, with or without a token.
    Open,
    /// A customer for its own resources, or an admin.
    Owner,
    /// Only an admin.
    Admin,
}

/// The query parameters a route takes; any other is a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    None,
    /// `?min_version=` of a single resource.
    One,
    /// `?limit=&cursor=`.
    Page,
    /// `?email=&limit=&cursor=`.
    Users,
    /// `?q=&status=&limit=&cursor=`.
    Products,
    /// `?status=&limit=&cursor=` of a webhook's deliveries.
    Deliveries,
}

/// What a successful answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// JSON of the named component, with `ETag` when `versioned`.
    Json {
        schema: &'static str,
        versioned: bool,
    },
    /// An HTML page.
    Html,
    /// Plain text (e.g. the Prometheus exposition format).
    Text,
    /// A script for the browser (the API reference's).
    Script,
    /// Server-Sent Events (`text/event-stream`), from `Last-Event-ID` on:
    /// messages `event: <kind>` whose data is the named component.
    EventStream {
        kind: &'static str,
        schema: &'static str,
    },
    /// No body (204).
    Empty,
}

/// The description of one operation, beside its handler in the route table.
#[derive(Debug, Clone)]
pub struct Operation {
    pub id: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub access: Access,
    pub query: Query,
    /// The component of the JSON body, if the route takes one.
    pub body: Option<&'static str>,
    /// A write on an existing aggregate: takes `If-Match`.
    pub if_match: bool,
    /// A value of the body must be unique (email, sku): 409 when taken.
    pub unique: bool,
    pub status: u16,
    pub answer: Answer,
    /// Operations whose `{id}` is the `id` of this answer, for clients and
    /// stateful tests that follow links.
    pub links: &'static [&'static str],
    /// Answers 503 with the `Readiness` body, not a problem, when not ready.
    pub readiness: bool,
    /// Problems this operation answers beyond what its kind implies.
    pub problems: &'static [(u16, &'static str)],
    /// The body may be left out entirely (`POST /auth/logout`).
    pub optional_body: bool,
    /// A second success with the same body (a repeated checkout's 200).
    pub also: Option<u16>,
}

impl Operation {
    pub fn new(id: &'static str, tag: &'static str, summary: &'static str) -> Self {
        Self {
            id,
            tag,
            summary,
            access: Access::Owner,
            query: Query::None,
            body: None,
            if_match: false,
            unique: false,
            status: 200,
            answer: Answer::Json {
                schema: "Empty",
                versioned: false,
            },
            links: &[],
            readiness: false,
            problems: &[],
            optional_body: false,
            also: None,
        }
    }

    /// Also answers `status` with the same body (a repeat of a create).
    pub fn also(self, status: u16) -> Self {
        Self {
            also: Some(status),
            ..self
        }
    }

    /// The body may be left out (no bytes, no `Content-Type`).
    pub fn optional_body(self) -> Self {
        Self {
            optional_body: true,
            ..self
        }
    }

    pub fn problems(self, problems: &'static [(u16, &'static str)]) -> Self {
        Self { problems, ..self }
    }

    /// 204, no body.
    pub fn no_content(self) -> Self {
        Self {
            status: 204,
            answer: Answer::Empty,
            ..self
        }
    }

    pub fn access(self, access: Access) -> Self {
        Self { access, ..self }
    }

    pub fn query(self, query: Query) -> Self {
        Self { query, ..self }
    }

    pub fn body(self, component: &'static str) -> Self {
        Self {
            body: Some(component),
            ..self
        }
    }

    /// Takes `If-Match` (a delete of an aggregate).
    pub fn guarded(self) -> Self {
        Self {
            if_match: true,
            ..self
        }
    }

    /// A write on an existing aggregate, answered 200 with `component` and its version.
    pub fn write(self, component: &'static str) -> Self {
        Self {
            if_match: true,
            ..self.answers(200, component, true)
        }
    }

    /// A create: 201 with `component`, its version and `Location`.
    pub fn create(self, component: &'static str, links: &'static [&'static str]) -> Self {
        Self {
            links,
            ..self.answers(201, component, true)
        }
    }

    pub fn answers(self, status: u16, schema: &'static str, versioned: bool) -> Self {
        Self {
            status,
            answer: Answer::Json { schema, versioned },
            ..self
        }
    }

    pub fn html(self) -> Self {
        Self {
            answer: Answer::Html,
            ..self
        }
    }

    pub fn text(self) -> Self {
        Self {
            answer: Answer::Text,
            ..self
        }
    }

    /// Live updates: `event: <kind>` messages carrying `schema` as JSON.
    pub fn event_stream(self, kind: &'static str, schema: &'static str) -> Self {
        Self {
            answer: Answer::EventStream { kind, schema },
            ..self
        }
    }

    pub fn script(self) -> Self {
        Self {
            answer: Answer::Script,
            ..self
        }
    }

    pub fn unique(self) -> Self {
        Self {
            unique: true,
            ..self
        }
    }

    pub fn readiness(self) -> Self {
        Self {
            readiness: true,
            ..self
        }
    }
}

/// The resources as their GETs show them: the OpenAPI answers, and the
/// `data` of the AsyncAPI document's webhook messages.
pub(crate) fn add_resources(components: &mut Components) {
    use projections::queries::{OrderView, PaymentView, ProductView, UserView};

    components.add("User", of::<UserView>());
    components.add("Product", of::<ProductView>());
    components.add("Order", of::<OrderView>());
    components.add("Payment", of::<PaymentView>());
    components.add("Category", of::<projections::queries::CategoryView>());
    components.add("Cart", of::<projections::queries::CartView>());
}

/// The components every document has: the command bodies of
/// `schemas::json` as checked in, and the answers the handlers serialize.
/// Single resources go in before the pages of them, so a page's items are
/// references to the resource's component.
fn components() -> Map<String, Value> {
    use projections::queries::{NotificationView, OrderView, Page, UserView};

    let mut components = Components::new();
    for command in schemas::json::COMMANDS {
        components.add(command.name, (command.schema)());
    }
    add_resources(&mut components);
    let mut add = |name: &str, schema: Value| components.add(name, schema);
    add("UserWritten", of::<crate::routes::users::UserView>());
    add("UserErasure", of::<crate::routes::users::Erasure>());
    add(
        "ProductWritten",
        of::<crate::routes::products::ProductView>(),
    );
    add("OrderWritten", of::<crate::routes::orders::OrderView>());
    add(
        "PaymentWritten",
        of::<crate::routes::payments::PaymentView>(),
    );
    add("Notification", of::<NotificationView>());
    add("UserPage", of::<Page<UserView>>());
    add("ProductPage", of::<projections::queries::SearchPage>());
    add(
        "CategoryWritten",
        of::<crate::routes::categories::CategoryView>(),
    );
    add("CategoryTree", of::<projections::queries::CategoryTree>());
    add("OrderPage", of::<Page<OrderView>>());
    add("NotificationPage", of::<Page<NotificationView>>());
    add("CartWritten", of::<crate::routes::carts::CartWritten>());
    add("CartPage", of::<Page<projections::queries::CartView>>());
    add("EventStream", of::<Vec<commands::stream::StoredEvent>>());
    add("TokenPair", of::<crate::routes::auth::TokenPair>());
    add(
        "ApiKeyCreated",
        of::<crate::routes::api_keys::ApiKeyCreated>(),
    );
    add("ApiKey", of::<crate::routes::api_keys::ApiKeyView>());
    add(
        "ApiKeyPage",
        of::<Page<crate::routes::api_keys::ApiKeyView>>(),
    );
    add("Webhook", of::<crate::routes::webhooks::WebhookView>());
    add(
        "WebhookCreated",
        of::<crate::routes::webhooks::WebhookCreated>(),
    );
    add(
        "WebhookSecret",
        of::<crate::routes::webhooks::WebhookSecret>(),
    );
    add(
        "WebhookPage",
        of::<Page<crate::routes::webhooks::WebhookView>>(),
    );
    add(
        "WebhookDelivery",
        of::<crate::routes::webhooks::WebhookDelivery>(),
    );
    add(
        "WebhookDeliveryPage",
        of::<Page<crate::routes::webhooks::WebhookDelivery>>(),
    );
    // One message of a live-update stream, as OpenAPI 3.1 describes a
    // `text/event-stream` answer: its fields, `data` being the resource's
    // JSON (a `: keep-alive` comment every 15 s is not a message).
    for (kind, schema) in SSE_KINDS {
        add(
            &format!("{schema}Update"),
            json!({
                "type": "object",
                "description": format!("A Server-Sent Events message: `id` the {kind}'s version \
                    (a notification's ordinal), `event: {kind}`, `data` the {kind} as its GET shows it."),
                "required": ["id", "event", "data"],
                "properties": {
                    "id": { "type": "string", "pattern": "^[0-9]{1,18}$" },
                    "event": { "type": "string", "const": kind },
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": component(schema),
                    },
                },
            }),
        );
    }
    add("Problem", of::<crate::error::Problem>());
    add("Health", of::<crate::routes::operations::Health>());
    add("Readiness", of::<crate::routes::operations::Readiness>());
    add(
        "OpenApiDocument",
        json!({"type": "object", "description": "This document."}),
    );
    add(
        "HtmlPage",
        json!({"type": "string", "description": "An HTML page."}),
    );
    add(
        "Text",
        json!({"type": "string", "description": "Plain text, e.g. the Prometheus exposition format."}),
    );
    add(
        "Script",
        json!({"type": "string", "description": "JavaScript for the browser."}),
    );
    add(
        "AsyncApiDocument",
        json!({
            "type": "object",
            "description": "The AsyncAPI 3.0 document of the event stream and webhooks.",
        }),
    );
    components.into_map()
}

fn of<T: JsonSchema>() -> Value {
    schemas::json::serialized_schema_of::<T>()
}

/// The kinds of live-update messages and the component each carries.
const SSE_KINDS: [(&str, &str); 4] = [
    ("order", "Order"),
    ("product", "Product"),
    ("cart", "Cart"),
    ("notification", "Notification"),
];

/// The whole document for `routes`.
pub fn document(routes: &[Route]) -> Value {
    let mut paths = Map::new();
    for route in routes {
        let item = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        item[route.method.as_str().to_ascii_lowercase()] = operation(route);
    }
    let mut tags: Vec<&str> = Vec::new();
    for route in routes {
        if !tags.contains(&route.doc.tag) {
            tags.push(route.doc.tag);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Agora",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "An event-sourced commerce backend. Errors are RFC 9457 \
                problem+json; every write answers the aggregate's id and version (also \
                as ETag); reads accept ?min_version= to wait for a write to show.",
        },
        "tags": tags.iter().map(|t| json!({"name": t})).collect::<Vec<_>>(),
        "paths": paths,
        "components": {
            "schemas": components(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "An access token of POST /auth/login (HS256, claims sub, role, exp, sid), \
                        a token of the configured OpenID Connect provider (RS256 or ES256), or an API key (agk_...).",
                }
            },
        },
    })
}

fn component(name: &str) -> Value {
    components::reference(name)
}

fn operation(route: &Route) -> Value {
    let doc = &route.doc;
    let mut op = json!({
        "operationId": doc.id,
        "tags": [doc.tag],
        "summary": doc.summary,
        "parameters": parameters(route),
        "responses": responses(route),
    });
    if let Some(body) = doc.body {
        op["requestBody"] = json!({
            "required": !doc.optional_body,
            "content": { "application/json": { "schema": component(body) } },
        });
    }
    op["security"] = match doc.access {
        Access::Operations => json!([]),
        // A token is optional here.
        Access::Open => json!([{}, { "bearer": [] }]),
        Access::Owner | Access::Admin => json!([{ "bearer": [] }]),
    };
    op
}

fn parameters(route: &Route) -> Vec<Value> {
    let doc = &route.doc;
    let mut list = Vec::new();
    for name in path_parameters(route.path) {
        list.push(match name {
            "type" => json!({
                "name": "type", "in": "path", "required": true,
                "description": "The aggregate type.",
                "schema": { "type": "string", "enum": schemas::names::aggregate::ALL },
            }),
            "id" if route.path == "/categories/{id}" && route.method == Method::GET => json!({
                "name": "id", "in": "path", "required": true,
                "description": "A category's id or its slug.",
                "schema": { "type": "string", "minLength": 1, "maxLength": 100 },
            }),
            name => json!({
                "name": name, "in": "path", "required": true,
                "description": "A UUID, as the create answered; anything else names nothing (404).",
                "schema": { "type": "string", "format": "uuid" },
            }),
        });
    }
    let limit = json!({
        "name": "limit", "in": "query", "required": false,
        "description": "Page size, 1 to 200 (default 50).",
        "schema": { "type": "integer", "minimum": 1, "maximum": 200 },
    });
    let cursor = json!({
        "name": "cursor", "in": "query", "required": false,
        "description": "The next_cursor of the previous page, unchanged.",
        "schema": { "type": "string" },
    });
    match doc.query {
        Query::None => {}
        Query::One => list.push(json!({
            "name": "min_version", "in": "query", "required": false,
            "description": "Wait until the read model has reached this version \
                (at most AGORA_CONSISTENCY_WAIT_MS), else 503.",
            "schema": { "type": "integer", "minimum": 0, "maximum": i64::MAX },
        })),
        Query::Page => list.extend([limit, cursor]),
        Query::Users => list.extend([
            json!({
                "name": "email", "in": "query", "required": false,
                "description": "Only the user with this email (case-insensitive).",
                "schema": { "type": "string" },
            }),
            limit,
            cursor,
        ]),
        Query::Products => list.extend([
            json!({
                "name": "q", "in": "query", "required": false,
                "description": "Full text over name, sku, description and attribute values: word \
                    forms, accents ignored, a prefix of the last word, one typo in a word of 5 \
                    letters or more.",
                "schema": { "type": "string" },
            }),
            json!({
                "name": "status", "in": "query", "required": false,
                "schema": { "type": "string", "enum": ["active", "discontinued"] },
            }),
            json!({
                "name": "category", "in": "query", "required": false,
                "description": "A category's id or slug; its descendants' products are included.",
                "schema": { "type": "string" },
            }),
            json!({
                "name": "min_price", "in": "query", "required": false,
                "description": "Minor units, with currency.",
                "schema": { "type": "integer", "minimum": 0 },
            }),
            json!({
                "name": "max_price", "in": "query", "required": false,
                "description": "Minor units, with currency.",
                "schema": { "type": "integer", "minimum": 0 },
            }),
            json!({
                "name": "currency", "in": "query", "required": false,
                "description": "Only prices in this ISO 4217 currency; required with a price bound.",
                "schema": { "type": "string", "pattern": "^[A-Z]{3}$" },
            }),
            json!({
                "name": "in_stock", "in": "query", "required": false,
                "description": "true: available > 0; false: none available.",
                "schema": { "type": "boolean" },
            }),
            json!({
                "name": "sort", "in": "query", "required": false,
                "description": "relevance is the default with q, newest without.",
                "schema": { "type": "string", "enum": ["relevance", "newest", "price_asc", "price_desc", "name"] },
            }),
            json!({
                "name": "facets", "in": "query", "required": false,
                "description": "Comma-separated: category, attr.<key>; counted over every match.",
                "schema": { "type": "string", "pattern": "^(category|attr\\.[^,]{1,64})(,(category|attr\\.[^,]{1,64}))*$" },
            }),
            json!({
                "name": "attr", "in": "query", "required": false,
                "description": "attr.<key>=<value>, repeatable: products with that attribute value.",
                "style": "deepObject", "explode": true,
                "schema": { "type": "object", "additionalProperties": { "type": "string" } },
            }),
            limit,
            cursor,
        ]),
        Query::Deliveries => list.extend([
            json!({
                "name": "status", "in": "query", "required": false,
                "schema": { "type": "string", "enum": ["pending", "delivered", "failed"] },
            }),
            limit,
            cursor,
        ]),
    }
    if matches!(doc.answer, Answer::EventStream { .. }) {
        list.push(json!({
            "name": "Last-Event-ID", "in": "header", "required": false,
            "description": "The id of the last message received: the stream starts after that version.",
            "schema": { "type": "string", "pattern": "^[0-9]{1,18}$" },
        }));
    }
    if route.path.starts_with("/carts/{id}") {
        list.push(json!({
            "name": "X-Cart-Token", "in": "header", "required": false,
            "description": "A guest cart's cart_token, as POST /carts answered it; without it \
                (or with another) a guest cart is 404.",
            "schema": { "type": "string" },
        }));
    }
    if doc.if_match {
        list.push(json!({
            "name": "If-Match", "in": "header", "required": false,
            "description": "The version the write expects, as sent in ETag (e.g. \"3\"); \
                412 if the aggregate is at another. `*`, or an empty value, expects none in particular.",
            "schema": { "type": "string", "pattern": "^(|\\*|(W/)?\"[0-9]{1,18}\")$" },
        }));
    }
    if route.method == Method::POST && !crate::auth::carries_secrets(route.path) {
        list.push(json!({
            "name": "Idempotency-Key", "in": "header", "required": false,
            "description": "A repeat with the same key and body within 24 h replays the first \
                answer; the same key with another body is 422; a repeat while the first runs is 409.",
            // HTTP drops the whitespace around a header value, so only the
            // core is constrained: 1 to 255 printable ASCII characters.
            "schema": { "type": "string", "pattern": "^[ \\t]*[!-~]([ -~]{0,253}[!-~])?[ \\t]*$" },
        }));
    }
    list
}

/// The names in `{braces}` of a path template, in order.
fn path_parameters(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

fn responses(route: &Route) -> Value {
    let doc = &route.doc;
    let write = matches!(route.method, Method::POST | Method::PATCH | Method::PUT)
        || (route.method == Method::DELETE && doc.if_match);
    let has_id = !path_parameters(route.path).is_empty();
    let mut responses = Map::new();

    let mut success = json!({ "description": "Done." });
    match doc.answer {
        Answer::Json { schema, versioned } => {
            success["content"] = json!({ "application/json": { "schema": component(schema) } });
            if versioned {
                success["headers"]["ETag"] = json!({
                    "description": "The aggregate's version in quotes, for If-Match.",
                    "schema": { "type": "string" },
                });
            }
        }
        Answer::Html => {
            success["content"] = json!({ "text/html": { "schema": component("HtmlPage") } });
        }
        Answer::Text => {
            success["content"] = json!({ "text/plain": { "schema": component("Text") } });
        }
        Answer::Script => {
            success["content"] = json!({ "text/javascript": { "schema": component("Script") } });
        }
        Answer::EventStream { kind, schema } => {
            debug_assert!(SSE_KINDS.contains(&(kind, schema)));
            success["content"] = json!({
                "text/event-stream": { "schema": component(&format!("{schema}Update")) }
            });
        }
        Answer::Empty => {}
    }
    if doc.status == 201 {
        success["headers"]["Location"] = json!({
            "description": "The path of the new resource.",
            "schema": { "type": "string" },
        });
    }
    if !doc.links.is_empty() {
        let links: Map<String, Value> = doc
            .links
            .iter()
            .map(|target| {
                let mut parameters = json!({ "id": "$response.body#/id" });
                // Reads are eventually consistent: a link to one waits for this write.
                if target.starts_with("get") {
                    parameters["query.min_version"] = json!("$response.body#/version");
                }
                (
                    (*target).to_owned(),
                    json!({ "operationId": target, "parameters": parameters }),
                )
            })
            .collect();
        success["links"] = Value::Object(links);
    }
    if let Some(status) = doc.also {
        let mut again = success.clone();
        again["description"] = json!("Done before: the same resource.");
        if let Some(headers) = again.get_mut("headers").and_then(Value::as_object_mut) {
            headers.remove("Location");
        }
        responses.insert(status.to_string(), again);
    }
    responses.insert(doc.status.to_string(), success);

    let mut problem = |status: u16, description: &str| {
        let mut response = json!({
            "description": description,
            "content": { "application/problem+json": { "schema": component("Problem") } },
        });
        if matches!(status, 409 | 429 | 503) {
            response["headers"]["Retry-After"] = json!({
                "description": "Seconds to wait before trying again.",
                "schema": { "type": "integer" },
            });
        }
        responses.insert(status.to_string(), response);
    };
    let stream = matches!(doc.answer, Answer::EventStream { .. });
    if doc.query != Query::None || write || stream {
        problem(
            400,
            "Malformed: bad JSON, wrong types, unknown fields or query parameters, a bad header.",
        );
    }
    if matches!(doc.access, Access::Owner | Access::Admin) {
        problem(401, "No valid bearer token.");
        problem(
            403,
            "The token may not do this: another customer's resource, or admin only.",
        );
    }
    if has_id {
        problem(404, "No such resource.");
    }
    if write {
        problem(
            409,
            if doc.unique {
                "A unique value is taken, or the same request is in flight."
            } else {
                "The same request is in flight, or the aggregate kept changing under it."
            },
        );
    }
    if doc.if_match {
        problem(412, "If-Match names another version.");
    }
    if doc.body.is_some() || route.method == Method::POST {
        problem(413, "The body is over the limit.");
    }
    // The edge answers it before any route: every operation can get it.
    problem(
        414,
        "The request target (path and query) is over the limit (`AGORA_MAX_URI_BYTES`, 8 KiB by default).",
    );
    if doc.body.is_some() {
        problem(415, "The body is not sent as application/json.");
    }
    if write {
        problem(
            422,
            "A field fails validation (`validation`, with `errors`), a business rule refused \
             the command (the slug names it), or an Idempotency-Key was reused with another body.",
        );
    }
    if doc.access != Access::Operations {
        problem(429, "Over the rate limit.");
    }
    for (status, description) in doc.problems {
        problem(*status, description);
    }
    if doc.readiness {
        responses.insert(
            "503".to_owned(),
            json!({
                "description": "Not ready: a dependency is missing, or the process is draining.",
                "content": { "application/json": { "schema": component("Readiness") } },
            }),
        );
    } else if doc.access != Access::Operations {
        problem(
            503,
            "A dependency is unavailable, or the read model has not reached min_version in time.",
        );
    }
    Value::Object(responses)
}
