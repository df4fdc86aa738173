//! The test gateway over HTTP, on its own database and a port-0 listener.

use std::time::Duration;

use futures::future::join_all;
use gateway::{ChargeRecord, GatewayOptions, RefundRecord};
use serde_json::{json, Value};
use testkit::TestDatabase;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The token the tests' gateway takes (`AGORA_GATEWAY_TOKEN`); the tests'
/// client sends it on every request.
const TOKEN: &str = "gateway-tests-token";

struct Gateway {
    url: String,
    http: reqwest::Client,
    db: TestDatabase,
    _stop: oneshot::Sender<()>,
}

async fn spawn() -> Gateway {
    let db = TestDatabase::new().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let options = GatewayOptions {
        pool: db.pool.clone(),
        slow_delay: Duration::from_millis(300),
        token: Some(TOKEN.to_owned()),
    };
    tokio::spawn(gateway::run(listener, options, async move {
        let _ = stopped.await;
    }));
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("a header value"),
    );
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    for _ in 0..100 {
        if http.get(format!("{url}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Gateway {
        url,
        http,
        db,
        _stop: stop,
    }
}

impl Gateway {
    async fn post(&self, path: &str, key: Option<&str>, body: Value) -> (u16, Value) {
        let mut request = self.http.post(format!("{}{path}", self.url)).json(&body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn charge(&self, key: &str, token: &str) -> (u16, Value) {
        self.post(
            "/charges",
            Some(key),
            json!({ "amount": 1200, "currency": "EUR", "token": token }),
        )
        .await
    }

    async fn refund(&self, key: &str, charge_key: &str) -> (u16, Value) {
        self.post("/refunds", Some(key), json!({ "charge_key": charge_key }))
            .await
    }

    async fn charges(&self) -> Vec<ChargeRecord> {
        let url = format!("{}/charges", self.url);
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn refunds(&self) -> Vec<RefundRecord> {
        let url = format!("{}/refunds", self.url);
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_charge_gets_the_first_answer_and_charges_once() {
    let gateway = spawn().await;
    let (status, first) = gateway.charge("k1", "tok_ok").await;
    assert_eq!((status, first["status"].as_str()), (200, Some("approved")));
    let (status, again) = gateway.charge("k1", "tok_ok").await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], first["id"]);
    // Concurrent repeats of a new key: still one charge.
    let answers = join_all((0..8).map(|_| gateway.charge("k2", "tok_slow"))).await;
    let ids: std::collections::HashSet<String> =
        answers.iter().map(|(_, b)| b["id"].to_string()).collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    let charges = gateway.charges().await;
    assert_eq!(charges.len(), 2);
    assert!(charges
        .iter()
        .all(|c| c.amount == 1200 && c.status == "approved"));
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_decline_and_flake_as_documented() {
    let gateway = spawn().await;
    let (status, body) = gateway.charge("d", "tok_decline").await;
    assert_eq!((status, body["status"].as_str()), (402, Some("declined")));
    assert_eq!(body["reason"], "card_declined");
    let (status, body) = gateway.charge("u", "tok_unknown").await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (402, Some("invalid_token"))
    );
    for _ in 0..2 {
        assert_eq!(gateway.charge("f", "tok_flaky").await.0, 502);
    }
    assert_eq!(gateway.charge("f", "tok_flaky").await.0, 200);
    assert_eq!(
        gateway.charge("f", "tok_flaky").await.0,
        200,
        "the first answer again"
    );
    let statuses: Vec<(String, String)> = gateway
        .charges()
        .await
        .into_iter()
        .map(|c| (c.idempotency_key, c.status))
        .collect();
    assert_eq!(
        statuses.len(),
        3,
        "flaky tries record nothing: {statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_and_outages_charge_nothing() {
    let gateway = spawn().await;
    let body = json!({ "amount": 1200, "currency": "EUR", "token": "tok_ok" });
    assert_eq!(gateway.post("/charges", None, body.clone()).await.0, 400);
    assert_eq!(
        gateway
            .post(
                "/charges",
                Some("k"),
                json!({ "amount": 0, "currency": "EUR", "token": "tok_ok" })
            )
            .await
            .0,
        400
    );
    assert_eq!(
        gateway
            .post("/charges", Some("k"), json!({ "amount": "x" }))
            .await
            .0,
        400
    );
    assert_eq!(
        gateway
            .post("/refunds", None, json!({ "charge_key": "k" }))
            .await
            .0,
        400
    );
    assert_eq!(
        gateway
            .post("/admin/outage", None, json!({ "down": true }))
            .await
            .0,
        200
    );
    assert_eq!(gateway.charge("k", "tok_ok").await.0, 503);
    assert_eq!(gateway.refund("k:refund", "k").await.0, 503);
    assert!(gateway.charges().await.is_empty());
    assert!(gateway.refunds().await.is_empty());
    assert_eq!(
        gateway
            .post("/admin/outage", None, json!({ "down": false }))
            .await
            .0,
        200
    );
    assert_eq!(gateway.charge("k", "tok_ok").await.0, 200);
    let counts: Value = gateway
        .http
        .get(format!("{}/admin/requests", gateway.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counts["charges"], 5, "every charge request is counted");
    assert_eq!(counts["refunds"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_charge_is_refunded_once_and_a_missing_one_is_voided() {
    let gateway = spawn().await;
    gateway.charge("paid", "tok_ok").await;
    let (status, first) = gateway.refund("paid:refund", "paid").await;
    assert_eq!((status, first["status"].as_str()), (200, Some("refunded")));
    assert_eq!(first["amount"], 1200);
    let (_, again) = gateway.refund("paid:refund", "paid").await;
    assert_eq!(again["id"], first["id"]);
    let (_, other_key) = gateway.refund("paid:other", "paid").await;
    assert_eq!(other_key["id"], first["id"], "one refund per charge");

    // Refunding a charge that never came voids its key: it can never land.
    let (status, void) = gateway.refund("late:refund", "late").await;
    assert_eq!((status, void["status"].as_str()), (200, Some("voided")));
    let (status, late) = gateway.charge("late", "tok_ok").await;
    assert_eq!((status, late["status"].as_str()), (402, Some("declined")));

    let refunds = gateway.refunds().await;
    assert_eq!(refunds.len(), 2, "{refunds:?}");
    let approved: Vec<ChargeRecord> = gateway
        .charges()
        .await
        .into_iter()
        .filter(|c| c.status == "approved")
        .collect();
    assert_eq!(approved.len(), 1);
    drop(gateway.db);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_refuses_a_caller_without_the_token_and_changes_nothing() {
    let gateway = spawn().await;
    let stranger = reqwest::Client::new();
    let attempts: Vec<(reqwest::Method, &str, Option<&str>, Value)> = vec![
        (
            reqwest::Method::POST,
            "/admin/outage",
            None,
            json!({"down": true}),
        ),
        (
            reqwest::Method::POST,
            "/charges",
            None,
            json!({"amount": 100, "currency": "EUR", "token": "tok_ok"}),
        ),
        (
            reqwest::Method::POST,
            "/refunds",
            None,
            json!({"charge_key": "k"}),
        ),
        (reqwest::Method::GET, "/charges", None, Value::Null),
        (reqwest::Method::GET, "/refunds", None, Value::Null),
        (reqwest::Method::GET, "/admin/requests", None, Value::Null),
        (reqwest::Method::GET, "/healthz", None, Value::Null),
        (reqwest::Method::GET, "/no-such-path", None, Value::Null),
        (
            reqwest::Method::GET,
            "/charges",
            Some("Bearer wrong-token"),
            Value::Null,
        ),
        (
            reqwest::Method::GET,
            "/charges",
            Some("Bearer gateway-tests-tokenX"),
            Value::Null,
        ),
        (reqwest::Method::GET, "/charges", Some(TOKEN), Value::Null),
    ];
    for (method, path, authorization, body) in attempts {
        let mut request = stranger
            .request(method.clone(), format!("{}{path}", gateway.url))
            .header("idempotency-key", "stranger-1");
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        if !body.is_null() {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{method} {path} {authorization:?}");
        assert!(response.headers().contains_key("www-authenticate"));
    }
    // Charging is still on, and nothing was charged or counted.
    assert!(gateway.charges().await.is_empty());
    let (status, _) = gateway.charge("after-strangers", "tok_ok").await;
    assert_eq!(status, 200, "the outage switch was never flipped");
}
