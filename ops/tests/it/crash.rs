use std::time::Duration;

use testkit::{TestDatabase, TestNatsServer};

use serde_json::json;

use crate::support::{
    assert_read_models_match_rebuild, assert_saga_finished, assert_stream_matches_store,
    eventually_within, load, token, wait_for_relay_up_to_now, Agora,
};

fn prefix() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

async fn migrate(db: &TestDatabase, nats_url: &str, prefix: &str) {
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_agora"))
        .arg("migrate")
        .env("DATABASE_URL", db.url())
        .env("NATS_URL", nats_url)
        .env("AGORA_NATS_PREFIX", prefix)
        .env("RUST_LOG", "warn")
        .status()
        .await
        .expect("run agora migrate");
    assert!(status.success(), "agora migrate failed");
}

async fn ready(agora: &Agora) -> bool {
    matches!(reqwest::get(format!("{}/readyz", agora.base())).await, Ok(r) if r.status().is_success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_under_load_loses_nothing() {
    let db = TestDatabase::with_pool_size(4).await;
    let nats_url = testkit::nats_url();
    let prefix = prefix();
    migrate(&db, &nats_url, &prefix).await;
    let mut agora = Agora::new(&db, &nats_url, &prefix);
    agora.start();

    let load = tokio::spawn(load(agora.base(), 8, 2000));
    // Seeded so a failure can be replayed; printed on failure by the panic message below.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    let mut random = seed;
    let mut kills = 0;
    while !load.is_finished() {
        random = random
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let pause = 200 + (random >> 33) % 600;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if load.is_finished() {
            break;
        }
        agora.kill();
        kills += 1;
        agora.start();
    }
    let succeeded = load.await.expect("load");
    assert!(succeeded >= 2000, "seed {seed}: only {succeeded} commands");
    assert!(kills >= 2, "seed {seed}: the process was killed {kills} times; the load ended too fast to test anything");

    eventually_within(
        "agora ready after the last restart",
        Duration::from_secs(30),
        || ready(&agora),
    )
    .await;
    wait_for_relay_up_to_now(&db, &prefix, Duration::from_secs(60)).await;
    // The saga writes as long as orders are open: wait for it before comparing.
    assert_saga_finished(&db).await;
    eventually_within(
        "the relay caught up with the saga",
        Duration::from_secs(60),
        || async {
            commands::relay::lag(&db.pool, &prefix)
                .await
                .map(|lag| lag == 0)
                .unwrap_or(false)
        },
    )
    .await;
    assert_stream_matches_store(&db, &nats_url, &prefix, false).await;
    assert_read_models_match_rebuild(&db, &nats_url, &prefix).await;
    agora.kill();
    assert_stream_matches_store(&db, &nats_url, &prefix, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_for_ten_seconds_under_load_loses_nothing() {
    let db = TestDatabase::with_pool_size(4).await;
    let mut server = TestNatsServer::start();
    let nats_url = server.url();
    let prefix = prefix();
    migrate(&db, &nats_url, &prefix).await;
    let mut agora = Agora::new(&db, &nats_url, &prefix);
    agora.start();
    eventually_within("agora ready", Duration::from_secs(30), || ready(&agora)).await;

    let load = tokio::spawn(load(agora.base(), 4, 1500));
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.stop();
    // Commands keep committing while the broker is away: the table is the outbox.
    tokio::time::sleep(Duration::from_secs(10)).await;
    server.resume();
    let succeeded = load.await.expect("load");
    assert!(succeeded >= 1500);

    wait_for_relay_up_to_now(&db, &prefix, Duration::from_secs(90)).await;
    assert_saga_finished(&db).await;
    eventually_within(
        "the relay caught up with the saga",
        Duration::from_secs(60),
        || async {
            commands::relay::lag(&db.pool, &prefix)
                .await
                .map(|lag| lag == 0)
                .unwrap_or(false)
        },
    )
    .await;
    assert_read_models_match_rebuild(&db, &nats_url, &prefix).await;
    agora.kill();
    assert_stream_matches_store(&db, &nats_url, &prefix, true).await;
}

const CHECKOUT_SECRET: &str = "checkout-crash-secret";

/// `POST {url}` as the bearer of `token`, tried again while the server is
/// down or being killed; the first answer it gives.
async fn post_until_answered(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    loop {
        match http.post(url).bearer_auth(token).json(body).send().await {
            Ok(response) if response.status().as_u16() != 503 => {
                let status = response.status().as_u16();
                match response.json().await {
                    Ok(body) => return (status, body),
                    // Killed while the body was on its way.
                    Err(_) => continue,
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Carts checked out twice each, concurrently, while the process is killed
/// at random points: each cart ends `checked_out` with exactly one order,
/// every answer for a cart names that order, and every order reaches its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_checkouts_places_exactly_one_order_per_cart() {
    let db = TestDatabase::with_pool_size(4).await;
    let nats_url = testkit::nats_url();
    let prefix = prefix();
    migrate(&db, &nats_url, &prefix).await;
    let mut agora = Agora::new(&db, &nats_url, &prefix);
    let env = [("AGORA_AUTH", "on"), ("AGORA_JWT_SECRET", CHECKOUT_SECRET)];
    agora.start_with(&env);
    eventually_within("agora ready", Duration::from_secs(30), || ready(&agora)).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let base = agora.base();
    let admin = token(CHECKOUT_SECRET, "ops", "admin").await;
    let (status, product) = post_until_answered(
        &http,
        &format!("{base}/products"),
        &admin,
        &json!({ "sku": "CRASH-CART", "name": "Lamp", "price": { "amount": 900, "currency": "EUR" }, "stock": 1000 }),
    )
    .await;
    assert_eq!(status, 201, "{product}");
    let product = product["id"].as_str().expect("an id").to_owned();
    let (status, user) = post_until_answered(
        &http,
        &format!("{base}/users"),
        &admin,
        &json!({ "email": "crash-cart@example.com", "name": "Ada" }),
    )
    .await;
    assert_eq!(status, 201, "{user}");
    let customer = token(
        CHECKOUT_SECRET,
        user["id"].as_str().expect("an id"),
        "customer",
    )
    .await;
    let mut carts = Vec::new();
    for _ in 0..80 {
        let (status, cart) =
            post_until_answered(&http, &format!("{base}/carts"), &customer, &json!({})).await;
        assert_eq!(status, 201, "{cart}");
        let cart = cart["id"].as_str().expect("an id").to_owned();
        let line = http
            .put(format!("{base}/carts/{cart}/lines/{product}"))
            .bearer_auth(&customer)
            .json(&json!({ "quantity": 1 }))
            .send()
            .await
            .expect("set a line");
        assert_eq!(line.status().as_u16(), 200);
        carts.push(cart);
    }

    let checkout = json!({ "payment_token": "tok_ok", "shipping_address": { "name": "Ada", "line1": "1 Main St", "city": "London", "postal_code": "N1", "country": "GB" } });
    let checkouts = tokio::spawn({
        let (http, base, customer, carts) =
            (http.clone(), base.clone(), customer.clone(), carts.clone());
        async move {
            let mut answers = Vec::new();
            for cart in carts {
                let url = format!("{base}/carts/{cart}/checkout");
                let (a, b) = tokio::join!(
                    post_until_answered(&http, &url, &customer, &checkout),
                    post_until_answered(&http, &url, &customer, &checkout),
                );
                answers.push((cart, [a, b]));
            }
            answers
        }
    });
    let mut random = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    let seed = random;
    let mut kills = 0;
    while !checkouts.is_finished() {
        random = random
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        tokio::time::sleep(Duration::from_millis(20 + (random >> 33) % 300)).await;
        if checkouts.is_finished() {
            break;
        }
        agora.kill();
        kills += 1;
        agora.start_with(&env);
    }
    let answers = checkouts.await.expect("the checkouts");
    assert!(
        kills >= 1,
        "seed {seed}: the checkouts ended before any kill"
    );

    for (cart, pair) in &answers {
        let mut placed = 0;
        for (status, body) in pair {
            assert!(
                matches!(status, 200 | 201),
                "seed {seed}: cart {cart} answered {status}: {body}"
            );
            placed += usize::from(*status == 201);
            assert_eq!(body["cart_id"], cart.as_str(), "seed {seed}: {body}");
        }
        assert!(
            placed <= 1,
            "seed {seed}: cart {cart} placed {placed} orders"
        );
        assert_eq!(
            pair[0].1["id"], pair[1].1["id"],
            "seed {seed}: one order per cart"
        );
        let orders: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE event_type = 'OrderPlaced' \
               AND payload->'OrderPlaced'->>'cart_id' = $1",
        )
        .bind(cart)
        .fetch_one(&db.pool)
        .await
        .expect("count orders");
        assert_eq!(orders, 1, "seed {seed}: cart {cart}");
        let closed: Vec<String> = sqlx::query_scalar(
            "SELECT payload->'CartCheckedOut'->>'order_id' FROM events \
              WHERE aggregate_type = 'cart' AND aggregate_id = $1 AND event_type = 'CartCheckedOut'",
        )
        .bind(cart)
        .fetch_all(&db.pool)
        .await
        .expect("the cart's checkout");
        assert_eq!(closed.len(), 1, "seed {seed}: cart {cart} closed once");
        assert_eq!(
            pair[0].1["id"],
            closed[0].as_str(),
            "seed {seed}: the cart names its order"
        );
    }
    assert_saga_finished(&db).await;
    agora.kill();
}
