//! API keys: created, listed and deleted by an admin, shown once, stored as
//! hashes, `catalog` keys limited to products, and a deleted key refused by
//! every process within a second.

use std::sync::Arc;
use std::time::Duration;

use api::auth::Role;
use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

use crate::auth::token;
use crate::sign_in::{assert_problem, authed, new_db, prefix, spawn_listening};
use crate::support::{Answer, TestApp};

fn admin() -> String {
    token("root", Role::Admin)
}

async fn create_key(app: &TestApp, name: &str, role: &str) -> Answer {
    app.send(
        app.bearer(Method::POST, "/api-keys", &admin())
            .json(&json!({ "name": name, "role": role })),
    )
    .await
}

fn product_body() -> serde_json::Value {
    json!({ "sku": format!("K-{}", Uuid::now_v7()), "name": "Ink", "price": { "amount": 300, "currency": "EUR" }, "stock": 5 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_shown_once_stored_as_a_hash_and_listed_without_it() {
    let app = spawn_listening(new_db().await, authed(&prefix())).await;
    let created = create_key(&app, "1C exchange", "catalog").await;
    assert_eq!(created.status, 201, "{}", created.body);
    let key = created.body["key"].as_str().expect("the key").to_owned();
    assert!(key.starts_with("agk_") && key.len() == 47, "{key}");
    assert_eq!(created.body["name"], "1C exchange");
    assert_eq!(created.body["role"], "catalog");
    assert!(created.body["created_at"].is_string());
    assert_eq!(
        created
            .headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let id = created.id();
    // Only the hash is kept.
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_keys WHERE key_hash = sha256(convert_to($1, 'UTF8'))",
    )
    .bind(&key)
    .fetch_one(&app.db.pool)
    .await
    .expect("count");
    assert_eq!(rows, 1);
    let dump: String = sqlx::query_scalar("SELECT string_agg(t::text, ' ') FROM api_keys t")
        .fetch_one(&app.db.pool)
        .await
        .expect("dump");
    assert!(!dump.contains(&key[4..]), "{dump}");

    // Used, then listed with last_used_at and never the key.
    let answer = app
        .send(
            app.bearer(Method::POST, "/products", &key)
                .json(&product_body()),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    let actor: String = sqlx::query_scalar(
        "SELECT metadata->>'actor' FROM events WHERE aggregate_type = 'product' LIMIT 1",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("the event");
    assert_eq!(actor, format!("api-key:{id}"));
    testkit::eventually("last_used_at is recorded", || async {
        let list = app
            .send(app.bearer(Method::GET, "/api-keys", &admin()))
            .await;
        list.body["items"][0]["last_used_at"].is_string()
    })
    .await;
    let list = app
        .send(app.bearer(Method::GET, "/api-keys", &admin()))
        .await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(list.body["items"][0]["id"], id);
    assert!(list.body["items"][0].get("key").is_none());
    assert!(!list.body.to_string().contains(&key));
    assert_eq!(list.body["next_cursor"], serde_json::Value::Null);

    // Many uses within a minute write last_used_at once.
    let before: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT last_used_at FROM api_keys WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.db.pool)
            .await
            .expect("last_used_at");
    for _ in 0..20 {
        let answer = app.send(app.bearer(Method::GET, "/products", &key)).await;
        assert_eq!(answer.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT last_used_at FROM api_keys WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.db.pool)
            .await
            .expect("last_used_at");
    assert_eq!(before, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_key_manages_products_prices_and_stock_and_nothing_else() {
    let app = spawn_listening(new_db().await, authed(&prefix())).await;
    let key = create_key(&app, "catalog feed", "catalog").await.body["key"]
        .as_str()
        .expect("key")
        .to_owned();
    let product = app
        .send(
            app.bearer(Method::POST, "/products", &key)
                .json(&product_body()),
        )
        .await;
    assert_eq!(product.status, 201, "{}", product.body);
    let id = product.id();
    for (method, path, body, status) in [
        (
            Method::PATCH,
            format!("/products/{id}"),
            Some(json!({ "name": "Blue ink" })),
            200,
        ),
        (
            Method::POST,
            format!("/products/{id}/price"),
            Some(json!({ "price": { "amount": 350, "currency": "EUR" } })),
            200,
        ),
        (
            Method::POST,
            format!("/products/{id}/stock"),
            Some(json!({ "delta": 3 })),
            200,
        ),
        (
            Method::POST,
            format!("/products/{id}/discontinue"),
            None,
            200,
        ),
        (
            Method::GET,
            "/users?email=a@b.example".to_owned(),
            None,
            403,
        ),
        (Method::GET, format!("/users/{}", Uuid::now_v7()), None, 403),
        (
            Method::POST,
            "/orders".to_owned(),
            Some(
                json!({ "user_id": Uuid::now_v7(), "lines": [{ "product_id": id, "quantity": 1 }], "payment_token": "tok_ok" }),
            ),
            403,
        ),
        (
            Method::POST,
            "/api-keys".to_owned(),
            Some(json!({ "name": "more", "role": "admin" })),
            403,
        ),
        (Method::GET, "/api-keys".to_owned(), None, 403),
        (
            Method::GET,
            format!("/aggregates/product/{id}/events"),
            None,
            403,
        ),
        (Method::POST, "/auth/logout".to_owned(), None, 403),
    ] {
        let mut request = app.bearer(method.clone(), &path, &key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = app.send(request).await;
        assert_eq!(answer.status, status, "{method} {path}: {}", answer.body);
        if status == 403 {
            assert_eq!(answer.problem_type(), "/problems/forbidden");
        }
    }
    // An admin key may do what an admin may.
    let admin_key = create_key(&app, "ops", "admin").await.body["key"]
        .as_str()
        .expect("key")
        .to_owned();
    let answer = app
        .send(app.bearer(Method::GET, "/api-keys", &admin_key))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["items"].as_array().map(Vec::len), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_callers_are_refused_and_write_nothing() {
    let app = spawn_listening(new_db().await, authed(&prefix())).await;
    for (body, field) in [
        (json!({ "name": "x", "role": "superuser" }), "role"),
        (json!({ "name": "", "role": "admin" }), "name"),
    ] {
        let answer = app
            .send(app.bearer(Method::POST, "/api-keys", &admin()).json(&body))
            .await;
        assert_problem(&answer, 422, "/problems/validation");
        assert_eq!(answer.body["errors"][0]["field"], field);
    }
    let answer = app
        .send(
            app.bearer(Method::POST, "/api-keys", &admin())
                .json(&json!({ "name": "x" })),
        )
        .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    let customer = token(&Uuid::now_v7().to_string(), Role::Customer);
    let answer = app
        .send(
            app.bearer(Method::POST, "/api-keys", &customer)
                .json(&json!({ "name": "x", "role": "admin" })),
        )
        .await;
    assert_problem(&answer, 403, "/problems/forbidden");
    assert_eq!(
        app.rows("SELECT count(*) FROM api_keys").await,
        0,
        "a refused request stored a key"
    );
    let answer = app
        .send(app.bearer(
            Method::DELETE,
            &format!("/api-keys/{}", Uuid::now_v7()),
            &admin(),
        ))
        .await;
    assert_problem(&answer, 404, "/problems/not-found");
    let answer = app
        .send(app.bearer(Method::GET, "/api-keys?cursor=nonsense", &admin()))
        .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    let answer = app
        .send(app.bearer(
            Method::GET,
            "/products",
            "agk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ))
        .await;
    assert_problem(&answer, 401, "/problems/invalid-token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_key_is_refused_by_every_process_within_a_second() {
    let db = new_db().await;
    let prefix = prefix();
    let one = spawn_listening(Arc::clone(&db), authed(&prefix)).await;
    let two = spawn_listening(db, authed(&prefix)).await;
    let created = create_key(&one, "feed", "catalog").await;
    let key = created.body["key"].as_str().expect("key").to_owned();
    // Both processes have seen the key live.
    for app in [&one, &two] {
        assert_eq!(
            app.send(app.bearer(Method::GET, "/products", &key))
                .await
                .status,
            200
        );
    }
    let answer = one
        .send(one.bearer(
            Method::DELETE,
            &format!("/api-keys/{}", created.id()),
            &admin(),
        ))
        .await;
    assert_eq!(answer.status, 204, "{}", answer.body);
    // At once where it was deleted; on the other within the second.
    assert_problem(
        &one.send(one.bearer(Method::GET, "/products", &key)).await,
        401,
        "/problems/invalid-token",
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_problem(
        &two.send(two.bearer(Method::GET, "/products", &key)).await,
        401,
        "/problems/invalid-token",
    );
    let list = two
        .send(two.bearer(Method::GET, "/api-keys", &admin()))
        .await;
    assert_eq!(list.body["items"], json!([]));
    let again = one
        .send(one.bearer(
            Method::DELETE,
            &format!("/api-keys/{}", created.id()),
            &admin(),
        ))
        .await;
    assert_problem(&again, 404, "/problems/not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_paged_by_cursor() {
    let app = spawn_listening(new_db().await, authed(&prefix())).await;
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(create_key(&app, &format!("key {i}"), "catalog").await.id());
    }
    let mut seen = Vec::new();
    let mut path = "/api-keys?limit=2".to_owned();
    loop {
        let page = app.send(app.bearer(Method::GET, &path, &admin())).await;
        assert_eq!(page.status, 200, "{}", page.body);
        for item in page.body["items"].as_array().expect("items") {
            seen.push(item["id"].as_str().expect("id").to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api-keys?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    // Oldest first, by id (UUID v7: the order they were made in).
    made.sort();
    assert_eq!(seen, made);
}
