//! What integrators feel: how soon a committed change reaches a webhook
//! receiver, and how soon it reaches every one of many open live-update
//! streams. Both against a real `agora serve` (every role in one process).
//!
//! - Webhooks: stock adjustments sent open loop at a fixed rate (200/s)
//!   across 20 products; a receiver in this process answers 204 and notes
//!   when each `webhook-id` first arrived. Latency is from the command's
//!   answer (its commit came just before) to that arrival, mapped through
//!   the delivery log (`webhook_deliveries`: id → product and version).
//!   Baseline: the same commands' own answer times.
//! - SSE fan-out: N streams on one product, then one change at a time; the
//!   time from the change's answer to the first and to the last stream's
//!   message of that version. Baseline: the change's own answer time.
//!
//! The load here is light (200 commands a second, or one change at a
//! time), so it is sent from this process; the server is a process of its
//! own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::json;
use testkit::{TestDatabase, TestNats};
use uuid::Uuid;

use crate::processes::Serve;
use crate::report::{median, quantile_ms, spread, Row, Table};
use crate::Settings;

/// First arrival of each `webhook-id`.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn receive(State(arrivals): State<Arrivals>, headers: HeaderMap) -> StatusCode {
    let now = Instant::now();
    if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
        if let Ok(mut arrivals) = arrivals.lock() {
            arrivals.entry(id.to_owned()).or_insert(now);
        }
    }
    StatusCode::NO_CONTENT
}

async fn receiver() -> anyhow::Result<(String, Arrivals)> {
    let arrivals = Arrivals::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(Arc::clone(&arrivals));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, arrivals))
}

async fn system(env: &[(&str, &str)]) -> anyhow::Result<(TestDatabase, TestNats, Serve)> {
    let db = TestDatabase::with_pool_size(2).await;
    let nats = TestNats::new().await;
    let mut all = vec![
        ("AGORA_RATE_LIMIT_PER_SECOND", "1000000"),
        ("AGORA_RATE_LIMIT_BURST", "1000000"),
        ("AGORA_WEBHOOKS_ALLOW_LOOPBACK", "true"),
    ];
    all.extend_from_slice(env);
    let serve = Serve::start(&db, &nats.prefix, "all", &all)?;
    serve.ready(&reqwest::Client::new()).await?;
    Ok((db, nats, serve))
}

struct Webhooks {
    answer_p50_ms: f64,
    answer_p99_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
    delivered: usize,
    sent: usize,
}

