//! `agora-bench load`: the load client as a process of its own, so it does
//! not share a scheduler with the server it measures. Stock adjustments
//! (`POST /products/{id}/stock`, a random product each) from N connections
//! for a while, or with `--orders-for USER --total N`, N orders of one unit
//! (`POST /orders`, `tok_ok`) as fast as the connections take them; prints
//! one JSON line: `{ok, failed, seconds, p50_ms, p99_ms}`.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::report::quantile_ms;

pub struct LoadArgs {
    pub base: String,
    pub connections: usize,
    pub seconds: f64,
    pub products: Vec<String>,
    /// Orders instead of stock adjustments: placed for this user, `total`
    /// of them in all, whatever the time.
    pub orders_for: Option<String>,
    pub total: usize,
}

impl LoadArgs {
    pub fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let mut load = LoadArgs {
            base: String::new(),
            connections: 8,
            seconds: 5.0,
            products: Vec::new(),
            orders_for: None,
            total: 0,
        };
        while let Some(arg) = args.next() {
            let mut value = || {
                args.next()
                    .ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))
            };
            match arg.as_str() {
                "--base" => load.base = value()?,
                "--connections" => load.connections = value()?.parse()?,
                "--seconds" => load.seconds = value()?.parse()?,
                "--products" => {
                    load.products = value()?.split(',').map(str::to_owned).collect();
                }
                "--orders-for" => load.orders_for = Some(value()?),
                "--total" => load.total = value()?.parse()?,
                other => anyhow::bail!("unknown argument {other}"),
            }
        }
        anyhow::ensure!(!load.base.is_empty() && !load.products.is_empty());
        Ok(load)
    }

    /// The arguments that make a child process run this load.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "load".into(),
            "--base".into(),
            self.base.clone(),
            "--connections".into(),
            self.connections.to_string(),
            "--seconds".into(),
            self.seconds.to_string(),
            "--products".into(),
            self.products.join(","),
        ];
        if let Some(user) = &self.orders_for {
            args.extend(["--orders-for".into(), user.clone()]);
            args.extend(["--total".into(), self.total.to_string()]);
        }
        args
    }
}

/// What one load run achieved, as the child prints it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Loaded {
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub failed: u64,
}

impl Loaded {
    pub fn from_json(line: &str) -> anyhow::Result<Self> {
        let value: serde_json::Value = serde_json::from_str(line.trim())?;
        let number = |key: &str| value[key].as_f64().unwrap_or(0.0);
        Ok(Loaded {
            per_second: number("ok") / number("seconds").max(1e-9),
            p50_ms: number("p50_ms"),
            p99_ms: number("p99_ms"),
            failed: number("failed") as u64,
        })
    }
}

pub async fn client(load: LoadArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(load.connections)
        .build()?;
    let period = Duration::from_secs_f64(load.seconds);
    let started = Instant::now();
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..load.connections)
        .map(|n| {
            let (client, base, products) =
                (client.clone(), load.base.clone(), load.products.clone());
            let (user, total, taken) = (
                load.orders_for.clone(),
                load.total,
                std::sync::Arc::clone(&taken),
            );
            let ordering = user.is_some();
            let more = move || {
                if ordering {
                    taken.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total
                } else {
                    started.elapsed() < period
                }
            };
            tokio::spawn(async move {
                let (mut latencies, mut failed) = (Vec::new(), 0u64);
                // A cheap spread over the products without a shared RNG.
                let mut pick = n.wrapping_mul(2_654_435_761);
                while more() {
                    pick = pick
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let product = &products[(pick >> 33) % products.len()];
                    let sent = Instant::now();
                    let request = match &user {
                        Some(user) => client.post(format!("{base}/orders")).json(&json!({
                            "user_id": user,
                            "lines": [{ "product_id": product, "quantity": 1 }],
                            "payment_token": "tok_ok",
                        })),
                        None => client
                            .post(format!("{base}/products/{product}/stock"))
                            .json(&json!({ "delta": 1 })),
                    };
                    let answer = request.send().await;
                    match answer {
                        Ok(answer) if answer.status().is_success() => {
                            let _ = answer.bytes().await;
                            latencies.push(sent.elapsed());
                        }
                        _ => failed += 1,
                    }
                }
                (latencies, failed)
            })
        })
        .collect();
    let (mut latencies, mut failed) = (Vec::new(), 0);
    for task in tasks {
        let (mine, lost) = task.await?;
        latencies.extend(mine);
        failed += lost;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "ok": latencies.len(),
            "failed": failed,
            "seconds": seconds,
            "p50_ms": quantile_ms(&mut latencies, 0.5),
            "p99_ms": quantile_ms(&mut latencies, 0.99),
        })
    );
    Ok(())
}
