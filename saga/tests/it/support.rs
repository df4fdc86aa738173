//! A whole system per test: its own database, NATS prefix, gateway port,
//! relay, projection workers and saga(s).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use commands::relay::{self, RelayOptions};
use commands::{Aggregates, AppendHook, CommandMetadata, StoreOptions};
use domain::order::{CancelReason, Order, OrderCommand, OrderLine, OrderStatus};
use domain::payment::{Payment, PaymentCommand};
use domain::product::{Product, ProductCommand};
use domain::values::{Currency, Money, Name, Sku};
use gateway::{ChargeRecord, RefundRecord};
use projections::Projection;
use saga::{Breaker, Saga, SagaOptions};
use testkit::{TestDatabase, TestNats};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Test-sized timings: short deadlines and backoffs keep runs short.
#[derive(Debug, Clone)]
pub struct Settings {
    pub payment_deadline: Duration,
    pub gateway_timeout: Duration,
    pub lease: Duration,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub threshold: u32,
    pub cool_down: Duration,
    pub slow_delay: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            payment_deadline: Duration::from_secs(60),
            gateway_timeout: Duration::from_secs(4),
            lease: Duration::from_secs(8),
            retry_base: Duration::from_millis(50),
            retry_max: Duration::from_millis(400),
            threshold: 3,
            cool_down: Duration::from_millis(800),
            slow_delay: Duration::from_secs(2),
        }
    }
}