async fn webhooks_once(rate: f64, seconds: f64) -> anyhow::Result<Webhooks> {
    let (db, _nats, serve) = system(&[]).await?;
    let client = reqwest::Client::new();
    let base = serve.base.clone();
    let (url, arrivals) = receiver().await?;
    let endpoint = client
        .post(format!("{base}/webhooks"))
        .json(&json!({ "url": url, "events": ["product.stock_changed"] }))
        .send()
        .await?;
    anyhow::ensure!(
        endpoint.status().is_success(),
        "registering the receiver: {}",
        endpoint.text().await?
    );
    let mut products = Vec::new();
    for n in 0..20 {
        products.push(crate::stock::create_product(&client, &base, &format!("HOOK-{n}")).await?);
    }

    // Open loop: a command every 1/rate s whatever the answers do.
    let total = (rate * seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    let mut sent = Vec::with_capacity(total);
    for n in 0..total {
        tokio::time::sleep_until((started + interval * n as u32).into()).await;
        let (client, product) = (client.clone(), products[n % products.len()].clone());
        let url = format!("{base}/products/{product}/stock");
        sent.push(tokio::spawn(async move {
            let at = Instant::now();
            let answer = client
                .post(url)
                .json(&json!({ "delta": 1 }))
                .send()
                .await
                .ok()?;
            let answered = Instant::now();
            let body: serde_json::Value = answer.json().await.ok()?;
            let version = body["version"].as_i64()?;
            Some((Uuid::parse_str(&product).ok()?, version, at, answered))
        }));
    }
    let mut answered = HashMap::new();
    let mut answer_times = Vec::new();
    for task in sent {
        if let Some((product, version, at, done)) = task.await? {
            answered.insert((product, version), done);
            answer_times.push(done - at);
        }
    }
    // Wait for the log to show every delivery done (or 30 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM webhook_deliveries WHERE status <> 'delivered'",
        )
        .fetch_one(&db.pool)
        .await?;
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries")
            .fetch_one(&db.pool)
            .await?;
        if (pending == 0 && rows as usize >= answered.len()) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log: Vec<(Uuid, Uuid, i64)> =
        sqlx::query_as("SELECT id, aggregate_id, sequence FROM webhook_deliveries")
            .fetch_all(&db.pool)
            .await?;
    let arrivals = arrivals
        .lock()
        .map_err(|_| anyhow::anyhow!("the receiver panicked"))?
        .clone();
    let mut latencies = Vec::new();
    for (delivery, product, version) in log {
        let arrived = arrivals.get(&webhooks::deliver::webhook_id(delivery));
        if let (Some(arrived), Some(done)) = (arrived, answered.get(&(product, version))) {
            latencies.push(arrived.saturating_duration_since(*done));
        }
    }
    Ok(Webhooks {
        answer_p50_ms: quantile_ms(&mut answer_times, 0.5),
        answer_p99_ms: quantile_ms(&mut answer_times, 0.99),
        p50_ms: quantile_ms(&mut latencies, 0.5),
        p99_ms: quantile_ms(&mut latencies, 0.99),
        delivered: latencies.len(),
        sent: answered.len(),
    })
}

/// Reads one stream's messages and reports when each version arrived.
async fn follow(
    mut response: reqwest::Response,
    seen: tokio::sync::mpsc::UnboundedSender<(i64, Instant)>,
) {
    let mut buffer = String::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if let Some(id) = block
                .lines()
                .find_map(|line| line.strip_prefix("id:"))
                .and_then(|id| id.trim().parse().ok())
            {
                if seen.send((id, Instant::now())).is_err() {
                    return;
                }
            }
        }
    }
}

struct FanOut {
    answer_ms: Vec<Duration>,
    first_ms: Vec<Duration>,
    last_ms: Vec<Duration>,
    missed: usize,
}

