//! Benchmark: `POST /products/{id}/stock` on a product with a long stream
//! versus a fresh one, through HTTP, in one run and one process, so the ratio
//! holds however noisy the machine is.
//!
//! `cargo run --release -p ops --bin agora-bench -- [--requests N] [--prior N] [--reps N]`
//! Needs Postgres and NATS as for the tests (`ops/scripts/services.sh`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::{AppState, HttpOptions};
use commands::testing::TestDatabase;
use commands::{Aggregates, CommandMetadata, StoreOptions};
use domain::product::ProductCommand;
use futures::future::join_all;
use serde_json::json;

struct Args {
    requests: usize,
    prior: usize,
    reps: usize,
    clients: usize,
}

fn args() -> Args {
    let mut parsed = Args {
        requests: 2000,
        prior: 10_000,
        reps: 3,
        clients: 8,
    };
    let raw: Vec<String> = std::env::args().skip(1).collect();
    for pair in raw.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse().ok());
        match (pair[0].as_str(), value) {
            ("--requests", Some(v)) => parsed.requests = v,
            ("--prior", Some(v)) => parsed.prior = v,
            ("--reps", Some(v)) => parsed.reps = v,
            ("--clients", Some(v)) => parsed.clients = v,
            _ => {
                eprintln!("usage: agora-bench [--requests N] [--prior N] [--reps N] [--clients N]");
                std::process::exit(2);
            }
        }
    }
    parsed
}

async fn spawn(db: &TestDatabase, options: StoreOptions) -> anyhow::Result<String> {
    let aggregates = Aggregates::new(db.pool.clone(), options);
    let state = AppState::new(db.pool.clone(), aggregates, None, HttpOptions::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(api::run(listener, state, std::future::pending()));
    Ok(format!("http://{addr}"))
}

async fn create_product(client: &reqwest::Client, base: &str, sku: &str) -> anyhow::Result<String> {
    let body: serde_json::Value = client
        .post(format!("{base}/products"))
        .json(&json!({ "sku": sku, "name": sku, "price": { "amount": 100, "currency": "EUR" }, "stock": 1_000_000 }))
        .send()
        .await?
        .json()
        .await?;
    Ok(body["id"].as_str().unwrap_or_default().to_owned())
}

/// Commands per second and per-request latencies for `requests` stock
/// adjustments on one product from `clients` concurrent clients.
async fn run(
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
                let response = client
                    .post(&url)
                    .json(&json!({ "delta": delta }))
                    .send()
                    .await;
                match response {
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
    let elapsed = started.elapsed().as_secs_f64();
    let mut all: Vec<Duration> = latencies.into_iter().flatten().collect();
    all.sort_unstable();
    (all.len() as f64 / elapsed, all)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e3
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args();
    let db = Arc::new(TestDatabase::with_pool_size(16).await);
    let cached = spawn(&db, StoreOptions::default()).await?;
    // A second API whose cache holds nothing: every command loads its
    // aggregate from the snapshot and the events after it.
    let uncached = spawn(
        &db,
        StoreOptions {
            cache_capacity: 0,
            ..StoreOptions::default()
        },
    )
    .await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()?;

    let long = create_product(&client, &cached, "LONG").await?;
    let store = commands::AggregateStore::<domain::product::Product>::new(
        db.pool.clone(),
        StoreOptions::default(),
    );
    let metadata = CommandMetadata::system();
    for i in 0..args.prior {
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

    println!(
        "POST /products/{{id}}/stock, {} requests from {} clients per repetition, {} repetitions; client and server share this machine's {} cores.\n",
        args.requests,
        args.clients,
        args.reps,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!("| workload | cmd/s (median) | spread | p50 ms | p99 ms | ratio to fresh |");
    println!("|---|---|---|---|---|---|");
    let workloads = [
        ("fresh product, cached", &cached, false),
        ("long stream, cached", &cached, true),
        ("fresh product, no cache", &uncached, false),
        ("long stream, no cache (snapshot + tail)", &uncached, true),
    ];
    let mut fresh_rate = 0.0;
    for (index, (name, base, is_long)) in workloads.iter().enumerate() {
        let mut rates = Vec::new();
        let mut last = Vec::new();
        for rep in 0..args.reps {
            let product = if *is_long {
                long.clone()
            } else {
                create_product(&client, base, &format!("FRESH-{index}-{rep}")).await?
            };
            // Warm-up: connections, statement cache and the aggregate cache.
            run(&client, base, &product, args.clients * 10, args.clients).await;
            let (rate, latencies) = run(&client, base, &product, args.requests, args.clients).await;
            rates.push(rate);
            last = latencies;
        }
        let (lo, hi) = rates
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
        let rate = median(&mut rates);
        if index % 2 == 0 {
            fresh_rate = rate;
        }
        println!(
            "| {name} | {rate:.0} | {lo:.0}–{hi:.0} | {:.2} | {:.2} | {:.2} |",
            percentile(&last, 0.5),
            percentile(&last, 0.99),
            rate / fresh_rate
        );
    }
    let prior = store.stored_version(&long).await?;
    println!("\nThe long stream had {} events when the run ended.", prior);
    Ok(())
}
