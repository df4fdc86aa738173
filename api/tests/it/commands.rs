//! The command routes' happy paths and business rules over HTTP.

use reqwest::Method;
use serde_json::json;

use crate::support::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_answers_201_with_version_etag_and_location_and_stores_metadata() {
    let app = spawn_app().await;
    let answer = app
        .send(
            app.request(Method::POST, "/users")
                .header("x-request-id", "req-abc-123")
                .json(&json!({ "email": "Ada@Example.com", "name": "Ada" })),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    let id = answer.id();
    assert_eq!(
        uuid::Uuid::parse_str(&id).map(|u| u.get_version_num()),
        Ok(7)
    );
    assert_eq!(answer.body["version"], 1);
    assert_eq!(answer.body["status"], "active");
    assert_eq!(answer.etag(), "\"1\"");
    assert_eq!(answer.headers["location"], format!("/users/{id}").as_str());
    assert_eq!(answer.headers["x-request-id"], "req-abc-123");

    let events = app.get(&format!("/aggregates/user/{id}/events")).await;
    assert_eq!(events.status, 200);
    let event = &events.body[0];
    assert_eq!(event["sequence"], 1);
    assert_eq!(event["event_type"], "UserRegistered");
    assert_eq!(event["event_version"], "2.0");
    // The stream as stored: the email sealed under the user's own key.
    let sealed = event["payload"]["UserRegistered"]["email"]
        .as_str()
        .unwrap_or_default();
    assert!(sealed.starts_with(&format!("pd1.{id}.")), "{sealed}");
    assert_eq!(
        app.state
            .aggregates
            .vault
            .open(sealed)
            .await
            .unwrap()
            .as_deref(),
        Some("\"Ada@Example.com\"")
    );
    assert_eq!(event["metadata"]["correlation_id"], "req-abc-123");
    assert_eq!(event["metadata"]["causation_id"], "req-abc-123");
    assert_eq!(event["metadata"]["actor"], "anonymous");
    assert!(event["metadata"]["time"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert!(event["recorded_at"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_profile_rules() {
    let app = spawn_app().await;
    let ada = app.register("ada@shop.example").await.id();
    let bob = app.register("bob@shop.example").await.id();

    let answer = app
        .patch(&format!("/users/{ada}"), json!({ "name": "Ada L." }))
        .await;
    assert_eq!(
        (answer.status, answer.body["version"].as_i64()),
        (200, Some(2)),
        "{}",
        answer.body
    );
    assert_eq!(answer.etag(), "\"2\"");
    assert_eq!(answer.body["name"], "Ada L.");

    // Bob's email is taken, whatever its case.
    let answer = app
        .patch(
            &format!("/users/{ada}"),
            json!({ "email": "BOB@shop.example" }),
        )
        .await;
    assert_eq!(answer.status, 409, "{}", answer.body);
    assert_eq!(answer.problem_type(), "/problems/conflict");
    // A case-only change of one's own email is fine.
    let answer = app
        .patch(
            &format!("/users/{ada}"),
            json!({ "email": "ADA@shop.example" }),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // Moving to a new email frees the old one.
    let answer = app
        .patch(
            &format!("/users/{ada}"),
            json!({ "email": "ada@new.example" }),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    app.register("ada@shop.example").await;

    let answer = app.post_empty(&format!("/users/{bob}/deactivate")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["status"], "deactivated");
    let before = app.event_count().await;
    let answer = app
        .patch(&format!("/users/{bob}"), json!({ "name": "Robert" }))
        .await;
    assert_eq!(answer.status, 422);
    assert_eq!(answer.problem_type(), "/problems/user-deactivated");
    assert_eq!(app.event_count().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn product_commands() {
    let app = spawn_app().await;
    let created = app.create_product("SKU-1", 1999, "EUR", 10).await;
    let id = created.id();
    assert_eq!(
        created.body["price"],
        json!({ "amount": 1999, "currency": "EUR" })
    );
    assert_eq!(
        created.body["stock"],
        json!({ "available": 10, "reserved": 0 })
    );
    assert_eq!(created.body["status"], "active");

    // sku is unique, case-insensitively
    let answer = app
        .post("/products", json!({ "sku": "sku-1", "name": "Other", "price": { "amount": 5, "currency": "EUR" }, "stock": 0 }))
        .await;
    assert_eq!(answer.status, 409, "{}", answer.body);
    assert_eq!(answer.body["errors"][0]["field"], "sku");

    let answer = app
        .patch(
            &format!("/products/{id}"),
            json!({ "description": "A fine thing" }),
        )
        .await;
    assert_eq!(
        (answer.status, answer.body["description"].as_str()),
        (200, Some("A fine thing"))
    );
    let answer = app
        .post(
            &format!("/products/{id}/price"),
            json!({ "price": { "amount": 2499, "currency": "EUR" } }),
        )
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["price"]["amount"], 2499);
    let answer = app
        .post(&format!("/products/{id}/stock"), json!({ "delta": -4 }))
        .await;
    assert_eq!(answer.body["stock"]["available"], 6);
    assert_eq!(answer.body["version"], 4);
    let answer = app.post_empty(&format!("/products/{id}/discontinue")).await;
    assert_eq!(
        (answer.status, answer.body["status"].as_str()),
        (200, Some("discontinued"))
    );
    let answer = app.post_empty(&format!("/products/{id}/discontinue")).await;
    assert_eq!(answer.status, 422);
    assert_eq!(answer.problem_type(), "/problems/product-discontinued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placing_orders() {
    let app = spawn_app().await;
    let user = app.register("buyer@shop.example").await.id();
    let pen = app.create_product("PEN", 250, "EUR", 100).await.id();
    let ink = app.create_product("INK", 1000, "EUR", 100).await.id();
    let usd = app.create_product("USD-1", 1000, "USD", 100).await.id();
    let gone = app.create_product("GONE", 1000, "EUR", 100).await.id();
    app.post_empty(&format!("/products/{gone}/discontinue"))
        .await;

    let answer = app
        .post("/orders", json!({ "user_id": user, "lines": [{ "product_id": pen, "quantity": 3 }, { "product_id": ink, "quantity": 1 }], "payment_token": "tok_ok" }))
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(answer.body["status"], "pending");
    assert_eq!(
        answer.body["total"],
        json!({ "amount": 1750, "currency": "EUR" })
    );
    assert_eq!(
        answer.body["lines"][0]["unit_price"],
        json!({ "amount": 250, "currency": "EUR" })
    );
    assert_eq!(answer.body["version"], 1);
    let order = answer.id();

    // Orders keep the price they were placed at.
    app.post(
        &format!("/products/{pen}/price"),
        json!({ "price": { "amount": 999, "currency": "EUR" } }),
    )
    .await;
    let events = app.get(&format!("/aggregates/order/{order}/events")).await;
    assert_eq!(
        events.body[0]["payload"]["OrderPlaced"]["total"]["amount"],
        1750
    );

    let before = app.event_count().await;
    let refused = [
        (
            json!({ "user_id": user, "lines": [{ "product_id": pen, "quantity": 1 }, { "product_id": usd, "quantity": 1 }], "payment_token": "tok_ok" }),
            422,
            "currency-mismatch",
        ),
        (
            json!({ "user_id": user, "lines": [{ "product_id": gone, "quantity": 1 }], "payment_token": "tok_ok" }),
            422,
            "product-discontinued",
        ),
        (
            json!({ "user_id": user, "lines": [], "payment_token": "tok_ok" }),
            422,
            "validation",
        ),
        (
            json!({ "user_id": user, "lines": [{ "product_id": pen, "quantity": 0 }], "payment_token": "tok_ok" }),
            422,
            "validation",
        ),
        (
            json!({ "user_id": user, "lines": [{ "product_id": pen, "quantity": 1001 }], "payment_token": "tok_ok" }),
            422,
            "validation",
        ),
        (
            json!({ "user_id": user, "lines": [{ "product_id": pen, "quantity": 1 }, { "product_id": pen, "quantity": 2 }], "payment_token": "tok_ok" }),
            422,
            "validation",
        ),
        (
            json!({ "user_id": user, "lines": [{ "product_id": uuid::Uuid::now_v7(), "quantity": 1 }], "payment_token": "tok_ok" }),
            422,
            "validation",
        ),
        (
            json!({ "user_id": uuid::Uuid::now_v7(), "lines": [{ "product_id": pen, "quantity": 1 }], "payment_token": "tok_ok" }),
            422,
            "validation",
        ),
        (
            json!({ "user_id": "nope", "lines": [{ "product_id": pen, "quantity": 1 }], "payment_token": "tok_ok" }),
            422,
            "validation",
        ),
    ];
    for (body, status, problem) in refused {
        let answer = app.post("/orders", body.clone()).await;
        assert_eq!(answer.status, status, "{body}: {}", answer.body);
        assert_eq!(
            answer.problem_type(),
            format!("/problems/{problem}"),
            "{body}"
        );
        assert_eq!(app.event_count().await, before, "{body} wrote an event");
    }
    let too_many: Vec<_> = (0..51)
        .map(|_| json!({ "product_id": uuid::Uuid::now_v7(), "quantity": 1 }))
        .collect();
    let answer = app
        .post(
            "/orders",
            json!({ "user_id": user, "lines": too_many, "payment_token": "tok_ok" }),
        )
        .await;
    assert_eq!(
        (answer.status, answer.problem_type()),
        (422, "/problems/validation")
    );

    app.post_empty(&format!("/users/{user}/deactivate")).await;
    let before = app.event_count().await;
    let answer = app
        .post("/orders", json!({ "user_id": user, "lines": [{ "product_id": pen, "quantity": 1 }], "payment_token": "tok_ok" }))
        .await;
    assert_eq!(
        (answer.status, answer.problem_type()),
        (422, "/problems/user-deactivated")
    );
    assert_eq!(app.event_count().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_transitions() {
    let app = spawn_app().await;
    let user = app.register("t@shop.example").await.id();
    let pen = app.create_product("PEN-T", 250, "EUR", 100).await.id();
    let order = app
        .post("/orders", json!({ "user_id": user, "lines": [{ "product_id": pen, "quantity": 1 }], "payment_token": "tok_ok" }))
        .await
        .id();
    let before = app.event_count().await;
    let answer = app.post_empty(&format!("/orders/{order}/ship")).await;
    assert_eq!(
        (answer.status, answer.problem_type()),
        (422, "/problems/invalid-transition")
    );
    let answer = app
        .post(
            &format!("/orders/{order}/cancel"),
            json!({ "reason": "x".repeat(501) }),
        )
        .await;
    assert_eq!(
        (answer.status, answer.problem_type()),
        (422, "/problems/validation")
    );
    assert_eq!(app.event_count().await, before);

    let answer = app
        .post(
            &format!("/orders/{order}/cancel"),
            json!({ "reason": "customer_request" }),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["status"], "cancelled");
    assert_eq!(answer.body["cancel_reason"], "customer_request");
    assert_eq!(answer.etag(), "\"2\"");
    let answer = app
        .post(
            &format!("/orders/{order}/cancel"),
            json!({ "reason": "customer_request" }),
        )
        .await;
    assert_eq!(
        (answer.status, answer.problem_type()),
        (422, "/problems/invalid-transition")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_paths() {
    let nats = testkit::TestNats::new().await;
    let db = std::sync::Arc::new(testkit::TestDatabase::new().await);
    let options = api::HttpOptions {
        nats_prefix: nats.prefix.clone(),
        ..api::HttpOptions::default()
    };
    let app = crate::support::spawn_app_with(db.clone(), options).await;
    assert_eq!(app.get("/healthz").await.status, 200);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body["checks"]["postgres"], "ok");
    assert_eq!(ready.body["checks"]["nats"], "ok");

    // Without its event stream (no `agora migrate` yet) a process is not ready.
    let options = api::HttpOptions {
        nats_prefix: "t-no-stream-here".to_owned(),
        ..api::HttpOptions::default()
    };
    let unmigrated = crate::support::spawn_app_with(db, options).await;
    let ready = unmigrated.get("/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(ready.body["checks"]["nats"]
        .as_str()
        .unwrap_or("")
        .contains("stream"));

    // Draining flips readiness first.
    app.state.start_draining();
    let ready = app.get("/readyz").await;
    assert_eq!(
        (ready.status, ready.body["status"].as_str()),
        (503, Some("draining"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_is_refunded_only_once_its_order_is_confirmed() {
    use commands::CommandMetadata;
    use domain::order::OrderCommand;
    use domain::payment::PaymentCommand;
    use domain::values::{Currency, Money};

    let app = spawn_app().await;
    let user = app.register("refund@example.com").await.id();
    let product = app.create_product("SKU-R", 500, "EUR", 3).await.id();
    let order = app
        .post(
            "/orders",
            json!({ "user_id": user, "lines": [{ "product_id": product, "quantity": 1 }], "payment_token": "tok_ok" }),
        )
        .await;
    assert_eq!(order.status, 201, "{}", order.body);
    let order_id = uuid::Uuid::parse_str(&order.id()).unwrap();

    // What the saga does up to the capture, the moment before it confirms.
    let payment_id = uuid::Uuid::now_v7();
    let metadata = CommandMetadata::system();
    let aggregates = &app.state.aggregates;
    let amount = Money::new(500, Currency::parse("EUR").unwrap());
    for command in [
        PaymentCommand::Request {
            payment_id,
            order_id,
            amount,
            token: "tok_ok".to_owned(),
        },
        PaymentCommand::Authorize {
            authorization_id: "ch_1".to_owned(),
        },
        PaymentCommand::Capture,
    ] {
        aggregates
            .payments
            .execute(&payment_id.to_string(), command, None, &metadata)
            .await
            .unwrap();
    }
    let before = app.event_count().await;
    let answer = app
        .post_empty(&format!("/payments/{payment_id}/refund"))
        .await;
    assert_eq!(answer.status, 422, "{}", answer.body);
    assert_eq!(answer.problem_type(), "/problems/invalid-transition");
    assert_eq!(app.event_count().await, before, "nothing was written");

    aggregates
        .orders
        .execute(
            &order_id.to_string(),
            OrderCommand::Confirm,
            None,
            &metadata,
        )
        .await
        .unwrap();
    let answer = app
        .post_empty(&format!("/payments/{payment_id}/refund"))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["status"], "refunded");
    let order = aggregates
        .orders
        .load_stored(&order_id.to_string())
        .await
        .unwrap()
        .aggregate;
    assert_eq!(
        order.cancel_reason(),
        Some(domain::order::CancelReason::Refunded)
    );
}
