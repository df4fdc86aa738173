//! Authentication and authorization: every route against every kind of
//! credential, with the exact status each gets, and nothing written by a
//! refused request.

use std::sync::Arc;
use std::time::Duration;

use api::auth::{JwtSecret, Role};
use api::HttpOptions;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use commands::CommandMetadata;
use domain::payment::PaymentCommand;
use domain::values::{Currency, Money};
use reqwest::Method;
use serde_json::{json, Value};
use testkit::TestDatabase;
use uuid::Uuid;

use crate::support::{spawn_app_with, Answer, TestApp};

pub const SECRET: &[u8] = b"test-secret-for-the-auth-matrix";

/// An API with authentication on, keyed with [`SECRET`].
pub async fn spawn_authed_app(options: HttpOptions) -> TestApp {
    let db = Arc::new(TestDatabase::with_pool_size(8).await);
    spawn_app_with(
        db,
        HttpOptions {
            auth: Some(JwtSecret::new(SECRET)),
            ..options
        },
    )
    .await
}

pub fn token(sub: &str, role: Role) -> String {
    JwtSecret::new(SECRET)
        .issue(sub, role, Duration::from_secs(600))
        .expect("issue a token")
}

fn encode_part(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("json"))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// The kinds of credential every route is tried with, in this order.
#[derive(Debug, Clone, Copy)]
enum Credential {
    None,
    /// An admin token whose `exp` passed an hour ago.
    Expired,
    /// An admin token signed with another secret.
    BadSignature,
    /// An admin claim set under `alg: none`, with no signature.
    AlgNone,
    /// The other customer's token with `role` edited to admin, signature kept.
    TamperedRole,
    /// A customer that owns none of the route's ids.
    OtherCustomer,
    /// The customer that owns the route's ids.
    Owner,
    Admin,
}

const CREDENTIALS: [Credential; 8] = [
    Credential::None,
    Credential::Expired,
    Credential::BadSignature,
    Credential::AlgNone,
    Credential::TamperedRole,
    Credential::OtherCustomer,
    Credential::Owner,
    Credential::Admin,
];

impl Credential {
    fn header(self, world: &World) -> Option<String> {
        let token = match self {
            Self::None => return None,
            Self::Expired => jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &json!({ "sub": "root", "role": "admin", "exp": unix_now() - 3600 }),
                &jsonwebtoken::EncodingKey::from_secret(SECRET),
            )
            .expect("sign"),
            Self::BadSignature => JwtSecret::new(b"another secret")
                .issue("root", Role::Admin, Duration::from_secs(600))
                .expect("sign"),
            Self::AlgNone => format!(
                "{}.{}.",
                encode_part(&json!({ "alg": "none", "typ": "JWT" })),
                encode_part(&json!({ "sub": "root", "role": "admin", "exp": unix_now() + 600 }))
            ),
            Self::TamperedRole => {
                let genuine = token(&world.other.to_string(), Role::Customer);
                let parts: Vec<&str> = genuine.split('.').collect();
                let payload = URL_SAFE_NO_PAD.decode(parts[1]).expect("payload");
                let mut claims: Value = serde_json::from_slice(&payload).expect("claims");
                claims["role"] = json!("admin");
                format!("{}.{}.{}", parts[0], encode_part(&claims), parts[2])
            }
            Self::OtherCustomer => token(&world.other.to_string(), Role::Customer),
            Self::Owner => token(&world.owner.to_string(), Role::Customer),
            Self::Admin => token("root", Role::Admin),
        };
        Some(format!("Bearer {token}"))
    }
}

/// The resources one row of the matrix works on, made fresh for each row
/// so one row's writes never change another's answers.
struct World {
    owner: Uuid,
    other: Uuid,
    product: Uuid,
    owner_order: Uuid,
    owner_payment: Uuid,
    unknown: Uuid,
}

