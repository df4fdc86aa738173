//! Races: uniqueness across aggregates, and lost races on one aggregate.

use futures::future::join_all;
use serde_json::json;

use crate::support::{spawn_app, spawn_app_on};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_registrations_of_one_email_give_one_201() {
    let app = spawn_app().await;
    let answers = join_all((0..10).map(|i| {
        let email = if i % 2 == 0 {
            "Same@Shop.example"
        } else {
            "same@shop.EXAMPLE"
        };
        app.post(
            "/users",
            json!({ "email": email, "name": format!("User {i}") }),
        )
    }))
    .await;
    let created = answers.iter().filter(|a| a.status == 201).count();
    let clashes = answers
        .iter()
        .filter(|a| {
            a.status == 409
                && a.problem_type() == "/problems/conflict"
                && a.body["errors"][0]["field"] == "email"
        })
        .count();
    assert_eq!(
        (created, clashes),
        (1, 9),
        "{:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    assert_eq!(app.events_of_type("UserRegistered").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_races_on_one_aggregate_are_retried_across_processes() {
    let app = spawn_app().await;
    let other = spawn_app_on(app.db.clone()).await;
    let product = app.create_product("RACE", 100, "EUR", 0).await.id();
    // Warm both processes' caches, then race them.
    other
        .post(&format!("/products/{product}/stock"), json!({ "delta": 1 }))
        .await;
    let path = format!("/products/{product}/stock");
    let answers = join_all((0..40).map(|i| {
        let target = if i % 2 == 0 { &app } else { &other };
        target.post(&path, json!({ "delta": 1 }))
    }))
    .await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let mut versions: Vec<i64> = answers
        .iter()
        .filter_map(|a| a.body["version"].as_i64())
        .collect();
    versions.sort_unstable();
    assert_eq!(
        versions,
        (3..=42).collect::<Vec<_>>(),
        "each write got its own version"
    );
    let stream = app
        .get(&format!("/aggregates/product/{product}/events"))
        .await;
    assert_eq!(stream.body.as_array().map(Vec::len), Some(42));
    let last = app.post(&path, json!({ "delta": 1 })).await;
    assert_eq!(last.body["stock"]["available"], 42);
}
