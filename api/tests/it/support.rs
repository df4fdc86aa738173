use std::net::SocketAddr;

use api::{AppState, HttpOptions};
use commands::{Aggregates, StoreOptions};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{json, Value};
use testkit::TestDatabase;
use tokio::sync::oneshot;

/// One running API on port 0 with its own database.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub db: std::sync::Arc<TestDatabase>,
    pub state: AppState,
    pub nats: async_nats::Client,
    stop: Option<oneshot::Sender<()>>,
}

pub async fn spawn_app() -> TestApp {
    let db = std::sync::Arc::new(TestDatabase::with_pool_size(8).await);
    spawn_app_on(db).await
}

/// Another API process on the same database, with its own caches.
pub async fn spawn_app_on(db: std::sync::Arc<TestDatabase>) -> TestApp {
    spawn_app_with(db, HttpOptions::default()).await
}

pub async fn spawn_app_with(db: std::sync::Arc<TestDatabase>, options: HttpOptions) -> TestApp {
    let nats_url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let nats = async_nats::connect(&nats_url)
        .await
        .expect("tests need NATS: is it running? (see README)");
    let aggregates = Aggregates::new(db.pool.clone(), StoreOptions::default());
    let state = AppState::new(db.pool.clone(), aggregates, Some(nats.clone()), options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(api::run(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        client: reqwest::Client::new(),
        db,
        state,
        nats,
        stop: Some(stop),
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A decoded answer.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn problem_type(&self) -> &str {
        self.body["type"].as_str().unwrap_or("")
    }

    pub fn etag(&self) -> &str {
        self.headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn id(&self) -> String {
        self.body["id"].as_str().unwrap_or_default().to_owned()
    }
}

pub async fn answer(response: Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("read body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub async fn send(&self, request: RequestBuilder) -> Answer {
        answer(request.send().await.expect("send request")).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(self.request(Method::POST, path).json(&body))
            .await
    }

    pub async fn post_empty(&self, path: &str) -> Answer {
        self.send(self.request(Method::POST, path)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Answer {
        self.send(self.request(Method::PATCH, path).json(&body))
            .await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn register(&self, email: &str) -> Answer {
        let answer = self
            .post("/users", json!({ "email": email, "name": "Ada Lovelace" }))
            .await;
        assert_eq!(answer.status, 201, "register {email}: {}", answer.body);
        answer
    }

    pub async fn create_product(
        &self,
        sku: &str,
        amount: i64,
        currency: &str,
        stock: i64,
    ) -> Answer {
        let answer = self
            .post(
                "/products",
                json!({ "sku": sku, "name": format!("Product {sku}"), "price": { "amount": amount, "currency": currency }, "stock": stock }),
            )
            .await;
        assert_eq!(answer.status, 201, "create {sku}: {}", answer.body);
        answer
    }

    /// Every event in the store, however it was written.
    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.db.pool)
            .await
            .expect("count events")
    }

    pub async fn events_of_type(&self, event_type: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
            .bind(event_type)
            .fetch_one(&self.db.pool)
            .await
            .expect("count events")
    }
}
