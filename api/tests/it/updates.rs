//! Live updates (api.md, Live updates) as Server-Sent Events: the current
//! state first, then each announced change; `Last-Event-ID` resumes after a
//! version; the cap on open streams answers 503 with `Retry-After`; and
//! shutting down ends every stream. The read model's rows are written here
//! and their changes announced as the projector announces them.

use std::sync::Arc;
use std::time::Duration;

use api::HttpOptions;
use reqwest::Method;
use serde_json::Value;
use testkit::TestDatabase;
use uuid::Uuid;

use crate::queries::insert_product;
use crate::support::{spawn_app_with, TestApp};

/// One SSE message.
#[derive(Debug, Clone, PartialEq)]
struct Message {
    id: String,
    event: String,
    data: Value,
}

/// Reads a `text/event-stream` answer message by message.
struct Reader {
    response: reqwest::Response,
    buffer: String,
}

impl Reader {
    /// The next message, skipping comments; `None` when the stream ended.
    async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut message = Message {
                    id: String::new(),
                    event: String::new(),
                    data: Value::Null,
                };
                let mut any = false;
                for line in block.lines() {
                    if let Some(id) = line.strip_prefix("id: ").or(line.strip_prefix("id:")) {
                        message.id = id.to_owned();
                        any = true;
                    } else if let Some(event) =
                        line.strip_prefix("event: ").or(line.strip_prefix("event:"))
                    {
                        message.event = event.to_owned();
                    } else if let Some(data) =
                        line.strip_prefix("data: ").or(line.strip_prefix("data:"))
                    {
                        message.data = serde_json::from_str(data).expect("data is JSON");
                    }
                }
                if any {
                    return Some(message);
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.response.chunk())
                .await
                .expect("a message within 20 s")
                .expect("read the stream")?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

async fn open(app: &TestApp, path: &str, last_event_id: Option<&str>) -> reqwest::Response {
    let mut request = app.request(Method::GET, path);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    request.send().await.expect("open the stream")
}

async fn reader(app: &TestApp, path: &str, last_event_id: Option<&str>) -> Reader {
    let response = open(app, path, last_event_id).await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    Reader {
        response,
        buffer: String::new(),
    }
}

/// An app (auth off) whose change listener runs on a prefix of its own.
async fn app(max_streams: usize) -> (TestApp, String) {
    let prefix = format!("sse{}", &Uuid::new_v4().simple().to_string()[..12]);
    let options = HttpOptions {
        nats_prefix: prefix.clone(),
        sse_max_streams: max_streams,
        ..HttpOptions::default()
    };
    let app = spawn_app_with(Arc::new(TestDatabase::with_pool_size(8).await), options).await;
    api::changes::spawn(app.nats.clone(), prefix.clone(), app.state.clone())
        .await
        .expect("start the change listener");
    (app, prefix)
}

/// A product in the store, and its read-model row at version 1.
async fn product(app: &TestApp) -> Uuid {
    let created = app
        .create_product(&format!("SSE-{}", Uuid::now_v7()), 1999, "EUR", 7)
        .await;
    let id = Uuid::parse_str(&created.id()).expect("uuid");
    insert_product(&app.db.pool, id, "SSE-1", "Lamp", "active", 1).await;
    id
}

/// The projector's part: the row moves to `version`, and it says so.
async fn change(app: &TestApp, prefix: &str, id: Uuid, version: i64, name: &str) {
    sqlx::query("UPDATE rm_products SET version = $2, name = $3 WHERE id = $1")
        .bind(id)
        .bind(version)
        .bind(name)
        .execute(&app.db.pool)
        .await
        .expect("update the row");
    app.nats
        .publish(
            schemas::subjects::change(prefix, "products", &id.to_string()),
            version.to_string().into(),
        )
        .await
        .expect("announce");
    app.nats.flush().await.expect("flush");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_sends_the_current_state_then_each_change_and_resumes_after_last_event_id() {
    let (app, prefix) = app(100).await;
    let id = product(&app).await;
    let path = format!("/products/{id}/updates");

    let mut stream = reader(&app, &path, None).await;
    let first = stream.next().await.expect("the current state");
    assert_eq!((first.id.as_str(), first.event.as_str()), ("1", "product"));
    assert_eq!(first.data["id"], id.to_string());
    assert_eq!(first.data["version"], 1);
    // The data is the GET's body.
    let get = app.get(&format!("/products/{id}")).await;
    assert_eq!(first.data, get.body);

    change(&app, &prefix, id, 3, "Desk lamp").await;
    let next = stream.next().await.expect("the change");
    assert_eq!(next.id, "3");
    assert_eq!(next.data["name"], "Desk lamp");
    drop(stream);

    // Resumed after 3: nothing until version 4, then 4 first.
    let mut resumed = reader(&app, &path, Some("3")).await;
    change(&app, &prefix, id, 4, "Floor lamp").await;
    let after = resumed.next().await.expect("the change after 3");
    assert_eq!(after.id, "4");
    assert_eq!(after.data["name"], "Floor lamp");

    // Resumed after 1 while at 4: the current state at once.
    let mut behind = reader(&app, &path, Some("1")).await;
    assert_eq!(behind.next().await.expect("caught up").id, "4");

    // A bad Last-Event-ID, an unknown product.
    let bad = open(&app, &path, Some("abc")).await;
    assert_eq!(bad.status().as_u16(), 400);
    let unknown = open(&app, &format!("/products/{}/updates", Uuid::now_v7()), None).await;
    assert_eq!(unknown.status().as_u16(), 404);
    let body: Value = unknown.json().await.expect("problem json");
    assert_eq!(body["type"], "/problems/not-found");
}

/// The stream as a browser's own `EventSource` reads it (Debian's chromium,
/// on the API reference's page, whose policy allows `connect-src 'self'`):
/// the state when it opened, then the change, each with its `lastEventId`.
/// (The stream may open after the change lands, and then its first
/// message is already version 2: the newest is always sent.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_event_source_reads_the_state_then_the_change() {
    let (app, prefix) = app(100).await;
    let id = product(&app).await;
    let page = app.url("/docs");
    let path = format!("/products/{id}/updates");
    let browser = tokio::spawn(async move {
        testkit::tools::run(
            &testkit::tools::root().join("ops/scripts/browser.sh"),
            &[
                std::ffi::OsStr::new(&page),
                testkit::tools::file("sse_messages.cjs").as_os_str(),
                std::ffi::OsStr::new(&path),
                std::ffi::OsStr::new("version"),
                std::ffi::OsStr::new("2"),
                std::ffi::OsStr::new("60000"),
            ],
        )
        .await
    });
    // Changed only once the browser's stream is open, so it must see both.
    let state = app.state.clone();
    let opened = tokio::time::timeout(Duration::from_secs(120), async move {
        while state.streams.open() == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(opened.is_ok(), "the browser never opened the stream");
    change(&app, &prefix, id, 2, "Desk lamp").await;

    let output = browser.await.expect("the browser task");
    assert!(output.status.success(), "{}", testkit::tools::said(&output));
    let seen: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("{}", testkit::tools::said(&output)));
    assert_eq!(seen["errors"], serde_json::json!([]), "page errors");
    // The reference's bundle probes `eval` (refused, as meant); nothing
    // refuses the stream.
    let violations = seen["violations"].as_array().expect("violations");
    assert!(
        violations.iter().all(|v| v["directive"] != "connect-src"),
        "{seen}"
    );
    let got = seen["result"].as_array().expect("the messages");
    let ids: Vec<&str> = got.iter().filter_map(|m| m["id"].as_str()).collect();
    assert!(ids == ["1", "2"] || ids == ["2"], "{seen}");
    assert!(got.iter().all(|m| m["event"] == "product"), "{seen}");
    if ids.len() == 2 {
        assert_eq!(got[0]["data"]["name"], "Lamp");
    }
    let last = &got[got.len() - 1]["data"];
    assert_eq!(last["name"], "Desk lamp");
    assert_eq!(last["id"], id.to_string());
    assert_eq!(last["version"], 2);
}

/// A cart's stream: the cart as its GET shows it (lines with the products'
/// prices), then each version of the cart the projector announces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cart_stream_sends_the_cart_then_each_of_its_versions() {
    let (app, prefix) = app(100).await;
    let created = app
        .create_product(&format!("SSE-{}", Uuid::now_v7()), 250, "EUR", 9)
        .await;
    let pen = created.id();
    let cart = app
        .send(
            app.request(Method::POST, "/carts")
                .json(&serde_json::json!({})),
        )
        .await;
    assert_eq!(cart.status, 201, "{}", cart.body);
    let (cart, token) = (
        cart.id(),
        cart.body["cart_token"].as_str().expect("token").to_owned(),
    );
    let project = || async {
        projections::replay(
            &app.db.pool,
            &projections::ReplayOptions::default(),
            &mut projections::replay::Quiet,
        )
        .await
        .expect("replay");
    };
    project().await;

    let path = format!("/carts/{cart}/updates");
    let response = app
        .request(Method::GET, &path)
        .header("x-cart-token", &token)
        .send()
        .await
        .expect("open");
    assert_eq!(response.status().as_u16(), 200);
    let mut stream = Reader {
        response,
        buffer: String::new(),
    };
    let first = stream.next().await.expect("the current state");
    assert_eq!((first.id.as_str(), first.event.as_str()), ("1", "cart"));
    assert_eq!(first.data["lines"], serde_json::json!([]));

    let set = app
        .send(
            app.request(Method::PUT, &format!("/carts/{cart}/lines/{pen}"))
                .header("x-cart-token", &token)
                .json(&serde_json::json!({ "quantity": 3 })),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    project().await;
    app.nats
        .publish(
            schemas::subjects::change(&prefix, "carts", &cart),
            "2".into(),
        )
        .await
        .expect("announce");
    app.nats.flush().await.expect("flush");
    let next = stream.next().await.expect("the change");
    assert_eq!((next.id.as_str(), next.event.as_str()), ("2", "cart"));
    assert_eq!(next.data["lines"][0]["quantity"], 3);
    assert_eq!(next.data["subtotal"]["amount"], 750);
    let get = app
        .send(
            app.request(Method::GET, &format!("/carts/{cart}"))
                .header("x-cart-token", &token),
        )
        .await;
    assert_eq!(next.data, get.body, "the data is the GET's body");

    let unknown = open(&app, &format!("/carts/{}/updates", Uuid::now_v7()), None).await;
    assert_eq!(unknown.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cap_a_stream_is_refused_with_retry_after_and_shutdown_ends_them() {
    let (app, _prefix) = app(2).await;
    let id = product(&app).await;
    let path = format!("/products/{id}/updates");
    let mut one = reader(&app, &path, None).await;
    let mut two = reader(&app, &path, None).await;
    one.next().await.expect("first");
    two.next().await.expect("first");
    let refused = open(&app, &path, None).await;
    assert_eq!(refused.status().as_u16(), 503);
    assert!(refused.headers().get("retry-after").is_some());
    let problem: Value = refused.json().await.expect("problem json");
    assert_eq!(problem["status"], 503);
    assert_eq!(app.state.streams.open(), 2);

    // A closed stream gives its place back.
    drop(two);
    let state = app.state.clone();
    testkit::eventually("the place is free", || {
        let state = state.clone();
        async move { state.streams.open() < 2 }
    })
    .await;
    let mut three = reader(&app, &path, None).await;
    three.next().await.expect("first");

    // SIGTERM's first step ends every stream cleanly.
    app.state.start_draining();
    assert_eq!(one.next().await, None);
    assert_eq!(three.next().await, None);
}
