//! Webhook deliveries end to end, through the real binary: events relayed
//! to JetStream, enqueued by the webhook subscriber, delivered by the
//! delivery loop to a receiver in this test that fails twice per event
//! before it accepts. Signatures are checked by the Standard Webhooks
//! project's own library (`ops/tools/webhook_verify.cjs`), not by our code.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{json, Value};
use testkit::{tools, TestDatabase};
use uuid::Uuid;

use crate::support::{eventually_within, migrate_for, test_prefix, token, Agora};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    /// Answers 500 to the first this many attempts of each webhook-id.
    fail_first: usize,
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let received = Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let mut got = receiver.got.lock().expect("lock");
    let earlier = got.iter().filter(|r| r.id == received.id).count();
    got.push(received);
    if earlier < receiver.fail_first {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

async fn start_receiver(fail_first: usize) -> (SocketAddr, Receiver) {
    let receiver = Receiver {
        fail_first,
        ..Receiver::default()
    };
    let app = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the receiver");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, receiver)
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Checks every request with `standardwebhooks` under `secret`; the tool's
/// own words on failure.
async fn verify(secret: &str, requests: &[Received]) {
    let deliveries: Vec<Value> = requests
        .iter()
        .map(|r| {
            json!({
                "secret": secret,
                "headers": {
                    "webhook-id": r.id,
                    "webhook-timestamp": r.timestamp,
                    "webhook-signature": r.signature,
                },
                "body": r.body,
            })
        })
        .collect();
    let file = std::env::temp_dir().join(format!("agora-webhooks-{}.json", Uuid::now_v7()));
    std::fs::write(&file, serde_json::to_vec(&deliveries).expect("json")).expect("write");
    let node = std::path::PathBuf::from("node");
    let output = tools::run(
        &node,
        &[
            tools::file("webhook_verify.cjs").as_os_str(),
            file.as_os_str(),
        ],
    )
    .await;
    let _ = std::fs::remove_file(&file);
    assert!(
        output.status.success(),
        "standardwebhooks refused a delivery:\n{}",
        tools::said(&output)
    );
}

async fn bodies_built(db: &TestDatabase, n: i64) {
    eventually_within(
        "the event's body is built",
        Duration::from_secs(30),
        || async {
            let built: i64 =
                sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE body IS NOT NULL")
                    .fetch_one(&db.pool)
                    .await
                    .unwrap_or(0);
            built >= n
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_retried_with_one_id_signed_verifiably_and_in_order() {
    let db = TestDatabase::with_pool_size(4).await;
    let nats_url = testkit::nats_url();
    let prefix = test_prefix();
    migrate_for(&db, &nats_url, &prefix).await;
    let mut agora = Agora::new(&db, &nats_url, &prefix);
    agora.start_with(&[
        ("AGORA_WEBHOOKS_ALLOW_LOOPBACK", "true"),
        // 5 s and 5 min become 5 ms and 300 ms.
        ("AGORA_WEBHOOK_RETRY_SCALE", "0.001"),
    ]);
    let http = reqwest::Client::new();
    let base = agora.base();
    agora.wait_ready().await;
    let (addr, receiver) = start_receiver(2).await;

    let (status, endpoint) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/webhooks"),
        Some(json!({ "url": format!("http://{addr}/hook"), "events": ["product.*"], "description": "test receiver" })),
    )
    .await;
    assert_eq!(status, 201, "{endpoint}");
    let secret = endpoint["secret"].as_str().expect("a secret").to_owned();
    let webhook = endpoint["id"].as_str().expect("an id").to_owned();

    // Four events of one product: created, then three stock changes.
    let (status, product) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/products"),
        Some(json!({ "sku": "HOOK-1", "name": "Lamp", "price": { "amount": 900, "currency": "EUR" }, "stock": 5 })),
    )
    .await;
    assert_eq!(status, 201, "{product}");
    let product = product["id"].as_str().expect("an id").to_owned();
    // Each body is taken once the read model reaches its event; the next
    // command waits for that, so each shows its own version.
    bodies_built(&db, 1).await;
    for (built, delta) in [(2, 1), (3, 2), (4, 3)] {
        let (status, body) = call(
            &http,
            reqwest::Method::POST,
            format!("{base}/products/{product}/stock"),
            Some(json!({ "delta": delta })),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        bodies_built(&db, built).await;
    }

    let got = Arc::clone(&receiver.got);
    eventually_within(
        "four events delivered, each on its third attempt",
        Duration::from_secs(60),
        || {
            let got = Arc::clone(&got);
            async move { got.lock().expect("lock").len() >= 12 }
        },
    )
    .await;
    let requests = receiver.got.lock().expect("lock").clone();
    assert_eq!(
        requests.len(),
        12,
        "no attempt after a success: {requests:#?}"
    );

    // One webhook-id per event, the same on each of its three attempts,
    // with the same body.
    let mut attempts: HashMap<&str, Vec<&Received>> = HashMap::new();
    for request in &requests {
        attempts.entry(&request.id).or_default().push(request);
    }
    assert_eq!(attempts.len(), 4, "one id per event");
    for (id, tries) in &attempts {
        assert!(id.starts_with("msg_"), "{id}");
        assert_eq!(tries.len(), 3, "{id}");
        assert!(
            tries.iter().all(|t| t.body == tries[0].body),
            "{id}: one body"
        );
    }

    // In event order: each event's first attempt comes after the previous
    // event's last, and the versions the bodies show rise.
    let mut order: Vec<&str> = Vec::new();
    for request in &requests {
        if order.last() != Some(&request.id.as_str()) {
            order.push(&request.id);
        }
    }
    assert_eq!(
        order.len(),
        4,
        "attempts of different events never interleave: {order:?}"
    );
    let bodies: Vec<Value> = order
        .iter()
        .map(|id| serde_json::from_str(&attempts[id][0].body).expect("a JSON body"))
        .collect();
    let types: Vec<&str> = bodies
        .iter()
        .map(|b| b["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        types,
        [
            "product.created",
            "product.stock_changed",
            "product.stock_changed",
            "product.stock_changed"
        ]
    );
    let versions: Vec<i64> = bodies
        .iter()
        .map(|b| b["data"]["version"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(
        versions,
        [1, 2, 3, 4],
        "each body is the product after its event"
    );
    assert_eq!(bodies[3]["data"]["stock"]["available"], 11);
    assert_eq!(bodies[0]["data"]["id"], product.as_str());
    assert!(bodies[0]["timestamp"].is_string());

    verify(&secret, &requests).await;

    // The log says so.
    let (status, log) = call(
        &http,
        reqwest::Method::GET,
        format!("{base}/webhooks/{webhook}/deliveries?status=delivered"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{log}");
    let items = log["items"].as_array().expect("items");
    assert_eq!(items.len(), 4, "{log}");
    for item in items {
        assert_eq!(item["attempts"], 3, "{item}");
        assert_eq!(item["last_status_code"], 204, "{item}");
        assert_eq!(item["aggregate_id"], product.as_str());
        assert!(item["delivered_at"].is_string());
        assert!(item["next_attempt_at"].is_null());
    }

    // After a rotation, deliveries carry both signatures: a receiver with
    // either secret accepts them.
    let (status, rotated) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/webhooks/{webhook}/rotate-secret"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().expect("a secret").to_owned();
    assert_ne!(new_secret, secret);
    let (status, body) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/products/{product}/price"),
        Some(json!({ "price": { "amount": 1200, "currency": "EUR" } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    eventually_within(
        "the price change delivered",
        Duration::from_secs(60),
        || {
            let got = Arc::clone(&got);
            async move { got.lock().expect("lock").len() >= 15 }
        },
    )
    .await;
    let after: Vec<Received> = receiver.got.lock().expect("lock")[12..].to_vec();
    assert!(
        after.iter().all(|r| r.signature.split(' ').count() == 2),
        "{after:#?}"
    );
    verify(&secret, &after).await;
    verify(&new_secret, &after).await;
    let price: Value = serde_json::from_str(&after[0].body).expect("json");
    assert_eq!(price["type"], "product.price_changed");
    assert_eq!(price["data"]["price"]["amount"], 1200);
}

const HOOK_SECRET: &str = "webhook-test-secret";

/// A request as the bearer of `token`.
async fn call_as(
    http: &reqwest::Client,
    token: &str,
    method: reqwest::Method,
    url: String,
    body: Value,
) -> (u16, Value) {
    let response = http
        .request(method, url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_is_delivered_as_cart_checked_out_with_the_closed_cart() {
    let db = TestDatabase::with_pool_size(4).await;
    let nats_url = testkit::nats_url();
    let prefix = test_prefix();
    migrate_for(&db, &nats_url, &prefix).await;
    let mut agora = Agora::new(&db, &nats_url, &prefix);
    agora.start_with(&[
        ("AGORA_WEBHOOKS_ALLOW_LOOPBACK", "true"),
        ("AGORA_AUTH", "on"),
        ("AGORA_JWT_SECRET", HOOK_SECRET),
    ]);
    let http = reqwest::Client::new();
    let base = agora.base();
    agora.wait_ready().await;
    let (addr, receiver) = start_receiver(0).await;
    let admin = token(HOOK_SECRET, "ops", "admin").await;
    let post = reqwest::Method::POST;

    let (status, endpoint) = call_as(
        &http,
        &admin,
        post.clone(),
        format!("{base}/webhooks"),
        json!({ "url": format!("http://{addr}/hook"), "events": ["cart.*"] }),
    )
    .await;
    assert_eq!(status, 201, "{endpoint}");
    let secret = endpoint["secret"].as_str().expect("a secret").to_owned();

    let (status, product) = call_as(
        &http,
        &admin,
        post.clone(),
        format!("{base}/products"),
        json!({ "sku": "HOOK-CART", "name": "Lamp", "price": { "amount": 900, "currency": "EUR" }, "stock": 5 }),
    )
    .await;
    assert_eq!(status, 201, "{product}");
    let product = product["id"].as_str().expect("an id").to_owned();
    let (status, user) = call(
        &http,
        post.clone(),
        format!("{base}/users"),
        Some(json!({ "email": "hook-cart@example.com", "name": "Ada" })),
    )
    .await;
    assert_eq!(status, 201, "{user}");
    let customer = token(HOOK_SECRET, user["id"].as_str().expect("an id"), "customer").await;

    let (status, cart) = call_as(
        &http,
        &customer,
        post.clone(),
        format!("{base}/carts"),
        json!({}),
    )
    .await;
    assert_eq!(status, 201, "{cart}");
    let cart = cart["id"].as_str().expect("an id").to_owned();
    let (status, body) = call_as(
        &http,
        &customer,
        reqwest::Method::PUT,
        format!("{base}/carts/{cart}/lines/{product}"),
        json!({ "quantity": 2 }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, order) = call_as(
        &http,
        &customer,
        post.clone(),
        format!("{base}/carts/{cart}/checkout"),
        json!({ "payment_token": "tok_ok", "shipping_address": { "name": "Ada", "line1": "1 Main St", "city": "London", "postal_code": "N1", "country": "GB" } }),
    )
    .await;
    assert_eq!(status, 201, "{order}");

    let got = Arc::clone(&receiver.got);
    eventually_within("the checkout delivered", Duration::from_secs(60), || {
        let got = Arc::clone(&got);
        async move { !got.lock().expect("lock").is_empty() }
    })
    .await;
    let requests = receiver.got.lock().expect("lock").clone();
    // The cart's other events (created, a line set) are not announced.
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let body: Value = serde_json::from_str(&requests[0].body).expect("a JSON body");
    assert_eq!(body["type"], "cart.checked_out");
    assert_eq!(body["data"]["id"], cart.as_str());
    assert_eq!(body["data"]["status"], "checked_out");
    assert_eq!(body["data"]["order_id"], order["id"]);
    assert_eq!(body["data"]["lines"][0]["quantity"], 2);
    assert!(body["data"]["expires_at"].is_null(), "{body}");
    verify(&secret, &requests).await;
}

/// SIGKILL at random points while products change and their events are
/// delivered: every product event is delivered (a delivery row per event,
/// each received), under one webhook-id per event, and for each product in
/// event order by first arrival; an attempt cut by the kill is simply tried
/// again once its lease runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_deliveries_loses_no_event_and_keeps_each_products_order() {
    let db = TestDatabase::with_pool_size(4).await;
    let nats_url = testkit::nats_url();
    let prefix = test_prefix();
    migrate_for(&db, &nats_url, &prefix).await;
    let mut agora = Agora::new(&db, &nats_url, &prefix);
    let env = [
        ("AGORA_WEBHOOKS_ALLOW_LOOPBACK", "true"),
        ("AGORA_WEBHOOK_RETRY_SCALE", "0.001"),
    ];
    agora.start_with(&env);
    let http = reqwest::Client::new();
    let base = agora.base();
    let ready = || {
        let (http, url) = (http.clone(), format!("{base}/readyz"));
        async move {
            http.get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    };
    eventually_within("the server is ready", Duration::from_secs(30), ready).await;
    let (addr, receiver) = start_receiver(0).await;
    let (status, endpoint) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/webhooks"),
        Some(json!({ "url": format!("http://{addr}/hook"), "events": ["product.*"] })),
    )
    .await;
    assert_eq!(status, 201, "{endpoint}");

    let load = tokio::spawn(crate::support::load(base.clone(), 4, 600));
    let mut kills = 0;
    let mut random = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    let seed = random;
    while !load.is_finished() {
        random = random
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        tokio::time::sleep(Duration::from_millis(200 + (random >> 33) % 600)).await;
        if load.is_finished() {
            break;
        }
        agora.kill();
        kills += 1;
        agora.start_with(&env);
    }
    assert!(load.await.expect("load") >= 600, "seed {seed}");
    assert!(kills >= 1, "seed {seed}: the load ended before any kill");

    // Every product event the store holds has its delivery, delivered.
    let product_events = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE aggregate_type = 'product'")
            .fetch_one(&db.pool)
            .await
            .unwrap_or(-1)
    };
    eventually_within(
        "every product event delivered",
        Duration::from_secs(180),
        || async {
            let delivered: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap_or(-1);
            delivered == product_events().await
        },
    )
    .await;
    let deliveries: Vec<(Uuid, Uuid, i64)> =
        sqlx::query_as("SELECT id, aggregate_id, sequence FROM webhook_deliveries")
            .fetch_all(&db.pool)
            .await
            .expect("deliveries");
    assert_eq!(
        deliveries.len() as i64,
        product_events().await,
        "seed {seed}"
    );
    let by_id: HashMap<String, (Uuid, i64)> = deliveries
        .iter()
        .map(|(id, aggregate, sequence)| {
            (webhooks::deliver::webhook_id(*id), (*aggregate, *sequence))
        })
        .collect();

    let requests = receiver.got.lock().expect("lock").clone();
    let mut first_seen: Vec<&str> = Vec::new();
    for request in &requests {
        assert!(
            by_id.contains_key(&request.id),
            "seed {seed}: an unknown id {}",
            request.id
        );
        if !first_seen.contains(&request.id.as_str()) {
            first_seen.push(&request.id);
        }
    }
    assert_eq!(
        first_seen.len(),
        deliveries.len(),
        "seed {seed}: every delivery received"
    );
    let mut last: HashMap<Uuid, i64> = HashMap::new();
    for id in first_seen {
        let (aggregate, sequence) = by_id[id];
        let before = last.insert(aggregate, sequence).unwrap_or(0);
        assert!(
            sequence > before,
            "seed {seed}: product {aggregate}'s event {sequence} arrived before {before}"
        );
    }
    agora.kill();
}
