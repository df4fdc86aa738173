//! Workloads of the event pipeline: relay throughput, cached reads, and the
//! time from a write to the read model showing it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::{AppState, HttpOptions};
use async_nats::jetstream;
use bytes::Bytes;
use commands::relay::{self, RelayOptions};
use commands::{Aggregates, AppendHook, StoreOptions};
use futures::StreamExt;
use projections::Projection;
use schemas::EventEnvelope;
use serde_json::json;
use testkit::{TestDatabase, TestNats};
use tokio::sync::{watch, Notify};

use crate::report::{median, quantile_ms, spread, Row, Table};
use crate::stock::create_product;
use crate::Settings;

/// The whole system in this process: relay, the five workers, the API with
/// its change listener, on a fresh database and NATS prefix; with the saga
/// and the test payment gateway when asked.
pub(crate) struct Pipeline {
    // Held for their Drop: the database and the stream go with the pipeline.
    _db: TestDatabase,
    _nats: TestNats,
    pub(crate) base: String,
    stop: watch::Sender<bool>,
}

impl Pipeline {
    async fn start() -> anyhow::Result<Self> {
        Self::start_with(false).await
    }

    pub(crate) async fn start_with(saga: bool) -> anyhow::Result<Self> {
        let db = TestDatabase::with_pool_size(16).await;
        let nats = TestNats::new().await;
        let (stop, stopped) = watch::channel(false);
        let until = move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            }
        };
        let wake = Arc::new(Notify::new());
        let hook_wake = Arc::clone(&wake);
        let aggregates = Aggregates::new(
            db.pool.clone(),
            StoreOptions {
                on_append: Some(AppendHook(Arc::new(move || hook_wake.notify_one()))),
                ..StoreOptions::default()
            },
        );
        tokio::spawn(relay::run(
            db.pool.clone(),
            nats.client.clone(),
            RelayOptions::new(nats.prefix.clone()),
            wake,
            until(),
        ));
        for projection in Projection::ALL {
            let (pool, js, client, prefix, stopped) = (
                db.pool.clone(),
                nats.jetstream.clone(),
                nats.client.clone(),
                nats.prefix.clone(),
                until(),
            );
            tokio::spawn(async move {
                projections::worker::run(Arc::new(projection), pool, js, client, &prefix, stopped)
                    .await
            });
        }
        let options = HttpOptions {
            nats_prefix: nats.prefix.clone(),
            ..HttpOptions::default()
        };
        let state = AppState::new(
            db.pool.clone(),
            aggregates.clone(),
            Some(nats.client.clone()),
            options,
        );
        api::changes::spawn(nats.client.clone(), nats.prefix.clone(), state.clone())
            .await
            .map_err(|e| anyhow::anyhow!("change listener: {e}"))?;
        if saga {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let gateway_url = format!("http://{}", listener.local_addr()?);
            tokio::spawn(gateway::run(
                listener,
                gateway::GatewayOptions::new(db.pool.clone(), None),
                until(),
            ));
            let saga = saga::Saga::new(
                db.pool.clone(),
                nats.client.clone(),
                aggregates.clone(),
                saga::SagaOptions::new(nats.prefix.clone(), gateway_url),
            )
            .map_err(|e| anyhow::anyhow!("saga: {e}"))?;
            tokio::spawn(saga.run(until()));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        tokio::spawn(api::run(listener, state, until()));
        Ok(Self {
            _db: db,
            _nats: nats,
            base,
            stop,
        })
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Relay: events/s from the events table to JetStream, against publishing
/// the same messages pipelined from memory.
pub async fn relay(settings: &Settings, table: &mut Table) -> anyhow::Result<()> {
    let events: i64 = if settings.quick { 2_000 } else { 100_000 };
    let db = TestDatabase::with_pool_size(8).await;
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'product', 'p' || (g % 1000), g / 1000 + 1, 'ProductStockAdjusted', '1.0',
                '{\"ProductStockAdjusted\": {\"delta\": 1}}', '{\"correlation_id\": \"bench\", \"actor\": \"bench\"}'
           FROM generate_series(0, $1 - 1) AS g",
    )
    .bind(events)
    .execute(&db.pool)
    .await?;

    // The same messages, built once, for the baseline.
    let rows = relay::read_batch(&db.pool, "0", 0, events).await?;
    let mut messages = Vec::with_capacity(rows.len());
    for row in &rows {
        use sqlx::Row as _;
        let envelope = EventEnvelope {
            aggregate_type: row.try_get("aggregate_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            sequence: row.try_get("sequence")?,
            event_type: row.try_get("event_type")?,
            event_version: row.try_get("event_version")?,
            payload: serde_json::from_str(row.try_get("payload")?)?,
            metadata: serde_json::from_str(row.try_get("metadata")?)?,
            position: row.try_get("position")?,
            recorded_at: row.try_get("recorded_at")?,
        };
        let body = Bytes::from(serde_json::to_vec(&envelope)?);
        messages.push((envelope, body));
    }
    drop(rows);

    let (mut relayed, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..settings.reps {
        // Relay, from a fresh stream and checkpoint.
        let nats = TestNats::new().await;
        sqlx::query("DELETE FROM relay_checkpoints")
            .execute(&db.pool)
            .await?;
        let (stop, mut stopped) = watch::channel(false);
        let started = Instant::now();
        let task = tokio::spawn(relay::run(
            db.pool.clone(),
            nats.client.clone(),
            RelayOptions::new(nats.prefix.clone()),
            Arc::new(Notify::new()),
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ));
        let stream = nats.jetstream.get_stream(nats.stream_name()).await?;
        loop {
            let info = stream.clone().info().await?.state.messages;
            if info as i64 >= events {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        relayed.push(events as f64 / started.elapsed().as_secs_f64());
        let _ = stop.send(true);
        let _ = task.await;

        // Raw pipelined publish of the same messages.
        let target = TestNats::new().await;
        let started = Instant::now();
        // Pipelined as deep as the client allows acks in flight (5000),
        // awaiting the oldest as the window fills.
        let mut acks = std::collections::VecDeque::with_capacity(4096);
        let source = schemas::cloudevents::source(&target.prefix);
        for (envelope, body) in &messages {
            // The relay's own headers (message id, CloudEvents, trace), so
            // both sides publish the same messages.
            let headers = relay::headers(&relay::Published {
                source: &source,
                aggregate_type: &envelope.aggregate_type,
                aggregate_id: &envelope.aggregate_id,
                sequence: envelope.sequence,
                event_type: &envelope.event_type,
                event_version: &envelope.event_version,
                time: envelope
                    .recorded_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                correlation_id: envelope.correlation_id(),
                causation_id: envelope.causation_id(),
                traceparent: envelope
                    .metadata
                    .get("traceparent")
                    .and_then(|v| v.as_str()),
            });
            let subject =
                schemas::subjects::event(&target.prefix, "product", &envelope.aggregate_id);
            if acks.len() == 4096 {
                if let Some(ack) = acks.pop_front() {
                    let ack: jetstream::context::PublishAckFuture = ack;
                    ack.await?;
                }
            }
            acks.push_back(
                target
                    .jetstream
                    .publish_with_headers(subject, headers, body.clone())
                    .await?,
            );
        }
        for ack in acks {
            ack.await?;
        }
        raw.push(events as f64 / started.elapsed().as_secs_f64());
    }
    let (figure, baseline) = (median(&relayed), median(&raw));
    table.push(Row {
        workload: format!("Relay: {events} committed events to JetStream"),
        figure: format!("{figure:.0} events/s"),
        baseline: format!("{baseline:.0} events/s raw pipelined publish of the same messages"),
        ratio: Some(figure / baseline),
        goal: "≥ 0.8".to_owned(),
        spread: format!("{} vs {}", spread(&relayed), spread(&raw)),
        notes: "batches of 2000; the next read overlaps the acks".to_owned(),
    });
    Ok(())
}

/// Requests per second from `connections` clients hammering `url` for
/// `period`. The client runs on a thread and runtime of its own, as a load
/// tool in another process would, so it does not compete with the server's
/// tasks in one scheduler (which made some runs swing by a third).
async fn hammer(url: &str, connections: usize, period: Duration) -> f64 {
    let url = url.to_owned();
    let client = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(connections)
                .build()?;
            let started = Instant::now();
            let counts = futures::future::join_all((0..connections).map(|_| async {
                let mut count = 0u64;
                while started.elapsed() < period {
                    if let Ok(response) = client.get(&url).send().await {
                        if response.status().is_success() && response.bytes().await.is_ok() {
                            count += 1;
                        }
                    }
                }
                count
            }))
            .await;
            anyhow::Ok(counts.iter().sum::<u64>() as f64 / started.elapsed().as_secs_f64())
        })
    });
    tokio::task::spawn_blocking(move || client.join())
        .await
        .ok()
        .and_then(|joined| joined.ok())
        .and_then(|rate| rate.ok())
        .unwrap_or(0.0)
}

