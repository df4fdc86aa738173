//! Every class of bad input: exact status, exact problem type, nothing written.

use reqwest::Method;
use serde_json::json;

use crate::support::{spawn_app, Answer, TestApp};

async fn assert_refused(app: &TestApp, answer: Answer, status: u16, problem: &str, before: i64) {
    assert_eq!(answer.status, status, "body: {}", answer.body);
    assert_eq!(
        answer.problem_type(),
        format!("/problems/{problem}"),
        "body: {}",
        answer.body
    );
    assert_eq!(answer.body["status"], status, "problem status field");
    assert!(answer.body["title"].is_string() && answer.body["detail"].is_string());
    assert_eq!(
        answer
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    assert_eq!(
        app.event_count().await,
        before,
        "a refused request wrote an event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_400() {
    let app = spawn_app().await;
    let before = app.event_count().await;
    let raw = |body: &'static str| {
        app.request(Method::POST, "/users")
            .header("content-type", "application/json")
            .body(body)
    };
    for body in [
        "{",
        "not json",
        "",
        "[]",
        "{\"email\": \"a@b.example\", \"name\": \"A\",}",
    ] {
        let answer = app.send(raw(body)).await;
        assert_refused(&app, answer, 400, "bad-request", before).await;
    }
    // wrong types
    let answer = app.post("/users", json!({ "email": 5, "name": "A" })).await;
    assert_refused(&app, answer, 400, "bad-request", before).await;
    let answer = app
        .post("/products", json!({ "sku": "S", "name": "N", "price": { "amount": "12", "currency": "EUR" }, "stock": 1 }))
        .await;
    assert_refused(&app, answer, 400, "bad-request", before).await;
    // money is never a float
    let answer = app
        .post("/products", json!({ "sku": "S", "name": "N", "price": { "amount": 12.5, "currency": "EUR" }, "stock": 1 }))
        .await;
    assert_refused(&app, answer, 400, "bad-request", before).await;
    // unknown fields
    let answer = app
        .post(
            "/users",
            json!({ "email": "a@b.example", "name": "A", "nmae": "typo" }),
        )
        .await;
    assert_refused(&app, answer, 400, "bad-request", before).await;
    // missing fields
    let answer = app.post("/users", json!({ "email": "a@b.example" })).await;
    assert_refused(&app, answer, 400, "bad-request", before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_type_is_415_and_oversized_body_is_413() {
    let app = spawn_app().await;
    let before = app.event_count().await;
    let answer = app
        .send(
            app.request(Method::POST, "/users")
                .header("content-type", "text/plain")
                .body(r#"{"email":"a@b.example","name":"A"}"#),
        )
        .await;
    assert_refused(&app, answer, 415, "unsupported-media-type", before).await;
    let answer = app
        .send(
            app.request(Method::POST, "/users")
                .body(r#"{"email":"a@b.example","name":"A"}"#),
        )
        .await;
    assert_refused(&app, answer, 415, "unsupported-media-type", before).await;

    let huge = "x".repeat(70 * 1024);
    let answer = app
        .post("/users", json!({ "email": "a@b.example", "name": huge }))
        .await;
    assert_refused(&app, answer, 413, "payload-too-large", before).await;
    // Also with an Idempotency-Key, which buffers the body itself.
    let answer = app
        .send(
            app.request(Method::POST, "/users")
                .header("idempotency-key", "big")
                .json(&json!({ "email": "a@b.example", "name": huge })),
        )
        .await;
    assert_refused(&app, answer, 413, "payload-too-large", before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_fields_are_422_validation() {
    let app = spawn_app().await;
    let before = app.event_count().await;
    let long_name = "n".repeat(201);
    let cases = [
        (
            "/users",
            json!({ "email": "not-an-email", "name": "A" }),
            "email",
        ),
        ("/users", json!({ "email": "a@b", "name": "A" }), "email"),
        (
            "/users",
            json!({ "email": "a@b.example", "name": "" }),
            "name",
        ),
        (
            "/users",
            json!({ "email": "a@b.example", "name": long_name }),
            "name",
        ),
        (
            "/products",
            json!({ "sku": "S-1", "name": "N", "price": { "amount": 0, "currency": "EUR" }, "stock": 1 }),
            "price.amount",
        ),
        (
            "/products",
            json!({ "sku": "S-1", "name": "N", "price": { "amount": -5, "currency": "EUR" }, "stock": 1 }),
            "price.amount",
        ),
        (
            "/products",
            json!({ "sku": "S-1", "name": "N", "price": { "amount": 100, "currency": "XYZ" }, "stock": 1 }),
            "price.currency",
        ),
        (
            "/products",
            json!({ "sku": "S-1", "name": "N", "price": { "amount": 100, "currency": "eur" }, "stock": 1 }),
            "price.currency",
        ),
        (
            "/products",
            json!({ "sku": "S-1", "name": "N", "price": { "amount": 100, "currency": "EUR" }, "stock": -1 }),
            "stock",
        ),
        (
            "/products",
            json!({ "sku": "", "name": "N", "price": { "amount": 100, "currency": "EUR" }, "stock": 1 }),
            "sku",
        ),
        (
            "/products",
            json!({ "sku": "S-1", "name": "", "price": { "amount": 100, "currency": "EUR" }, "stock": 1 }),
            "name",
        ),
    ];
    for (path, body, field) in cases {
        let answer = app.post(path, body.clone()).await;
        assert_eq!(answer.status, 422, "{body}: {}", answer.body);
        assert_eq!(answer.problem_type(), "/problems/validation", "{body}");
        let fields: Vec<&str> = answer.body["errors"]
            .as_array()
            .map(|errors| errors.iter().filter_map(|e| e["field"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            fields.contains(&field),
            "{body}: expected an error on {field}, got {fields:?}"
        );
        assert_eq!(app.event_count().await, before);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_rules() {
    let app = spawn_app().await;
    let product = app.create_product("STOCK-1", 500, "EUR", 3).await.id();
    let before = app.event_count().await;
    let answer = app
        .post(&format!("/products/{product}/stock"), json!({ "delta": 0 }))
        .await;
    assert_refused(&app, answer, 422, "validation", before).await;
    let answer = app
        .post(
            &format!("/products/{product}/stock"),
            json!({ "delta": -4 }),
        )
        .await;
    assert_refused(&app, answer, 422, "insufficient-stock", before).await;
    let answer = app
        .post(
            &format!("/products/{product}/stock"),
            json!({ "delta": i64::MIN }),
        )
        .await;
    assert_refused(&app, answer, 422, "insufficient-stock", before).await;
    let answer = app
        .post(
            &format!("/products/{product}/stock"),
            json!({ "delta": -3 }),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["stock"]["available"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_garbage_ids_are_404() {
    let app = spawn_app().await;
    let before = app.event_count().await;
    let unknown = uuid::Uuid::now_v7();
    let cases = [
        (Method::POST, format!("/users/{unknown}/deactivate"), None),
        (
            Method::PATCH,
            format!("/users/{unknown}"),
            Some(json!({ "name": "B" })),
        ),
        (
            Method::POST,
            format!("/products/{unknown}/stock"),
            Some(json!({ "delta": 1 })),
        ),
        (
            Method::POST,
            format!("/products/{unknown}/discontinue"),
            None,
        ),
        (Method::POST, format!("/orders/{unknown}/ship"), None),
        (
            Method::POST,
            format!("/orders/{unknown}/cancel"),
            Some(json!({ "reason": "customer_request" })),
        ),
        (Method::POST, format!("/payments/{unknown}/refund"), None),
        (
            Method::POST,
            "/users/not-a-uuid/deactivate".to_owned(),
            None,
        ),
        (
            Method::POST,
            "/products/123/stock".to_owned(),
            Some(json!({ "delta": 1 })),
        ),
        (
            Method::GET,
            format!("/aggregates/user/{unknown}/events"),
            None,
        ),
        (Method::GET, "/aggregates/user/zzz/events".to_owned(), None),
        (
            Method::GET,
            format!("/aggregates/invoice/{unknown}/events"),
            None,
        ),
        (Method::GET, "/no/such/path".to_owned(), None),
    ];
    for (method, path, body) in cases {
        let mut request = app.request(method.clone(), &path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = app.send(request).await;
        assert_eq!(answer.status, 404, "{method} {path}: {}", answer.body);
        assert_eq!(
            answer.problem_type(),
            "/problems/not-found",
            "{method} {path}"
        );
        assert_eq!(app.event_count().await, before);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_method_is_405_problem() {
    let app = spawn_app().await;
    let answer = app.send(app.request(Method::DELETE, "/users")).await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.problem_type(), "/problems/method-not-allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_match_is_412() {
    let app = spawn_app().await;
    let product = app.create_product("IFM-1", 500, "EUR", 3).await.id();
    let before = app.event_count().await;
    let answer = app
        .send(
            app.request(Method::POST, &format!("/products/{product}/stock"))
                .header("if-match", "\"7\"")
                .json(&json!({ "delta": 1 })),
        )
        .await;
    assert_refused(&app, answer, 412, "precondition-failed", before).await;
    let answer = app
        .send(
            app.request(Method::POST, &format!("/products/{product}/stock"))
                .header("if-match", "\"1\"")
                .json(&json!({ "delta": 1 })),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.etag(), "\"2\"");
    assert_eq!(answer.body["version"], 2);
    let answer = app
        .send(
            app.request(Method::POST, &format!("/products/{product}/stock"))
                .header("if-match", "garbage")
                .json(&json!({ "delta": 1 })),
        )
        .await;
    assert_refused(&app, answer, 400, "bad-request", before + 1).await;
    // Outside the pattern /openapi.json gives, even when it names a version:
    // a bare number (what schemathesis sent), an open quote, a sign.
    for bad in ["1", "0", "\"1", "\"+1\"", "W/1", "\"1\" x"] {
        let answer = app
            .send(
                app.request(Method::POST, &format!("/products/{product}/stock"))
                    .header("if-match", bad)
                    .json(&json!({ "delta": 1 })),
            )
            .await;
        assert_refused(&app, answer, 400, "bad-request", before + 1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_idempotency_key_with_another_body_is_422() {
    let app = spawn_app().await;
    let first = app
        .send(
            app.request(Method::POST, "/users")
                .header("idempotency-key", "k-1")
                .json(&json!({ "email": "first@shop.example", "name": "A" })),
        )
        .await;
    assert_eq!(first.status, 201);
    let before = app.event_count().await;
    let answer = app
        .send(
            app.request(Method::POST, "/users")
                .header("idempotency-key", "k-1")
                .json(&json!({ "email": "second@shop.example", "name": "A" })),
        )
        .await;
    assert_refused(&app, answer, 422, "idempotency-key-reused", before).await;
    let too_long = "k".repeat(256);
    let answer = app
        .send(
            app.request(Method::POST, "/users")
                .header("idempotency-key", too_long)
                .json(&json!({ "email": "third@shop.example", "name": "A" })),
        )
        .await;
    assert_refused(&app, answer, 400, "bad-request", before).await;
}

/// Input that schemathesis found the server mishandling, now answered as the
/// document says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_edge_cases_are_refused_cleanly() {
    let app = spawn_app().await;
    let user = app.register("ada@example.com").await.id();
    let product = app.create_product("PEN-1", 100, "EUR", 5).await.id();
    let before = app.event_count().await;

    // NUL cannot reach Postgres, in a payment token or a query string.
    let answer = app
        .post(
            "/orders",
            json!({"user_id": user, "lines": [{"product_id": product, "quantity": 1}], "payment_token": "tok\u{0}ok"}),
        )
        .await;
    assert_refused(&app, answer, 422, "validation", before).await;
    for path in ["/products?q=a%00b", "/users?email=%00"] {
        let answer = app.get(path).await;
        assert_refused(&app, answer, 400, "bad-request", before).await;
    }
    // A tab is not a printable character of an Idempotency-Key.
    let answer = app
        .send(
            app.request(Method::POST, &format!("/products/{product}/stock"))
                .header("idempotency-key", "a\tb")
                .json(&json!({"delta": 1})),
        )
        .await;
    assert_refused(&app, answer, 400, "bad-request", before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_cases_of_valid_input_are_accepted() {
    let app = spawn_app().await;
    let product = app.create_product("PEN-1", 100, "EUR", 5).await.id();
    let answer = app
        .post(&format!("/products/{product}/stock"), json!({"delta": 2}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["stock"]["available"], 7);

    // An empty If-Match asks for no version, as no header does.
    let answer = app
        .send(
            app.request(Method::POST, &format!("/products/{product}/stock"))
                .header("if-match", "")
                .json(&json!({"delta": 1})),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["version"], 3);

    // An empty cursor is the first page.
    let answer = app.get("/products?cursor=").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body["items"].is_array());

    // min_version=0 waits for nothing: a missing row is a 404 at once.
    let answer = app
        .get(&format!("/products/{}?min_version=0", uuid::Uuid::now_v7()))
        .await;
    assert_eq!(answer.status, 404, "{}", answer.body);
    assert_eq!(answer.problem_type(), "/problems/not-found");
}
