//! A shopper's whole visit through the real `agora serve` (every role, auth
//! on, the test gateway beside it): browse (`GET /products?q=`), open a
//! cart, add a line, check out, and wait until the order is `confirmed`.
//! Visits per second and each visit's time, at 8 customers each doing one
//! visit after another. Baseline in the same run, on the same system: the
//! same customers placing the same order straight (`POST /orders`) and
//! waiting for `confirmed`, so the ratio is what the browse and cart steps
//! cost over the order itself.
//!
//! The load is sent from this process (8 clients; the server is a process
//! of its own).

use std::time::{Duration, Instant};

use api::auth::{JwtSecret, Role};
use futures::future::join_all;
use serde_json::{json, Value};
use testkit::{TestDatabase, TestNats};

use crate::processes::Serve;
use crate::report::{median, quantile_ms, spread, Row, Table};
use crate::Settings;

const CUSTOMERS: usize = 8;
const SECRET: &str = "agora-bench-checkout";
/// Any 32 bytes, base64: the bench's own data key.
const DATA_KEY: &str = "YmVuY2gtYmVuY2gtYmVuY2gtYmVuY2gtYmVuY2gtMzI=";

struct Shop {
    _db: TestDatabase,
    _nats: TestNats,
    _serve: Serve,
    _gateway: tokio::sync::oneshot::Sender<()>,
    base: String,
    customers: Vec<(String, String)>,
    products: Vec<String>,
}

async fn shop(client: &reqwest::Client) -> anyhow::Result<Shop> {
    let db = TestDatabase::with_pool_size(2).await;
    let nats = TestNats::new().await;
    let (gateway_url, stop) = crate::processes::start_gateway(&db).await?;
    let serve = Serve::start(
        &db,
        &nats.prefix,
        "all",
        &[
            ("AGORA_AUTH", "on"),
            ("AGORA_JWT_SECRET", SECRET),
            ("AGORA_DATA_KEY", DATA_KEY),
            ("AGORA_GATEWAY_URL", &gateway_url),
            ("AGORA_RATE_LIMIT_PER_SECOND", "1000000"),
            ("AGORA_RATE_LIMIT_BURST", "1000000"),
        ],
    )?;
    serve.ready(client).await?;
    let base = serve.base.clone();
    let secret = JwtSecret::new(SECRET.as_bytes());
    let admin = secret
        .issue("bench", Role::Admin, Duration::from_secs(3600))
        .map_err(|e| anyhow::anyhow!("a token: {e:?}"))?;
    let mut products = Vec::new();
    for n in 0..20 {
        let body: Value = client
            .post(format!("{base}/products"))
            .bearer_auth(&admin)
            .json(&json!({ "sku": format!("SHOP-{n}"), "name": format!("Desk lamp {n}"), "price": { "amount": 1200, "currency": "EUR" }, "stock": 1_000_000 }))
            .send()
            .await?
            .json()
            .await?;
        products.push(id_of(&body)?);
    }
    let mut customers = Vec::new();
    for n in 0..CUSTOMERS {
        let body: Value = client
            .post(format!("{base}/users"))
            .json(&json!({ "email": format!("shopper-{n}@bench.example"), "name": "Shopper" }))
            .send()
            .await?
            .json()
            .await?;
        let id = id_of(&body)?;
        let token = secret
            .issue(&id, Role::Customer, Duration::from_secs(3600))
            .map_err(|e| anyhow::anyhow!("a token: {e:?}"))?;
        customers.push((id, token));
    }
    // The catalogue is searchable before the first visit.
    let last = products.last().cloned().unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client
        .get(format!("{base}/products/{last}"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        anyhow::ensure!(Instant::now() < deadline, "the catalogue never showed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Shop {
        _db: db,
        _nats: nats,
        _serve: serve,
        _gateway: stop,
        base,
        customers,
        products,
    })
}

fn id_of(body: &Value) -> anyhow::Result<String> {
    body["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no id in {body}"))
}

/// One request's JSON answer, if it succeeded.
async fn call(request: reqwest::RequestBuilder) -> Option<Value> {
    let answer = request.send().await.ok()?;
    if !answer.status().is_success() {
        return None;
    }
    answer.json().await.ok()
}

