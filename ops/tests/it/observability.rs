//! One `agora serve` followed from the outside: its `/metrics` after real
//! traffic through the whole pipeline, and one request's correlation id and
//! trace from the HTTP edge through the stored event, the JetStream message
//! and the projector's logs.

use std::process::Stdio;
use std::time::Duration;

use commands::testing::{TestDatabase, TestNats};
use serde_json::{json, Value};

use crate::exposition::{parse, value, Sample};
use crate::support::{eventually, Agora};

const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CORRELATION: &str = "follow-this-order-1";

async fn migrate(db: &TestDatabase, prefix: &str) {
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_agora"))
        .arg("migrate")
        .env("DATABASE_URL", db.url())
        .env("NATS_URL", commands::testing::nats_url())
        .env("AGORA_NATS_PREFIX", prefix)
        .env("RUST_LOG", "warn")
        .status()
        .await
        .expect("run agora migrate");
    assert!(status.success(), "agora migrate failed");
}

async fn scrape(base: &str) -> Option<Vec<Sample>> {
    let response = reqwest::get(format!("{base}/metrics")).await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    Some(parse(&response.text().await.ok()?))
}

fn at_least(samples: &[Sample], name: &str, labels: &[(&str, &str)], floor: f64) -> bool {
    value(samples, name, labels).is_some_and(|v| v >= floor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_can_be_followed_through_metrics_nats_and_logs() {
    let db = TestDatabase::with_pool_size(2).await;
    let nats = TestNats::new().await;
    migrate(&db, &nats.prefix).await;
    let log_path =
        std::env::temp_dir().join(format!("agora-trace-{}.log", uuid::Uuid::new_v4().simple()));
    let log = std::fs::File::create(&log_path).expect("create the log file");
    let mut agora = Agora::new(&db, &commands::testing::nats_url(), &nats.prefix);
    agora.start_with(
        &[
            ("AGORA_LOG_FORMAT", "json"),
            ("RUST_LOG", "info,projections=debug"),
        ],
        Stdio::from(log),
    );
    let base = agora.base();
    let http = reqwest::Client::new();
    eventually("agora is ready", Duration::from_secs(30), || async {
        matches!(http.get(format!("{base}/readyz")).send().await, Ok(r) if r.status().is_success())
    })
    .await;

    let created = http
        .post(format!("{base}/products"))
        .header("x-request-id", CORRELATION)
        .header("traceparent", INCOMING)
        .json(&json!({ "sku": "FOLLOW-1", "name": "Followed", "price": { "amount": 990, "currency": "EUR" }, "stock": 5 }))
        .send()
        .await
        .expect("create a product");
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let adjusted = http
        .post(format!("{base}/products/{id}/stock"))
        .json(&json!({ "delta": -2 }))
        .send()
        .await
        .expect("adjust stock");
    assert_eq!(adjusted.status(), 200);

    // Read until the projection shows both events, then once more: a cache hit.
    eventually(
        "the read model has both events",
        Duration::from_secs(20),
        || async {
            match http.get(format!("{base}/products/{id}")).send().await {
                Ok(r) if r.status().is_success() => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|body| body["version"] == 2),
                _ => false,
            }
        },
    )
    .await;
    let reread = http
        .get(format!("{base}/products/{id}"))
        .send()
        .await
        .expect("read");
    assert_eq!(reread.status(), 200);

    // The sampler refreshes lag and dead letters every few seconds.
    let products = [("projection", "products")];
    eventually(
        "the pipeline's metrics",
        Duration::from_secs(20),
        || async {
            let Some(s) = scrape(&base).await else {
                return false;
            };
            at_least(&s, "agora_relay_published_total", &[], 2.0)
                && value(&s, "agora_relay_leader", &[]) == Some(1.0)
                && value(&s, "agora_relay_lag_events", &[]) == Some(0.0)
                && at_least(&s, "agora_relay_last_publish_timestamp_seconds", &[], 1.0e9)
                && at_least(&s, "agora_projection_applied_total", &products, 2.0)
                && at_least(&s, "agora_projection_position", &products, 2.0)
                && value(&s, "agora_projection_lag_events", &products) == Some(0.0)
                && value(&s, "agora_projection_dead_letters", &products) == Some(0.0)
                && at_least(
                    &s,
                    "agora_read_cache_hits_total",
                    &[("model", "products")],
                    1.0,
                )
                && at_least(
                    &s,
                    "agora_commands_total",
                    &[("aggregate", "product"), ("outcome", "ok")],
                    2.0,
                )
                && at_least(
                    &s,
                    "agora_events_appended_total",
                    &[("aggregate", "product")],
                    2.0,
                )
        },
    )
    .await;

    // The stored event and its JetStream message carry the request's ids.
    let metadata: Value =
        sqlx::query_scalar("SELECT metadata FROM events WHERE aggregate_id = $1 AND sequence = 1")
            .bind(&id)
            .fetch_one(&db.pool)
            .await
            .expect("the first event");
    assert_eq!(metadata["correlation_id"], CORRELATION);
    let stored_trace = metadata["traceparent"]
        .as_str()
        .expect("a traceparent")
        .to_owned();
    assert!(
        stored_trace.starts_with(&format!("00-{TRACE_ID}-")),
        "{stored_trace}"
    );
    let messages = nats.messages().await;
    let first = messages
        .iter()
        .find(|m| {
            m.headers
                .get("Nats-Msg-Id")
                .is_some_and(|v| v.to_string() == format!("product:{id}:1"))
        })
        .expect("the first event was published");
    assert_eq!(
        first.headers.get("traceparent").map(ToString::to_string),
        Some(stored_trace)
    );
    assert_eq!(
        first
            .headers
            .get("Agora-Correlation-Id")
            .map(ToString::to_string)
            .as_deref(),
        Some(CORRELATION)
    );
    assert_eq!(
        first
            .headers
            .get("Agora-Causation-Id")
            .map(ToString::to_string)
            .as_deref(),
        Some(CORRELATION)
    );

    // The projector logged its handling of that message inside a span with
    // the request's correlation id and trace id.
    let projector_logged = |text: &str| {
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .any(|line| {
                line["spans"].as_array().is_some_and(|spans| {
                    spans.iter().any(|span| {
                        span["name"] == "projection_message"
                            && span["projection"] == "products"
                            && span["correlation_id"] == CORRELATION
                            && span["trace_id"] == TRACE_ID
                            && span["causation_id"] == format!("product:{id}:1")
                    })
                })
            })
    };
    eventually(
        "the projector's log line",
        Duration::from_secs(10),
        || async { projector_logged(&std::fs::read_to_string(&log_path).unwrap_or_default()) },
    )
    .await;
    drop(agora);
    let _ = std::fs::remove_file(&log_path);
}
