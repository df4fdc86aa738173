//! One `agora serve` followed from the outside: its `/metrics` after real
//! traffic through the whole pipeline, and one request's correlation id and
//! trace from the HTTP edge through the stored event, the JetStream message
//! and the projector's logs.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::{TestDatabase, TestNats};

use crate::exposition::{parse, value, Sample};
use crate::support::{eventually_within, Agora};

const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CORRELATION: &str = "follow-this-order-1";

async fn migrate(db: &TestDatabase, prefix: &str) {
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_agora"))
        .arg("migrate")
        .env("DATABASE_URL", db.url())
        .env("NATS_URL", testkit::nats_url())
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
    let mut agora = Agora::new(&db, &testkit::nats_url(), &nats.prefix);
    agora.start_logged(
        &[
            ("AGORA_LOG_FORMAT", "json"),
            ("RUST_LOG", "info,projections=debug"),
        ],
        Stdio::from(log),
    );
    let base = agora.base();
    let http = reqwest::Client::new();
    eventually_within("agora is ready", Duration::from_secs(30), || async {
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
    eventually_within(
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
    // Generous: the sampler runs every 5 s inside a child that shares two
    // cores with the other tests' children (crash tests, the saga).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        // Read again each round: the first re-read can miss when the change
        // message of version 2 lands after it and drops the entry.
        let _ = http.get(format!("{base}/products/{id}")).send().await;
        let s = scrape(&base).await.unwrap_or_default();
        let checks = [
            (
                "relay published",
                at_least(&s, "agora_relay_published_total", &[], 2.0),
            ),
            (
                "relay leader",
                value(&s, "agora_relay_leader", &[]) == Some(1.0),
            ),
            (
                "relay lag",
                value(&s, "agora_relay_lag_events", &[]) == Some(0.0),
            ),
            (
                "relay last publish",
                at_least(&s, "agora_relay_last_publish_timestamp_seconds", &[], 1.0e9),
            ),
            (
                "applied",
                at_least(&s, "agora_projection_applied_total", &products, 2.0),
            ),
            (
                "position",
                at_least(&s, "agora_projection_position", &products, 2.0),
            ),
            (
                "projection lag",
                value(&s, "agora_projection_lag_events", &products) == Some(0.0),
            ),
            (
                "dead letters",
                value(&s, "agora_projection_dead_letters", &products) == Some(0.0),
            ),
            (
                "read cache hit",
                at_least(
                    &s,
                    "agora_read_cache_hits_total",
                    &[("model", "products")],
                    1.0,
                ),
            ),
            (
                "commands",
                at_least(
                    &s,
                    "agora_commands_total",
                    &[("aggregate", "product"), ("outcome", "ok")],
                    2.0,
                ),
            ),
            (
                "events appended",
                at_least(
                    &s,
                    "agora_events_appended_total",
                    &[("aggregate", "product")],
                    2.0,
                ),
            ),
        ];
        let failing: Vec<_> = checks
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(name, _)| *name)
            .collect();
        if failing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pipeline's metrics never showed: {failing:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

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
    eventually_within(
        "the projector's log line",
        Duration::from_secs(10),
        || async { projector_logged(&std::fs::read_to_string(&log_path).unwrap_or_default()) },
    )
    .await;
    drop(agora);
    let _ = std::fs::remove_file(&log_path);
}

#[cfg(not(feature = "otlp"))]
#[test]
fn a_build_without_otlp_warns_when_an_endpoint_is_set() {
    // `serve` without a JWT secret stops right after start-up logging.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_agora"))
        .arg("serve")
        .env_remove("AGORA_JWT_SECRET")
        .env_remove("AGORA_AUTH")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env("AGORA_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run agora");
    let logs = String::from_utf8_lossy(&output.stdout);
    let warning = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["level"] == "WARN")
        .unwrap_or_else(|| panic!("no warning in {logs:?}"));
    let message = warning["message"].as_str().unwrap_or_default();
    assert!(message.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{message}");
    assert!(message.contains("otlp"), "{message}");
}

/// With the `otlp` feature: spans reach an OTLP/HTTP collector (a stand-in
/// on a loopback port that records what is posted), in the client's trace.
#[cfg(feature = "otlp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_in_the_callers_trace() {
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let received: Arc<Mutex<Vec<(String, Vec<u8>)>>> = Arc::default();
    let collector = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", collector.local_addr().expect("addr"));
    let sink = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = collector.accept().await {
            let sink = Arc::clone(&sink);
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 8192];
                // Read the head, then exactly content-length bytes of body.
                loop {
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buffer[..end]).to_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if buffer.len() < end + 4 + length {
                        continue;
                    }
                    let path = head
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_owned();
                    sink.lock()
                        .expect("lock")
                        .push((path, buffer[end + 4..end + 4 + length].to_vec()));
                    let _ = socket
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    buffer.clear();
                }
            });
        }
    });

    let db = TestDatabase::with_pool_size(2).await;
    let nats = TestNats::new().await;
    migrate(&db, &nats.prefix).await;
    let mut agora = Agora::new(&db, &testkit::nats_url(), &nats.prefix);
    agora.start_logged(
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("RUST_LOG", "info"),
        ],
        Stdio::null(),
    );
    let base = agora.base();
    let http = reqwest::Client::new();
    eventually_within("agora is ready", Duration::from_secs(30), || async {
        matches!(http.get(format!("{base}/readyz")).send().await, Ok(r) if r.status().is_success())
    })
    .await;
    let created = http
        .post(format!("{base}/products"))
        .header("traceparent", INCOMING)
        .json(&json!({ "sku": "OTLP-1", "name": "Exported", "price": { "amount": 990, "currency": "EUR" }, "stock": 5 }))
        .send()
        .await
        .expect("create a product");
    assert_eq!(created.status(), 201);

    // The batch exporter sends every few seconds; the request's span and the
    // projector's spans both carry the trace id the client sent.
    let trace_id: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&TRACE_ID[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    eventually_within(
        "spans of the caller's trace at the collector",
        Duration::from_secs(30),
        || {
            let received = Arc::clone(&received);
            let trace_id = trace_id.clone();
            async move {
                let received = received.lock().expect("lock");
                let bodies: Vec<&Vec<u8>> = received
                    .iter()
                    .filter(|(path, _)| path == "/v1/traces")
                    .map(|(_, b)| b)
                    .collect();
                let has = |needle: &[u8]| {
                    bodies
                        .iter()
                        .any(|b| b.windows(needle.len()).any(|w| w == needle))
                };
                has(&trace_id) && has(b"projection_message") && has(b"request")
            }
        },
    )
    .await;
}
