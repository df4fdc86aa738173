//! Commands against the two baselines a user would compare us with, in the
//! same run: (a) the Postgres ceiling through the same driver, `BEGIN;
//! INSERT one event row; COMMIT` on a table of the events table's shape, and
//! (b) stock cqrs-es + postgres-es called as a library, default
//! configuration, on the same aggregate.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use commands::StoreOptions;
use domain::product::{Product, ProductCommand};
use domain::values::{Money, Name, Sku};
use serde_json::json;
use testkit::TestDatabase;
use uuid::Uuid;

use crate::report::{median, quantile_ms, spread, Row, Table};
use crate::stock::spawn_api;
use crate::Settings;

/// What `clients` tasks running an operation for a while achieved.
#[derive(Default)]
struct Measured {
    per_second: f64,
    /// Of every operation that succeeded.
    latencies: Vec<Duration>,
}

/// Operations per second, and their latencies, from `clients` tasks running
/// `op` for `period`.
async fn rate<F, Fut>(clients: usize, period: Duration, op: F) -> Measured
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let counter = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (op, counter) = (op.clone(), Arc::clone(&counter));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while started.elapsed() < period {
                    let sent = Instant::now();
                    if op(counter.fetch_add(1, Ordering::Relaxed)).await {
                        latencies.push(sent.elapsed());
                    }
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap_or_default());
    }
    Measured {
        per_second: latencies.len() as f64 / started.elapsed().as_secs_f64(),
        latencies,
    }
}

/// The median rate of `runs`, with p50 and p99 over all their operations.
fn summary(runs: &mut [Measured], unit: &str) -> (f64, String) {
    let rate = median(&rates(runs));
    let mut latencies: Vec<Duration> = runs
        .iter_mut()
        .flat_map(|m| std::mem::take(&mut m.latencies))
        .collect();
    let p50 = quantile_ms(&mut latencies, 0.5);
    let p99 = quantile_ms(&mut latencies, 0.99);
    (
        rate,
        format!("{rate:.0} {unit} (p50 {p50:.2} ms, p99 {p99:.2} ms)"),
    )
}

fn rates(runs: &[Measured]) -> Vec<f64> {
    runs.iter().map(|m| m.per_second).collect()
}

fn create(id: Uuid, n: usize) -> ProductCommand {
    ProductCommand::Create {
        product_id: id,
        sku: Sku::parse(format!("B-{n}-{}", id.simple())).expect("a valid sku"),
        name: Name::parse("Bench").expect("a valid name"),
        description: None,
        price: Money::price(100, "EUR").expect("a valid price"),
        stock: 1_000_000,
    }
}

/// 100 products with `events` events each, written straight into the table.
async fn seed_long_streams(db: &TestDatabase, events: i64) -> anyhow::Result<Vec<Uuid>> {
    let ids: Vec<Uuid> = (0..100).map(|_| Uuid::now_v7()).collect();
    for (n, id) in ids.iter().enumerate() {
        let created = json!({ "ProductCreated": { "product_id": id, "sku": format!("LONG-{n}"), "name": "Long", "description": null, "price": { "amount": 100, "currency": "EUR" }, "stock": 1_000_000 } });
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT 'product', $1, s,
                    CASE WHEN s = 1 THEN 'ProductCreated' ELSE 'ProductStockAdjusted' END,
                    CASE WHEN s = 1 THEN '1.0' ELSE '2.0' END,
                    CASE WHEN s = 1 THEN $2 ELSE '{\"ProductStockAdjusted\": {\"stock_delta\": 1}}'::jsonb END,
                    '{\"actor\": \"bench\"}'
               FROM generate_series(1, $3) AS s",
        )
        .bind(id.to_string())
        .bind(&created)
        .bind(events)
        .execute(&db.pool)
        .await?;
        sqlx::query("INSERT INTO unique_claims (kind, value, aggregate_type, aggregate_id) VALUES ('sku', $1, 'product', $2)")
            .bind(format!("LONG-{n}"))
            .bind(id.to_string())
            .execute(&db.pool)
            .await?;
    }
    Ok(ids)
}

