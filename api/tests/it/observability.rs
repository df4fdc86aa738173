//! `/metrics` and the trace context of requests.
//!
//! Every test in this binary shares one process and so one recorder: counts
//! are checked as "at least what this test caused".

use reqwest::Method;
use serde_json::{json, Value};

use crate::exposition::{parse, value, Sample};
use crate::support::{spawn_app, TestApp};

const INCOMING: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const INCOMING_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

async fn scrape(app: &TestApp) -> Vec<Sample> {
    let response = app
        .request(Method::GET, "/metrics")
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4"
    );
    parse(&response.text().await.expect("a text body"))
}

fn counter(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    value(samples, name, labels).unwrap_or_else(|| panic!("no {name}{labels:?} in the scrape"))
}

async fn metadata_of(app: &TestApp, aggregate_id: &str) -> Vec<Value> {
    sqlx::query_scalar("SELECT metadata FROM events WHERE aggregate_id = $1 ORDER BY sequence")
        .bind(aggregate_id)
        .fetch_all(&app.db.pool)
        .await
        .expect("read metadata")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_commands_and_reads() {
    let app = spawn_app().await;
    let before = scrape(&app).await;
    let ok_before = counter(
        &before,
        "agora_commands_total",
        &[("aggregate", "product"), ("outcome", "ok")],
    );

    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            app.create_product(&format!("MET-{i}"), 500, "EUR", 10)
                .await
                .id(),
        );
    }
    let stock = format!("/products/{}/stock", ids[0]);
    assert_eq!(app.post(&stock, json!({ "delta": -1 })).await.status, 200);
    // A stale If-Match, a business refusal, a miss in the read cache and a
    // path that matches no route.
    let stale = app
        .send(
            app.request(Method::POST, &stock)
                .header("if-match", "\"1\"")
                .json(&json!({ "delta": 1 })),
        )
        .await;
    assert_eq!(stale.status, 412);
    let refused = app.post(&stock, json!({ "delta": -1000 })).await;
    assert_eq!(refused.status / 100, 4, "{}", refused.body);
    assert_eq!(app.get(&format!("/products/{}", ids[1])).await.status, 404);
    assert_eq!(app.get("/no/such/path/123").await.status, 404);

    let after = scrape(&app).await;
    let ok = |s: &[Sample]| {
        counter(
            s,
            "agora_commands_total",
            &[("aggregate", "product"), ("outcome", "ok")],
        )
    };
    assert!(ok(&after) - ok_before >= 4.0, "4 accepted product commands");
    for outcome in ["precondition_failed", "rejected"] {
        let labels = [("aggregate", "product"), ("outcome", outcome)];
        assert!(
            counter(&after, "agora_commands_total", &labels)
                > counter(&before, "agora_commands_total", &labels),
            "{outcome} counted"
        );
    }
    assert!(
        counter(
            &after,
            "agora_events_appended_total",
            &[("aggregate", "product")]
        ) >= 4.0
    );
    assert!(
        counter(
            &after,
            "agora_command_duration_seconds_count",
            &[("aggregate", "product")]
        ) >= 6.0
    );
    assert!(
        counter(
            &after,
            "agora_aggregate_cache_hits_total",
            &[("aggregate", "product")]
        ) >= 1.0
    );
    assert!(
        counter(
            &after,
            "agora_read_cache_misses_total",
            &[("model", "products")]
        ) >= 1.0
    );

    let created = [
        ("method", "POST"),
        ("route", "/products"),
        ("status", "201"),
    ];
    assert!(counter(&after, "agora_http_requests_total", &created) >= 3.0);
    let stale = [
        ("method", "POST"),
        ("route", "/products/{id}/stock"),
        ("status", "412"),
    ];
    assert!(counter(&after, "agora_http_requests_total", &stale) >= 1.0);
    let unmatched = [("method", "GET"), ("route", "unmatched"), ("status", "404")];
    assert!(counter(&after, "agora_http_requests_total", &unmatched) >= 1.0);
    let timed = [("method", "POST"), ("route", "/products")];
    assert!(counter(&after, "agora_http_request_duration_seconds_count", &timed) >= 3.0);
    let buckets: Vec<&Sample> = after
        .iter()
        .filter(|s| {
            s.name == "agora_http_request_duration_seconds_bucket"
                && s.labels.get("route").map(String::as_str) == Some("/products")
        })
        .collect();
    assert!(
        buckets.iter().any(|s| s.labels["le"] == "0.001"),
        "ms-scale buckets"
    );
    assert!(buckets.iter().any(|s| s.labels["le"] == "+Inf"));

    // Raw paths never become labels: no series names an id.
    for sample in &after {
        for label in sample.labels.values() {
            assert!(
                ids.iter().all(|id| !label.contains(id.as_str())),
                "{sample:?}"
            );
            assert!(!label.contains("/no/such"), "{sample:?}");
        }
    }
    // The scrape itself is in flight while it renders.
    assert!(counter(&after, "agora_http_requests_in_flight", &[]) >= 1.0);
    // Series nobody touched yet are there at zero.
    assert!(value(
        &after,
        "agora_commands_total",
        &[("aggregate", "payment"), ("outcome", "conflict")]
    )
    .is_some());
    assert!(value(&after, "agora_relay_published_total", &[]).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_carry_the_requests_correlation_id_and_trace() {
    let app = spawn_app().await;
    let created = app
        .send(
            app.request(Method::POST, "/users")
                .header("x-request-id", "req-trace-1")
                .header("traceparent", INCOMING)
                .json(&json!({ "email": "trace@example.com", "name": "Ada" })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let answered = created.headers["traceparent"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        answered.starts_with(&format!("00-{INCOMING_TRACE}-")),
        "{answered}"
    );
    assert!(
        !answered.contains("b7ad6b7169203331"),
        "the request is a step of its own"
    );

    let stored = metadata_of(&app, &created.id()).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["correlation_id"], "req-trace-1");
    assert_eq!(stored[0]["causation_id"], "req-trace-1");
    assert_eq!(stored[0]["traceparent"], answered.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_or_missing_traceparent_starts_a_new_trace() {
    let app = spawn_app().await;
    let mut traces = Vec::new();
    for given in [
        None,
        Some("00-00000000000000000000000000000000-b7ad6b7169203331-01"),
        Some("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        Some("nonsense"),
    ] {
        let mut request = app
            .request(Method::POST, "/products")
            .json(&json!({ "sku": format!("TR-{}", traces.len()), "name": "Thing", "price": { "amount": 100, "currency": "EUR" }, "stock": 1 }));
        if let Some(value) = given {
            request = request.header("traceparent", value);
        }
        let created = app.send(request).await;
        assert_eq!(created.status, 201, "{given:?}: {}", created.body);
        let stored = metadata_of(&app, &created.id()).await;
        let traceparent: schemas::TraceParent = stored[0]["traceparent"]
            .as_str()
            .expect("a traceparent is stored")
            .parse()
            .expect("a valid traceparent is stored");
        assert_ne!(traceparent.trace_id_hex(), INCOMING_TRACE);
        // The correlation id is the request id the server made.
        assert_eq!(
            stored[0]["correlation_id"],
            created.headers["x-request-id"].to_str().unwrap()
        );
        traces.push(traceparent.trace_id);
    }
    traces.sort_unstable();
    traces.dedup();
    assert_eq!(traces.len(), 4, "each request starts its own trace");
}
