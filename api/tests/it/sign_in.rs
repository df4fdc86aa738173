//! Accounts and sign-in (api.md): every row of its table with the exact
//! status and problem type, as a client sees them, and across two API
//! processes on one database where the contract says "every process".

use api::auth::JwtSecret;
use api::rate_limit::RateLimitOptions;
use api::HttpOptions;
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::Arc;
use testkit::TestDatabase;
use uuid::Uuid;

use crate::auth::SECRET;
use crate::support::{spawn_app_with, Answer, TestApp};

pub const PASSWORD: &str = "correct horse battery staple";

/// Options of an API with authentication on, on its own NATS prefix so its
/// announcements reach only the processes of the same test.
pub fn authed(prefix: &str) -> HttpOptions {
    HttpOptions {
        auth: Some(JwtSecret::new(SECRET)),
        nats_prefix: prefix.to_owned(),
        ..HttpOptions::default()
    }
}

pub fn prefix() -> String {
    format!("signin{}", Uuid::now_v7().simple())
}

/// An API with authentication on, its own database, and its change
/// listener running.
pub async fn spawn_listening(db: Arc<TestDatabase>, options: HttpOptions) -> TestApp {
    let app = spawn_app_with(db, options).await;
    api::changes::spawn(
        app.nats.clone(),
        app.state.options.nats_prefix.clone(),
        app.state.clone(),
    )
    .await
    .expect("listen for changes");
    app
}

pub async fn new_db() -> Arc<TestDatabase> {
    Arc::new(TestDatabase::with_pool_size(8).await)
}

pub fn email() -> String {
    format!("ada-{}@signin.example", Uuid::now_v7())
}

impl TestApp {
    pub async fn sign_up(&self, email: &str, password: &str) -> Uuid {
        let answer = self
            .post(
                "/users",
                json!({ "email": email, "name": "Ada Lovelace", "password": password }),
            )
            .await;
        assert_eq!(answer.status, 201, "sign up: {}", answer.body);
        answer.id().parse().expect("a user id")
    }

    pub async fn login(&self, email: &str, password: &str) -> Answer {
        self.post(
            "/auth/login",
            json!({ "email": email, "password": password }),
        )
        .await
    }

    pub async fn signed_in(&self, email: &str, password: &str) -> (String, String) {
        let answer = self.login(email, password).await;
        assert_eq!(answer.status, 200, "login: {}", answer.body);
        (
            answer.body["access_token"]
                .as_str()
                .expect("access")
                .to_owned(),
            answer.body["refresh_token"]
                .as_str()
                .expect("refresh")
                .to_owned(),
        )
    }

    pub async fn refresh(&self, refresh_token: &str) -> Answer {
        self.post("/auth/refresh", json!({ "refresh_token": refresh_token }))
            .await
    }

    pub fn bearer(&self, method: Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.request(method, path)
            .header("authorization", format!("Bearer {token}"))
    }

    /// A write any signed-in customer may make on itself, to tell whether
    /// its token is accepted without needing a read model.
    pub async fn rename(&self, user: Uuid, token: &str) -> Answer {
        self.send(
            self.bearer(Method::PATCH, &format!("/users/{user}"), token)
                .json(&json!({ "name": format!("Ada {}", Uuid::now_v7().simple()) })),
        )
        .await
    }

    pub async fn rows(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.db.pool)
            .await
            .expect("count")
    }
}

