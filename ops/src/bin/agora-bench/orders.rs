//! Orders end to end: orders placed per second that reach `confirmed`
//! through the saga, stock reservation and the test gateway (`tok_ok`), with
//! the time from placement to confirmed. Baseline in the same run: the same
//! clients placing orders on the same system without a saga, so the ratio is
//! what driving an order to its end costs over taking it.

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{json, Value};

use crate::pipeline::Pipeline;
use crate::report::{median, quantile_ms, spread, Row, Table};
use crate::stock::create_product;
use crate::Settings;

const CLIENTS: usize = 8;

struct World {
    pipeline: Pipeline,
    user: String,
    products: Vec<String>,
}

async fn world(client: &reqwest::Client, saga: bool) -> anyhow::Result<World> {
    let pipeline = Pipeline::start_with(saga).await?;
    let body: Value = client
        .post(format!("{}/users", pipeline.base))
        .json(&json!({ "email": "bench@example.com", "name": "Bench" }))
        .send()
        .await?
        .json()
        .await?;
    let user = body["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no user id in {body}"))?
        .to_owned();
    let mut products = Vec::new();
    for i in 0..20 {
        products.push(create_product(client, &pipeline.base, &format!("ORD-{i}")).await?);
    }
    Ok(World {
        pipeline,
        user,
        products,
    })
}

/// `orders` orders from `CLIENTS` clients; with `confirm`, each client waits
/// for its order to be confirmed before placing the next. Orders per second
/// and the per-order latencies (placement, or placement to confirmed).
async fn place(
    client: &reqwest::Client,
    world: &World,
    orders: usize,
    confirm: bool,
) -> anyhow::Result<(f64, Vec<Duration>, usize)> {
    let per_client = orders / CLIENTS;
    let started = Instant::now();
    let results = join_all((0..CLIENTS).map(|c| async move {
        let mut latencies = Vec::with_capacity(per_client);
        let mut failed = 0;
        for i in 0..per_client {
            let product = &world.products[(c * per_client + i) % world.products.len()];
            let sent = Instant::now();
            let placed = client
                .post(format!("{}/orders", world.pipeline.base))
                .json(&json!({ "user_id": world.user, "lines": [{ "product_id": product, "quantity": 1 }], "payment_token": "tok_ok" }))
                .send()
                .await;
            let id = match placed {
                Ok(r) if r.status().is_success() => r
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|b| b["id"].as_str().map(str::to_owned)),
                _ => None,
            };
            let Some(id) = id else {
                failed += 1;
                continue;
            };
            if confirm && !confirmed(client, &world.pipeline.base, &id).await {
                failed += 1;
                continue;
            }
            latencies.push(sent.elapsed());
        }
        (latencies, failed)
    }))
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let failed = results.iter().map(|(_, f)| f).sum();
    let latencies: Vec<Duration> = results.into_iter().flat_map(|(l, _)| l).collect();
    Ok((latencies.len() as f64 / elapsed, latencies, failed))
}

/// Waits (read-your-writes, then polling) until the order is confirmed.
async fn confirmed(client: &reqwest::Client, base: &str, id: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        // Placed, payment assigned, confirmed: version 3.
        let url = format!("{base}/orders/{id}?min_version=3");
        if let Ok(response) = client.get(&url).send().await {
            if let Ok(order) = response.json::<Value>().await {
                match order["status"].as_str() {
                    Some("confirmed") => return true,
                    Some("cancelled") => return false,
                    _ => {}
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

pub async fn run(settings: &Settings, table: &mut Table) -> anyhow::Result<()> {
    let orders = if settings.quick { 16 } else { 800 };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let (mut ours, mut baseline, mut latencies, mut failures) = (vec![], vec![], vec![], 0);
    for rep in 0..=settings.reps {
        let with_saga = world(&client, true).await?;
        let (rate, lat, failed) = place(&client, &with_saga, orders, true).await?;
        drop(with_saga);
        let without = world(&client, false).await?;
        let (base_rate, _, _) = place(&client, &without, orders, false).await?;
        drop(without);
        // Repetition 0 is the warm-up.
        if rep > 0 {
            ours.push(rate);
            baseline.push(base_rate);
            latencies.extend(lat);
            failures += failed;
        }
    }
    let (figure, base) = (median(&ours), median(&baseline));
    table.push(Row {
        workload: format!("Orders end to end: {orders} orders (`tok_ok`), {CLIENTS} clients, each waiting for confirmed"),
        figure: format!(
            "{figure:.0} orders/s confirmed (placement → confirmed p50 {:.1} ms, p99 {:.1} ms)",
            quantile_ms(&mut latencies, 0.5),
            quantile_ms(&mut latencies, 0.99)
        ),
        baseline: format!("{base:.0} orders/s placed, no saga"),
        ratio: Some(figure / base),
        goal: "–".to_owned(),
        spread: format!("{} vs {}", spread(&ours), spread(&baseline)),
        notes: format!("saga, reservation, gateway charge and capture in one process; {failures} not confirmed"),
    });
    Ok(())
}
