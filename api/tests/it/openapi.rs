//! The OpenAPI document against the router it describes: every route is in
//! it and nothing else, its request bodies are the checked-in JSON Schemas,
//! and real answers match the schemas it gives for them.

use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::{spawn_app, Answer, TestApp};

const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

async fn document(app: &TestApp) -> Value {
    let answer = app.get("/openapi.json").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["openapi"], "3.1.0");
    answer.body
}

/// Whether the router has a handler for this method and path: its fallbacks
/// answer 404 "no such path" and 405 `method-not-allowed`, handlers never do.
fn routed(answer: &Answer) -> bool {
    let fallback_404 = answer.status == 404 && answer.body["detail"] == "no such path";
    let fallback_405 =
        answer.status == 405 && answer.problem_type() == "/problems/method-not-allowed";
    !(fallback_404 || fallback_405)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_document_has_every_route_of_the_router_and_no_other() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{} paths", paths.len());
    for (template, item) in paths {
        let path = template
            .replace("{type}", "product")
            .replace("{id}", &Uuid::now_v7().to_string());
        for method in METHODS {
            let documented = item.get(method.as_str().to_ascii_lowercase()).is_some();
            let answer = app.send(app.request(method.clone(), &path)).await;
            assert_eq!(
                routed(&answer),
                documented,
                "{method} {template}: documented {documented}, answered {} {}",
                answer.status,
                answer.body
            );
            if documented {
                // A request target over the limit: answered 414 on every
                // operation, so every operation documents it.
                let long = format!("{path}?q={}", "a".repeat(9000));
                let answer = app.send(app.request(method.clone(), &long)).await;
                assert_eq!(answer.status, 414, "{method} {template}: {}", answer.body);
                let operation = &item[method.as_str().to_ascii_lowercase()];
                assert!(
                    operation["responses"].get("414").is_some(),
                    "{method} {template} does not document 414"
                );
            }
        }
    }
    // The probe itself can tell an unrouted path from a routed one.
    assert!(!routed(&app.get("/no/such/path").await));
    assert!(!routed(
        &app.send(app.request(Method::DELETE, "/users")).await
    ));
}

