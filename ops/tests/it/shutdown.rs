//! Graceful shutdown of the real binary: on SIGTERM `/readyz` turns 503
//! while requests are still served, then the listener closes and requests
//! in flight get their answers before the process exits.

use std::time::Duration;

use serde_json::{json, Value};
use testkit::TestDatabase;

use crate::support::{eventually_within, migrate_for, test_prefix, Agora};

async fn readyz(http: &reqwest::Client, agora: &Agora) -> Option<(u16, Value)> {
    let response = http
        .get(format!("{}/readyz", agora.base()))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.unwrap_or(Value::Null)))
}

async fn create_product(http: &reqwest::Client, agora: &Agora, sku: &str) -> String {
    let response = http
        .post(format!("{}/products", agora.base()))
        .json(&json!({ "sku": sku, "name": "Lamp", "price": { "amount": 900, "currency": "EUR" }, "stock": 5 }))
        .send()
        .await
        .expect("create a product");
    assert_eq!(response.status().as_u16(), 201);
    let body: Value = response.json().await.expect("json");
    body["id"].as_str().expect("an id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readiness_off_then_drains_requests_in_flight() {
    let db = TestDatabase::with_pool_size(4).await;
    let nats_url = testkit::nats_url();
    let prefix = test_prefix();
    migrate_for(&db, &nats_url, &prefix).await;
    let mut agora = Agora::new(&db, &nats_url, &prefix);
    // A grace long enough for the steps below on a busy machine, and a
    // read-your-writes wait that outlasts it.
    agora.start_with(&[
        ("AGORA_SHUTDOWN_GRACE_MS", "8000"),
        ("AGORA_CONSISTENCY_WAIT_MS", "14000"),
    ]);
    let http = reqwest::Client::new();
    let (client, server) = (&http, &agora);
    eventually_within(
        "the server is ready",
        Duration::from_secs(30),
        move || async move { matches!(readyz(client, server).await, Some((200, _))) },
    )
    .await;
    let lamp = create_product(&http, &agora, "LAMP-1").await;
    let desk = create_product(&http, &agora, "DESK-1").await;

    // Two reads waiting for a version 2. The lamp's comes during the grace
    // period; the desk's never does, so its read is still waiting when the
    // listener closes and answers only when its wait runs out.
    let waiting = |id: &str| {
        let request = http.get(format!("{}/products/{id}?min_version=2", agora.base()));
        tokio::spawn(async move { request.send().await })
    };
    let lamp_read = waiting(&lamp);
    let desk_read = waiting(&desk);

    agora.terminate();
    let (client, server) = (&http, &agora);
    eventually_within("/readyz turns 503", Duration::from_secs(6), move || async move {
        matches!(readyz(client, server).await, Some((503, body)) if body["status"] == "draining")
    })
    .await;
    // Still serving during the grace period: a write, which the lamp's read sees.
    let response = http
        .post(format!("{}/products/{lamp}/stock", agora.base()))
        .json(&json!({ "delta": 1 }))
        .send()
        .await
        .expect("served during the grace period");
    assert_eq!(response.status().as_u16(), 200);
    let lamp_answer = lamp_read
        .await
        .expect("task")
        .expect("the lamp's read got an answer");
    assert_eq!(lamp_answer.status().as_u16(), 200);
    let body: Value = lamp_answer.json().await.expect("json");
    assert_eq!(body["version"], 2);

    // The desk's read outlives the grace period: the process drains it.
    let desk_answer = desk_read
        .await
        .expect("task")
        .expect("the desk's read got an answer, not a dropped connection");
    assert_eq!(desk_answer.status().as_u16(), 503);
    let body: Value = desk_answer.json().await.expect("problem json");
    assert_eq!(body["type"], "/problems/service-unavailable");

    let status = agora
        .exited(Duration::from_secs(20))
        .await
        .expect("the process exits after draining");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        readyz(&http, &agora).await.is_none(),
        "nothing listens after exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_on_the_server_takes_the_tokens_agora_token_prints() {
    let db = TestDatabase::with_pool_size(4).await;
    let nats_url = testkit::nats_url();
    let prefix = test_prefix();
    migrate_for(&db, &nats_url, &prefix).await;
    let mut agora = Agora::new(&db, &nats_url, &prefix);
    agora.start_with(&[("AGORA_AUTH", "on"), ("AGORA_JWT_SECRET", "e2e-secret")]);
    let http = reqwest::Client::new();
    let (client, server) = (&http, &agora);
    eventually_within(
        "the server is ready",
        Duration::from_secs(30),
        move || async move { matches!(readyz(client, server).await, Some((200, _))) },
    )
    .await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_agora"))
        .args(["token", "--sub", "ops", "--role", "admin"])
        .env("AGORA_JWT_SECRET", "e2e-secret")
        .output()
        .await
        .expect("run agora token");
    assert!(output.status.success());
    let token = String::from_utf8_lossy(&output.stdout).trim().to_owned();

    let create = || {
        http.post(format!("{}/products", agora.base()))
            .json(&json!({ "sku": "E2E-1", "name": "Lamp", "price": { "amount": 900, "currency": "EUR" }, "stock": 5 }))
    };
    let anonymous = create().send().await.expect("send");
    assert_eq!(anonymous.status().as_u16(), 401);
    let admin = create().bearer_auth(&token).send().await.expect("send");
    assert_eq!(admin.status().as_u16(), 201);
    let health = http
        .get(format!("{}/healthz", agora.base()))
        .send()
        .await
        .expect("send");
    assert_eq!(health.status().as_u16(), 200);
}

/// The bound on shutdown: the grace period plus 10 s, whatever Postgres and
/// NATS do (a few seconds more for a loaded machine to deliver the exit).
const BOUND: Duration = Duration::from_secs(1 + 10 + 5);

/// Starts every role against a private NATS and waits until it is ready.
async fn ready_on(db: &TestDatabase, nats: &testkit::TestNatsServer) -> Agora {
    let prefix = test_prefix();
    migrate_for(db, &nats.url(), &prefix).await;
    let mut agora = Agora::new(db, &nats.url(), &prefix);
    agora.start_with(&[("AGORA_SHUTDOWN_GRACE_MS", "1000")]);
    let http = reqwest::Client::new();
    let (client, server) = (&http, &agora);
    eventually_within(
        "the server is ready",
        Duration::from_secs(30),
        move || async move { matches!(readyz(client, server).await, Some((200, _))) },
    )
    .await;
    create_product(&http, &agora, "DOWN-1").await;
    agora
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_process_while_nats_is_down() {
    let db = TestDatabase::with_pool_size(4).await;
    let mut nats = testkit::TestNatsServer::start();
    let mut agora = ready_on(&db, &nats).await;
    nats.stop();
    // Long enough for every role to notice and start retrying.
    tokio::time::sleep(Duration::from_secs(2)).await;
    agora.terminate();
    let status = agora
        .exited(BOUND)
        .await
        .expect("the process exits within the grace period plus 10 s with NATS down");
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_process_while_postgres_is_down() {
    let postgres = testkit::TestPostgres::start();
    let nats = testkit::TestNatsServer::start();
    let prefix = test_prefix();
    let database_url = postgres.url("agora");
    let migrated = tokio::process::Command::new(env!("CARGO_BIN_EXE_agora"))
        .arg("migrate")
        .env("DATABASE_URL", &database_url)
        .env("NATS_URL", nats.url())
        .env("AGORA_NATS_PREFIX", &prefix)
        .env("RUST_LOG", "warn")
        .status()
        .await
        .expect("run agora migrate");
    assert!(migrated.success(), "agora migrate failed");
    let mut agora = Agora::on(database_url, &nats.url(), &prefix);
    agora.start_with(&[("AGORA_SHUTDOWN_GRACE_MS", "1000")]);
    let http = reqwest::Client::new();
    let (client, server) = (&http, &agora);
    eventually_within(
        "the server is ready",
        Duration::from_secs(30),
        move || async move { matches!(readyz(client, server).await, Some((200, _))) },
    )
    .await;
    create_product(&http, &agora, "DOWN-2").await;
    postgres.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    agora.terminate();
    let status = agora
        .exited(BOUND)
        .await
        .expect("the process exits within the grace period plus 10 s with Postgres down");
    assert!(status.success(), "exit status {status:?}");
}
