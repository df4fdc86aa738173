//! The findings of the security review (issue 19), each with its
//! reproduction as input and the exact status and problem type it now gets,
//! and that nothing was written.

use std::sync::Arc;
use std::time::Duration;

use api::auth::Role;
use api::{ConnectionLimits, HttpOptions};
use commands::CommandMetadata;
use domain::order::{OrderCommand, OrderStatus};
use domain::payment::PaymentCommand;
use domain::values::{Currency, Money};
use reqwest::Method;
use serde_json::{json, Value};
use testkit::TestDatabase;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::auth::{spawn_authed_app, token};
use crate::support::{spawn_app, spawn_app_with, Answer, TestApp};

/// An answer read off a raw socket.
pub struct Raw {
    pub status: u16,
    pub head: String,
    pub body: Value,
}

impl Raw {
    pub fn problem_type(&self) -> &str {
        self.body["type"].as_str().unwrap_or("")
    }

    pub fn is_problem_json(&self) -> bool {
        self.head
            .lines()
            .any(|l| l.eq_ignore_ascii_case("content-type: application/problem+json"))
    }
}

/// Reads one answer from `stream`: its head, then the body its
/// `content-length` names. `None` when the server closed without one.
pub async fn read_answer(stream: &mut (impl AsyncRead + Unpin)) -> Option<Raw> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 8192];
    let read = async {
        loop {
            if let Some(end) = find(&bytes, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if bytes.len() >= end + 4 + length {
                    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
                    let body = serde_json::from_slice(&bytes[end + 4..end + 4 + length])
                        .unwrap_or(Value::Null);
                    return Some(Raw { status, head, body });
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the server neither answered nor closed within 30 s")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends `request` on a fresh connection and reads the answer.
pub async fn raw(app: &TestApp, request: &[u8]) -> Raw {
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    stream.write_all(request).await.expect("send");
    read_answer(&mut stream).await.expect("an answer")
}

/// Whether the server closes `stream` (EOF) within 30 s, reading and
/// dropping anything it sends first.
async fn closes(stream: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 1024];
    let closed = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), closed)
        .await
        .is_ok()
}

async fn spawn_limited(limits: ConnectionLimits) -> TestApp {
    let db = Arc::new(TestDatabase::with_pool_size(8).await);
    spawn_app_with(
        db,
        HttpOptions {
            connections: limits,
            ..HttpOptions::default()
        },
    )
    .await
}

fn assert_problem(answer: &Answer, status: u16, problem: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.problem_type(), format!("/problems/{problem}"));
    assert_eq!(answer.headers["content-type"], "application/problem+json");
}

// 1. A socket that sends half a head is closed after the header read
// timeout, also when it keeps sending a header line now and then; an idle
// kept-alive connection lives for the keep-alive timeout, which is not cut
// short by the header timeout; one peer holds at most its connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_are_cut_off_idle_connections_time_out_and_peers_are_capped() {
    let app = spawn_limited(ConnectionLimits {
        header_read_timeout: Duration::from_millis(500),
        keep_alive_timeout: Duration::from_secs(3),
        max_connections_per_peer: 3,
        ..ConnectionLimits::default()
    })
    .await;

    // `printf 'GET /healthz HTTP/1.1\r\n' >&3; sleep 600`
    let mut half = TcpStream::connect(app.addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    assert!(closes(&mut half).await, "a half-sent head is closed");

    // A header line every 200 ms keeps bytes coming, but the head is due
    // 500 ms after its first byte.
    let mut trickle = TcpStream::connect(app.addr).await.unwrap();
    trickle
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let mut cut = false;
    for i in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if trickle
            .write_all(format!("x-slow-{i}: a\r\n").as_bytes())
            .await
            .is_err()
        {
            cut = true;
            break;
        }
    }
    assert!(
        cut || closes(&mut trickle).await,
        "a trickled head is cut off"
    );

    // A kept-alive connection idle for twice the header timeout still
    // serves its next request...
    let mut idle = TcpStream::connect(app.addr).await.unwrap();
    let get = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
    idle.write_all(get).await.unwrap();
    assert_eq!(read_answer(&mut idle).await.unwrap().status, 200);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    idle.write_all(get).await.unwrap();
    assert_eq!(read_answer(&mut idle).await.unwrap().status, 200);
    // ... and is closed once it idles past the keep-alive timeout.
    assert!(closes(&mut idle).await, "an idle connection is closed");

    // Three connections of this peer are held open; a fourth is refused
    // with 429, problem+json; once one closes, a new one is served.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream.write_all(get).await.unwrap();
        assert_eq!(read_answer(&mut stream).await.unwrap().status, 200);
        held.push(stream);
    }
    let refused = raw(&app, get).await;
    assert_eq!(refused.status, 429, "{}", refused.head);
    assert_eq!(refused.problem_type(), "/problems/too-many-connections");
    assert!(refused.is_problem_json(), "{}", refused.head);
    drop(held.pop());
    testkit::eventually("a freed slot serves again", || async {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream.write_all(get).await.unwrap();
        read_answer(&mut stream)
            .await
            .is_some_and(|a| a.status == 200)
    })
    .await;
}

