//! A Postgres restart under load is unavailability, never a bug: the
//! security review saw one 500 (`terminating connection due to
//! administrator command`, SQLSTATE 57P01) among 15,000 answers while the
//! cluster restarted under 8 clients adjusting stock. The real `agora serve`
//! runs here against a private cluster (never the shared one), which is
//! restarted twice under the same load.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use testkit::{TestNats, TestPostgres};

use crate::support::{eventually_within, Agora};

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_restart_under_load_answers_503_with_retry_after_never_500() {
    let postgres = TestPostgres::start();
    let nats = TestNats::new().await;
    let database_url = postgres.url("agora");
    let migrated = tokio::process::Command::new(env!("CARGO_BIN_EXE_agora"))
        .arg("migrate")
        .env("DATABASE_URL", &database_url)
        .env("NATS_URL", testkit::nats_url())
        .env("AGORA_NATS_PREFIX", &nats.prefix)
        .env("RUST_LOG", "warn")
        .status()
        .await
        .expect("run agora migrate");
    assert!(migrated.success(), "agora migrate failed");
    let mut agora = Agora::on(database_url.clone(), &testkit::nats_url(), &nats.prefix);
    agora.start();
    let base = agora.base();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    eventually_within("agora is ready", Duration::from_secs(30), || {
        let request = http.get(format!("{base}/readyz")).send();
        async move { request.await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;
    let product: Value = http
        .post(format!("{base}/products"))
        .json(&json!({"sku": "PG-1", "name": "Restart", "price": {"amount": 100, "currency": "EUR"}, "stock": 0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stock = format!("{base}/products/{}/stock", product["id"].as_str().unwrap());

    // 8 clients add one unit each, again and again, counting every answer.
    let running = Arc::new(AtomicBool::new(true));
    let answers: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let bare_503s = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (running, answers, bare_503s, http, stock) = (
                Arc::clone(&running),
                Arc::clone(&answers),
                Arc::clone(&bare_503s),
                http.clone(),
                stock.clone(),
            );
            tokio::spawn(async move {
                while running.load(Ordering::SeqCst) {
                    let outcome = match http.post(&stock).json(&json!({"delta": 1})).send().await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let retry_after = response.headers().contains_key("retry-after");
                            let body: Value = response.json().await.unwrap_or(Value::Null);
                            if status == 503
                                && (!retry_after || body["type"] != "/problems/service-unavailable")
                            {
                                bare_503s.lock().unwrap().push(body.clone());
                            }
                            format!("{status} {}", body["type"].as_str().unwrap_or(""))
                        }
                        // The server itself never goes away here.
                        Err(err) => format!("transport error: {err}"),
                    };
                    *answers.lock().unwrap().entry(outcome).or_default() += 1;
                }
            })
        })
        .collect();

    let ok = |answers: &BTreeMap<String, usize>| {
        answers
            .iter()
            .filter(|(k, _)| k.starts_with("200"))
            .map(|(_, n)| *n)
            .sum::<usize>()
    };
    for _ in 0..2 {
        let before = ok(&answers.lock().unwrap());
        eventually_within("commands go through", Duration::from_secs(30), || {
            let answers = Arc::clone(&answers);
            async move { ok(&answers.lock().unwrap()) > before + 200 }
        })
        .await;
        postgres.stop();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        postgres.resume();
    }
    let before = ok(&answers.lock().unwrap());
    eventually_within(
        "commands go through after the restarts",
        Duration::from_secs(60),
        || {
            let answers = Arc::clone(&answers);
            async move { ok(&answers.lock().unwrap()) > before + 200 }
        },
    )
    .await;
    running.store(false, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }

    let answers = answers.lock().unwrap().clone();
    eprintln!("answers across two restarts: {answers:?}");
    let unexpected: Vec<_> = answers
        .iter()
        .filter(|(outcome, _)| {
            !(outcome.starts_with("200") || outcome.as_str() == "503 /problems/service-unavailable")
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "only 200 and 503 problems: {answers:?}"
    );
    assert!(
        bare_503s.lock().unwrap().is_empty(),
        "every 503 is a problem with Retry-After: {:?}",
        bare_503s.lock().unwrap()
    );

    // Nothing acknowledged was lost: the product's version counts every
    // 200, and at most the 503s besides (a write in flight may have landed).
    let product: Value = http
        .get(format!(
            "{base}/aggregates/product/{}/events",
            product["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let adjusted = product
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "ProductStockAdjusted")
        .count();
    let unavailable = answers
        .get("503 /problems/service-unavailable")
        .copied()
        .unwrap_or(0);
    let acknowledged = ok(&answers);
    assert!(
        adjusted >= acknowledged && adjusted <= acknowledged + unavailable,
        "{adjusted} adjustments stored for {acknowledged} acknowledged and {unavailable} unavailable: {answers:?}"
    );
    drop(agora);
}
