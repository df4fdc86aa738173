//! The broker loses acknowledged messages (its store is wiped while the
//! projector and the saga are down): every read model still converges on
//! the events table, and every order still reaches an end, with no manual
//! step, through the real binary in one process per role.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::{TestDatabase, TestNatsServer};

use crate::support::{assert_saga_finished, eventually_within, migrate_for, test_prefix, Agora};

/// Each role in its own `agora serve --role` process.
struct System {
    api: Agora,
    relay: Agora,
    projector: Agora,
    saga: Agora,
}

/// What every process of the test runs with: repairs looked for often, and
/// events counted lost after a second.
const ENV: [(&str, &str); 2] = [
    ("AGORA_REPAIR_INTERVAL_MS", "200"),
    ("AGORA_REPAIR_GRACE_MS", "1000"),
];

fn start(agora: &mut Agora, role: &str) {
    let mut env = ENV.to_vec();
    env.push(("AGORA_ROLE", role));
    agora.start_with(&env);
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> Value {
    let response = http.post(&url).json(&body).send().await.expect("send");
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    assert!(status.is_success(), "{url}: {status} {body}");
    body
}

async fn order_status(http: &reqwest::Client, base: &str, id: &str) -> Option<String> {
    let response = http.get(format!("{base}/orders/{id}")).send().await.ok()?;
    let body: Value = response.json().await.ok()?;
    body["status"].as_str().map(str::to_owned)
}

/// The lag `agora projections` prints for each subscriber, by name.
async fn printed_status(
    db: &TestDatabase,
    nats_url: &str,
    prefix: &str,
) -> Vec<(String, i64, i64)> {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_agora"))
        .arg("projections")
        .env("DATABASE_URL", db.url())
        .env("NATS_URL", nats_url)
        .env("AGORA_NATS_PREFIX", prefix)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run agora projections");
    assert!(output.status.success(), "agora projections failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // name, position, lag, events applied, repaired, ...
            let lag = fields.get(2)?.parse().ok()?;
            let repaired = fields.get(4)?.parse().ok()?;
            Some((fields[0].to_owned(), lag, repaired))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_models_and_orders_converge_after_the_broker_loses_its_store() {
    let db = TestDatabase::with_pool_size(4).await;
    let mut nats = TestNatsServer::start();
    let prefix = test_prefix();
    migrate_for(&db, &nats.url(), &prefix).await;
    let at = |_| Agora::new(&db, &nats.url(), &prefix);
    let mut system = System {
        api: at(()),
        relay: at(()),
        projector: at(()),
        saga: at(()),
    };
    start(&mut system.api, "api");
    start(&mut system.relay, "relay");
    start(&mut system.projector, "projector");
    start(&mut system.saga, "saga");
    let http = reqwest::Client::new();
    let base = system.api.base();
    eventually_within("the API is ready", Duration::from_secs(30), || async {
        matches!(http.get(format!("{base}/readyz")).send().await, Ok(r) if r.status().is_success())
    })
    .await;

    // Before the loss: a user, products, an order that confirms.
    let user = post(
        &http,
        format!("{base}/users"),
        json!({"email": "lost@example.com", "name": "Lost"}),
    )
    .await;
    let user = user["id"].as_str().unwrap().to_owned();
    let mut products = Vec::new();
    for n in 0..3 {
        let product = post(&http, format!("{base}/products"), json!({
            "sku": format!("LOST-{n}"), "name": "Lamp", "price": {"amount": 900, "currency": "EUR"}, "stock": 100
        })).await;
        products.push(product["id"].as_str().unwrap().to_owned());
    }
    let place = |product: String| {
        let (http, base, user) = (http.clone(), base.clone(), user.clone());
        async move {
            let order = post(&http, format!("{base}/orders"), json!({
                "user_id": user, "lines": [{"product_id": product, "quantity": 2}], "payment_token": "tok_ok"
            })).await;
            order["id"].as_str().unwrap().to_owned()
        }
    };
    let first = place(products[0].clone()).await;
    eventually_within(
        "the first order confirms",
        Duration::from_secs(60),
        || async { order_status(&http, &base, &first).await.as_deref() == Some("confirmed") },
    )
    .await;

    // The projector and the saga go down; writes go on and are relayed,
    // acknowledged by JetStream, then lost with its store.
    system.projector.kill();
    system.saga.kill();
    let mut orders = vec![first];
    for (n, product) in products.iter().enumerate() {
        post(
            &http,
            format!("{base}/products/{product}/stock"),
            json!({"delta": 5 + n as i64}),
        )
        .await;
        post(
            &http,
            format!("{base}/products/{product}/price"),
            json!({"price": {"amount": 1000 + n as i64, "currency": "EUR"}}),
        )
        .await;
        orders.push(place(product.clone()).await);
    }
    post(
        &http,
        format!("{base}/users"),
        json!({"email": "later@example.com", "name": "Later"}),
    )
    .await;
    eventually_within(
        "the relay published everything",
        Duration::from_secs(60),
        || async {
            commands::relay::lag(&db.pool, &prefix)
                .await
                .map(|lag| lag == 0)
                .unwrap_or(false)
        },
    )
    .await;
    nats.wipe();
    nats.resume();

    // Measured against the events table, the loss shows as lag.
    let before = printed_status(&db, &nats.url(), &prefix).await;
    let lag_of = |rows: &[(String, i64, i64)], name: &str| {
        rows.iter()
            .find(|r| r.0 == name)
            .map(|r| (r.1, r.2))
            .unwrap_or_else(|| panic!("{name} in {rows:?}"))
    };
    for name in ["products", "orders", "users", "notifications", "saga"] {
        assert!(
            lag_of(&before, name).0 > 0,
            "{name} shows its lag: {before:?}"
        );
    }

    let lost_at = Instant::now();
    start(&mut system.projector, "projector");
    start(&mut system.saga, "saga");

    // Every order reaches an end; every read model equals a rebuild.
    for order in &orders {
        eventually_within(
            "every order reaches an end",
            Duration::from_secs(90),
            || async {
                matches!(
                    order_status(&http, &base, order).await.as_deref(),
                    Some("confirmed" | "cancelled")
                )
            },
        )
        .await;
    }
    assert_saga_finished(&db).await;
    eventually_within(
        "the read models equal a rebuild",
        Duration::from_secs(90),
        || async {
            projections::replay::verify(&db.pool)
                .await
                .map(|d| d.is_empty())
                .unwrap_or(false)
        },
    )
    .await;
    println!(
        "converged {:?} after the projector and the saga came back",
        lost_at.elapsed()
    );
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(dead, 0, "nothing was given up on");

    // `agora projections` and the projector's metrics show the repair. The
    // streams that nothing wrote to since (the later user, its welcome, the
    // orders the saga never saw) could only come back through it; a lost
    // product event may also come back as a gap filled before a later one.
    let after = printed_status(&db, &nats.url(), &prefix).await;
    for name in ["products", "orders", "users", "notifications", "saga"] {
        assert_eq!(lag_of(&after, name).0, 0, "{name}: {after:?}");
    }
    for name in ["users", "notifications", "saga"] {
        assert!(
            lag_of(&after, name).1 > 0,
            "{name} repaired what was lost: {after:?}"
        );
    }
    let metrics_url = format!("{}/metrics", system.projector.base());
    eventually_within(
        "the metric shows the repair",
        Duration::from_secs(30),
        || async {
            let Ok(response) = http.get(&metrics_url).send().await else {
                return false;
            };
            let text = response.text().await.unwrap_or_default();
            text.lines().any(|line| {
                line.starts_with("agora_projection_repaired_events{projection=\"users\"}")
                    && line
                        .split_whitespace()
                        .last()
                        .and_then(|v| v.parse::<f64>().ok())
                        .unwrap_or(0.0)
                        > 0.0
            })
        },
    )
    .await;
    drop(system.relay);
    drop(system.api);
}