pub async fn run(settings: &Settings, table: &mut Table) -> anyhow::Result<()> {
    let (levels, period, long_events): (&[usize], Duration, i64) = if settings.quick {
        (&[1, 8], Duration::from_millis(300), 50)
    } else {
        (&[1, 8, 32, 64], Duration::from_secs(3), 2000)
    };
    // Each system gets its own database, so none pays for another's rows.
    let ours_db = TestDatabase::with_pool_size(16).await;
    let base = spawn_api(&ours_db, StoreOptions::default()).await?;
    let ceiling_db = TestDatabase::with_pool_size(16).await;
    sqlx::query("CREATE TABLE ceiling (LIKE events INCLUDING ALL)")
        .execute(&ceiling_db.pool)
        .await?;
    let stock_db = TestDatabase::with_pool_size(10).await;
    let stock = Arc::new(postgres_es::postgres_cqrs::<Product>(
        stock_db.pool.clone(),
        vec![],
        (),
    ));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;

    for &clients in levels {
        let (mut ours, mut ceiling, mut cqrs) = (Vec::new(), Vec::new(), Vec::new());
        for rep in 0..=settings.reps {
            let (client, base) = (client.clone(), base.clone());
            let tag = Uuid::now_v7().simple().to_string();
            let http = rate(clients, period, move |n| {
                let (client, base, tag) = (client.clone(), base.clone(), tag.clone());
                async move {
                    let body = json!({ "sku": format!("H-{tag}-{n}"), "name": "Bench", "price": { "amount": 100, "currency": "EUR" }, "stock": 10 });
                    matches!(client.post(format!("{base}/products")).json(&body).send().await, Ok(r) if r.status().as_u16() == 201)
                }
            })
            .await;
            let pool = ceiling_db.pool.clone();
            let raw = rate(clients, period, move |n| {
                let pool = pool.clone();
                async move {
                    let Ok(mut tx) = pool.begin().await else { return false };
                    let inserted = sqlx::query("INSERT INTO ceiling (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) VALUES ('product', $1, 1, 'ProductCreated', '1.0', $2, $3)")
                        .bind(Uuid::now_v7().to_string())
                        .bind(json!({ "ProductCreated": { "n": n } }))
                        .bind(json!({ "actor": "bench" }))
                        .execute(&mut *tx)
                        .await
                        .is_ok();
                    inserted && tx.commit().await.is_ok()
                }
            })
            .await;
            let cqrs_es = Arc::clone(&stock);
            let library = rate(clients, period, move |n| {
                let cqrs_es = Arc::clone(&cqrs_es);
                async move {
                    let id = Uuid::now_v7();
                    cqrs_es
                        .execute(&id.to_string(), create(id, n))
                        .await
                        .is_ok()
                }
            })
            .await;
            // Repetition 0 is the warm-up.
            if rep > 0 {
                ours.push(http);
                ceiling.push(raw);
                cqrs.push(library);
            }
        }
        let (o, ours_figure) = summary(&mut ours, "cmd/s");
        let (a, ceiling_figure) = summary(&mut ceiling, "tx/s");
        let (b, cqrs_figure) = summary(&mut cqrs, "cmd/s");
        table.push(Row {
            workload: format!(
                "API alone: new aggregates, `POST /products`, {clients} clients, vs (a) Postgres ceiling"
            ),
            figure: ours_figure.clone(),
            baseline: format!("{ceiling_figure} (a) BEGIN; INSERT; COMMIT"),
            ratio: Some(o / a),
            goal: if clients == 8 {
                "≥ 0.6".to_owned()
            } else {
                "–".to_owned()
            },
            spread: format!("{} vs {}", spread(&rates(&ours)), spread(&rates(&ceiling))),
            notes: "through HTTP, with the sku's unique claim".to_owned(),
        });
        table.push(Row {
            workload: format!("API alone: new aggregates, `POST /products`, {clients} clients, vs (b) stock cqrs-es + postgres-es"),
            figure: ours_figure,
            baseline: format!("{cqrs_figure} (b) library call, no HTTP"),
            ratio: Some(o / b),
            goal: "≥ 1.0".to_owned(),
            spread: format!("{} vs {}", spread(&rates(&ours)), spread(&rates(&cqrs))),
            notes: String::new(),
        });
    }

    // Long streams: 100 products of `long_events` events each, picked at random.
    let ours_long = seed_long_streams(&ours_db, long_events).await?;
    let stock_long = seed_long_streams(&stock_db, long_events).await?;
    for &clients in levels {
        let (mut ours, mut cqrs) = (Vec::new(), Vec::new());
        for rep in 0..=settings.reps {
            let (client, base, ids) = (client.clone(), base.clone(), Arc::new(ours_long.clone()));
            let http = rate(clients, period, move |n| {
                let (client, base, ids) = (client.clone(), base.clone(), Arc::clone(&ids));
                async move {
                    let id = ids[pick(n, ids.len())];
                    matches!(client.post(format!("{base}/products/{id}/stock")).json(&json!({ "delta": 1 })).send().await, Ok(r) if r.status().is_success())
                }
            })
            .await;
            let (cqrs_es, ids) = (Arc::clone(&stock), Arc::new(stock_long.clone()));
            let library = rate(clients, period, move |n| {
                let (cqrs_es, ids) = (Arc::clone(&cqrs_es), Arc::clone(&ids));
                async move {
                    let id = ids[pick(n, ids.len())];
                    cqrs_es
                        .execute(&id.to_string(), ProductCommand::AdjustStock { delta: 1 })
                        .await
                        .is_ok()
                }
            })
            .await;
            if rep > 0 {
                ours.push(http);
                cqrs.push(library);
            }
        }
        let (o, ours_figure) = summary(&mut ours, "cmd/s");
        let (b, cqrs_figure) = summary(&mut cqrs, "cmd/s");
        table.push(Row {
            workload: format!("API alone: long streams, `POST /products/{{id}}/stock` on 100 products of {long_events}+ events, {clients} clients"),
            figure: ours_figure,
            baseline: format!("{cqrs_figure} (b) stock cqrs-es + postgres-es"),
            ratio: Some(o / b),
            goal: "≥ 5".to_owned(),
            spread: format!("{} vs {}", spread(&rates(&ours)), spread(&rates(&cqrs))),
            notes: "random product per command".to_owned(),
        });
    }
    Ok(())
}

/// A well-spread pseudo-random index for the `n`th operation.
fn pick(n: usize, len: usize) -> usize {
    let mixed = (n as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(17);
    (mixed % len as u64) as usize
}