impl World {
    async fn new(app: &TestApp) -> Self {
        let admin = format!("Bearer {}", token("root", Role::Admin));
        let register = |email: String| {
            app.request(Method::POST, "/users")
                .json(&json!({ "email": email, "name": "Ada" }))
        };
        let owner = app
            .send(register(format!("owner-{}@auth.example", Uuid::now_v7())))
            .await;
        let other = app
            .send(register(format!("other-{}@auth.example", Uuid::now_v7())))
            .await;
        assert_eq!((owner.status, other.status), (201, 201));
        let (owner, other) = (id_of(&owner), id_of(&other));
        let product = app
            .send(
                app.request(Method::POST, "/products")
                    .header("authorization", &admin)
                    .json(&json!({ "sku": format!("SKU-{}", Uuid::now_v7()), "name": "Pen", "price": { "amount": 500, "currency": "EUR" }, "stock": 1000 })),
            )
            .await;
        assert_eq!(product.status, 201, "{}", product.body);
        let product = id_of(&product);
        let mut orders = Vec::new();
        for user in [owner, other] {
            let order = app
                .send(
                    app.request(Method::POST, "/orders")
                        .header("authorization", &admin)
                        .json(&json!({ "user_id": user, "lines": [{ "product_id": product, "quantity": 1 }], "payment_token": "tok_ok" })),
                )
                .await;
            assert_eq!(order.status, 201, "{}", order.body);
            orders.push(id_of(&order));
        }
        let mut payments = Vec::new();
        for order_id in &orders {
            let payment_id = Uuid::now_v7();
            app.state
                .aggregates
                .payments
                .execute_new(
                    &payment_id.to_string(),
                    PaymentCommand::Request {
                        payment_id,
                        order_id: *order_id,
                        amount: Money::new(500, Currency::parse("EUR").expect("EUR")),
                        token: "tok_ok".to_owned(),
                    },
                    &CommandMetadata::system(),
                )
                .await
                .expect("request a payment");
            payments.push(payment_id);
        }
        project_everything(app).await;
        Self {
            owner,
            other,
            product,
            owner_order: orders[0],
            owner_payment: payments[0],
            unknown: Uuid::now_v7(),
        }
    }
}

fn id_of(answer: &Answer) -> Uuid {
    answer.id().parse().expect("an id")
}

/// The projector does not run in these tests: the read models are rebuilt
/// from the store and swapped in, as `agora replay` does.
async fn project_everything(app: &TestApp) {
    projections::replay(
        &app.db.pool,
        &projections::ReplayOptions::default(),
        &mut projections::replay::Quiet,
    )
    .await
    .expect("replay");
}

type Path = fn(&World) -> String;
type Body = fn(&World) -> Option<Value>;

fn none(_: &World) -> Option<Value> {
    None
}

/// One route and the status each credential gets, in the order of
/// [`CREDENTIALS`]: none, expired, bad signature, alg none, tampered role,
/// another customer, the owner, admin.
struct Row {
    method: Method,
    path: Path,
    body: Body,
    expect: [u16; 8],
}

macro_rules! row {
    ($method:ident, $path:expr, $body:expr, [$($status:expr),*]) => {
        Row { method: Method::$method, path: $path, body: $body, expect: [$($status),*] }
    };
}

