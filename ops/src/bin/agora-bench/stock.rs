//! `POST /products/{id}/stock` on a product whose stream is long against a
//! fresh product, through HTTP: a long stream must cost what a new one does.

use std::time::{Duration, Instant};

use api::{AppState, HttpOptions};
use commands::{AggregateStore, Aggregates, CommandMetadata, StoreOptions};
use domain::product::{Product, ProductCommand};
use futures::future::join_all;
use serde_json::json;
use testkit::TestDatabase;

use crate::report::{median, quantile_ms, spread, Row, Table};
use crate::Settings;

pub async fn spawn_api(db: &TestDatabase, options: StoreOptions) -> anyhow::Result<String> {
    let aggregates = Aggregates::new(db.pool.clone(), options);
    let state = AppState::new(db.pool.clone(), aggregates, None, HttpOptions::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(api::run(listener, state, std::future::pending()));
    Ok(format!("http://{addr}"))
}

pub async fn create_product(
    client: &reqwest::Client,
    base: &str,
    sku: &str,
) -> anyhow::Result<String> {
    let body: serde_json::Value = client
        .post(format!("{base}/products"))
        .json(&json!({ "sku": sku, "name": sku, "price": { "amount": 100, "currency": "EUR" }, "stock": 1_000_000 }))
        .send()
        .await?
        .json()
        .await?;
    body["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no id in {body}"))
}

/// Commands per second, and latencies, for `requests` stock adjustments on
/// one product from `clients` concurrent clients.
pub async fn adjust(
    client: &reqwest::Client,
    base: &str,
    product: &str,
    requests: usize,
    clients: usize,
) -> (f64, Vec<Duration>) {
    let url = format!("{base}/products/{product}/stock");
    let per_client = requests / clients;
    let started = Instant::now();
    let latencies = join_all((0..clients).map(|_| {
        let url = url.clone();
        async move {
            let mut latencies = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let delta = if i % 2 == 0 { 1 } else { -1 };
                let sent = Instant::now();
                match client
                    .post(&url)
                    .json(&json!({ "delta": delta }))
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                    }
                    Ok(r) => eprintln!("unexpected status {}", r.status()),
                    Err(err) => eprintln!("request failed: {err}"),
                }
                latencies.push(sent.elapsed());
            }
            latencies
        }
    }))
    .await;
    let all: Vec<Duration> = latencies.into_iter().flatten().collect();
    (all.len() as f64 / started.elapsed().as_secs_f64(), all)
}

pub async fn run(settings: &Settings, table: &mut Table) -> anyhow::Result<()> {
    let (requests, prior, clients) = if settings.quick {
        (80, 300, 4)
    } else {
        (2000, 10_000, 8)
    };
    let db = TestDatabase::with_pool_size(16).await;
    let cached = spawn_api(&db, StoreOptions::default()).await?;
    // A second API whose cache holds nothing: every command loads its
    // aggregate from the snapshot and the events after it.
    let uncached = spawn_api(
        &db,
        StoreOptions {
            cache_capacity: 0,
            ..StoreOptions::default()
        },
    )
    .await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;

    let long = create_product(&client, &cached, "LONG").await?;
    let store = AggregateStore::<Product>::new(db.pool.clone(), StoreOptions::default());
    let metadata = CommandMetadata::system();
    for i in 0..prior {
        let delta = if i % 2 == 0 { 1 } else { -1 };
        store
            .execute(
                &long,
                ProductCommand::AdjustStock { delta },
                None,
                &metadata,
            )
            .await
            .map_err(|err| anyhow::anyhow!("seeding: {err}"))?;
    }

    for (index, (label, base)) in [
        ("cached", &cached),
        ("no cache: snapshot + tail", &uncached),
    ]
    .into_iter()
    .enumerate()
    {
        let (mut fresh_rates, mut long_rates) = (Vec::new(), Vec::new());
        let mut long_latencies = Vec::new();
        for rep in 0..settings.reps {
            let fresh = create_product(&client, base, &format!("FRESH-{index}-{rep}")).await?;
            for (product, rates) in [(&fresh, &mut fresh_rates), (&long, &mut long_rates)] {
                adjust(&client, base, product, clients * 10, clients).await;
                let (rate, latencies) = adjust(&client, base, product, requests, clients).await;
                rates.push(rate);
                if product == &long {
                    long_latencies = latencies;
                }
            }
        }
        let (fresh, long_rate) = (median(&fresh_rates), median(&long_rates));
        table.push(Row {
            workload: format!("API alone: `POST /products/{{id}}/stock`, {clients} clients, one product with {prior}+ events vs a fresh one ({label})"),
            figure: format!("{long_rate:.0} cmd/s (p50 {:.2} ms, p99 {:.2} ms)", quantile_ms(&mut long_latencies, 0.5), quantile_ms(&mut long_latencies, 0.99)),
            baseline: format!("{fresh:.0} cmd/s"),
            ratio: Some(long_rate / fresh),
            goal: "≈ 1 (no slower)".to_owned(),
            spread: format!("{} vs {}", spread(&long_rates), spread(&fresh_rates)),
            notes: "one aggregate: its commands run one at a time".to_owned(),
        });
    }
    Ok(())
}