// 2. A declared body over the limit is 413 before any of it is read; a body
// that trickles in slower than the minimum rate is 408, not 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_declared_body_is_413_at_once_and_a_trickle_is_408() {
    let db = Arc::new(TestDatabase::with_pool_size(8).await);
    let app = spawn_app_with(
        db,
        HttpOptions {
            body_read_timeout: Duration::from_millis(300),
            body_min_rate: 1000,
            ..HttpOptions::default()
        },
    )
    .await;
    let before = app.event_count().await;

    // Content-Length: 1000000000 and no body at all: answered at once.
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"POST /users HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000000000\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut stream).await.expect("an answer");
    assert_eq!(answer.status, 413, "{}", answer.head);
    assert_eq!(answer.problem_type(), "/problems/payload-too-large");
    assert!(answer.is_problem_json());

    // 60 bytes declared, one byte every 250 ms: far below 1000 bytes/s.
    let stream = TcpStream::connect(app.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(b"POST /users HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 60\r\n\r\n{")
        .await
        .unwrap();
    let trickle = async move {
        for _ in 0..59 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if writer.write_all(b" ").await.is_err() {
                break;
            }
        }
    };
    let answer = tokio::select! {
        answer = read_answer(&mut reader) => answer,
        () = trickle => None,
    };
    let answer = answer.expect("an answer before the trickle ended");
    assert_eq!(answer.status, 408, "{}", answer.head);
    assert_eq!(answer.problem_type(), "/problems/request-timeout");
    assert!(answer.is_problem_json());
    assert_eq!(app.event_count().await, before, "nothing was written");
}

// 3. Only answers worth replaying are stored: 200 rejected anonymous POSTs
// with distinct keys store nothing; neither do 400s; a 422 rule refusal is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_answers_worth_replaying_are_stored() {
    let app = spawn_authed_app(HttpOptions::default()).await;
    let records = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM idempotency_keys")
            .fetch_one(&app.db.pool)
            .await
            .unwrap()
    };
    for i in 0..200 {
        let answer = app
            .send(
                app.request(Method::POST, "/products")
                    .header("idempotency-key", format!("anon-{i}"))
                    .json(&json!({"sku": "S", "name": "N", "price": {"amount": 1, "currency": "EUR"}, "stock": 1})),
            )
            .await;
        assert_problem(&answer, 401, "unauthorized");
    }
    assert_eq!(records().await, 0, "401s are not stored");

    let admin = token("ops", Role::Admin);
    let send = |key: &str, body: Value| {
        app.request(Method::POST, "/users")
            .bearer_auth(&admin)
            .header("idempotency-key", key.to_owned())
            .json(&body)
    };
    let answer = app.send(send("bad", json!(["a@example.com", "Ada"]))).await;
    assert_problem(&answer, 400, "bad-request");
    assert_eq!(records().await, 0, "400s are not stored");

    let answer = app
        .send(send("ok", json!({"email": "a@example.com", "name": "Ada"})))
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    let answer = app
        .send(send(
            "taken",
            json!({"email": "a@example.com", "name": "Ada"}),
        ))
        .await;
    assert_problem(&answer, 409, "conflict");
    assert_eq!(
        records().await,
        2,
        "a 201 and a 409 of a taken email are stored"
    );
}

