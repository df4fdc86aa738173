//! A storefront's view of an order: Debian's chromium opens its own
//! `EventSource` on `/orders/{id}/updates` of a real `agora serve` and sees
//! the order go from `pending` to `confirmed`. The saga runs in a process of
//! its own, started only once the browser's stream is open, so the order is
//! still pending when the stream starts, whatever the machine's speed.

use std::ffi::OsStr;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::{tools, TestDatabase};

use crate::support::{eventually_within, migrate_for, test_prefix, Agora};

async fn post(http: &reqwest::Client, url: String, body: Value) -> Value {
    let response = http.post(&url).json(&body).send().await.expect("send");
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    assert!(status.is_success(), "{url}: {status} {body}");
    body
}

/// The value of an unlabelled gauge in `/metrics`.
async fn gauge(http: &reqwest::Client, base: &str, name: &str) -> Option<f64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_sees_an_order_go_from_pending_to_confirmed() {
    let db = TestDatabase::with_pool_size(4).await;
    let nats_url = testkit::nats_url();
    let prefix = test_prefix();
    migrate_for(&db, &nats_url, &prefix).await;
    let mut api = Agora::new(&db, &nats_url, &prefix);
    let mut relay = Agora::new(&db, &nats_url, &prefix);
    let mut projector = Agora::new(&db, &nats_url, &prefix);
    let mut saga = Agora::new(&db, &nats_url, &prefix);
    api.start_with(&[("AGORA_ROLE", "api")]);
    relay.start_with(&[("AGORA_ROLE", "relay")]);
    projector.start_with(&[("AGORA_ROLE", "projector")]);
    let http = reqwest::Client::new();
    let base = api.base();
    api.wait_ready().await;

    let product = post(
        &http,
        format!("{base}/products"),
        json!({ "sku": "SSE-ORDER", "name": "Lamp", "price": { "amount": 900, "currency": "EUR" }, "stock": 5 }),
    )
    .await;
    let user = post(
        &http,
        format!("{base}/users"),
        json!({ "email": "sse-order@example.com", "name": "Ada" }),
    )
    .await;
    let order = post(
        &http,
        format!("{base}/orders"),
        json!({ "user_id": user["id"], "lines": [{ "product_id": product["id"], "quantity": 1 }], "payment_token": "tok_ok" }),
    )
    .await;
    let order = order["id"].as_str().expect("an id").to_owned();
    // The projector has the order (pending) before the browser looks.
    eventually_within(
        "the order is in its read model",
        Duration::from_secs(30),
        || {
            let (http, url) = (http.clone(), format!("{base}/orders/{order}"));
            async move {
                http.get(url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        },
    )
    .await;

    let browser = tokio::spawn({
        let (page, path) = (format!("{base}/docs"), format!("/orders/{order}/updates"));
        async move {
            tools::run(
                &tools::root().join("ops/scripts/browser.sh"),
                &[
                    OsStr::new(&page),
                    tools::file("sse_messages.cjs").as_os_str(),
                    OsStr::new(&path),
                    OsStr::new("status"),
                    OsStr::new("confirmed"),
                    OsStr::new("90000"),
                ],
            )
            .await
        }
    });
    eventually_within(
        "the browser's stream is open",
        Duration::from_secs(120),
        || {
            let (http, base) = (http.clone(), base.clone());
            async move {
                gauge(&http, &base, "agora_sse_streams_open")
                    .await
                    .unwrap_or(0.0)
                    >= 1.0
            }
        },
    )
    .await;
    saga.start_with(&[("AGORA_ROLE", "saga")]);

    let output = browser.await.expect("the browser task");
    assert!(output.status.success(), "{}", tools::said(&output));
    let seen: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("{}", tools::said(&output)));
    assert_eq!(seen["errors"], json!([]), "page errors");
    let got = seen["result"].as_array().expect("the messages");
    let statuses: Vec<&str> = got
        .iter()
        .filter_map(|m| m["data"]["status"].as_str())
        .collect();
    assert_eq!(statuses.first(), Some(&"pending"), "{seen}");
    assert_eq!(statuses.last(), Some(&"confirmed"), "{seen}");
    let ids: Vec<i64> = got
        .iter()
        .filter_map(|m| m["id"].as_str()?.parse().ok())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "versions rise: {seen}");
    assert!(
        got.iter()
            .all(|m| m["event"] == "order" && m["data"]["id"] == order.as_str()),
        "{seen}"
    );
    for agora in [&mut api, &mut relay, &mut projector, &mut saga] {
        agora.kill();
    }
}
