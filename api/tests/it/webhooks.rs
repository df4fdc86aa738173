//! `/webhooks` (api.md, Webhooks): each row of the table with its exact
//! status, admin only, secrets shown only when made and sealed at rest,
//! and URLs refused when they point inside (SSRF), with nothing written.
//! Deliveries themselves are tested through the binary (ops/tests/it/webhooks.rs).

use api::auth::Role;
use api::HttpOptions;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth::token;
use crate::sign_in::{assert_problem, authed, new_db, prefix};
use crate::support::{spawn_app_with, Answer, TestApp};

fn admin() -> String {
    token("root", Role::Admin)
}

async fn app(allow_loopback: bool) -> TestApp {
    let options = HttpOptions {
        webhook_addresses: webhooks::AddressPolicy { allow_loopback },
        ..authed(&prefix())
    };
    spawn_app_with(new_db().await, options).await
}

impl TestApp {
    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut request = self.bearer(method, path, &admin());
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }
}

async fn endpoints(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints")
        .fetch_one(&app.db.pool)
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_of_the_table_answers_its_status() {
    let app = app(true).await;
    // POST /webhooks: 201 with the secret, once.
    let created = app
        .admin(
            Method::POST,
            "/webhooks",
            Some(json!({ "url": "http://127.0.0.1:9/hook", "events": ["order.*", "user.registered"], "description": "ERP" })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.id();
    let secret = created.body["secret"]
        .as_str()
        .expect("a secret")
        .to_owned();
    let raw = secret.strip_prefix("whsec_").expect("whsec_ prefix");
    assert_eq!(STANDARD.decode(raw).expect("base64").len(), 32);
    assert_eq!(created.body["url"], "http://127.0.0.1:9/hook");
    assert_eq!(
        created.body["events"],
        json!(["order.*", "user.registered"])
    );
    assert_eq!(created.body["description"], "ERP");
    assert_eq!(created.body["status"], "enabled");
    assert!(created.body["created_at"].is_string());
    assert_eq!(
        created
            .headers
            .get("location")
            .and_then(|v| v.to_str().ok()),
        Some(format!("/webhooks/{id}").as_str())
    );
    assert_eq!(
        created
            .headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    // Sealed at rest: the secret's bytes are nowhere in the table.
    let raw_bytes = STANDARD.decode(raw).expect("base64");
    let stored: Vec<u8> = sqlx::query_scalar("SELECT secret FROM webhook_endpoints WHERE id = $1")
        .bind(Uuid::parse_str(&id).expect("uuid"))
        .fetch_one(&app.db.pool)
        .await
        .expect("row");
    assert!(!stored.windows(32).any(|w| w == raw_bytes.as_slice()));

    // GET /webhooks, GET /webhooks/{id}: without the secret.
    let list = app.admin(Method::GET, "/webhooks", None).await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(list.body["items"].as_array().map(Vec::len), Some(1));
    assert!(list.body["items"][0].get("secret").is_none());
    assert!(list.body["next_cursor"].is_null());
    let one = app
        .admin(Method::GET, &format!("/webhooks/{id}"), None)
        .await;
    assert_eq!(one.status, 200, "{}", one.body);
    assert!(one.body.get("secret").is_none());
    assert_eq!(one.body["id"], id.as_str());

    // PATCH /webhooks/{id}: 200.
    let patched = app
        .admin(
            Method::PATCH,
            &format!("/webhooks/{id}"),
            Some(json!({ "status": "disabled", "events": ["*"] })),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.body["status"], "disabled");
    assert_eq!(patched.body["events"], json!(["*"]));
    assert_eq!(patched.body["description"], "ERP");
    let bad = app
        .admin(
            Method::PATCH,
            &format!("/webhooks/{id}"),
            Some(json!({ "status": "paused" })),
        )
        .await;
    assert_problem(&bad, 422, "/problems/validation");
    assert_eq!(bad.body["errors"][0]["field"], "status");
    // The fuzzer's case: a NUL in the description, with `url: null`.
    let nul = app
        .admin(
            Method::PATCH,
            &format!("/webhooks/{id}"),
            Some(json!({ "description": "\u{1b}\u{0}azM", "url": null })),
        )
        .await;
    assert_problem(&nul, 422, "/problems/validation");
    assert_eq!(nul.body["errors"][0]["field"], "description");
    let kept = app
        .admin(Method::GET, &format!("/webhooks/{id}"), None)
        .await;
    assert_eq!(kept.body["description"], "ERP", "nothing was written");

    // POST /webhooks/{id}/rotate-secret: 200 {secret}, a new one.
    let rotated = app
        .admin(Method::POST, &format!("/webhooks/{id}/rotate-secret"), None)
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let new_secret = rotated.body["secret"].as_str().expect("a secret");
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    let overlap: bool = sqlx::query_scalar(
        "SELECT previous_secret IS NOT NULL AND previous_until > now() + interval '23 hours' \
         FROM webhook_endpoints WHERE id = $1",
    )
    .bind(Uuid::parse_str(&id).expect("uuid"))
    .fetch_one(&app.db.pool)
    .await
    .expect("row");
    assert!(overlap, "the old secret signs for 24 h");

    // GET /webhooks/{id}/deliveries: a list; ?status= one of three.
    let deliveries = app
        .admin(
            Method::GET,
            &format!("/webhooks/{id}/deliveries?status=failed"),
            None,
        )
        .await;
    assert_eq!(deliveries.status, 200, "{}", deliveries.body);
    assert_eq!(deliveries.body, json!({ "items": [], "next_cursor": null }));
    let bad = app
        .admin(
            Method::GET,
            &format!("/webhooks/{id}/deliveries?status=lost"),
            None,
        )
        .await;
    assert_problem(&bad, 400, "/problems/bad-request");

    // POST .../deliveries/{delivery_id}/retry: 202, the failed delivery is pending again.
    let delivery = failed_delivery(&app, &id).await;
    let retried = app
        .admin(
            Method::POST,
            &format!("/webhooks/{id}/deliveries/{delivery}/retry"),
            None,
        )
        .await;
    assert_eq!(retried.status, 202, "{}", retried.body);
    assert_eq!(retried.body["status"], "pending");
    assert_eq!(retried.body["id"], delivery.to_string());
    let listed = app
        .admin(
            Method::GET,
            &format!("/webhooks/{id}/deliveries?status=pending"),
            None,
        )
        .await;
    let item = &listed.body["items"][0];
    for field in [
        "id",
        "event_id",
        "event_type",
        "aggregate_id",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "next_attempt_at",
        "created_at",
        "delivered_at",
    ] {
        assert!(item.get(field).is_some(), "{field} in {item}");
    }
    assert_eq!(item["event_type"], "order.placed");
    assert_eq!(item["last_status_code"], 500);
    let unknown = app
        .admin(
            Method::POST,
            &format!("/webhooks/{id}/deliveries/{}/retry", Uuid::now_v7()),
            None,
        )
        .await;
    assert_problem(&unknown, 404, "/problems/not-found");

    // DELETE /webhooks/{id}: 204, then it is gone.
    let deleted = app
        .admin(Method::DELETE, &format!("/webhooks/{id}"), None)
        .await;
    assert_eq!(deleted.status, 204);
    for (method, path) in [
        (Method::GET, format!("/webhooks/{id}")),
        (Method::DELETE, format!("/webhooks/{id}")),
        (Method::POST, format!("/webhooks/{id}/rotate-secret")),
        (Method::GET, format!("/webhooks/{id}/deliveries")),
    ] {
        let gone = app.admin(method.clone(), &path, None).await;
        assert_problem(&gone, 404, "/problems/not-found");
    }
    let gone = app
        .admin(
            Method::PATCH,
            &format!("/webhooks/{id}"),
            Some(json!({ "description": "x" })),
        )
        .await;
    assert_problem(&gone, 404, "/problems/not-found");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries")
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(rows, 0, "its deliveries went with it");
}

/// A delivery that used all its attempts, as the loop leaves one.
async fn failed_delivery(app: &TestApp, endpoint: &str) -> Uuid {
    let order = Uuid::now_v7();
    let event_id = format!("order:{order}:1");
    sqlx::query(
        "INSERT INTO webhook_events (event_id, event_type, aggregate_type, aggregate_id, sequence, occurred_at) \
         VALUES ($1, 'order.placed', 'order', $2, 1, now())",
    )
    .bind(&event_id)
    .bind(order)
    .execute(&app.db.pool)
    .await
    .expect("event");
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, aggregate_id, sequence, status, attempts, last_status_code, last_error) \
         VALUES ($1, $2, $3, $4, 1, 'failed', 8, 500, 'answered 500')",
    )
    .bind(id)
    .bind(Uuid::parse_str(endpoint).expect("uuid"))
    .bind(&event_id)
    .bind(order)
    .execute(&app.db.pool)
    .await
    .expect("delivery");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_admin_manages_webhooks() {
    let app = app(true).await;
    let body = json!({ "url": "http://127.0.0.1:9/hook", "events": ["*"] });
    let customer = token(&Uuid::now_v7().to_string(), Role::Customer);
    let refused = app
        .send(app.bearer(Method::POST, "/webhooks", &customer).json(&body))
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let anonymous = app.post("/webhooks", body).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    let listed = app
        .send(app.bearer(Method::GET, "/webhooks", &customer))
        .await;
    assert_eq!(listed.status, 403);
    assert_eq!(endpoints(&app).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_that_point_inside_are_refused_and_nothing_is_written() {
    let strict = app(false).await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://[::1]/hook",
        "https://10.0.0.1/hook",
        "https://172.16.5.4/hook",
        "https://192.168.1.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[fe80::1]/hook",
        "https://[fd00::1]/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "https://0.0.0.0/hook",
        "https://100.64.0.1/hook",
        "http://93.184.215.14/hook",
        "ftp://93.184.215.14/hook",
        "https://user:pass@93.184.215.14/hook",
        "not a url",
        "https://no-such-host.invalid/hook",
    ] {
        let refused = strict
            .admin(
                Method::POST,
                "/webhooks",
                Some(json!({ "url": url, "events": ["*"] })),
            )
            .await;
        assert_problem(&refused, 422, "/problems/validation");
        assert_eq!(
            refused.body["errors"][0]["field"], "url",
            "{url}: {}",
            refused.body
        );
    }
    // Loopback allowed is loopback only: inside addresses stay refused,
    // and http only to loopback.
    let loopback = app(true).await;
    for url in [
        "https://10.0.0.1/hook",
        "http://192.168.1.1/hook",
        "https://169.254.169.254/",
        "http://93.184.215.14/hook",
    ] {
        let refused = loopback
            .admin(
                Method::POST,
                "/webhooks",
                Some(json!({ "url": url, "events": ["*"] })),
            )
            .await;
        assert_problem(&refused, 422, "/problems/validation");
    }
    // PATCH is held to the same rules.
    let created = loopback
        .admin(
            Method::POST,
            "/webhooks",
            Some(json!({ "url": "http://localhost:9/hook", "events": ["*"] })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let moved = loopback
        .admin(
            Method::PATCH,
            &format!("/webhooks/{}", created.id()),
            Some(json!({ "url": "https://169.254.169.254/" })),
        )
        .await;
    assert_problem(&moved, 422, "/problems/validation");
    let url: String = sqlx::query_scalar("SELECT url FROM webhook_endpoints")
        .fetch_one(&loopback.db.pool)
        .await
        .expect("url");
    assert_eq!(url, "http://localhost:9/hook");
    // A public address literal is fine (no DNS needed).
    let public = strict
        .admin(
            Method::POST,
            "/webhooks",
            Some(json!({ "url": "https://93.184.215.14/hook", "events": ["*"] })),
        )
        .await;
    assert_eq!(public.status, 201, "{}", public.body);
    assert_eq!(
        endpoints(&strict).await,
        1,
        "only the public one was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_are_refused_and_nothing_is_written() {
    let app = app(true).await;
    let cases = [
        (
            json!({ "url": "http://127.0.0.1:9/", "events": [] }),
            422,
            "events",
        ),
        (
            json!({ "url": "http://127.0.0.1:9/", "events": ["order.nope"] }),
            422,
            "events[0]",
        ),
        (
            json!({ "url": "http://127.0.0.1:9/", "events": ["*", "nope.*"] }),
            422,
            "events[1]",
        ),
        (
            json!({ "url": "http://127.0.0.1:9/", "events": ["*"], "description": "x".repeat(501) }),
            422,
            "description",
        ),
        (
            json!({ "url": "http://127.0.0.1:9/a\u{0}b", "events": ["*"] }),
            422,
            "url",
        ),
        (
            json!({ "url": "http://127.0.0.1:9/a b", "events": ["*"] }),
            422,
            "url",
        ),
        (
            json!({ "url": "http://127.0.0.1:9/", "events": ["*"], "description": "a\u{0}b" }),
            422,
            "description",
        ),
        (
            json!({ "url": "http://127.0.0.1:9/", "events": ["*"], "description": "bell\u{7}" }),
            422,
            "description",
        ),
    ];
    for (body, status, field) in cases {
        let refused = app
            .admin(Method::POST, "/webhooks", Some(body.clone()))
            .await;
        assert_problem(&refused, status, "/problems/validation");
        assert_eq!(refused.body["errors"][0]["field"], field, "{body}");
    }
    for body in [
        json!({ "url": "http://127.0.0.1:9/", "events": ["*"], "secret": "mine" }),
        json!({ "url": "http://127.0.0.1:9/" }),
        json!({ "url": 5, "events": ["*"] }),
    ] {
        let refused = app
            .admin(Method::POST, "/webhooks", Some(body.clone()))
            .await;
        assert_eq!(refused.status, 400, "{body}: {}", refused.body);
    }
    let not_uuid = app.admin(Method::GET, "/webhooks/nope", None).await;
    assert_problem(&not_uuid, 404, "/problems/not-found");
    assert_eq!(endpoints(&app).await, 0);
}