/// Polls the order until it is confirmed (false if cancelled or 30 s pass).
async fn confirmed(client: &reqwest::Client, base: &str, token: &str, order: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let read = call(
            client
                .get(format!("{base}/orders/{order}"))
                .bearer_auth(token),
        )
        .await;
        match read.as_ref().and_then(|o| o["status"].as_str()) {
            Some("confirmed") => return true,
            Some("cancelled") => return false,
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    false
}

fn address() -> Value {
    json!({ "name": "Shopper", "line1": "1 Main St", "city": "Leeds", "postal_code": "LS1 1AA", "country": "GB" })
}

/// One visit: browse, cart, line, checkout, confirmed.
async fn visit(client: &reqwest::Client, shop: &Shop, customer: usize, n: usize) -> bool {
    let (base, token) = (&shop.base, &shop.customers[customer].1);
    let product = &shop.products[(customer * 7 + n) % shop.products.len()];
    let found = call(client.get(format!("{base}/products?q=lamp&limit=10"))).await;
    if found.is_none() {
        return false;
    }
    let Some(cart) = call(
        client
            .post(format!("{base}/carts"))
            .bearer_auth(token)
            .json(&json!({})),
    )
    .await
    .and_then(|c| id_of(&c).ok()) else {
        return false;
    };
    let line = call(
        client
            .put(format!("{base}/carts/{cart}/lines/{product}"))
            .bearer_auth(token)
            .json(&json!({ "quantity": 1 })),
    )
    .await;
    if line.is_none() {
        return false;
    }
    let Some(order) = call(
        client
            .post(format!("{base}/carts/{cart}/checkout"))
            .bearer_auth(token)
            .json(&json!({ "payment_token": "tok_ok", "shipping_address": address() })),
    )
    .await
    .and_then(|o| id_of(&o).ok()) else {
        return false;
    };
    confirmed(client, base, token, &order).await
}

/// The baseline: the same order placed straight, then confirmed.
async fn straight(client: &reqwest::Client, shop: &Shop, customer: usize, n: usize) -> bool {
    let (base, (user, token)) = (&shop.base, &shop.customers[customer]);
    let product = &shop.products[(customer * 7 + n) % shop.products.len()];
    let Some(order) = call(
        client
            .post(format!("{base}/orders"))
            .bearer_auth(token)
            .json(&json!({ "user_id": user, "lines": [{ "product_id": product, "quantity": 1 }], "payment_token": "tok_ok", "shipping_address": address() })),
    )
    .await
    .and_then(|o| id_of(&o).ok()) else {
        return false;
    };
    confirmed(client, base, token, &order).await
}

/// `visits` per customer, all customers at once: per second, latencies, failures.
async fn drive(
    client: &reqwest::Client,
    shop: &Shop,
    visits: usize,
    cart: bool,
) -> (f64, Vec<Duration>, usize) {
    let started = Instant::now();
    let results = join_all((0..CUSTOMERS).map(|c| async move {
        let (mut latencies, mut failed) = (Vec::new(), 0);
        for n in 0..visits {
            let at = Instant::now();
            let done = if cart {
                visit(client, shop, c, n).await
            } else {
                straight(client, shop, c, n).await
            };
            if done {
                latencies.push(at.elapsed());
            } else {
                failed += 1;
            }
        }
        (latencies, failed)
    }))
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let failed = results.iter().map(|(_, f)| f).sum();
    let latencies: Vec<Duration> = results.into_iter().flat_map(|(l, _)| l).collect();
    (latencies.len() as f64 / elapsed, latencies, failed)
}

pub async fn run(settings: &Settings, table: &mut Table) -> anyhow::Result<()> {
    let visits = if settings.quick { 2 } else { 40 };
    println!("checkout: browse, cart, checkout, confirmed through `agora serve` (auth on), beside straight orders");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let (mut ours, mut baseline, mut latencies, mut straight_latencies, mut failures) =
        (vec![], vec![], vec![], vec![], 0);
    for rep in 0..=settings.reps {
        let shop = shop(&client).await?;
        let (rate, lat, failed) = drive(&client, &shop, visits, true).await;
        let (base_rate, base_lat, base_failed) = drive(&client, &shop, visits, false).await;
        // Repetition 0 is the warm-up.
        if rep > 0 {
            ours.push(rate);
            baseline.push(base_rate);
            latencies.extend(lat);
            straight_latencies.extend(base_lat);
            failures += failed + base_failed;
        }
    }
    let (figure, base) = (median(&ours), median(&baseline));
    table.push(Row {
        workload: format!(
            "A visit: browse, cart, add a line, checkout, wait for confirmed; {CUSTOMERS} customers, {visits} visits each, `agora serve` (all roles, auth on)"
        ),
        figure: format!(
            "{figure:.1} visits/s (p50 {:.1} ms, p99 {:.1} ms)",
            quantile_ms(&mut latencies, 0.5),
            quantile_ms(&mut latencies, 0.99)
        ),
        baseline: format!(
            "{base:.1} orders/s placed straight and confirmed (p50 {:.1} ms)",
            quantile_ms(&mut straight_latencies, 0.5)
        ),
        ratio: Some(figure / base.max(f64::MIN_POSITIVE)),
        goal: "–".to_owned(),
        spread: format!("{} vs {}", spread(&ours), spread(&baseline)),
        notes: format!("load from this process; {failures} visits or orders not confirmed"),
    });
    Ok(())
}
