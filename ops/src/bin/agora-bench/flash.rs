//! A flash sale through the real `agora serve` (every role, the test gateway
//! beside it): one product with 1,000 units and 10,000 orders of one unit
//! from 64 connections of `agora-bench load`, a process of its own, as fast
//! as the server takes them. The figure is the orders taken to their end
//! (confirmed or cancelled, as the orders read model shows them) per second,
//! from the first placement to the last end; the baseline in the same run is
//! the rate at which the same placements were answered. The outcome is
//! reported beside it: every unit sold, every other order `out_of_stock`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::{TestDatabase, TestNats};

use crate::load::LoadArgs;
use crate::processes::Serve;
use crate::report::{median, spread, Row, Table};
use crate::system::load_process;
use crate::Settings;

/// The payment deadline for the sale: shorter than the sale lasts.
const DEADLINE_MS: &str = "8000";

struct Sale {
    units: i64,
    orders: usize,
    connections: usize,
}

/// What one sale came to.
struct Outcome {
    ended_per_second: f64,
    placed_per_second: f64,
    ends: BTreeMap<String, i64>,
    available: i64,
    reserved: i64,
    last_end: Duration,
}

async fn sale(sale: &Sale) -> anyhow::Result<Outcome> {
    let db = TestDatabase::with_pool_size(2).await;
    let nats = TestNats::new().await;
    let client = reqwest::Client::new();
    let (gateway_url, stop) = crate::processes::start_gateway(&db).await?;
    let serve = Serve::start(
        &db,
        &nats.prefix,
        "all",
        &[
            ("AGORA_GATEWAY_URL", &gateway_url),
            ("AGORA_PAYMENT_DEADLINE_MS", DEADLINE_MS),
            ("AGORA_RATE_LIMIT_PER_SECOND", "1000000"),
            ("AGORA_RATE_LIMIT_BURST", "1000000"),
        ],
    )?;
    serve.ready(&client).await?;
    let base = serve.base.clone();
    let user: Value = client
        .post(format!("{base}/users"))
        .json(&json!({ "email": "flash@bench.example", "name": "Flash" }))
        .send()
        .await?
        .json()
        .await?;
    let product: Value = client
        .post(format!("{base}/products"))
        .json(&json!({ "sku": "FLASH-1", "name": "Flash sale", "price": { "amount": 100, "currency": "EUR" }, "stock": sale.units }))
        .send()
        .await?
        .json()
        .await?;
    let id = |body: &Value| {
        body["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no id in {body}"))
    };
    let (user, product) = (id(&user)?, id(&product)?);
    let load = LoadArgs {
        base,
        connections: sale.connections,
        seconds: 0.0,
        products: vec![product.clone()],
        orders_for: Some(user),
        total: sale.orders,
    };
    let started = Instant::now();
    let placing = tokio::spawn(async move { load_process(&load).await });
    // Every order ends (the read model shows it confirmed or cancelled), or
    // the sale is reported as it stands after a generous wait.
    let give_up = Duration::from_secs(600);
    let last_end = loop {
        let ended: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM rm_orders WHERE status IN ('confirmed', 'cancelled')",
        )
        .fetch_one(&db.pool)
        .await?;
        if ended as usize >= sale.orders || started.elapsed() > give_up {
            break started.elapsed();
        }
        // The count reads every order: asked every 20 ms it took a sixth of
        // a core of the Postgres it measures.
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let placed = placing.await??;
    let ended: Vec<(String, Option<String>, i64)> = sqlx::query_as(
        "SELECT status, cancel_reason, count(*) FROM rm_orders GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(&db.pool)
    .await?;
    let ends: BTreeMap<String, i64> = ended
        .into_iter()
        .map(|(status, reason, n)| {
            let key = match reason {
                Some(reason) => format!("{status} {reason}"),
                None => status,
            };
            (key, n)
        })
        .collect();
    let done: i64 = ends
        .iter()
        .filter(|(k, _)| k.starts_with("confirmed") || k.starts_with("cancelled"))
        .map(|(_, n)| n)
        .sum();
    // The last releases reach the products read model shortly after the
    // last order ended.
    let settle = Instant::now();
    let (available, reserved) = loop {
        let stock: (i64, i64) =
            sqlx::query_as("SELECT available, reserved FROM rm_products WHERE id = $1::uuid")
                .bind(&product)
                .fetch_one(&db.pool)
                .await?;
        if stock.1 == 0 || settle.elapsed() > Duration::from_secs(10) {
            break stock;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(serve);
    let _ = stop.send(());
    Ok(Outcome {
        ended_per_second: done as f64 / last_end.as_secs_f64(),
        placed_per_second: placed.per_second,
        ends,
        available,
        reserved,
        last_end,
    })
}

pub async fn run(settings: &Settings, table: &mut Table) -> anyhow::Result<()> {
    let full = if settings.quick {
        Sale {
            units: 20,
            orders: 200,
            connections: 16,
        }
    } else {
        Sale {
            units: 1_000,
            orders: 10_000,
            connections: 64,
        }
    };
    // The warm-up: a tenth of the sale.
    sale(&Sale {
        units: full.units / 10,
        orders: full.orders / 10,
        connections: full.connections,
    })
    .await?;
    let mut outcomes = Vec::new();
    for _ in 0..settings.reps {
        outcomes.push(sale(&full).await?);
    }
    let ended: Vec<f64> = outcomes.iter().map(|o| o.ended_per_second).collect();
    let placed: Vec<f64> = outcomes.iter().map(|o| o.placed_per_second).collect();
    let (figure, base) = (median(&ended), median(&placed));
    let describe = |o: &Outcome| {
        let ends: Vec<String> = o.ends.iter().map(|(k, n)| format!("{n} {k}")).collect();
        format!(
            "{}; {} units unsold, {} reserved; last end at {:.1} s",
            ends.join(", "),
            o.available,
            o.reserved,
            o.last_end.as_secs_f64()
        )
    };
    let outcomes_text: Vec<String> = outcomes.iter().map(describe).collect();
    table.push(Row {
        workload: format!(
            "Flash sale: one product with {} units, {} orders of one unit from {} connections through `agora serve` (all roles)",
            full.units, full.orders, full.connections
        ),
        figure: format!("{figure:.0} orders/s taken to their end"),
        baseline: format!("{base:.0} orders/s placed (the same run's answers)"),
        ratio: Some(figure / base),
        goal: format!(
            "≥ 1,000 orders/s; {} confirmed, {} out_of_stock",
            full.units,
            full.orders as i64 - full.units
        ),
        spread: format!("{} vs {}", spread(&ended), spread(&placed)),
        notes: format!(
            "load from a separate process; payment deadline {DEADLINE_MS} ms; {}",
            outcomes_text.join(" | ")
        ),
    });
    Ok(())
}
