//! `Idempotency-Key`: replays, in-flight repeats, and survival across processes.

use reqwest::Method;
use serde_json::json;

use crate::support::{spawn_app, spawn_app_on};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_replays_the_first_answer_and_writes_nothing() {
    let app = spawn_app().await;
    let send = |app: &crate::support::TestApp| {
        app.request(Method::POST, "/products")
            .header("idempotency-key", "create-pen")
            .json(&json!({ "sku": "PEN-I", "name": "Pen", "price": { "amount": 100, "currency": "EUR" }, "stock": 5 }))
    };
    let first = app.send(send(&app)).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let count = app.event_count().await;
    let again = app.send(send(&app)).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body);
    assert_eq!(again.etag(), first.etag());
    assert_eq!(again.headers["location"], first.headers["location"]);
    assert_eq!(app.event_count().await, count);

    // Another API process on the same database (a restart, or a second
    // replica) knows the key too.
    let other = spawn_app_on(app.db.clone()).await;
    let third = other.send(send(&other)).await;
    assert_eq!((third.status, &third.body), (201, &first.body));
    assert_eq!(app.event_count().await, count);

    // Refusals are replayed too.
    let refused = || {
        app.request(Method::POST, &format!("/products/{}/stock", first.id()))
            .header("idempotency-key", "too-much")
            .json(&json!({ "delta": -50 }))
    };
    let a = app.send(refused()).await;
    let b = app.send(refused()).await;
    assert_eq!((a.status, b.status), (422, 422));
    assert_eq!(a.body, b.body);
    assert_eq!(b.headers["content-type"], "application/problem+json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_while_the_first_is_in_flight_is_409() {
    let app = spawn_app().await;
    let body = json!({ "email": "inflight@shop.example", "name": "A" });
    let request = || {
        app.request(Method::POST, "/users")
            .header("idempotency-key", "slow-one")
            .json(&body)
    };
    // Run the request once to learn its fingerprint, then put its record
    // back in flight, as if the first attempt were still running.
    let first = app.send(request()).await;
    assert_eq!(first.status, 201);
    sqlx::query("UPDATE idempotency_keys SET state = 'in_flight', status = NULL, body = NULL WHERE key = 'slow-one'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let count = app.event_count().await;
    let answer = app.send(request()).await;
    assert_eq!(
        (answer.status, answer.problem_type()),
        (409, "/problems/conflict"),
        "{}",
        answer.body
    );
    assert_eq!(app.event_count().await, count);
}