// 4. A 9,000-character subject with an Idempotency-Key was a 500: the scope
// overflowed its index. It is stored as a hash now, and a token's subject is
// bounded (an admin's to api::auth::MAX_SUBJECT_LEN bytes, a customer's is a
// UUID): the 9,000-character one is refused as a token, and the longest
// allowed is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_subject_with_an_idempotency_key_is_served() {
    let app = spawn_authed_app(HttpOptions::default()).await;
    let unbounded = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "s".repeat(9_000), "role": "admin", "exp": u64::MAX / 2}),
        &jsonwebtoken::EncodingKey::from_secret(crate::auth::SECRET),
    )
    .expect("sign");
    let answer = app
        .send(
            app.request(Method::POST, "/products")
                .bearer_auth(&unbounded)
                .header("idempotency-key", "long-subject")
                .json(&json!({"sku": "LONG-0", "name": "N", "price": {"amount": 1, "currency": "EUR"}, "stock": 1})),
        )
        .await;
    assert_eq!(
        (answer.status, answer.problem_type()),
        (401, "/problems/invalid-token"),
        "{}",
        answer.body
    );
    let admin = token(&"s".repeat(api::auth::MAX_SUBJECT_LEN), Role::Admin);
    let request = || {
        app.request(Method::POST, "/products")
            .bearer_auth(&admin)
            .header("idempotency-key", "long-subject")
            .json(&json!({"sku": "LONG-1", "name": "N", "price": {"amount": 1, "currency": "EUR"}, "stock": 1}))
    };
    let first = app.send(request()).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let again = app.send(request()).await;
    assert_eq!((again.status, &again.body), (201, &first.body));
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(app.events_of_type("ProductCreated").await, 1);
}

