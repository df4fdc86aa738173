//! A command on a product with a long order history against one on a fresh
//! product (issue 18, item 4): a product keeps only its open reservations
//! and a bounded window of ended ones, so the history must cost nothing.
//!
//! The history is written straight into the events table (a reservation and
//! its commit per past order, as the saga leaves them), then the same
//! `POST /products/{id}/stock` load as `stock` runs on both products.

use commands::{AggregateStore, CommandMetadata, StoreOptions};
use domain::product::{Product, ProductCommand};
use domain::values::{Currency, Money, Name, Sku};
use testkit::TestDatabase;
use uuid::Uuid;

use crate::report::{median, quantile_ms, spread, Row, Table};
use crate::stock::{adjust, create_product, spawn_api};
use crate::Settings;

pub async fn run(settings: &Settings, table: &mut Table) -> anyhow::Result<()> {
    let (requests, orders, clients) = if settings.quick {
        (80, 2_000i64, 4)
    } else {
        (2000, 100_000, 8)
    };
    let db = TestDatabase::with_pool_size(16).await;
    let hot = Uuid::now_v7();
    let store = AggregateStore::<Product>::new(db.pool.clone(), StoreOptions::default());
    store
        .execute_new(
            &hot.to_string(),
            ProductCommand::Create {
                product_id: hot,
                sku: Sku::parse("HOT")?,
                name: Name::parse("Hot")?,
                description: None,
                price: Money::new(100, Currency::parse("EUR")?),
                stock: 1_000_000,
            },
            &CommandMetadata::system(),
        )
        .await
        .map_err(|err| anyhow::anyhow!("creating the hot product: {err}"))?;
    // Order ids as the API mints them (UUID v7, growing); one unit each.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'product', $1, 2 + 2 * g + e.n, e.event_type, $3,
                jsonb_build_object(e.event_type, jsonb_build_object(
                    'order_id', '01900000-0000-7000-8000-' || lpad(to_hex(g), 12, '0'),
                    'quantity', 1)),
                '{\"correlation_id\": \"bench\", \"actor\": \"bench\"}'
           FROM generate_series(0, $2 - 1) AS g,
                (VALUES (0, 'StockReserved'), (1, 'StockReservationCommitted')) AS e(n, event_type)",
    )
    .bind(hot.to_string())
    .bind(orders)
    .bind(domain::EVENT_VERSION)
    .execute(&db.pool)
    .await?;
    let history = 1 + 2 * orders;

    let cached = spawn_api(&db, StoreOptions::default()).await?;
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
    let hot = hot.to_string();

    for (index, (label, base)) in [
        ("cached", &cached),
        ("no cache: snapshot + tail", &uncached),
    ]
    .into_iter()
    .enumerate()
    {
        let (mut fresh_rates, mut hot_rates) = (Vec::new(), Vec::new());
        let mut hot_latencies = Vec::new();
        for rep in 0..settings.reps {
            let fresh = create_product(&client, base, &format!("FRESH-{index}-{rep}")).await?;
            for (product, rates) in [(&fresh, &mut fresh_rates), (&hot, &mut hot_rates)] {
                // The warm-up also loads the hot product once from all of
                // its events and writes its first snapshot.
                adjust(&client, base, product, clients * 20, clients).await;
                let (rate, latencies) = adjust(&client, base, product, requests, clients).await;
                rates.push(rate);
                if product == &hot {
                    hot_latencies = latencies;
                }
            }
        }
        let snapshot: Option<i32> = sqlx::query_scalar(
            "SELECT octet_length(payload::text) FROM aggregate_snapshots WHERE aggregate_type = 'product' AND aggregate_id = $1",
        )
        .bind(&hot)
        .fetch_optional(&db.pool)
        .await?;
        let kept = store.load_stored(&hot).await?.aggregate.reservations_kept();
        let (fresh, hot_rate) = (median(&fresh_rates), median(&hot_rates));
        table.push(Row {
            workload: format!("API alone: `POST /products/{{id}}/stock`, {clients} clients, one product with {orders} past orders ({history} events) vs a fresh one ({label})"),
            figure: format!("{hot_rate:.0} cmd/s (p50 {:.2} ms, p99 {:.2} ms)", quantile_ms(&mut hot_latencies, 0.5), quantile_ms(&mut hot_latencies, 0.99)),
            baseline: format!("{fresh:.0} cmd/s"),
            ratio: Some(hot_rate / fresh),
            goal: "cost ≤ 1.1× (ratio ≥ 0.91)".to_owned(),
            spread: format!("{} vs {}", spread(&hot_rates), spread(&fresh_rates)),
            notes: format!(
                "state keeps {kept} reservations; snapshot {} bytes",
                snapshot.map_or_else(|| "not yet written".to_owned(), |b| b.to_string())
            ),
        });
    }
    Ok(())
}