async fn fan_out_once(streams: usize, changes: usize) -> anyhow::Result<FanOut> {
    // Every stream comes from this one address: lift the per-peer cap too.
    let cap = (streams + 16).to_string();
    let (_db, _nats, serve) = system(&[
        ("AGORA_SSE_MAX_STREAMS", &cap),
        ("AGORA_MAX_CONNECTIONS_PER_PEER", &cap),
    ])
    .await?;
    let base = serve.base.clone();
    let client = reqwest::Client::new();
    let product = crate::stock::create_product(&client, &base, "FANOUT").await?;
    // One connection per stream, as that many browsers would have.
    let streaming = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..streams {
        let response = streaming
            .get(format!("{base}/products/{product}/updates"))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "a stream was refused: {}",
            response.status()
        );
        tokio::spawn(follow(response, seen_tx.clone()));
    }
    drop(seen_tx);
    // Every stream has sent its first message (the current state).
    let mut opened = 0;
    while opened < streams {
        let Some(_) = tokio::time::timeout(Duration::from_secs(30), seen.recv()).await? else {
            anyhow::bail!("the streams ended");
        };
        opened += 1;
    }
    let mut result = FanOut {
        answer_ms: Vec::new(),
        first_ms: Vec::new(),
        last_ms: Vec::new(),
        missed: 0,
    };
    for _ in 0..changes {
        let at = Instant::now();
        let body: serde_json::Value = client
            .post(format!("{base}/products/{product}/stock"))
            .json(&json!({ "delta": 1 }))
            .send()
            .await?
            .json()
            .await?;
        let answered = Instant::now();
        result.answer_ms.push(answered - at);
        let version = body["version"]
            .as_i64()
            .ok_or_else(|| anyhow::anyhow!("no version in {body}"))?;
        let (mut got, mut first, mut last) = (0, None, answered);
        let deadline = answered + Duration::from_secs(10);
        while got < streams {
            match tokio::time::timeout_at(deadline.into(), seen.recv()).await {
                Ok(Some((id, when))) if id == version => {
                    got += 1;
                    first.get_or_insert(when);
                    last = when;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        result.missed += streams - got;
        result
            .first_ms
            .push(first.unwrap_or(last).saturating_duration_since(answered));
        result
            .last_ms
            .push(last.saturating_duration_since(answered));
    }
    Ok(result)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub async fn run(settings: &Settings, table: &mut Table) -> anyhow::Result<()> {
    let (rate, seconds, streams, changes) = if settings.quick {
        (50.0, 1.0, 20, 2)
    } else {
        (200.0, 10.0, 1000, 10)
    };
    println!("integrations: commit → webhook delivered at {rate:.0} events/s; SSE fan-out to {streams} streams");

    let (mut p50s, mut p99s, mut delivered, mut sent, mut answer50, mut answer99) =
        (Vec::new(), Vec::new(), 0, 0, Vec::new(), Vec::new());
    for _ in 0..settings.reps {
        let run = webhooks_once(rate, seconds).await?;
        p50s.push(run.p50_ms);
        p99s.push(run.p99_ms);
        answer50.push(run.answer_p50_ms);
        answer99.push(run.answer_p99_ms);
        delivered += run.delivered;
        sent += run.sent;
    }
    let (p50, p99) = (median(&p50s), median(&p99s));
    table.push(Row {
        workload: format!(
            "Commit → webhook delivered: stock changes on 20 products at {rate:.0}/s open loop, one endpoint, `agora serve` (all roles)"
        ),
        figure: format!("p50 {p50:.1} ms, p99 {p99:.1} ms"),
        baseline: format!(
            "the commands' own answers: p50 {:.1} ms, p99 {:.1} ms",
            median(&answer50),
            median(&answer99)
        ),
        ratio: None,
        goal: "–".to_owned(),
        spread: format!("p50 {}, p99 {}", spread(&p50s), spread(&p99s)),
        notes: format!(
            "{delivered} of {sent} deliveries matched to their commands; from the answer to the receiver's first sight of the webhook-id"
        ),
    });

    let mut last_all = Vec::new();
    let mut first_all = Vec::new();
    let mut answers = Vec::new();
    let mut missed = 0;
    let mut last_medians = Vec::new();
    for _ in 0..settings.reps {
        let mut run = fan_out_once(streams, changes).await?;
        missed += run.missed;
        last_medians.push(quantile_ms(&mut run.last_ms, 0.5));
        last_all.extend(run.last_ms);
        first_all.extend(run.first_ms);
        answers.extend(run.answer_ms);
    }
    let last_p50 = quantile_ms(&mut last_all, 0.5);
    let worst = last_all.iter().copied().max().map(ms).unwrap_or(0.0);
    table.push(Row {
        workload: format!(
            "SSE fan-out: one product, {streams} open streams, one change at a time, `agora serve` (all roles)"
        ),
        figure: format!(
            "last stream p50 {last_p50:.1} ms (worst {worst:.1} ms), first stream p50 {:.1} ms",
            quantile_ms(&mut first_all, 0.5)
        ),
        baseline: format!(
            "the change's own answer: p50 {:.1} ms",
            quantile_ms(&mut answers, 0.5)
        ),
        ratio: None,
        goal: "–".to_owned(),
        spread: spread(&last_medians),
        notes: format!(
            "{} changes; from the change's answer to each stream's message of that version; {missed} stream messages missed",
            changes * settings.reps
        ),
    });
    Ok(())
}
