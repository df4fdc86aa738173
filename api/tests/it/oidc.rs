//! OpenID Connect: tokens of a provider of the test's own (a discovery
//! document and a JWKS served on a loopback port, with keys generated here),
//! accepted when they should be and refused, each for its reason, when not;
//! the provider's key rotated mid-test.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::auth::{OidcOptions, Role};
use api::HttpOptions;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::sign_in::{assert_problem, authed, new_db, prefix, spawn_listening};
use crate::support::TestApp;

const AUDIENCE: &str = "agora";

/// A signing key with its public half as a JWK.
struct TestKey {
    kid: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

fn ec_key(kid: &str) -> TestKey {
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("an EC key");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .expect("the EC key");
    // Uncompressed point: 0x04, then x and y, 32 bytes each.
    let point = pair.public_key().as_ref();
    TestKey {
        kid: kid.to_owned(),
        algorithm: Algorithm::ES256,
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }),
    }
}

fn rsa_key(kid: &str) -> TestKey {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::traits::PublicKeyParts;
    let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("an RSA key");
    let der = private.to_pkcs1_der().expect("PKCS#1");
    TestKey {
        kid: kid.to_owned(),
        algorithm: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_der(der.as_bytes()),
        jwk: json!({
            "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(private.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(private.e().to_bytes_be()),
        }),
    }
}

