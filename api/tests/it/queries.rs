//! The query routes over HTTP, on read-model rows written straight into the
//! `rm_*` tables (the projector is not part of these tests), and the change
//! listener over the real NATS.

use std::sync::Arc;
use std::time::Duration;

use api::HttpOptions;
use serde_json::{json, Value};
use sqlx::PgPool;
use testkit::TestDatabase;
use uuid::Uuid;

use crate::support::{spawn_app, spawn_app_with, Answer, TestApp};

const T0: &str = "2024-05-01T10:00:00.123456Z";
const T1: &str = "2024-05-02T11:30:00Z";

fn time(text: &str) -> chrono::DateTime<chrono::Utc> {
    text.parse().expect("a test timestamp")
}

/// A user row as the projection writes it: email and name sealed (under
/// the development key the test app's stores use), the email claimed by its
/// keyed hash.
async fn insert_user(pool: &PgPool, id: Uuid, email: &str, version: i64) {
    let vault = commands::Vault::new(pool.clone(), &commands::MasterKey::development());
    let seal = |text: &str| {
        let (vault, text) = (vault.clone(), serde_json::to_string(text).unwrap());
        async move { vault.seal(id, &text).await.expect("seal") }
    };
    sqlx::query(
        "INSERT INTO rm_users (id, email, name, status, version, created_at, updated_at) \
         VALUES ($1, $2, $3, 'active', $4, $5, $6)",
    )
    .bind(id)
    .bind(seal(email).await)
    .bind(seal("Ada Lovelace").await)
    .bind(version)
    .bind(time(T0))
    .bind(time(T1))
    .execute(pool)
    .await
    .expect("insert rm_users");
    sqlx::query(
        "INSERT INTO unique_claims (kind, value, aggregate_type, aggregate_id) VALUES ('email', $1, 'user', $2)",
    )
    .bind(vault.email_claim(&domain::normalize_email(email)))
    .bind(id.to_string())
    .execute(pool)
    .await
    .expect("insert the claim");
}

pub(crate) async fn insert_product(
    pool: &PgPool,
    id: Uuid,
    sku: &str,
    name: &str,
    status: &str,
    version: i64,
) {
    sqlx::query(
        "INSERT INTO rm_products (id, sku, name, description, price_amount, price_currency, \
         available, reserved, status, version, created_at, updated_at) \
         VALUES ($1, $2, $3, NULL, 1999, 'EUR', 7, 2, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(sku)
    .bind(name)
    .bind(status)
    .bind(version)
    .bind(time(T0))
    .bind(time(T1))
    .execute(pool)
    .await
    .expect("insert rm_products");
}

async fn insert_order(pool: &PgPool, id: Uuid, user_id: Uuid, product_id: Uuid) {
    let lines = json!([{ "product_id": product_id, "quantity": 2, "unit_price": { "amount": 500, "currency": "EUR" } }]);
    sqlx::query(
        "INSERT INTO rm_orders (id, user_id, lines, total_amount, total_currency, status, \
         cancel_reason, payment_id, version, placed_at, updated_at) \
         VALUES ($1, $2, $3, 1000, 'EUR', 'pending', NULL, NULL, 1, $4, $5)",
    )
    .bind(id)
    .bind(user_id)
    .bind(lines)
    .bind(time(T0))
    .bind(time(T1))
    .execute(pool)
    .await
    .expect("insert rm_orders");
}

async fn insert_notification(
    pool: &PgPool,
    id: Uuid,
    user_id: Uuid,
    kind: &str,
    order_id: Option<Uuid>,
    created_at: &str,
) {
    sqlx::query(
        "INSERT INTO rm_notifications (id, user_id, kind, order_id, source, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(user_id)
    .bind(kind)
    .bind(order_id)
    .bind(format!("test:{id}"))
    .bind(time(created_at))
    .execute(pool)
    .await
    .expect("insert rm_notifications");
}

fn assert_bad_request(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 400, "{what}: {}", answer.body);
    assert_eq!(answer.problem_type(), "/problems/bad-request", "{what}");
    assert_eq!(
        answer.headers["content-type"], "application/problem+json",
        "{what}"
    );
}

fn ids(answer: &Answer) -> Vec<String> {
    answer.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Follows `next_cursor` from `path` (which has a query) to the end; the
/// ids of each page.
async fn pages(app: &TestApp, path: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_owned(),
        };
        let answer = app.get(&url).await;
        assert_eq!(answer.status, 200, "{url}: {}", answer.body);
        pages.push(ids(&answer));
        match &answer.body["next_cursor"] {
            Value::Null => return pages,
            Value::String(next) => cursor = Some(next.clone()),
            other => panic!("next_cursor is {other}"),
        }
        assert!(pages.len() < 20, "the cursors never end");
    }
}