/// Cached `GET /products/{id}` against an axum handler returning the same
/// bytes from memory, same client and connections.
pub async fn cached_reads(settings: &Settings, table: &mut Table) -> anyhow::Result<()> {
    let (levels, period): (&[usize], Duration) = if settings.quick {
        (&[1, 4], Duration::from_millis(300))
    } else {
        (&[1, 8, 32, 64], Duration::from_secs(3))
    };
    let pipeline = Pipeline::start().await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let id = create_product(&client, &pipeline.base, "READ-1").await?;
    let url = format!("{}/products/{id}", pipeline.base);
    let body = client
        .get(format!("{url}?min_version=1"))
        .send()
        .await?
        .bytes()
        .await?;

    let raw_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let raw_url = format!("http://{}/raw", raw_listener.local_addr()?);
    let raw_app = axum::Router::new().route(
        "/raw",
        axum::routing::get(move || {
            let body = body.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(raw_listener, raw_app).await });

    for &connections in levels {
        hammer(&url, connections, period / 4).await;
        hammer(&raw_url, connections, period / 4).await;
        let (mut cached, mut raw) = (Vec::new(), Vec::new());
        for _ in 0..settings.reps {
            cached.push(hammer(&url, connections, period).await);
            raw.push(hammer(&raw_url, connections, period).await);
        }
        let (figure, baseline) = (median(&cached), median(&raw));
        table.push(Row {
            workload: format!(
                "API alone: cached `GET /products/{{id}}`, {connections} connections"
            ),
            figure: format!("{figure:.0} req/s"),
            baseline: format!("{baseline:.0} req/s from an axum handler returning the same bytes"),
            ratio: Some(figure / baseline),
            goal: "≥ 0.7".to_owned(),
            spread: format!("{} vs {}", spread(&cached), spread(&raw)),
            notes: "client on its own thread and runtime in the same process".to_owned(),
        });
    }
    drop(pipeline);
    Ok(())
}

/// At a steady 200 commands/s: from sending a write to `GET ?min_version`
/// answering with it; baseline JetStream's own publish-to-consumer latency at
/// the same rate.
pub async fn write_to_read(settings: &Settings, table: &mut Table) -> anyhow::Result<()> {
    let period = if settings.quick {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(10)
    };
    let rate = 200.0;
    let pipeline = Pipeline::start().await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let mut products = Vec::new();
    for i in 0..20 {
        products.push(create_product(&client, &pipeline.base, &format!("LAT-{i}")).await?);
    }
    for id in &products {
        client
            .get(format!("{}/products/{id}?min_version=1", pipeline.base))
            .send()
            .await?;
    }

    let latencies = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(Mutex::new(0u64));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut i = 0usize;
    while started.elapsed() < period {
        ticker.tick().await;
        let (client, base, id) = (
            client.clone(),
            pipeline.base.clone(),
            products[i % products.len()].clone(),
        );
        let (latencies, failures) = (Arc::clone(&latencies), Arc::clone(&failures));
        i += 1;
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let version = match client.post(format!("{base}/products/{id}/stock")).json(&json!({ "delta": 1 })).send().await {
                Ok(r) if r.status().is_success() => r.json::<serde_json::Value>().await.ok().and_then(|b| b["version"].as_i64()),
                _ => None,
            };
            let visible = match version {
                Some(v) => matches!(client.get(format!("{base}/products/{id}?min_version={v}")).send().await, Ok(r) if r.status().is_success()),
                None => false,
            };
            if visible {
                latencies.lock().map(|mut l| l.push(sent.elapsed())).ok();
            } else {
                failures.lock().map(|mut f| *f += 1).ok();
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let mut ours = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    let failed = failures.lock().map(|f| *f).unwrap_or(0);

    // Baseline: JetStream publish to a pull consumer's receipt, same rate.
    let nats = TestNats::new().await;
    let consumer = nats
        .jetstream
        .create_consumer_on_stream(
            jetstream::consumer::pull::Config {
                durable_name: Some("bench".into()),
                ..Default::default()
            },
            nats.stream_name(),
        )
        .await?;
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let receipts = Arc::new(Mutex::new(Vec::new()));
    let count = (period.as_secs_f64() * rate) as usize;
    let receiver = {
        let (sent_at, receipts) = (Arc::clone(&sent_at), Arc::clone(&receipts));
        let mut messages = consumer.messages().await?;
        tokio::spawn(async move {
            let mut seen = 0;
            while let Some(Ok(message)) = messages.next().await {
                let key = String::from_utf8_lossy(&message.payload).to_string();
                if let Some(at) = sent_at.lock().ok().and_then(|m| m.get(&key).copied()) {
                    receipts.lock().map(|mut r| r.push(at.elapsed())).ok();
                }
                let _ = message.ack().await;
                seen += 1;
                if seen >= count {
                    break;
                }
            }
        })
    };
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    for n in 0..count {
        ticker.tick().await;
        let key = n.to_string();
        sent_at
            .lock()
            .map(|mut m| m.insert(key.clone(), Instant::now()))
            .ok();
        let ack = nats
            .jetstream
            .publish(
                schemas::subjects::event(&nats.prefix, "bench", "x"),
                Bytes::from(key),
            )
            .await?;
        tokio::spawn(async move {
            let _ = ack.await;
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), receiver).await;
    let mut baseline = receipts.lock().map(|r| r.clone()).unwrap_or_default();

    let (p50, p99) = (quantile_ms(&mut ours, 0.5), quantile_ms(&mut ours, 0.99));
    let max = quantile_ms(&mut ours, 1.0);
    let base_p99 = quantile_ms(&mut baseline, 0.99);
    table.push(Row {
        workload: format!(
            "Write → read visible, {rate:.0} cmd/s for {:.1} s ({} writes)",
            period.as_secs_f64(),
            ours.len()
        ),
        figure: format!("p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms"),
        baseline: format!(
            "JetStream publish → pull consumer p50 {:.2} ms, p99 {base_p99:.2} ms",
            quantile_ms(&mut baseline, 0.5)
        ),
        ratio: None,
        goal: "p99 ≤ 10 ms".to_owned(),
        spread: "–".to_owned(),
        notes: format!(
            "write + `GET ?min_version` round trips included; {failed} not visible in time"
        ),
    });
    drop(pipeline);
    Ok(())
}