/// A running saga: `stop` lets it finish its steps, `kill` aborts it at once.
pub struct SagaHandle {
    pub breaker: Breaker,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl SagaHandle {
    pub async fn kill(mut self) {
        self.stop = None;
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for SagaHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The tests' gateway takes only this token, as `AGORA_GATEWAY_TOKEN` would
/// make it; the saga sends it, and so does the tests' own client.
pub const GATEWAY_TOKEN: &str = "saga-tests-gateway-token";

fn gateway_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {GATEWAY_TOKEN}"))
            .expect("a header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("an HTTP client")
}

pub struct System {
    pub db: TestDatabase,
    pub nats: TestNats,
    pub aggregates: Aggregates,
    pub settings: Settings,
    pub http: reqwest::Client,
    pub gateway_addr: SocketAddr,
    hook: AppendHook,
    gateway: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    background: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
    pub metadata: CommandMetadata,
}

impl System {
    pub async fn start() -> System {
        Self::with(Settings::default()).await
    }

    /// Relay, projections and gateway, but no saga yet.
    pub async fn with(settings: Settings) -> System {
        let db = TestDatabase::with_pool_size(24).await;
        let nats = TestNats::new().await;
        let wake = Arc::new(Notify::new());
        let hook = {
            let wake = Arc::clone(&wake);
            AppendHook(Arc::new(move || wake.notify_one()))
        };
        let aggregates = Aggregates::new(
            db.pool.clone(),
            StoreOptions {
                on_append: Some(hook.clone()),
                ..StoreOptions::default()
            },
        );
        let mut background = Vec::new();
        {
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(relay::run(
                db.pool.clone(),
                nats.client.clone(),
                RelayOptions::new(nats.prefix.clone()),
                wake,
                async move {
                    let _ = stopped.await;
                },
            ));
            background.push((stop, task));
        }
        for projection in [
            Projection::Orders,
            Projection::Payments,
            Projection::Notifications,
        ] {
            let (stop, stopped) = oneshot::channel::<()>();
            let (pool, jetstream, client, prefix) = (
                db.pool.clone(),
                nats.jetstream.clone(),
                nats.client.clone(),
                nats.prefix.clone(),
            );
            let task = tokio::spawn(async move {
                projections::worker::run(
                    std::sync::Arc::new(projection),
                    pool,
                    jetstream,
                    client,
                    &prefix,
                    async move {
                        let _ = stopped.await;
                    },
                )
                .await;
            });
            background.push((stop, task));
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway_addr = listener.local_addr().unwrap();
        let mut system = System {
            db,
            nats,
            aggregates,
            settings,
            http: gateway_client(),
            gateway_addr,
            hook,
            gateway: None,
            background,
            metadata: CommandMetadata::system(),
        };
        system.serve_gateway(listener);
        system
    }

    fn serve_gateway(&mut self, listener: TcpListener) {
        let (stop, stopped) = oneshot::channel::<()>();
        let options = gateway::GatewayOptions {
            pool: self.db.pool.clone(),
            slow_delay: self.settings.slow_delay,
            token: Some(GATEWAY_TOKEN.to_owned()),
        };
        let task = tokio::spawn(async move {
            gateway::run(listener, options, async move {
                let _ = stopped.await;
            })
            .await
            .expect("the gateway runs");
        });
        self.gateway = Some((stop, task));
    }

    /// Stops the gateway (its ledger stays in Postgres) ...
    pub async fn stop_gateway(&mut self) {
        if let Some((stop, task)) = self.gateway.take() {
            let _ = stop.send(());
            task.await.unwrap();
        }
    }

    /// ... and starts it again on the same address.
    pub async fn restart_gateway(&mut self) {
        let listener = TcpListener::bind(self.gateway_addr).await.unwrap();
        self.serve_gateway(listener);
        let url = format!("{}/healthz", self.gateway_url());
        let http = self.http.clone();
        eventually("the gateway is back", || {
            let (http, url) = (http.clone(), url.clone());
            async move { http.get(url).send().await.is_ok() }
        })
        .await;
    }

    pub fn gateway_url(&self) -> String {
        format!("http://{}", self.gateway_addr)
    }

    pub fn saga_options(&self) -> SagaOptions {
        let s = &self.settings;
        SagaOptions {
            payment_deadline: s.payment_deadline,
            gateway_timeout: s.gateway_timeout,
            lease: s.lease,
            retry_base: s.retry_base,
            retry_max: s.retry_max,
            breaker_threshold: s.threshold,
            breaker_cool_down: s.cool_down,
            sample_interval: Duration::from_millis(500),
            gateway_token: Some(GATEWAY_TOKEN.to_owned()),
            ..SagaOptions::new(self.nats.prefix.clone(), self.gateway_url())
        }
    }

    /// Starts a saga with aggregate caches of its own, as another process
    /// would have.
    pub fn start_saga(&self) -> SagaHandle {
        let aggregates = Aggregates::new(
            self.db.pool.clone(),
            StoreOptions {
                on_append: Some(self.hook.clone()),
                ..StoreOptions::default()
            },
        );
        let saga = Saga::new(
            self.db.pool.clone(),
            self.nats.client.clone(),
            aggregates,
            self.saga_options(),
        )
        .expect("valid saga options");
        let breaker = saga.breaker();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(saga.run(async move {
            let _ = stopped.await;
        }));
        SagaHandle {
            breaker,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn product(&self, stock: i64) -> Uuid {
        let id = Uuid::now_v7();
        let command = ProductCommand::Create {
            product_id: id,
            sku: Sku::parse(format!("SKU-{}", id.simple())).unwrap(),
            name: Name::parse("Widget").unwrap(),
            description: None,
            price: eur(250),
            stock,
        };
        self.aggregates
            .products
            .execute_new(&id.to_string(), command, &self.metadata)
            .await
            .expect("create the product");
        id
    }

    pub async fn place(&self, lines: Vec<(Uuid, u32)>, token: &str) -> Uuid {
        let id = Uuid::now_v7();
        let command = OrderCommand::Place {
            order_id: id,
            user_id: Uuid::now_v7(),
            lines: lines
                .iter()
                .map(|&(product_id, quantity)| OrderLine {
                    product_id,
                    quantity,
                    unit_price: eur(250),
                })
                .collect(),
            payment_token: token.to_owned(),
            cart_id: None,
            shipping_address: None,
        };
        self.aggregates
            .orders
            .execute_new(&id.to_string(), command, &self.metadata)
            .await
            .expect("place the order");
        id
    }

    /// Cancels as `POST /orders/{id}/cancel` does.
    pub async fn cancel(&self, order_id: Uuid) {
        let command = OrderCommand::Cancel {
            reason: CancelReason::CustomerRequest,
            note: None,
        };
        self.aggregates
            .orders
            .execute(&order_id.to_string(), command, None, &self.metadata)
            .await
            .expect("cancel the order");
    }

    /// Refunds as `POST /payments/{id}/refund` does.
    pub async fn refund(&self, payment_id: Uuid) {
        let done = self
            .aggregates
            .payments
            .execute(
                &payment_id.to_string(),
                PaymentCommand::Refund,
                None,
                &self.metadata,
            )
            .await
            .expect("refund the payment");
        let order_id = done.aggregate.order_id().unwrap();
        self.aggregates
            .orders
            .execute(
                &order_id.to_string(),
                OrderCommand::Refund,
                None,
                &self.metadata,
            )
            .await
            .expect("the order follows its refunded payment");
    }

    pub async fn ship(&self, order_id: Uuid) {
        self.aggregates
            .orders
            .execute(
                &order_id.to_string(),
                OrderCommand::Ship,
                None,
                &self.metadata,
            )
            .await
            .expect("ship the order");
    }

    pub async fn order(&self, id: Uuid) -> Order {
        self.aggregates
            .orders
            .load_stored(&id.to_string())
            .await
            .unwrap()
            .aggregate
    }

    pub async fn payment(&self, id: Uuid) -> Payment {
        self.aggregates
            .payments
            .load_stored(&id.to_string())
            .await
            .unwrap()
            .aggregate
    }

    pub async fn stock(&self, id: Uuid) -> Product {
        self.aggregates
            .products
            .load_stored(&id.to_string())
            .await
            .unwrap()
            .aggregate
    }

    /// True once the saga has nothing more to do for the order.
    pub async fn saga_done(&self, id: Uuid) -> bool {
        sqlx::query_scalar::<_, bool>("SELECT done FROM saga_orders WHERE order_id = $1")
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await
            .unwrap()
            .unwrap_or(false)
    }

    /// Waits until the order is in `status` and the saga is done with it.
    pub async fn settled(&self, id: Uuid, status: OrderStatus) -> Order {
        eventually(&format!("order {id} is {status} and settled"), || async {
            self.order(id).await.status() == status && self.saga_done(id).await
        })
        .await;
        self.order(id).await
    }

    pub async fn charges(&self) -> Vec<ChargeRecord> {
        self.get("/charges").await
    }

    pub async fn refunds(&self) -> Vec<RefundRecord> {
        self.get("/refunds").await
    }

    /// Charge requests the gateway received since it started.
    pub async fn charge_requests(&self) -> u64 {
        let body: serde_json::Value = self.get("/admin/requests").await;
        body["charges"].as_u64().unwrap()
    }

    pub async fn outage(&self, down: bool) {
        let response = self
            .http
            .post(format!("{}/admin/outage", self.gateway_url()))
            .json(&serde_json::json!({ "down": down }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        self.http
            .get(format!("{}{path}", self.gateway_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Notifications of `kind` for the order in the read model.
    pub async fn notifications(&self, order_id: Uuid, kind: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM rm_notifications WHERE order_id = $1 AND kind = $2",
        )
        .bind(order_id)
        .bind(kind)
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }

    /// How many events of `event_type` the aggregate's stream holds.
    pub async fn events(&self, aggregate_type: &str, id: Uuid, event_type: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2
                AND event_type = $3",
        )
        .bind(aggregate_type)
        .bind(id.to_string())
        .bind(event_type)
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }

    pub async fn stop(mut self) {
        self.stop_gateway().await;
        for (stop, task) in self.background.drain(..) {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }
}

pub fn eur(amount: i64) -> Money {
    Money::new(amount, Currency::parse("EUR").unwrap())
}

pub use testkit::eventually;

/// The charges at the gateway for one payment.
pub fn charges_for(charges: &[ChargeRecord], payment_id: Uuid) -> Vec<ChargeRecord> {
    charges
        .iter()
        .filter(|c| c.idempotency_key == payment_id.to_string())
        .cloned()
        .collect()
}