/// The contract, `docs/api.md` of the shared folder beside the repository,
/// when it is there (it is in CI and in a developer's checkout).
pub(crate) fn contract() -> Option<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = [
        std::env::var("AGORA_API_CONTRACT").ok().map(Into::into),
        Some(root.join("../shared/docs/api.md")),
        Some(root.join("../../shared/docs/api.md")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find_map(|path: std::path::PathBuf| std::fs::read_to_string(path).ok())
}

/// `METHOD /path` of every row of the contract's tables, query strings cut.
fn contract_routes(text: &str) -> Vec<(Method, String)> {
    let mut routes = Vec::new();
    for line in text.lines().filter(|l| l.starts_with('|')) {
        let cell = line.trim_start_matches('|').trim_start();
        for method in METHODS {
            if let Some(rest) = cell.strip_prefix(&format!("{method} /")) {
                let path: String = rest
                    .chars()
                    .take_while(|c| !matches!(c, ' ' | '|' | '?'))
                    .collect();
                routes.push((method.clone(), format!("/{path}")));
            }
        }
    }
    routes
}

/// A route of the contract that the router serves must be in the document:
/// this finds a route added beside the route table, which the probe of the
/// document's own paths cannot see.
#[tokio::test(flavor = "multi_thread")]
async fn every_route_of_the_contract_that_is_served_is_documented() {
    let Some(text) = contract() else {
        eprintln!(
            "docs/api.md not found beside the repository; set AGORA_API_CONTRACT to check it"
        );
        return;
    };
    let routes = contract_routes(&text);
    assert!(
        routes.len() >= 25,
        "{} routes read from api.md",
        routes.len()
    );
    let app = spawn_app().await;
    let doc = document(&app).await;
    for (method, template) in routes {
        let documented = doc["paths"][&template]
            .get(method.as_str().to_ascii_lowercase())
            .is_some();
        let path = template
            .replace("{type}", "product")
            .replace("{id}", &Uuid::now_v7().to_string());
        let answer = app.send(app.request(method.clone(), &path)).await;
        assert_eq!(
            routed(&answer),
            documented,
            "{method} {template} of api.md: documented {documented}, answered {} {}",
            answer.status,
            answer.body
        );
    }
}

/// Every `$ref` of `value`, as `#/...` strings.
fn refs(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(target)) => found.push(target.clone()),
                    _ => refs(inner, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn request_bodies_are_the_checked_in_schemas_and_every_reference_resolves() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let components = &doc["components"]["schemas"];
    for command in schemas::json::COMMANDS {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../schemas/json")
            .join(schemas::json::command_file(command));
        let checked_in: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        // As a component: the same schema, its definitions hoisted.
        let mut hoisted = api::components::Components::new();
        hoisted.add(command.name, checked_in);
        assert_eq!(
            Some(&components[command.name]),
            hoisted.get(command.name),
            "{}",
            command.name
        );
    }
    // Every definition is a component of its own: none nests `$defs` or
    // names a dialect, and no two components share a title to name classes by.
    for (name, schema) in components.as_object().unwrap() {
        let text = schema.to_string();
        assert!(
            !text.contains("\"$defs\"") && !text.contains("\"$schema\""),
            "{name} nests definitions or a dialect"
        );
        assert!(schema.get("title").is_none(), "{name} has a title");
    }
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.len() > 50);
    for target in found {
        let pointer = target.strip_prefix('#').unwrap();
        assert!(
            doc.pointer(pointer).is_some(),
            "{target} resolves to nothing"
        );
    }
    // Every body, asked or answered, is a named component.
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            let bodies = op["responses"]
                .as_object()
                .unwrap()
                .values()
                .chain(op.get("requestBody"))
                .filter_map(|r| r["content"].as_object())
                .flat_map(|c| c.iter());
            for (media, body) in bodies {
                let target = body["schema"]["$ref"].as_str().unwrap_or_else(|| {
                    panic!("{}: a {media} body is not a component", op["operationId"])
                });
                assert!(target.starts_with("#/components/schemas/"), "{target}");
            }
        }
    }
    // Every operation that takes a body names one of the command schemas.
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            if let Some(body) = op.get("requestBody") {
                let target = body["content"]["application/json"]["schema"]["$ref"]
                    .as_str()
                    .unwrap();
                let name = target.rsplit('/').next().unwrap();
                assert!(
                    schemas::json::COMMANDS.iter().any(|c| c.name == name),
                    "{} takes {name}",
                    op["operationId"]
                );
            }
        }
    }
}

/// A row of the events table, as an envelope carries it.
type EventRow = (
    String,
    String,
    i64,
    String,
    String,
    Value,
    Value,
    i64,
    chrono::DateTime<chrono::Utc>,
);

/// Applies every stored event to every read model, as the projection
/// workers would (they are not part of these tests).
async fn project(app: &TestApp) {
    let rows: Vec<EventRow> =
        sqlx::query_as(
            "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, position, recorded_at
               FROM events ORDER BY position",
        )
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    let envelopes: Vec<schemas::EventEnvelope> = rows
        .into_iter()
        .map(|r| schemas::EventEnvelope {
            aggregate_type: r.0,
            aggregate_id: r.1,
            sequence: r.2,
            event_type: r.3,
            event_version: r.4,
            payload: r.5,
            metadata: r.6,
            position: r.7,
            recorded_at: r.8,
        })
        .collect();
    for projection in projections::Projection::ALL {
        projections::apply_batch(&app.db.pool, &projection, &envelopes)
            .await
            .unwrap();
    }
}