#[rustfmt::skip]
fn matrix() -> Vec<Row> {
    vec![
        //                                                                                                                 none exp  sig  none tamp other owner admin
        row!(POST,  |_| "/users".into(), |_| Some(json!({ "email": format!("u-{}@auth.example", Uuid::now_v7()), "name": "New" })), [201, 401, 401, 401, 401, 201, 201, 201]),
        row!(GET,   |_| "/users?email=owner@auth.example".into(), none,                                                    [401, 401, 401, 401, 401, 403, 403, 200]),
        row!(GET,   |w| format!("/users/{}", w.owner), none,                                                               [401, 401, 401, 401, 401, 403, 200, 200]),
        row!(GET,   |w| format!("/users/{}", w.unknown), none,                                                             [401, 401, 401, 401, 401, 403, 403, 404]),
        row!(PATCH, |w| format!("/users/{}", w.owner), |_| Some(json!({ "name": "Renamed" })),                                [401, 401, 401, 401, 401, 403, 200, 200]),
        row!(POST,  |w| format!("/users/{}/deactivate", w.owner), none,                                                    [401, 401, 401, 401, 401, 403, 200, 422]),
        row!(GET,   |w| format!("/users/{}/orders", w.owner), none,                                                        [401, 401, 401, 401, 401, 403, 200, 200]),
        row!(GET,   |w| format!("/users/{}/notifications", w.owner), none,                                                 [401, 401, 401, 401, 401, 403, 200, 200]),
        row!(POST,  |_| "/products".into(), |_| Some(json!({ "sku": format!("N-{}", Uuid::now_v7()), "name": "Ink", "price": { "amount": 100, "currency": "EUR" }, "stock": 1 })), [401, 401, 401, 401, 401, 403, 403, 201]),
        row!(GET,   |_| "/products".into(), none,                                                                          [200, 401, 401, 401, 401, 200, 200, 200]),
        row!(GET,   |w| format!("/products/{}", w.product), none,                                                          [200, 401, 401, 401, 401, 200, 200, 200]),
        row!(PATCH, |w| format!("/products/{}", w.product), |_| Some(json!({ "name": "Renamed" })),                           [401, 401, 401, 401, 401, 403, 403, 200]),
        row!(POST,  |w| format!("/products/{}/price", w.product), |_| Some(json!({ "price": { "amount": 700, "currency": "EUR" } })), [401, 401, 401, 401, 401, 403, 403, 200]),
        row!(POST,  |w| format!("/products/{}/stock", w.product), |_| Some(json!({ "delta": 5 })),                            [401, 401, 401, 401, 401, 403, 403, 200]),
        row!(POST,  |w| format!("/products/{}/discontinue", w.product), none,                                              [401, 401, 401, 401, 401, 403, 403, 200]),
        row!(POST,  |_| "/orders".into(), |w| Some(json!({ "user_id": w.owner, "lines": [{ "product_id": w.product, "quantity": 1 }], "payment_token": "tok_ok" })), [401, 401, 401, 401, 401, 403, 201, 201]),
        row!(GET,   |w| format!("/orders/{}", w.owner_order), none,                                                        [401, 401, 401, 401, 401, 403, 200, 200]),
        row!(GET,   |w| format!("/orders/{}", w.unknown), none,                                                            [401, 401, 401, 401, 401, 403, 403, 404]),
        row!(POST,  |w| format!("/orders/{}/cancel", w.owner_order), |_| Some(json!({ "reason": "customer_request" })),      [401, 401, 401, 401, 401, 403, 200, 422]),
        row!(POST,  |w| format!("/orders/{}/cancel", w.unknown), |_| Some(json!({ "reason": "customer_request" })),          [401, 401, 401, 401, 401, 403, 403, 404]),
        row!(POST,  |w| format!("/orders/{}/ship", w.owner_order), none,                                                   [401, 401, 401, 401, 401, 403, 403, 422]),
        row!(GET,   |w| format!("/payments/{}", w.owner_payment), none,                                                    [401, 401, 401, 401, 401, 403, 200, 200]),
        row!(GET,   |w| format!("/payments/{}", w.unknown), none,                                                          [401, 401, 401, 401, 401, 403, 403, 404]),
        row!(POST,  |w| format!("/payments/{}/refund", w.owner_payment), none,                                             [401, 401, 401, 401, 401, 403, 403, 422]),
        row!(GET,   |w| format!("/aggregates/order/{}/events", w.owner_order), none,                                       [401, 401, 401, 401, 401, 403, 403, 200]),
        row!(POST,  |w| format!("/users/{}/password", w.owner), |_| Some(json!({ "new_password": "a new passphrase" })),     [401, 401, 401, 401, 401, 403, 422, 200]),
        row!(POST,  |_| "/auth/logout".into(), |_| Some(json!({})),                                                       [401, 401, 401, 401, 401, 204, 204, 204]),
        row!(POST,  |_| "/api-keys".into(), |_| Some(json!({ "name": "1C exchange", "role": "catalog" })),                 [401, 401, 401, 401, 401, 403, 403, 201]),
        row!(GET,   |_| "/api-keys".into(), none,                                                                          [401, 401, 401, 401, 401, 403, 403, 200]),
        row!(DELETE, |w| format!("/api-keys/{}", w.unknown), none,                                                         [401, 401, 401, 401, 401, 403, 403, 404]),
        row!(GET,   |_| "/healthz".into(), none,                                                                           [200, 200, 200, 200, 200, 200, 200, 200]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_credential_as_the_matrix_says() {
    let app = spawn_authed_app(HttpOptions::default()).await;
    let mut failures = Vec::new();
    for row in matrix() {
        let world = World::new(&app).await;
        let path = (row.path)(&world);
        for (credential, expected) in CREDENTIALS.into_iter().zip(row.expect) {
            let mut request = app.request(row.method.clone(), &path);
            if let Some(header) = credential.header(&world) {
                request = request.header("authorization", header);
            }
            if let Some(body) = (row.body)(&world) {
                request = request.json(&body);
            }
            let before = app.event_count().await;
            let answer = app.send(request).await;
            let cell = format!("{} {path} with {credential:?}", row.method);
            if answer.status != expected {
                failures.push(format!(
                    "{cell}: {} (expected {expected}): {}",
                    answer.status, answer.body
                ));
                continue;
            }
            // No credential is `unauthorized`; a credential that proves
            // nothing is `invalid-token`.
            let refused = match (expected, credential) {
                (401, Credential::None) => Some("/problems/unauthorized"),
                (401, _) => Some("/problems/invalid-token"),
                (403, _) => Some("/problems/forbidden"),
                _ => None,
            };
            if let Some(problem) = refused {
                if answer.problem_type() != problem {
                    failures.push(format!(
                        "{cell}: problem {} (expected {problem})",
                        answer.body
                    ));
                }
                if app.event_count().await != before {
                    failures.push(format!("{cell}: a refused request wrote events"));
                }
            }
            if expected == 401 {
                let challenge = answer
                    .headers
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !challenge.starts_with("Bearer") {
                    failures.push(format!("{cell}: WWW-Authenticate {challenge:?}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cells differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_answers_the_same_whatever_the_token() {
    let app = spawn_authed_app(HttpOptions::default()).await;
    let bare = app.get("/readyz").await.status;
    for header in ["Bearer not-a-token", "Basic dXNlcjpwdw=="] {
        let answer = app
            .send(
                app.request(Method::GET, "/readyz")
                    .header("authorization", header),
            )
            .await;
        assert_eq!(answer.status, bare, "{header}: {}", answer.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_authorization_headers_are_401() {
    let app = spawn_authed_app(HttpOptions::default()).await;
    let customer = token(&Uuid::now_v7().to_string(), Role::Customer);
    let no_role = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": "root", "exp": unix_now() + 600 }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .expect("sign");
    let unknown_role = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": "root", "role": "superuser", "exp": unix_now() + 600 }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .expect("sign");
    let no_exp = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": "root", "role": "admin" }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .expect("sign");
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &json!({ "sub": "root", "role": "admin", "exp": unix_now() + 600 }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .expect("sign");
    let customer_without_user_id = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": "bob", "role": "customer", "exp": unix_now() + 600 }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .expect("sign");
    let not_yet_valid = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": "root", "role": "admin", "exp": unix_now() + 7200, "nbf": unix_now() + 3600 }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .expect("sign");
    let long_subject = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": "a".repeat(9000), "role": "admin", "exp": unix_now() + 600 }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .expect("sign");
    for header in [
        format!("Bearer {not_yet_valid}"),
        format!("Bearer {long_subject}"),
        "Bearer agk_not-a-key".to_owned(),
        format!("Basic {customer}"),
        format!("Bearer{customer}"),
        "Bearer ".to_owned(),
        "Bearer a.b.c".to_owned(),
        format!("Bearer {no_role}"),
        format!("Bearer {unknown_role}"),
        format!("Bearer {no_exp}"),
        format!("Bearer {hs512}"),
        format!("Bearer {customer_without_user_id}"),
    ] {
        let before = app.event_count().await;
        let answer = app
            .send(
                app.request(Method::POST, "/users")
                    .header("authorization", &header)
                    .json(&json!({ "email": "x@auth.example", "name": "X" })),
            )
            .await;
        assert_eq!(
            (answer.status, answer.problem_type()),
            (401, "/problems/invalid-token"),
            "{header}: {}",
            answer.body
        );
        assert_eq!(app.event_count().await, before);
    }
    // The scheme's name is case-insensitive.
    let answer = app
        .send(
            app.request(Method::GET, "/products")
                .header("authorization", format!("bearer {customer}")),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_name_the_caller_and_idempotency_keys_are_per_caller() {
    let app = spawn_authed_app(HttpOptions::default()).await;
    let world = World::new(&app).await;
    let place = |user: Uuid| {
        app.request(Method::POST, "/orders")
            .header("authorization", format!("Bearer {}", token(&user.to_string(), Role::Customer)))
            .header("idempotency-key", "same-key")
            .json(&json!({ "user_id": user, "lines": [{ "product_id": world.product, "quantity": 1 }], "payment_token": "tok_ok" }))
    };
    // One key, two customers, two bodies: each gets its own order, not the
    // other's answer nor a 422 for a reused key.
    let mine = app.send(place(world.owner)).await;
    let theirs = app.send(place(world.other)).await;
    assert_eq!(
        (mine.status, theirs.status),
        (201, 201),
        "{} {}",
        mine.body,
        theirs.body
    );
    assert_ne!(mine.id(), theirs.id());
    let again = app.send(place(world.owner)).await;
    assert_eq!((again.status, again.id()), (201, mine.id()));

    let actor: String = sqlx::query_scalar(
        "SELECT metadata->>'actor' FROM events WHERE aggregate_type = 'order' AND aggregate_id = $1",
    )
    .bind(mine.id())
    .fetch_one(&app.db.pool)
    .await
    .expect("the order's event");
    assert_eq!(actor, world.owner.to_string());
    let actor: String = sqlx::query_scalar(
        "SELECT metadata->>'actor' FROM events WHERE aggregate_type = 'product' AND aggregate_id = $1 AND sequence = 1",
    )
    .bind(world.product.to_string())
    .fetch_one(&app.db.pool)
    .await
    .expect("the product's event");
    assert_eq!(actor, "root");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_call_is_decided_before_the_body_is_read() {
    let app = spawn_authed_app(HttpOptions::default()).await;
    let customer = format!(
        "Bearer {}",
        token(&Uuid::now_v7().to_string(), Role::Customer)
    );
    for (path, header, status, problem) in [
        ("/orders", None, 401, "/problems/unauthorized"),
        ("/products", None, 401, "/problems/unauthorized"),
        ("/products", Some(&customer), 403, "/problems/forbidden"),
    ] {
        let mut request = app
            .request(Method::POST, path)
            .header("content-type", "application/json")
            .body("{ not json");
        if let Some(header) = header {
            request = request.header("authorization", header);
        }
        let answer = app.send(request).await;
        assert_eq!(
            (answer.status, answer.problem_type()),
            (status, problem),
            "{path}: {}",
            answer.body
        );
    }
}
