use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use schemas::EventEnvelope;
use serde_json::{json, Value};
use testkit::TestDatabase;

/// The token the children's gateway requires and their saga sends.
pub const GATEWAY_TOKEN: &str = "ops-tests-gateway-token";

/// One `agora serve --role all` child process, killable and restartable,
/// with an `agora gateway` child beside it for its saga to charge.
pub struct Agora {
    pub port: u16,
    gateway_port: u16,
    database_url: String,
    nats_url: String,
    prefix: String,
    child: Option<Child>,
    gateway: Option<Child>,
}

// Where the child's logs go: AGORA_TEST_LOG names a file to append to.
fn log() -> Stdio {
    match std::env::var("AGORA_TEST_LOG") {
        Ok(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null()),
        Err(_) => Stdio::null(),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Agora {
    pub fn new(db: &TestDatabase, nats_url: &str, prefix: &str) -> Self {
        Self::on(db.url(), nats_url, prefix)
    }

    /// On the database at `database_url` (a private cluster's, say).
    pub fn on(database_url: String, nats_url: &str, prefix: &str) -> Self {
        Self {
            port: free_port(),
            gateway_port: free_port(),
            database_url,
            nats_url: nats_url.to_owned(),
            prefix: prefix.to_owned(),
            child: None,
            gateway: None,
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    /// Starts it with `env` on top of the defaults above.
    pub fn start_with(&mut self, env: &[(&str, &str)]) {
        self.start_logged(env, log());
    }

    /// Starts it with `env` on top of the defaults above and its stdout (the
    /// logs) sent to `stdout`. A process of one role other than the saga
    /// (`AGORA_ROLE` in `env`) gets no gateway of its own.
    pub fn start_logged(&mut self, env: &[(&str, &str)], stdout: Stdio) {
        let role = env
            .iter()
            .find(|(name, _)| *name == "AGORA_ROLE")
            .map_or("all", |(_, role)| *role);
        if self.gateway.is_none() && matches!(role, "all" | "saga") {
            let gateway = Command::new(env!("CARGO_BIN_EXE_agora"))
                .arg("gateway")
                .env("DATABASE_URL", &self.database_url)
                .env("AGORA_GATEWAY_TOKEN", GATEWAY_TOKEN)
                .env(
                    "AGORA_GATEWAY_ADDR",
                    format!("127.0.0.1:{}", self.gateway_port),
                )
                .env("RUST_LOG", "warn")
                .stdout(log())
                .stderr(Stdio::null())
                .spawn()
                .expect("start agora gateway");
            self.gateway = Some(gateway);
        }
        let mut command = Command::new(env!("CARGO_BIN_EXE_agora"));
        command
            .arg("serve")
            .env(
                "AGORA_GATEWAY_URL",
                format!("http://127.0.0.1:{}", self.gateway_port),
            )
            .env("AGORA_GATEWAY_TOKEN", GATEWAY_TOKEN)
            .env("DATABASE_URL", &self.database_url)
            .env("NATS_URL", &self.nats_url)
            .env("AGORA_NATS_PREFIX", &self.prefix)
            .env("AGORA_HTTP_ADDR", format!("127.0.0.1:{}", self.port))
            .env("AGORA_AUTH", "off")
            // Tests that turn auth on need a data key too (serve refuses
            // the development key then); any 32 bytes will do.
            .env("AGORA_DATA_KEY", TEST_DATA_KEY)
            // The load below is many requests a second from one address.
            .env("AGORA_RATE_LIMIT_PER_SECOND", "0")
            .env("AGORA_DB_POOL_SIZE", "6")
            .env(
                "RUST_LOG",
                std::env::var("AGORA_TEST_RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdout(stdout)
            .stderr(Stdio::null());
        for (name, value) in env {
            command.env(name, value);
        }
        self.child = Some(command.spawn().expect("start agora"));
    }

    /// Waits (30 s at most) until its `/readyz` answers 2xx.
    pub async fn wait_ready(&self) {
        let (http, url) = (reqwest::Client::new(), format!("{}/readyz", self.base()));
        eventually_within("the server is ready", Duration::from_secs(30), || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                http.get(url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
    }

    /// SIGTERM: the graceful shutdown.
    pub fn terminate(&self) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -TERM failed");
        }
    }

    /// Waits up to `limit` for the process to exit on its own; its status.
    pub async fn exited(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Some(status);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// SIGKILL: no shutdown, no flush, nothing finished.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Agora {
    fn drop(&mut self) {
        self.kill();
        if let Some(mut gateway) = self.gateway.take() {
            let _ = gateway.kill();
            let _ = gateway.wait();
        }
    }
}

/// Waits until the relay has published every event committed by now. Not
/// a lag of zero: the saga keeps writing while orders are open, and on a
/// busy machine the lag can stay above zero for longer than the wait.
pub async fn wait_for_relay_up_to_now(db: &TestDatabase, prefix: &str, limit: Duration) {
    let last: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events")
        .fetch_one(&db.pool)
        .await
        .expect("the last position");
    eventually_within("the relay caught up", limit, || async {
        let unrelayed: Result<i64, sqlx::Error> = sqlx::query_scalar(
            "SELECT count(*) FROM events e
               LEFT JOIN relay_checkpoints c ON c.name = $1
              WHERE e.position <= $2
                AND (c.name IS NULL OR (e.transaction_id, e.position) > (c.transaction_id, c.position))",
        )
        .bind(prefix)
        .bind(last)
        .fetch_one(&db.pool)
        .await;
        matches!(unrelayed, Ok(0))
    })
    .await;
}

/// Waits until the saga has brought every order to an end: none is pending
/// and its work table has nothing left to do.
pub async fn assert_saga_finished(db: &TestDatabase) {
    eventually_within(
        "the saga finished every order",
        Duration::from_secs(120),
        || async {
            // Open rows, and placements the saga has not taken in yet (its
            // consumer may still be behind the relay).
            let open: i64 = sqlx::query_scalar(
                "SELECT (SELECT count(*) FROM saga_orders WHERE NOT done)
                      + (SELECT count(*) FROM events o WHERE o.event_type = 'OrderPlaced'
                            AND NOT EXISTS (SELECT 1 FROM saga_orders s
                                             WHERE s.order_id::text = o.aggregate_id))",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap_or(-1);
            open == 0
        },
    )
    .await;
    let pending: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events o WHERE o.event_type = 'OrderPlaced' AND NOT EXISTS (
             SELECT 1 FROM events e WHERE e.aggregate_type = 'order' AND e.aggregate_id = o.aggregate_id
                AND e.event_type IN ('OrderConfirmed', 'OrderCancelled'))",
    )
    .fetch_one(&db.pool)
    .await
    .expect("count pending orders");
    assert_eq!(pending, 0, "every order reached an end");
    // One charge key per payment at the gateway, and never two payments
    // for one order.
    let payments_per_order: Option<i64> = sqlx::query_scalar(
        "SELECT max(n) FROM (SELECT count(*) AS n FROM events WHERE event_type = 'PaymentRequested'
            GROUP BY payload->'PaymentRequested'->>'order_id') AS per_order",
    )
    .fetch_one(&db.pool)
    .await
    .expect("payments per order");
    assert!(
        payments_per_order.unwrap_or(0) <= 1,
        "one payment per order"
    );
}

/// Concurrent clients sending a mix of commands until `target` succeeded;
/// requests that fail because the server is down are simply tried again
/// later. Returns how many succeeded.
pub async fn load(base: String, clients: usize, target: usize) -> usize {
    let done = Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (done, http, base) = (Arc::clone(&done), http.clone(), base.clone());
            tokio::spawn(async move {
                let mut products: Vec<String> = Vec::new();
                let mut users: Vec<String> = Vec::new();
                let mut step = 0usize;
                while done.load(Ordering::SeqCst) < target {
                    step += 1;
                    let (path, body) = if products.len() < 3 {
                        ("/products".to_owned(), json!({ "sku": format!("C{client}-{step}"), "name": "Crash test", "price": { "amount": 250, "currency": "EUR" }, "stock": 1000 }))
                    } else if users.is_empty() {
                        ("/users".to_owned(), json!({ "email": format!("c{client}-{step}@crash.example"), "name": "Crash" }))
                    } else if step.is_multiple_of(7) {
                        ("/orders".to_owned(), json!({ "user_id": users[0], "lines": [{ "product_id": products[step % 3], "quantity": 1 }], "payment_token": "tok_ok" }))
                    } else {
                        let delta = if step.is_multiple_of(2) { 2 } else { -1 };
                        (format!("/products/{}/stock", products[step % 3]), json!({ "delta": delta }))
                    };
                    match http.post(format!("{base}{path}")).json(&body).send().await {
                        Ok(response) if response.status().is_success() => {
                            let value: Value = response.json().await.unwrap_or(Value::Null);
                            if let Some(id) = value["id"].as_str() {
                                if path == "/products" {
                                    products.push(id.to_owned());
                                } else if path == "/users" {
                                    users.push(id.to_owned());
                                }
                            }
                            done.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(response) => {
                            let status = response.status();
                            assert!(!status.is_server_error() || status.as_u16() == 503, "a command answered {status}");
                        }
                        // The server is down or was killed mid-request: try again.
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a load client panicked");
    }
    done.load(Ordering::SeqCst)
}

pub use testkit::eventually_within;

/// `AGORA_DATA_KEY` of every process a test starts: base64 of 32 bytes.
pub const TEST_DATA_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// A token `agora token` signs with `secret`.
pub async fn token(secret: &str, sub: &str, role: &str) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_agora"))
        .args(["token", "--sub", sub, "--role", role])
        .env("AGORA_JWT_SECRET", secret)
        .output()
        .await
        .expect("run agora token");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Every committed event is in the stream exactly once, each aggregate's in order.
pub async fn assert_stream_matches_store(
    db: &TestDatabase,
    nats_url: &str,
    prefix: &str,
    delete: bool,
) {
    let client = async_nats::connect(nats_url).await.expect("nats");
    let js = async_nats::jetstream::new(client);
    let stream = js
        .get_stream(schemas::subjects::stream(prefix))
        .await
        .expect("stream");
    let last = stream.get_info().await.expect("info").state.last_sequence;
    let mut next: HashMap<(String, String), i64> = HashMap::new();
    let mut count = 0i64;
    for sequence in 1..=last {
        let message = stream.get_raw_message(sequence).await.expect("message");
        let envelope: EventEnvelope = serde_json::from_slice(&message.payload).expect("envelope");
        let expected = next
            .entry((
                envelope.aggregate_type.clone(),
                envelope.aggregate_id.clone(),
            ))
            .or_insert(1);
        assert_eq!(
            envelope.sequence,
            *expected,
            "duplicate or out of order: {}",
            envelope.message_id()
        );
        *expected += 1;
        count += 1;
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(
        count, stored,
        "every committed event in the stream exactly once"
    );
    if delete {
        let _ = js.delete_stream(schemas::subjects::stream(prefix)).await;
    }
}

/// Waits until the live read models equal a fresh rebuild from the store.
pub async fn assert_read_models_match_rebuild(db: &TestDatabase, nats_url: &str, prefix: &str) {
    let mut last_diff = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        last_diff = projections::replay::verify(&db.pool).await.expect("verify");
        if last_diff.is_empty() {
            let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
                .fetch_one(&db.pool)
                .await
                .expect("dead letters");
            assert_eq!(dead, 0, "no event was dead-lettered");
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let status = projections::status(&db.pool, &projections::Projection::subscribers()).await;
    let applied: Vec<(String, String, i64)> = sqlx::query_as("SELECT projection, aggregate_id, sequence FROM projection_applied WHERE projection = 'products'")
        .fetch_all(&db.pool)
        .await
        .unwrap_or_default();
    let dead: Vec<(String, String)> =
        sqlx::query_as("SELECT projection, error FROM dead_letters LIMIT 5")
            .fetch_all(&db.pool)
            .await
            .unwrap_or_default();
    let client = async_nats::connect(nats_url).await.expect("nats");
    let js = async_nats::jetstream::new(client);
    let mut consumers = Vec::new();
    if let Ok(stream) = js.get_stream(schemas::subjects::stream(prefix)).await {
        for name in ["users", "products", "orders", "notifications"] {
            if let Ok(mut consumer) = stream
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>(
                    &schemas::subjects::consumer(prefix, name),
                )
                .await
            {
                if let Ok(info) = consumer.info().await {
                    consumers.push(format!(
                        "{name}: pending {} ack_pending {} redelivered {} waiting {}",
                        info.num_pending,
                        info.num_ack_pending,
                        info.num_redelivered,
                        info.num_waiting
                    ));
                }
            }
        }
    }
    panic!(
        "read models differ from a rebuild: {:#?}\nstatus: {status:#?}\napplied: {applied:?}\ndead: {dead:?}\nconsumers: {consumers:#?}",
        &last_diff[..last_diff.len().min(6)]
    );
}

/// A NATS prefix of a test's own.
pub fn test_prefix() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// `agora migrate` against the test database and prefix.
pub async fn migrate_for(db: &TestDatabase, nats_url: &str, prefix: &str) {
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