/// The provider: `/.well-known/openid-configuration` and `/jwks`.
struct Provider {
    issuer: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct ProviderState {
    issuer: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
}

impl Provider {
    async fn start(keys: &[&TestKey]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let issuer = format!("http://{}", listener.local_addr().expect("addr"));
        let state = ProviderState {
            issuer: issuer.clone(),
            keys: Arc::new(Mutex::new(keys.iter().map(|k| k.jwk.clone()).collect())),
            fetches: Arc::new(AtomicUsize::new(0)),
        };
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(|State(s): State<ProviderState>| async move {
                    Json(json!({ "issuer": s.issuer, "jwks_uri": format!("{}/jwks", s.issuer) }))
                }),
            )
            .route(
                "/jwks",
                get(|State(s): State<ProviderState>| async move {
                    s.fetches.fetch_add(1, Ordering::SeqCst);
                    let keys = s.keys.lock().expect("keys").clone();
                    Json(json!({ "keys": keys }))
                }),
            )
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            issuer,
            keys: state.keys,
            fetches: state.fetches,
        }
    }

    fn publish(&self, keys: &[&TestKey]) {
        *self.keys.lock().expect("keys") = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn claims(&self, email: &str) -> Value {
        let now = now();
        json!({
            "iss": self.issuer, "aud": AUDIENCE, "sub": format!("idp-{email}"),
            "iat": now, "exp": now + 600,
            "email": email, "email_verified": true, "name": "Grace Hopper", "roles": [],
        })
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn without(claims: &mut Value, field: &str) {
    if let Some(object) = claims.as_object_mut() {
        object.remove(field);
    }
}

fn sign(key: &TestKey, claims: &Value) -> String {
    let mut header = Header::new(key.algorithm);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).expect("sign")
}

async fn app_for(provider: &Provider, refetch_interval: Duration) -> TestApp {
    spawn_listening(
        new_db().await,
        HttpOptions {
            identity: api::auth::IdentityOptions {
                oidc: Some(OidcOptions {
                    refetch_interval,
                    ..OidcOptions::new(provider.issuer.clone(), AUDIENCE)
                }),
                ..Default::default()
            },
            ..authed(&prefix())
        },
    )
    .await
}

/// 204 when the token is accepted (any signed-in caller may log out).
async fn accepted(app: &TestApp, token: &str) -> crate::support::Answer {
    app.send(app.bearer(Method::POST, "/auth/logout", token))
        .await
}

fn email() -> String {
    format!("grace-{}@oidc.example", Uuid::now_v7())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_and_es256_tokens_are_accepted_and_register_their_user_once() {
    let rsa = rsa_key("rsa-1");
    let ec = ec_key("ec-1");
    let provider = Provider::start(&[&rsa, &ec]).await;
    let app = app_for(&provider, Duration::from_secs(10)).await;
    let email = email();
    let claims = provider.claims(&email);

    let answer = accepted(&app, &sign(&rsa, &claims)).await;
    assert_eq!(answer.status, 204, "{}", answer.body);
    assert_eq!(app.events_of_type("UserRegistered").await, 1);
    let (payload, actor): (Value, String) = sqlx::query_as(
        "SELECT payload, metadata->>'actor' FROM events WHERE event_type = 'UserRegistered'",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("the registration");
    // Sealed as stored; opened, the token's email and name.
    let mut opened = payload.clone();
    app.state
        .aggregates
        .vault
        .open_all(&mut opened)
        .await
        .unwrap();
    assert_ne!(opened, payload);
    assert_eq!(opened["UserRegistered"]["email"], email);
    assert_eq!(opened["UserRegistered"]["name"], "Grace Hopper");
    assert_eq!(actor, "oidc");
    let user: Uuid = payload["UserRegistered"]["user_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("the user id");

    // Seen again, by either algorithm: the same user.
    for token in [sign(&rsa, &claims), sign(&ec, &claims)] {
        assert_eq!(accepted(&app, &token).await.status, 204);
    }
    assert_eq!(app.events_of_type("UserRegistered").await, 1);
    // The token is that user's.
    assert_eq!(app.rename(user, &sign(&ec, &claims)).await.status, 200);
    assert_eq!(
        app.rename(Uuid::now_v7(), &sign(&ec, &claims)).await.status,
        403
    );
    // A user registered here first is the one an email names.
    let local = self::email();
    app.register(&local).await;
    assert_eq!(
        accepted(&app, &sign(&ec, &provider.claims(&local)))
            .await
            .status,
        204
    );
    assert_eq!(app.events_of_type("UserRegistered").await, 2);

    // The admin role makes an admin.
    let mut admin = provider.claims(&self::email());
    admin["roles"] = json!(["reader", "agora-admin"]);
    let answer = app
        .send(app.bearer(Method::GET, "/api-keys", &sign(&ec, &admin)))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer = app
        .send(app.bearer(Method::GET, "/api-keys", &sign(&ec, &claims)))
        .await;
    assert_problem(&answer, 403, "/problems/forbidden");
    // One fetch of the keys served all of it.
    assert_eq!(provider.fetches(), 1);

    // A deactivated user's provider token is refused too.
    let admin_token = crate::auth::token("root", Role::Admin);
    let answer = app
        .send(app.bearer(
            Method::POST,
            &format!("/users/{user}/deactivate"),
            &admin_token,
        ))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_problem(
        &accepted(&app, &sign(&ec, &claims)).await,
        401,
        "/problems/invalid-token",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_fetched_and_the_retired_one_refused() {
    let old = ec_key("2026-01");
    let new = ec_key("2026-02");
    let provider = Provider::start(&[&old]).await;
    let interval = Duration::from_millis(500);
    let app = app_for(&provider, interval).await;
    let claims = provider.claims(&email());
    assert_eq!(accepted(&app, &sign(&old, &claims)).await.status, 204);
    assert_eq!(provider.fetches(), 1);

    provider.publish(&[&new]);
    // Past the refetch interval, the new kid makes us fetch again.
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    let answer = accepted(&app, &sign(&new, &claims)).await;
    assert_eq!(answer.status, 204, "{}", answer.body);
    assert_eq!(provider.fetches(), 2);
    // The old key is no longer published, so its tokens are refused.
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    assert_problem(
        &accepted(&app, &sign(&old, &claims)).await,
        401,
        "/problems/invalid-token",
    );
    assert_eq!(accepted(&app, &sign(&new, &claims)).await.status, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_fetch_the_keys_at_most_once_every_ten_seconds() {
    let key = ec_key("only");
    let provider = Provider::start(&[&key]).await;
    // The contract's interval, not a shortened one.
    let app = app_for(&provider, api::auth::oidc::REFETCH_INTERVAL).await;
    let claims = provider.claims(&email());
    assert_eq!(accepted(&app, &sign(&key, &claims)).await.status, 204);
    for _ in 0..20 {
        let stranger = ec_key(&format!("made-up-{}", Uuid::now_v7()));
        let answer = accepted(&app, &sign(&stranger, &claims)).await;
        assert_problem(&answer, 401, "/problems/invalid-token");
    }
    // Twenty unknown kids within seconds: no fetch for them (at most one,
    // should this machine stall past the interval).
    assert!(provider.fetches() <= 2, "{} fetches", provider.fetches());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_is_refused_for_its_reason_and_registers_nobody() {
    let rsa = rsa_key("rsa-1");
    let ec = ec_key("ec-1");
    let impostor = ec_key("ec-1");
    let provider = Provider::start(&[&rsa, &ec]).await;
    let app = app_for(&provider, Duration::from_millis(200)).await;
    let good = provider.claims(&email());
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = good.clone();
        change(&mut claims);
        claims
    };
    let mut cases: Vec<(&str, String)> = vec![
        ("bad signature", sign(&impostor, &good)),
        ("unknown kid", sign(&ec_key("nobody"), &good)),
        (
            "wrong iss",
            sign(&ec, &with(&|c| c["iss"] = json!("http://127.0.0.1:1"))),
        ),
        (
            "wrong aud",
            sign(&ec, &with(&|c| c["aud"] = json!("someone-else"))),
        ),
        ("no aud", sign(&ec, &with(&|c| without(c, "aud")))),
        (
            "expired",
            sign(&ec, &with(&|c| c["exp"] = json!(now() - 3600))),
        ),
        (
            "nbf ahead",
            sign(&ec, &with(&|c| c["nbf"] = json!(now() + 3600))),
        ),
        (
            "email not verified",
            sign(&ec, &with(&|c| c["email_verified"] = json!(false))),
        ),
        (
            "email_verified missing",
            sign(&ec, &with(&|c| without(c, "email_verified"))),
        ),
        ("no email", sign(&ec, &with(&|c| without(c, "email")))),
        (
            "email not an email",
            sign(&ec, &with(&|c| c["email"] = json!("grace at home"))),
        ),
    ];
    // ES256 in the header, but the kid is of an RSA key.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("rsa-1".to_owned());
    cases.push((
        "algorithm not the key's",
        jsonwebtoken::encode(&header, &good, &ec.encoding).expect("sign"),
    ));
    // RSA-PSS with the provider's own RSA key: not an accepted algorithm.
    let mut header = Header::new(Algorithm::PS256);
    header.kid = Some("rsa-1".to_owned());
    cases.push((
        "PS256",
        jsonwebtoken::encode(&header, &good, &rsa.encoding).expect("sign"),
    ));
    // HS256 presented as the provider's: keyed with the published key
    // (the old algorithm-confusion attack), or with anything else.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("ec-1".to_owned());
    let published = serde_json::to_vec(&ec.jwk).expect("jwk");
    cases.push((
        "HS256 keyed with the public key",
        jsonwebtoken::encode(&header, &good, &EncodingKey::from_secret(&published)).expect("sign"),
    ));
    cases.push((
        "HS256 with the provider's claims",
        jsonwebtoken::encode(&header, &good, &EncodingKey::from_secret(b"guess")).expect("sign"),
    ));
    cases.push((
        "alg none",
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"ec-1"}"#),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&good).expect("claims"))
        ),
    ));
    for (case, token) in &cases {
        let answer = accepted(&app, token).await;
        assert_eq!(
            (answer.status, answer.problem_type()),
            (401, "/problems/invalid-token"),
            "{case}: {}",
            answer.body
        );
    }
    assert_eq!(
        app.event_count().await,
        0,
        "a refused token registered a user"
    );
    // The good one still passes.
    assert_eq!(accepted(&app, &sign(&ec, &good)).await.status, 204);
}