// 5 and 6. An array is not an object; only JSON integers within range are
// integers. All 400, nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrays_for_objects_and_floats_for_integers_are_400() {
    let app = spawn_app().await;
    let user = app.register("ada@example.com").await.id();
    let product = app.create_product("PEN-1", 100, "EUR", 5).await.id();
    let before = app.event_count().await;
    let stock = format!("/products/{product}/stock");
    let cases: Vec<(&str, String)> = vec![
        ("/users", r#"["a@example.com","Ada"]"#.to_owned()),
        ("/products", r#"["S-2","N",null,[1999,"EUR"],1]"#.to_owned()),
        (
            "/products",
            r#"{"sku":"S-2","name":"N","price":[1999,"EUR"],"stock":1}"#.to_owned(),
        ),
        (&stock, r#"{"delta": 1e2}"#.to_owned()),
        (&stock, r#"{"delta": 100.0}"#.to_owned()),
        (&stock, r#"{"delta": -9223372036854775809}"#.to_owned()),
        (&stock, r#"{"delta": 9223372036854775808}"#.to_owned()),
        (&stock, r#"[5]"#.to_owned()),
        (
            "/products",
            r#"{"sku":"S-3","name":"N","price":{"amount":1.0,"currency":"EUR"},"stock":1}"#
                .to_owned(),
        ),
        (
            "/orders",
            format!(
                r#"{{"user_id":"{user}","lines":[{{"product_id":"{product}","quantity":1e2}}],"payment_token":"tok_ok"}}"#
            ),
        ),
        (
            "/orders",
            format!(r#"{{"user_id":"{user}","lines":[["{product}",1]],"payment_token":"tok_ok"}}"#),
        ),
    ];
    for (path, body) in cases {
        let answer = app
            .send(
                app.request(Method::POST, path)
                    .header("content-type", "application/json")
                    .body(body.clone()),
            )
            .await;
        assert_eq!(answer.status, 400, "{path} {body}: {}", answer.body);
        assert_eq!(answer.problem_type(), "/problems/bad-request", "{body}");
    }
    assert_eq!(app.event_count().await, before, "nothing was written");
}

// 7. Every answer is problem+json: an invalid UTF-8 path id, and the 400,
// 414 and 431 of requests too broken or too large to parse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_to_broken_requests_are_problem_json() {
    let app = spawn_app().await;
    let before = app.event_count().await;

    let answer = app.get("/products/%FF%FE").await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(answer.problem_type(), "/problems/bad-request");
    assert_eq!(answer.headers["content-type"], "application/problem+json");
    let answer = app
        .post("/products/%C3%28/stock", json!({"delta": 1}))
        .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(answer.headers["content-type"], "application/problem+json");

    let long_uri = format!(
        "GET /products?q={} HTTP/1.1\r\nhost: x\r\n\r\n",
        "a".repeat(10_000)
    );
    let huge_uri = format!(
        "GET /products?q={} HTTP/1.1\r\nhost: x\r\n\r\n",
        "a".repeat(70_000)
    );
    let big_header = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "b".repeat(20_000)
    );
    let huge_header = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "b".repeat(500_000)
    );
    let many_headers = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\n{}\r\n",
        (0..150)
            .map(|i| format!("x-h{i}: v\r\n"))
            .collect::<String>()
    );
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"BLAH\r\n\r\n".to_vec(), 400, "bad-request"),
        (b"GET / HTTP/9.9\r\n\r\n".to_vec(), 400, "bad-request"),
        (
            b"GET /healthz HTTP/1.1\r\nbad header\r\n\r\n".to_vec(),
            400,
            "bad-request",
        ),
        (b"\x00\x01\x02\x03\r\n\r\n".to_vec(), 400, "bad-request"),
        (long_uri.into_bytes(), 414, "uri-too-long"),
        (huge_uri.into_bytes(), 431, "header-fields-too-large"),
        (big_header.into_bytes(), 431, "header-fields-too-large"),
        (huge_header.into_bytes(), 431, "header-fields-too-large"),
        (many_headers.into_bytes(), 431, "header-fields-too-large"),
    ];
    for (request, status, problem) in cases {
        let answer = raw(&app, &request).await;
        let shown = String::from_utf8_lossy(&request[..request.len().min(40)]).into_owned();
        assert_eq!(answer.status, status, "{shown}: {}", answer.head);
        assert!(answer.is_problem_json(), "{shown}: {}", answer.head);
        assert_eq!(
            answer.problem_type(),
            format!("/problems/{problem}"),
            "{shown}"
        );
        assert_eq!(answer.body["status"], status);
    }
    assert_eq!(app.event_count().await, before);
}

// 8. Unknown query parameters on the event stream route are 400, as on
// every other route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_query_parameters_of_the_event_stream_are_400() {
    let app = spawn_app().await;
    let product = app.create_product("PEN-1", 100, "EUR", 5).await.id();
    let answer = app
        .get(&format!("/aggregates/product/{product}/events?sequence=2"))
        .await;
    assert_problem(&answer, 400, "bad-request");
    let answer = app
        .get(&format!("/aggregates/product/{product}/events"))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

// 9. A create with If-Match other than "0" is 412: nothing exists at that
// version. "0" is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_with_if_match_other_than_zero_is_412() {
    let app = spawn_app().await;
    let user = app.register("ada@example.com").await.id();
    let product = app.create_product("PEN-1", 100, "EUR", 5).await.id();
    let before = app.event_count().await;
    let order = json!({"user_id": user, "lines": [{"product_id": product, "quantity": 1}], "payment_token": "tok_ok"});
    let product_body =
        json!({"sku": "PEN-2", "name": "N", "price": {"amount": 1, "currency": "EUR"}, "stock": 1});
    for (path, body) in [
        ("/orders", &order),
        ("/products", &product_body),
        ("/users", &json!({"email": "b@example.com", "name": "B"})),
    ] {
        for if_match in ["\"3\"", "*", "W/\"1\""] {
            let answer = app
                .send(
                    app.request(Method::POST, path)
                        .header("if-match", if_match)
                        .json(body),
                )
                .await;
            assert_problem(&answer, 412, "precondition-failed");
        }
    }
    assert_eq!(app.event_count().await, before, "nothing was written");
    let answer = app
        .send(
            app.request(Method::POST, "/orders")
                .header("if-match", "\"0\"")
                .json(&order),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
}

// 11. Refunding a shipped order moves it to `refunded` and returns no stock;
// a confirmed one is cancelled `refunded`; an order already cancelled is
// 422 with nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunding_a_shipped_order_makes_it_refunded_not_cancelled() {
    let app = spawn_app().await;
    let user = app.register("ada@example.com").await.id();
    let product = app.create_product("PEN-1", 100, "EUR", 5).await.id();
    let paid = |order: String| {
        let app = &app;
        async move {
            let payment_id = Uuid::now_v7();
            let metadata = CommandMetadata::system();
            let payments = &app.state.aggregates.payments;
            let id = payment_id.to_string();
            let amount = Money::new(100, Currency::parse("EUR").unwrap());
            for command in [
                PaymentCommand::Request {
                    payment_id,
                    order_id: order.parse().unwrap(),
                    amount,
                    token: "tok_ok".to_owned(),
                },
                PaymentCommand::Authorize {
                    authorization_id: "auth-1".to_owned(),
                },
                PaymentCommand::Capture,
            ] {
                payments
                    .execute(&id, command, None, &metadata)
                    .await
                    .unwrap();
            }
            let orders = &app.state.aggregates.orders;
            for command in [
                OrderCommand::AssignPayment { payment_id },
                OrderCommand::Confirm,
            ] {
                orders
                    .execute(&order, command, None, &metadata)
                    .await
                    .unwrap();
            }
            payment_id
        }
    };
    let place = || async {
        app.post(
            "/orders",
            json!({"user_id": user, "lines": [{"product_id": product, "quantity": 1}], "payment_token": "tok_ok"}),
        )
        .await
        .id()
    };
    let shipped = place().await;
    let shipped_payment = paid(shipped.clone()).await;
    let answer = app.post_empty(&format!("/orders/{shipped}/ship")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer = app
        .post_empty(&format!("/payments/{shipped_payment}/refund"))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["status"], "refunded");
    let order = app
        .state
        .aggregates
        .orders
        .load_stored(&shipped)
        .await
        .unwrap();
    assert_eq!(order.aggregate.status(), OrderStatus::Refunded);
    assert_eq!(order.aggregate.cancel_reason(), None);
    assert_eq!(app.events_of_type("OrderRefunded").await, 1);
    assert_eq!(app.events_of_type("OrderCancelled").await, 0);

    // A refunded order cannot be cancelled or refunded again.
    let before = app.event_count().await;
    let answer = app
        .post(
            &format!("/orders/{shipped}/cancel"),
            json!({"reason": "customer_request"}),
        )
        .await;
    assert_problem(&answer, 422, "invalid-transition");
    let answer = app
        .post_empty(&format!("/payments/{shipped_payment}/refund"))
        .await;
    assert_problem(&answer, 422, "invalid-transition");
    assert_eq!(app.event_count().await, before);

    // A confirmed order is cancelled with reason `refunded`.
    let confirmed = place().await;
    let confirmed_payment = paid(confirmed.clone()).await;
    let answer = app
        .post_empty(&format!("/payments/{confirmed_payment}/refund"))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let order = app
        .state
        .aggregates
        .orders
        .load_stored(&confirmed)
        .await
        .unwrap();
    assert_eq!(order.aggregate.status(), OrderStatus::Cancelled);

    // A cancelled order's payment is the order flow's to settle: refused
    // before either aggregate is written.
    let cancelled = place().await;
    let cancelled_payment = paid(cancelled.clone()).await;
    let answer = app
        .post(
            &format!("/orders/{cancelled}/cancel"),
            json!({"reason": "customer_request"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let before = app.event_count().await;
    let answer = app
        .post_empty(&format!("/payments/{cancelled_payment}/refund"))
        .await;
    assert_problem(&answer, 422, "invalid-transition");
    assert_eq!(app.event_count().await, before, "nothing was written");
}