/// An app whose change listener runs on a NATS prefix of its own.
async fn app_with_listener(consistency_wait: Duration) -> (TestApp, String) {
    let prefix = format!("qt{}", &Uuid::new_v4().simple().to_string()[..12]);
    let options = HttpOptions {
        consistency_wait,
        nats_prefix: prefix.clone(),
        ..HttpOptions::default()
    };
    let db = Arc::new(TestDatabase::with_pool_size(8).await);
    let app = spawn_app_with(db, options).await;
    api::changes::spawn(app.nats.clone(), prefix.clone(), app.state.clone())
        .await
        .expect("start the change listener");
    (app, prefix)
}

/// Announces a change as the projector does, on a connection of its own.
async fn announce(prefix: &str, model: &str, id: Uuid, version: i64) {
    let nats = async_nats::connect(testkit::nats_url())
        .await
        .expect("connect to NATS");
    nats.publish(
        schemas::subjects::change(prefix, model, &id.to_string()),
        version.to_string().into(),
    )
    .await
    .expect("publish the change");
    nats.flush().await.expect("flush");
}

/// Waits (bounded) until `n` requests are waiting for a version.
async fn until_waiting(app: &TestApp, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.state.reads.waiting() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no request started waiting"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_resources_answer_every_field() {
    let app = spawn_app().await;
    let pool = &app.db.pool;
    let user = Uuid::now_v7();
    let product = Uuid::now_v7();
    let order = Uuid::now_v7();
    let payment = Uuid::now_v7();
    insert_user(pool, user, "Ada@Example.com", 3).await;
    insert_product(pool, product, "SKU-1", "Blue mug", "active", 4).await;
    insert_order(pool, order, user, product).await;
    sqlx::query(
        "INSERT INTO rm_payments (id, order_id, amount, currency, status, attempts, last_error, \
         version, created_at, updated_at) VALUES ($1, $2, 1000, 'EUR', 'captured', 3, 'x', 5, $3, $4)",
    )
    .bind(payment)
    .bind(order)
    .bind(time(T0))
    .bind(time(T1))
    .execute(pool)
    .await
    .expect("insert rm_payments");

    let answer = app.get(&format!("/users/{user}")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.headers["content-type"], "application/json");
    assert_eq!(answer.etag(), "\"3\"");
    assert_eq!(
        answer.body,
        json!({
            "id": user.to_string(), "email": "Ada@Example.com", "name": "Ada Lovelace",
            "status": "active", "version": 3, "created_at": T0, "updated_at": T1,
        })
    );

    let answer = app.get(&format!("/products/{product}")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.etag(), "\"4\"");
    assert_eq!(
        answer.body,
        json!({
            "id": product.to_string(), "sku": "SKU-1", "name": "Blue mug", "description": null,
            "price": { "amount": 1999, "currency": "EUR" },
            "stock": { "available": 7, "reserved": 2 },
            "categories": [], "attributes": {},
            "status": "active", "version": 4, "created_at": T0, "updated_at": T1,
        })
    );

    let answer = app.get(&format!("/orders/{order}")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.etag(), "\"1\"");
    assert_eq!(
        answer.body,
        json!({
            "id": order.to_string(), "user_id": user.to_string(),
            "lines": [{ "product_id": product.to_string(), "quantity": 2, "unit_price": { "amount": 500, "currency": "EUR" } }],
            "total": { "amount": 1000, "currency": "EUR" },
            "status": "pending", "cancel_reason": null, "cancel_note": null, "payment_id": null,
            "cart_id": null, "shipping_address": null,
            "version": 1, "placed_at": T0, "updated_at": T1,
        })
    );

    let answer = app.get(&format!("/payments/{payment}")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.etag(), "\"5\"");
    assert_eq!(
        answer.body,
        json!({
            "id": payment.to_string(), "order_id": order.to_string(),
            "amount": { "amount": 1000, "currency": "EUR" },
            "status": "captured", "attempts": 3, "version": 5,
            "created_at": T0, "updated_at": T1,
        })
    );

    // min_version already reached: answered at once, from the cache or not.
    let answer = app.get(&format!("/products/{product}?min_version=4")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["version"], 4);
    let answer = app.get(&format!("/users/{user}?min_version=0")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_filter_and_page() {
    let app = spawn_app().await;
    let pool = &app.db.pool;

    // Users by email, case-insensitive and exact.
    let ada = Uuid::now_v7();
    let bob = Uuid::now_v7();
    insert_user(pool, ada, "Ada@Example.com", 1).await;
    insert_user(pool, bob, "ada@example.co", 1).await;
    let answer = app.get("/users?email=aDa%40example.COM").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(ids(&answer), vec![ada.to_string()]);
    assert_eq!(answer.body["next_cursor"], Value::Null);
    assert_eq!(answer.body["items"][0]["email"], "Ada@Example.com");
    assert_eq!(answer.body["items"][0]["created_at"], T0);
    let answer = app.get("/users?email=nobody%40example.com").await;
    assert_eq!(answer.body, json!({ "items": [], "next_cursor": null }));

    // Products: five, paged by two in id order.
    let mut products = Vec::new();
    for (i, (sku, name, status)) in [
        ("MUG-1", "Blue mug", "active"),
        ("MUG-2", "Red MUG", "discontinued"),
        ("TEE-1", "50% off tee", "active"),
        ("TEE-2", "500 tee", "active"),
        ("CAP_1", "Cap", "active"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = Uuid::now_v7();
        insert_product(pool, id, sku, name, status, i as i64 + 1).await;
        products.push(id.to_string());
    }
    // Without q the default sort is newest first.
    let newest: Vec<String> = products.iter().rev().cloned().collect();
    let all = pages(&app, "/products?limit=2").await;
    assert_eq!(
        all,
        vec![
            newest[0..2].to_vec(),
            newest[2..4].to_vec(),
            newest[4..5].to_vec()
        ]
    );
    let answer = app.get("/products").await;
    assert_eq!(ids(&answer), newest);
    assert_eq!(answer.body["items"][3]["stock"]["reserved"], 2);
    // q searches name and sku, case-insensitive (the catalog tests hold the
    // rest of search: word forms, accents, prefixes, typos, ranking).
    let answer = app.get("/products?q=mug").await;
    let mut mugs = ids(&answer);
    mugs.sort();
    assert_eq!(mugs, products[0..2].to_vec());
    let answer = app.get("/products?q=tee-2").await;
    assert_eq!(ids(&answer), vec![products[3].clone()]);
    // An exact match ranks first; "50" is also a prefix of "500".
    let answer = app.get("/products?q=50%25").await;
    assert_eq!(ids(&answer).first(), Some(&products[2]));
    let answer = app.get("/products?q=mug&status=active").await;
    assert_eq!(ids(&answer), vec![products[0].clone()]);
    let answer = app.get("/products?status=discontinued").await;
    assert_eq!(ids(&answer), vec![products[1].clone()]);

    // A user's orders, newest first.
    let mut orders = Vec::new();
    for _ in 0..5 {
        let id = Uuid::now_v7();
        insert_order(pool, id, ada, Uuid::now_v7()).await;
        orders.push(id.to_string());
    }
    insert_order(pool, Uuid::now_v7(), bob, Uuid::now_v7()).await;
    orders.reverse();
    let all = pages(&app, &format!("/users/{ada}/orders?limit=2")).await;
    assert_eq!(
        all,
        vec![
            orders[0..2].to_vec(),
            orders[2..4].to_vec(),
            orders[4..5].to_vec()
        ]
    );
    let answer = app.get(&format!("/users/{ada}/orders")).await;
    assert_eq!(ids(&answer), orders);
    assert_eq!(answer.body["items"][0]["total"]["amount"], 1000);
    assert_eq!(answer.body["items"][0]["lines"][0]["quantity"], 2);

    // A user's notifications, newest first; equal times by id, descending.
    let welcome = Uuid::now_v7();
    let order = Uuid::now_v7();
    insert_notification(pool, welcome, ada, "welcome", None, "2024-05-01T09:00:00Z").await;
    let mut same_time = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
    for (i, id) in same_time.iter().enumerate() {
        let kind = ["order_confirmed", "order_shipped", "order_cancelled"][i];
        insert_notification(pool, *id, ada, kind, Some(order), "2024-05-01T12:00:00.5Z").await;
    }
    let latest = Uuid::now_v7();
    insert_notification(
        pool,
        latest,
        ada,
        "payment_refunded",
        Some(order),
        "2024-05-03T08:00:00Z",
    )
    .await;
    insert_notification(pool, Uuid::now_v7(), bob, "welcome", None, T0).await;
    same_time.reverse();
    let mut expected: Vec<String> = vec![latest.to_string()];
    expected.extend(same_time.iter().map(Uuid::to_string));
    expected.push(welcome.to_string());
    let all = pages(&app, &format!("/users/{ada}/notifications?limit=2")).await;
    assert_eq!(
        all,
        vec![
            expected[0..2].to_vec(),
            expected[2..4].to_vec(),
            expected[4..5].to_vec()
        ]
    );
    let answer = app.get(&format!("/users/{ada}/notifications")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let items = answer.body["items"].as_array().expect("items");
    assert_eq!(
        items[0],
        json!({ "id": latest.to_string(), "kind": "payment_refunded", "order_id": order.to_string(), "created_at": "2024-05-03T08:00:00Z" })
    );
    assert_eq!(
        items[4],
        json!({ "id": welcome.to_string(), "kind": "welcome", "created_at": "2024-05-01T09:00:00Z" })
    );
    assert_eq!(items[1]["created_at"], "2024-05-01T12:00:00.500Z");

    // A known user without any: an empty page.
    let carol = Uuid::now_v7();
    insert_user(pool, carol, "carol@example.com", 1).await;
    for path in [
        format!("/users/{carol}/orders"),
        format!("/users/{carol}/notifications"),
    ] {
        let answer = app.get(&path).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        assert_eq!(answer.body, json!({ "items": [], "next_cursor": null }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_parameters_are_400() {
    let app = spawn_app().await;
    let user = Uuid::now_v7();
    insert_user(&app.db.pool, user, "ada@example.com", 1).await;
    let product = Uuid::now_v7();
    insert_product(&app.db.pool, product, "SKU-1", "Mug", "active", 1).await;
    let notifications = format!("/users/{user}/notifications");
    let orders = format!("/users/{user}/orders");
    let cases = [
        "/products?limit=0".to_owned(),
        "/products?limit=201".to_owned(),
        "/products?limit=-1".to_owned(),
        "/products?limit=ten".to_owned(),
        "/products?limit=".to_owned(),
        "/products?cursor=***".to_owned(),
        "/products?cursor=bm90LWEtdXVpZA".to_owned(),
        "/products?status=gone".to_owned(),
        "/products?status=".to_owned(),
        "/products?colour=red".to_owned(),
        "/users?limit=500".to_owned(),
        "/users?mail=ada%40example.com".to_owned(),
        "/users?cursor=%25%25".to_owned(),
        format!("{orders}?limit=0"),
        format!("{orders}?cursor=zzz"),
        format!("{orders}?min_version=1"),
        format!("{notifications}?limit=1000"),
        format!("{notifications}?cursor={}", "bm90LWEtdXVpZA"),
        format!("{notifications}?sort=asc"),
        format!("/users/{user}?min_version=-1"),
        format!("/users/{user}?min_version=two"),
        format!("/users/{user}?min_version="),
        format!("/users/{user}?fields=name"),
        format!("/products/{product}?min_version=1.5"),
        format!("/orders/{}?verbose=true", Uuid::now_v7()),
        format!("/payments/{}?min_version=x", Uuid::now_v7()),
    ];
    for path in cases {
        assert_bad_request(&app.get(&path).await, &path);
    }
    // A cursor of another list is not one of this list.
    insert_product(&app.db.pool, Uuid::now_v7(), "SKU-2", "Cup", "active", 1).await;
    let page = app.get("/products?limit=1").await;
    let cursor = page.body["next_cursor"].as_str().expect("a second page");
    let path = format!("{notifications}?cursor={cursor}");
    assert_bad_request(&app.get(&path).await, &path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_garbage_ids_are_404() {
    let app = spawn_app().await;
    let unknown = Uuid::now_v7();
    let mut paths = Vec::new();
    for resource in ["users", "products", "orders", "payments"] {
        paths.push(format!("/{resource}/{unknown}"));
        paths.push(format!("/{resource}/not-a-uuid"));
        paths.push(format!("/{resource}/123"));
    }
    for list in ["orders", "notifications"] {
        paths.push(format!("/users/{unknown}/{list}"));
        paths.push(format!("/users/nope/{list}"));
    }
    for path in paths {
        let answer = app.get(&path).await;
        assert_eq!(answer.status, 404, "{path}: {}", answer.body);
        assert_eq!(answer.problem_type(), "/problems/not-found", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_waits_for_the_change_notice() {
    let (app, prefix) = app_with_listener(Duration::from_secs(20)).await;
    let pool = app.db.pool.clone();
    let user = Uuid::now_v7();
    insert_user(&pool, user, "ada@example.com", 1).await;

    let url = app.url(&format!("/users/{user}?min_version=2"));
    let client = app.client.clone();
    let waiting = tokio::spawn(async move {
        crate::support::answer(client.get(url).send().await.expect("send")).await
    });
    until_waiting(&app, 1).await;
    sqlx::query("UPDATE rm_users SET name = 'Ada King', version = 2 WHERE id = $1")
        .bind(user)
        .execute(&pool)
        .await
        .expect("update");
    announce(&prefix, "users", user, 2).await;
    let answer = waiting.await.expect("the request task");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["version"], 2);
    assert_eq!(answer.body["name"], "Ada King");
    assert_eq!(answer.etag(), "\"2\"");

    // A row the projection has not created yet: waited for too.
    let product = Uuid::now_v7();
    let url = app.url(&format!("/products/{product}?min_version=1"));
    let client = app.client.clone();
    let waiting = tokio::spawn(async move {
        crate::support::answer(client.get(url).send().await.expect("send")).await
    });
    until_waiting(&app, 1).await;
    insert_product(&pool, product, "NEW-1", "New", "active", 1).await;
    announce(&prefix, "products", product, 1).await;
    let answer = waiting.await.expect("the request task");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["sku"], "NEW-1");
    assert_eq!(answer.etag(), "\"1\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_never_reached_is_503_with_retry_after() {
    let (app, prefix) = app_with_listener(Duration::from_millis(300)).await;
    let user = Uuid::now_v7();
    insert_user(&app.db.pool, user, "ada@example.com", 1).await;
    // A notice of an older version does not satisfy the wait either.
    let url = app.url(&format!("/users/{user}?min_version=2"));
    let client = app.client.clone();
    let waiting = tokio::spawn(async move {
        crate::support::answer(client.get(url).send().await.expect("send")).await
    });
    until_waiting(&app, 1).await;
    announce(&prefix, "users", user, 1).await;
    for answer in [
        waiting.await.expect("the request task"),
        app.get(&format!("/products/{}?min_version=1", Uuid::now_v7()))
            .await,
    ] {
        assert_eq!(answer.status, 503, "{}", answer.body);
        assert_eq!(answer.problem_type(), "/problems/service-unavailable");
        assert_eq!(answer.headers["retry-after"], "1");
    }
    // Without min_version the row is there as it is.
    let answer = app.get(&format!("/users/{user}")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["version"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_serves_until_a_change_notice() {
    let (app, prefix) = app_with_listener(Duration::from_secs(20)).await;
    let pool = &app.db.pool;
    let product = Uuid::now_v7();
    insert_product(pool, product, "SKU-1", "Blue mug", "active", 1).await;
    let path = format!("/products/{product}");
    assert_eq!(app.get(&path).await.body["name"], "Blue mug");

    sqlx::query("UPDATE rm_products SET name = 'Green mug', version = 2 WHERE id = $1")
        .bind(product)
        .execute(pool)
        .await
        .expect("update");
    let stale = app.get(&path).await;
    assert_eq!(stale.body["name"], "Blue mug", "served from the cache");
    assert_eq!(stale.etag(), "\"1\"");
    // Asking for the newer version skips the stale entry.
    let fresh = app.get(&format!("{path}?min_version=2")).await;
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    assert_eq!(fresh.body["name"], "Green mug");

    sqlx::query("UPDATE rm_products SET name = 'Red mug', version = 3 WHERE id = $1")
        .bind(product)
        .execute(pool)
        .await
        .expect("update");
    assert_eq!(app.get(&path).await.body["name"], "Green mug");
    announce(&prefix, "products", product, 3).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = app.get(&path).await;
        if answer.body["name"] == "Red mug" {
            assert_eq!(answer.etag(), "\"3\"");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the change notice never reached the cache"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_model_notice_empties_the_cache() {
    let (app, prefix) = app_with_listener(Duration::from_secs(20)).await;
    let pool = &app.db.pool;
    let product = Uuid::now_v7();
    insert_product(pool, product, "SKU-1", "Blue mug", "active", 1).await;
    let path = format!("/products/{product}");
    assert_eq!(app.get(&path).await.body["name"], "Blue mug");

    // What a replay's swap does: the row changes (here without a new
    // version), and only `<prefix>.changes.products.all` announces it.
    sqlx::query("UPDATE rm_products SET name = 'Rebuilt mug' WHERE id = $1")
        .bind(product)
        .execute(pool)
        .await
        .expect("update");
    assert_eq!(
        app.get(&path).await.body["name"],
        "Blue mug",
        "served from the cache"
    );
    let nats = async_nats::connect(testkit::nats_url())
        .await
        .expect("connect to NATS");
    nats.publish(
        schemas::subjects::change(&prefix, "products", schemas::subjects::ALL_ROWS),
        "0".into(),
    )
    .await
    .expect("publish the notice");
    nats.flush().await.expect("flush");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if app.get(&path).await.body["name"] == "Rebuilt mug" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rebuilt notice never emptied the cache"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The colour facet of `GET /products?facets=attr.colour`, as (value, count).
async fn colours(app: &TestApp) -> Vec<(String, i64)> {
    let answer = app.get("/products?facets=attr.colour&limit=1").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body["facets"]["attr.colour"]
        .as_array()
        .expect("the colour facet")
        .iter()
        .map(|e| {
            (
                e["value"].as_str().expect("a value").to_owned(),
                e["count"].as_i64().expect("a count"),
            )
        })
        .collect()
}

async fn scrape_counter(app: &TestApp, name: &str) -> f64 {
    let text = app
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("a text body");
    crate::exposition::value(&crate::exposition::parse(&text), name, &[])
        .unwrap_or_else(|| panic!("no {name} in the scrape"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facet_counts_are_cached_until_a_product_or_category_change_is_announced() {
    let (app, prefix) = app_with_listener(Duration::from_secs(20)).await;
    let pool = &app.db.pool;
    let (pen, mug) = (Uuid::now_v7(), Uuid::now_v7());
    insert_product(pool, pen, "PEN-1", "Pen", "active", 1).await;
    insert_product(pool, mug, "MUG-1", "Mug", "active", 1).await;
    sqlx::query("UPDATE rm_products SET attributes = '{\"colour\": \"blue\"}'")
        .execute(pool)
        .await
        .expect("colour them");
    let blue = vec![("blue".to_owned(), 2)];
    let hits = scrape_counter(&app, "agora_facet_cache_hits_total").await;
    assert_eq!(colours(&app).await, blue);

    // The row changes without an announcement: the counts are the cached ones.
    sqlx::query(
        "UPDATE rm_products SET attributes = '{\"colour\": \"red\"}', version = 2 WHERE id = $1",
    )
    .bind(mug)
    .execute(pool)
    .await
    .expect("recolour");
    assert_eq!(colours(&app).await, blue, "served from the facet cache");
    assert!(scrape_counter(&app, "agora_facet_cache_hits_total").await >= hits + 1.0);
    // The page itself is read afresh every time.
    let page = app.get("/products?attr.colour=red").await;
    assert_eq!(page.body["items"].as_array().map(Vec::len), Some(1));

    // Another model's change leaves the counts alone; the product's own
    // announcement drops them.
    announce(&prefix, "orders", Uuid::now_v7(), 1).await;
    announce(&prefix, "products", mug, 2).await;
    let recounted = vec![("blue".to_owned(), 1), ("red".to_owned(), 1)];
    testkit::eventually_within(
        "the product's announcement reaches the facet cache",
        Duration::from_secs(10),
        || async { colours(&app).await == recounted },
    )
    .await;

    // A category's change drops them too (its slug and tree are in the counts).
    sqlx::query("UPDATE rm_products SET attributes = '{\"colour\": \"green\"}' WHERE id = $1")
        .bind(pen)
        .execute(pool)
        .await
        .expect("recolour");
    assert_eq!(
        colours(&app).await,
        recounted,
        "served from the facet cache"
    );
    announce(&prefix, "categories", Uuid::now_v7(), 1).await;
    let green = vec![("green".to_owned(), 1), ("red".to_owned(), 1)];
    testkit::eventually_within(
        "the category's announcement reaches the facet cache",
        Duration::from_secs(10),
        || async { colours(&app).await == green },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_page_keeps_its_order_until_a_change_is_announced_and_shows_rows_as_they_are() {
    let (app, prefix) = app_with_listener(Duration::from_secs(20)).await;
    let pool = &app.db.pool;
    let (pen, mug) = (Uuid::now_v7(), Uuid::now_v7());
    insert_product(pool, pen, "PEN-1", "Pen", "active", 1).await;
    insert_product(pool, mug, "MUG-1", "Mug", "active", 1).await;
    assert_eq!(names_of(&app, "sort=name").await, ["Mug", "Pen"]);
    let hits = scrape_counter(&app, "agora_search_cache_hits_total").await;

    // Renamed without an announcement: the page keeps its cached order,
    // and its rows are read as they are now.
    sqlx::query("UPDATE rm_products SET name = 'Vase', version = 2 WHERE id = $1")
        .bind(mug)
        .execute(pool)
        .await
        .expect("rename");
    assert_eq!(
        names_of(&app, "sort=name").await,
        ["Vase", "Pen"],
        "the cached order, the fresh rows"
    );
    assert!(scrape_counter(&app, "agora_search_cache_hits_total").await >= hits + 1.0);
    // Another page size is another page: searched afresh.
    let first = app.get("/products?sort=name&limit=1").await;
    assert_eq!(first.body["items"][0]["name"], "Pen", "{}", first.body);

    // Another model's change leaves the page alone; the product's
    // announcement drops it.
    announce(&prefix, "orders", Uuid::now_v7(), 1).await;
    assert_eq!(names_of(&app, "sort=name").await, ["Vase", "Pen"]);
    announce(&prefix, "products", mug, 2).await;
    testkit::eventually_within(
        "the product's announcement reaches the search cache",
        Duration::from_secs(10),
        || async { names_of(&app, "sort=name").await == ["Pen", "Vase"] },
    )
    .await;
}

/// The names of `GET /products?<query>`'s first page, in its order.
async fn names_of(app: &TestApp, query: &str) -> Vec<String> {
    let answer = app.get(&format!("/products?{query}")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["name"].as_str().expect("a name").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_stock_alone_drops_only_the_searches_that_filter_on_stock() {
    let (app, prefix) = app_with_listener(Duration::from_secs(20)).await;
    let pool = &app.db.pool;
    let (pen, mug) = (Uuid::now_v7(), Uuid::now_v7());
    insert_product(pool, pen, "PEN-1", "Pen", "active", 1).await;
    insert_product(pool, mug, "MUG-1", "Mug", "active", 1).await;
    let (plain, stocked) = ("sort=name", "sort=name&in_stock=true");
    assert_eq!(names_of(&app, plain).await, ["Mug", "Pen"]);
    assert_eq!(names_of(&app, stocked).await, ["Mug", "Pen"]);
    // Renamed without an announcement: both pages keep their cached order.
    sqlx::query("UPDATE rm_products SET name = 'Vase', version = 2 WHERE id = $1")
        .bind(mug)
        .execute(pool)
        .await
        .expect("rename");
    assert_eq!(names_of(&app, stocked).await, ["Vase", "Pen"]);

    // The projector's announcement of a stock change (its header says so).
    let nats = async_nats::connect(testkit::nats_url())
        .await
        .expect("connect to NATS");
    let stock_only = projections::changes::Change {
        model: "products".into(),
        id: mug.to_string(),
        version: 2,
        stock_only: true,
    };
    projections::changes::announce(&nats, &prefix, vec![stock_only]).await;
    nats.flush().await.expect("flush");
    testkit::eventually_within(
        "the stock announcement makes the search on stock stale",
        Duration::from_secs(10),
        || async { names_of(&app, stocked).await == ["Pen", "Vase"] },
    )
    .await;
    assert_eq!(
        names_of(&app, plain).await,
        ["Vase", "Pen"],
        "a search not on stock is kept"
    );
    // A catalogue change drops it.
    announce(&prefix, "products", mug, 3).await;
    testkit::eventually_within(
        "the product's announcement reaches the search cache",
        Duration::from_secs(10),
        || async { names_of(&app, plain).await == ["Pen", "Vase"] },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_change_listener_facets_are_counted_every_time() {
    let app = spawn_app().await;
    let pool = &app.db.pool;
    let pen = Uuid::now_v7();
    insert_product(pool, pen, "PEN-1", "Pen", "active", 1).await;
    sqlx::query("UPDATE rm_products SET attributes = '{\"colour\": \"blue\"}'")
        .execute(pool)
        .await
        .expect("colour it");
    assert_eq!(colours(&app).await, [("blue".to_owned(), 1)]);
    sqlx::query("UPDATE rm_products SET attributes = '{\"colour\": \"red\"}'")
        .execute(pool)
        .await
        .expect("recolour");
    assert_eq!(colours(&app).await, [("red".to_owned(), 1)]);
}