pub fn assert_problem(answer: &Answer, status: u16, problem: &str) {
    assert_eq!(
        (answer.status, answer.problem_type()),
        (status, problem),
        "{}",
        answer.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_sign_in_and_use_the_access_token() {
    let app = spawn_listening(new_db().await, authed(&prefix())).await;
    let email = email();
    let user = app.sign_up(&email, PASSWORD).await;
    // The email is compared case-insensitively.
    let answer = app.login(&email.to_uppercase(), PASSWORD).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["token_type"], "Bearer");
    assert_eq!(answer.body["expires_in"], 900);
    assert_eq!(answer.body["user_id"], user.to_string());
    assert_eq!(
        answer
            .headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let refresh = answer.body["refresh_token"].as_str().expect("refresh");
    // 256 random bits, base64url without padding.
    assert_eq!(refresh.len(), 43, "{refresh}");
    let access = answer.body["access_token"].as_str().expect("access");
    assert_eq!(app.rename(user, access).await.status, 200);
    // The token is the user's, not anyone's.
    let other = app.sign_up(&self::email(), PASSWORD).await;
    assert_eq!(app.rename(other, access).await.status, 403);

    // Neither the password nor its hash is in any event, and the hash is
    // only in the credentials table, as Argon2id.
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE payload::text LIKE '%' || $1 || '%' OR payload::text LIKE '%argon2%'",
    )
    .bind(PASSWORD)
    .fetch_one(&app.db.pool)
    .await
    .expect("scan events");
    assert_eq!(leaked, 0);
    let hash: String =
        sqlx::query_scalar("SELECT password_hash FROM credentials WHERE user_id = $1")
            .bind(user)
            .fetch_one(&app.db.pool)
            .await
            .expect("the hash");
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    // The refresh token is stored as its hash only.
    assert_eq!(
        app.rows("SELECT count(*) FROM refresh_tokens WHERE token_hash = sha256(convert_to('x', 'UTF8'))")
            .await,
        0
    );
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM refresh_tokens WHERE token_hash = sha256(convert_to($1, 'UTF8'))",
    )
    .bind(refresh)
    .fetch_one(&app.db.pool)
    .await
    .expect("count");
    assert_eq!(stored, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_email_wrong_password_and_no_password_answer_alike_after_one_verification() {
    let app = spawn_listening(new_db().await, authed(&prefix())).await;
    let with_password = email();
    app.sign_up(&with_password, PASSWORD).await;
    let without_password = email();
    app.register(&without_password).await;
    let events = app.event_count().await;
    let mut bodies = Vec::new();
    for (email, password) in [
        (self::email(), PASSWORD.to_owned()),
        (with_password.clone(), format!("{PASSWORD}!")),
        (without_password.clone(), PASSWORD.to_owned()),
        ("not an email".to_owned(), PASSWORD.to_owned()),
    ] {
        let before = app.state.identity.passwords.verifications();
        let answer = app.login(&email, &password).await;
        assert_problem(&answer, 401, "/problems/invalid-credentials");
        // The work of one verification was done, dummy or not.
        assert_eq!(
            app.state.identity.passwords.verifications(),
            before + 1,
            "{email}"
        );
        assert!(answer.headers.get("www-authenticate").is_some());
        bodies.push(answer.body);
    }
    // Word for word the same answer.
    assert!(
        bodies.windows(2).all(|pair| pair[0] == pair[1]),
        "{bodies:?}"
    );
    assert_eq!(app.event_count().await, events);
    assert_eq!(app.rows("SELECT count(*) FROM sign_ins").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivated_user_gets_403_with_the_right_password_only() {
    let app = spawn_listening(new_db().await, authed(&prefix())).await;
    let email = email();
    let user = app.sign_up(&email, PASSWORD).await;
    let (access, refresh) = app.signed_in(&email, PASSWORD).await;
    let answer = app
        .send(app.bearer(Method::POST, &format!("/users/{user}/deactivate"), &access))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_problem(
        &app.login(&email, PASSWORD).await,
        403,
        "/problems/user-deactivated",
    );
    assert_problem(
        &app.login(&email, "wrong password!").await,
        401,
        "/problems/invalid-credentials",
    );
    // Its tokens are refused at once, and its refresh token is revoked.
    assert_problem(
        &app.rename(user, &access).await,
        401,
        "/problems/invalid-token",
    );
    assert_problem(&app.refresh(&refresh).await, 401, "/problems/invalid-token");
    assert_eq!(
        app.rows(&format!(
            "SELECT count(*) FROM sign_ins WHERE user_id = '{user}' AND revoked_reason = 'deactivated'"
        ))
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_failures_throttle_the_email_on_every_process_even_with_the_right_password() {
    let db = new_db().await;
    let prefix = prefix();
    let one = spawn_listening(Arc::clone(&db), authed(&prefix)).await;
    let two = spawn_listening(db, authed(&prefix)).await;
    let email = email();
    one.sign_up(&email, PASSWORD).await;
    // Five failures, alternating between the two processes.
    for attempt in 0..5 {
        let app = if attempt % 2 == 0 { &one } else { &two };
        assert_problem(
            &app.login(&email, "not the password").await,
            401,
            "/problems/invalid-credentials",
        );
    }
    for app in [&one, &two] {
        let before = app.state.identity.passwords.verifications();
        let answer = app.login(&email, PASSWORD).await;
        assert_problem(&answer, 429, "/problems/login-throttled");
        let retry_after: u64 = answer
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("Retry-After");
        assert!((1..=900).contains(&retry_after), "{retry_after}");
        // Refused before any password is checked.
        assert_eq!(app.state.identity.passwords.verifications(), before);
    }
    // Another email is not touched, nor is an unknown one's throttle shared.
    let other = self::email();
    one.sign_up(&other, PASSWORD).await;
    assert_eq!(two.login(&other, PASSWORD).await.status, 200);
    // When the window has passed (here: the failures are made older), the
    // email signs in again.
    sqlx::query("UPDATE login_failures SET failed_at = failed_at - interval '15 minutes'")
        .execute(&one.db.pool)
        .await
        .expect("age the failures");
    assert_eq!(two.login(&email, PASSWORD).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_and_a_reused_token_revokes_its_whole_sign_in() {
    let app = spawn_listening(new_db().await, authed(&prefix())).await;
    let email = email();
    let user = app.sign_up(&email, PASSWORD).await;
    let (_, first) = app.signed_in(&email, PASSWORD).await;
    let (other_access, other_refresh) = app.signed_in(&email, PASSWORD).await;

    let rotated = app.refresh(&first).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    assert_eq!(rotated.body["user_id"], user.to_string());
    let second = rotated.body["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    let access = rotated.body["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    assert_ne!(second, first);
    assert_eq!(app.rename(user, &access).await.status, 200);

    // The used one comes back: refused, and the sign-in is revoked.
    assert_problem(&app.refresh(&first).await, 401, "/problems/invalid-token");
    assert_problem(&app.refresh(&second).await, 401, "/problems/invalid-token");
    assert_problem(
        &app.rename(user, &access).await,
        401,
        "/problems/invalid-token",
    );
    // The user's other sign-in goes on.
    assert_eq!(app.rename(user, &other_access).await.status, 200);
    assert_eq!(app.refresh(&other_refresh).await.status, 200);
    // Made-up tokens are refused alike.
    assert_problem(
        &app.refresh("made-up").await,
        401,
        "/problems/invalid-token",
    );
    let answer = app.post("/auth/refresh", json!({})).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_sign_in_of_the_body_or_of_the_token() {
    let app = spawn_listening(new_db().await, authed(&prefix())).await;
    let email = email();
    let user = app.sign_up(&email, PASSWORD).await;
    let (access, refresh) = app.signed_in(&email, PASSWORD).await;
    let (kept_access, kept_refresh) = app.signed_in(&email, PASSWORD).await;

    // No body at all: the access token's sign-in.
    let answer = app
        .send(app.bearer(Method::POST, "/auth/logout", &access))
        .await;
    assert_eq!(answer.status, 204, "{}", answer.body);
    assert_problem(&app.refresh(&refresh).await, 401, "/problems/invalid-token");
    assert_problem(
        &app.rename(user, &access).await,
        401,
        "/problems/invalid-token",
    );
    assert_eq!(app.rename(user, &kept_access).await.status, 200);

    // With the refresh token in the body.
    let (access, refresh) = app.signed_in(&email, PASSWORD).await;
    let answer = app
        .send(
            app.bearer(Method::POST, "/auth/logout", &kept_access)
                .json(&json!({ "refresh_token": refresh })),
        )
        .await;
    assert_eq!(answer.status, 204, "{}", answer.body);
    assert_problem(&app.refresh(&refresh).await, 401, "/problems/invalid-token");
    assert_problem(
        &app.rename(user, &access).await,
        401,
        "/problems/invalid-token",
    );
    assert_eq!(app.refresh(&kept_refresh).await.status, 200);

    // Without a token it is not open.
    let answer = app.post("/auth/logout", json!({})).await;
    assert_problem(&answer, 401, "/problems/unauthorized");
    let answer = app
        .send(
            app.bearer(Method::POST, "/auth/logout", &kept_access)
                .json(&json!({ "refresh_token": 7 })),
        )
        .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    let answer = app
        .send(
            app.bearer(Method::POST, "/auth/logout", &kept_access)
                .json(&json!({ "refresh_token": "" })),
        )
        .await;
    assert_problem(&answer, 422, "/problems/validation");
    let answer = app
        .send(
            app.bearer(Method::POST, "/auth/logout", &kept_access)
                .json(&json!([])),
        )
        .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_password_ends_the_other_sign_ins_and_records_only_that_it_changed() {
    let app = spawn_listening(new_db().await, authed(&prefix())).await;
    let email = email();
    let user = app.sign_up(&email, PASSWORD).await;
    let (access, refresh) = app.signed_in(&email, PASSWORD).await;
    let (other_access, other_refresh) = app.signed_in(&email, PASSWORD).await;
    let path = format!("/users/{user}/password");
    let change = |body: Value| app.bearer(Method::POST, &path, &access).json(&body);

    let events = app.event_count().await;
    let answer = app
        .send(change(
            json!({ "current_password": "wrong one!", "new_password": "a new passphrase" }),
        ))
        .await;
    assert_problem(&answer, 422, "/problems/invalid-credentials");
    let answer = app
        .send(change(json!({ "new_password": "a new passphrase" })))
        .await;
    assert_problem(&answer, 422, "/problems/validation");
    assert_eq!(answer.body["errors"][0]["field"], "current_password");
    let answer = app
        .send(change(
            json!({ "current_password": PASSWORD, "new_password": "short" }),
        ))
        .await;
    assert_problem(&answer, 422, "/problems/validation");
    assert_eq!(answer.body["errors"][0]["field"], "new_password");
    assert_eq!(app.event_count().await, events, "a refused change wrote");
    // Guessing the current password is throttled as logins are.
    for _ in 0..4 {
        let answer = app
            .send(change(
                json!({ "current_password": "guess again", "new_password": "a new passphrase" }),
            ))
            .await;
        assert_problem(&answer, 422, "/problems/invalid-credentials");
    }
    let answer = app
        .send(change(
            json!({ "current_password": PASSWORD, "new_password": "a new passphrase" }),
        ))
        .await;
    assert_problem(&answer, 429, "/problems/login-throttled");
    assert!(answer.headers.get("retry-after").is_some());
    sqlx::query("DELETE FROM login_failures")
        .execute(&app.db.pool)
        .await
        .expect("forget the guesses");

    let answer = app
        .send(change(
            json!({ "current_password": PASSWORD, "new_password": "a new passphrase" }),
        ))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["id"], user.to_string());
    assert_eq!(answer.etag(), format!("\"{}\"", answer.body["version"]));
    assert_eq!(app.events_of_type("UserPasswordChanged").await, 1);
    let payload: Value =
        sqlx::query_scalar("SELECT payload FROM events WHERE event_type = 'UserPasswordChanged'")
            .fetch_one(&app.db.pool)
            .await
            .expect("the event");
    assert_eq!(payload, json!({ "UserPasswordChanged": {} }));

    // The sign-in that asked goes on; the other is over.
    assert_eq!(app.rename(user, &access).await.status, 200);
    assert_eq!(app.refresh(&refresh).await.status, 200);
    assert_problem(
        &app.rename(user, &other_access).await,
        401,
        "/problems/invalid-token",
    );
    assert_problem(
        &app.refresh(&other_refresh).await,
        401,
        "/problems/invalid-token",
    );
    assert_problem(
        &app.login(&email, PASSWORD).await,
        401,
        "/problems/invalid-credentials",
    );
    assert_eq!(app.login(&email, "a new passphrase").await.status, 200);

    // An admin may leave the current password out, and every sign-in ends.
    let admin = crate::auth::token("root", api::auth::Role::Admin);
    let answer = app
        .send(
            app.bearer(Method::POST, &path, &admin)
                .json(&json!({ "new_password": "an admin's reset" })),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_problem(
        &app.rename(user, &access).await,
        401,
        "/problems/invalid-token",
    );
    assert_eq!(app.login(&email, "an admin's reset").await.status, 200);
    // Of an unknown user: 404, nothing stored.
    let unknown = Uuid::now_v7();
    let answer = app
        .send(
            app.bearer(Method::POST, &format!("/users/{unknown}/password"), &admin)
                .json(&json!({ "new_password": "an admin's reset" })),
        )
        .await;
    assert_problem(&answer, 404, "/problems/not-found");
    assert_eq!(
        app.rows(&format!(
            "SELECT count(*) FROM credentials WHERE user_id = '{unknown}'"
        ))
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_password_at_sign_up_is_422_and_writes_nothing() {
    let app = spawn_listening(new_db().await, authed(&prefix())).await;
    for password in ["short", &"x".repeat(129)] {
        let answer = app
            .post(
                "/users",
                json!({ "email": email(), "name": "Ada", "password": password }),
            )
            .await;
        assert_problem(&answer, 422, "/problems/validation");
        assert_eq!(answer.body["errors"][0]["field"], "password");
    }
    let answer = app
        .post(
            "/users",
            json!({ "email": email(), "name": "Ada", "password": 12345678 }),
        )
        .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(app.event_count().await, 0);
    assert_eq!(app.rows("SELECT count(*) FROM credentials").await, 0);
    // A refused registration (the email is taken) keeps no password either.
    let email = email();
    app.sign_up(&email, PASSWORD).await;
    let answer = app
        .post(
            "/users",
            json!({ "email": email, "name": "Twin", "password": "another passphrase" }),
        )
        .await;
    assert_eq!(answer.status, 409, "{}", answer.body);
    assert_eq!(app.rows("SELECT count(*) FROM credentials").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivated_users_live_token_is_refused_on_a_second_process() {
    let db = new_db().await;
    let prefix = prefix();
    let one = spawn_listening(Arc::clone(&db), authed(&prefix)).await;
    let two = spawn_listening(db, authed(&prefix)).await;
    let email = email();
    let user = one.sign_up(&email, PASSWORD).await;
    let (access, _) = one.signed_in(&email, PASSWORD).await;
    // The second process has the user cached as active.
    assert_eq!(two.rename(user, &access).await.status, 200);
    let answer = one
        .send(one.bearer(Method::POST, &format!("/users/{user}/deactivate"), &access))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // Refused as soon as the announcement arrives; waiting for it is the
    // only wait here.
    testkit::eventually("the second process refuses the token", || async {
        two.rename(user, &access).await.status == 401
    })
    .await;
    assert_problem(
        &two.rename(user, &access).await,
        401,
        "/problems/invalid-token",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_count_against_the_senders_rate_limit() {
    let db = new_db().await;
    let app = spawn_app_with(
        db,
        HttpOptions {
            rate_limit: RateLimitOptions {
                per_second: 50,
                burst: 100,
            },
            ..authed(&prefix())
        },
    )
    .await;
    let (mut refused, mut limited) = (0, 0);
    for i in 0..160 {
        let answer = app
            .send(
                app.request(Method::GET, "/products")
                    .header("authorization", format!("Bearer bad.token.{i}")),
            )
            .await;
        match answer.status {
            401 => refused += 1,
            429 => {
                assert_eq!(answer.problem_type(), "/problems/rate-limited");
                assert!(answer.headers.get("retry-after").is_some());
                limited += 1;
            }
            other => panic!("unexpected {other}: {}", answer.body),
        }
    }
    assert!(refused >= 100, "{refused} refused");
    assert!(limited > 0, "no 429 among 160 bad tokens");
}