/// Checks an answer against the schema the document gives for it.
fn conforms(doc: &Value, template: &str, method: &str, answer: &Answer) {
    let response = &doc["paths"][template][method]["responses"][answer.status.to_string()];
    assert!(
        response.is_object(),
        "{method} {template} answered {}, which the document does not list: {}",
        answer.status,
        answer.body
    );
    let content = response["content"].as_object().unwrap();
    let (_, media) = content.iter().next().unwrap();
    let target = media["schema"]["$ref"].as_str().unwrap();
    // Components refer to one another within the document, so the schema
    // is read with the document's components beside it.
    let schema = json!({ "$ref": target, "components": doc["components"] });
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&answer.body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {template} {}: {errors:?}\n{}",
        answer.status,
        answer.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_match_the_schemas_the_document_gives() {
    let app = spawn_app().await;
    let doc = document(&app).await;

    let user = app.register("ada@example.com").await;
    conforms(&doc, "/users", "post", &user);
    let user_id = user.id();
    let product = app.create_product("PEN-1", 1999, "EUR", 10).await;
    conforms(&doc, "/products", "post", &product);
    let product_id = product.id();
    let order = app
        .post(
            "/orders",
            json!({"user_id": user_id, "lines": [{"product_id": product_id, "quantity": 2}], "payment_token": "tok_ok"}),
        )
        .await;
    assert_eq!(order.status, 201, "{}", order.body);
    conforms(&doc, "/orders", "post", &order);
    let order_id = order.id();

    let writes = [
        (
            "/products/{id}/stock",
            app.post(
                &format!("/products/{product_id}/stock"),
                json!({"delta": 3}),
            )
            .await,
        ),
        (
            "/users/{id}",
            app.patch(&format!("/users/{user_id}"), json!({"name": "Ada King"}))
                .await,
        ),
        (
            "/orders/{id}/cancel",
            app.post(
                &format!("/orders/{order_id}/cancel"),
                json!({"reason": "customer_request"}),
            )
            .await,
        ),
    ];
    for (template, answer) in &writes {
        assert_eq!(answer.status, 200, "{template}: {}", answer.body);
        let method = if *template == "/users/{id}" {
            "patch"
        } else {
            "post"
        };
        conforms(&doc, template, method, answer);
    }

    project(&app).await;
    let reads = [
        ("/users/{id}", format!("/users/{user_id}?min_version=2")),
        (
            "/products/{id}",
            format!("/products/{product_id}?min_version=2"),
        ),
        ("/orders/{id}", format!("/orders/{order_id}?min_version=2")),
        ("/users", "/users?limit=5".to_owned()),
        ("/products", "/products?q=pen&status=active".to_owned()),
        ("/users/{id}/orders", format!("/users/{user_id}/orders")),
        (
            "/users/{id}/notifications",
            format!("/users/{user_id}/notifications"),
        ),
        (
            "/aggregates/{type}/{id}/events",
            format!("/aggregates/order/{order_id}/events"),
        ),
        ("/healthz", "/healthz".to_owned()),
        ("/readyz", "/readyz".to_owned()),
    ];
    for (template, path) in &reads {
        let answer = app.get(path).await;
        assert!(
            answer.status == 200 || (*template == "/readyz" && answer.status == 503),
            "{path}: {} {}",
            answer.status,
            answer.body
        );
        conforms(&doc, template, "get", &answer);
    }

    // Problems: not found, malformed, invalid, refused, precondition failed.
    let missing = Uuid::now_v7();
    let problems = [
        (
            "/users/{id}",
            "get",
            app.get(&format!("/users/{missing}")).await,
        ),
        ("/products", "get", app.get("/products?limit=0").await),
        (
            "/users",
            "post",
            app.post("/users", json!({"email": "x", "name": ""})).await,
        ),
        (
            "/products/{id}/stock",
            "post",
            app.post(
                &format!("/products/{product_id}/stock"),
                json!({"delta": -1000}),
            )
            .await,
        ),
        (
            "/products/{id}/stock",
            "post",
            app.send(
                app.request(Method::POST, &format!("/products/{product_id}/stock"))
                    .header("if-match", "\"1\"")
                    .json(&json!({"delta": 1})),
            )
            .await,
        ),
        (
            "/orders",
            "post",
            app.send(
                app.request(Method::POST, "/orders")
                    .header("content-type", "text/plain")
                    .body("{}"),
            )
            .await,
        ),
    ];
    let statuses: Vec<u16> = problems.iter().map(|(_, _, a)| a.status).collect();
    assert_eq!(statuses, [404, 400, 422, 422, 412, 415]);
    for (template, method, answer) in &problems {
        conforms(&doc, template, method, answer);
    }
}
