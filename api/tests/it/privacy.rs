//! Personal data (api.md): emails compared in Unicode NFC, case-folded;
//! claims, events and read models hold no cleartext; erasure's policy, its
//! statuses, and what a client sees after it.

use api::auth::Role;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

use crate::auth::token;
use crate::sign_in::{assert_problem, authed, new_db, prefix, spawn_listening, PASSWORD};
use crate::support::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_email_in_nfc_and_nfd_is_one_account_and_stored_nowhere_in_clear() {
    let app = spawn_app().await;
    let nfc = "jos\u{e9}.privacy@shop.example";
    let nfd = "JOSE\u{301}.privacy@shop.example";
    let first = app.register(nfc).await;
    assert_eq!(first.body["email"], nfc);
    let before = app.event_count().await;
    let answer = app
        .post("/users", json!({ "email": nfd, "name": "Jos\u{e9}" }))
        .await;
    assert_eq!(
        (answer.status, answer.problem_type()),
        (409, "/problems/conflict"),
        "{}",
        answer.body
    );
    assert_eq!(app.event_count().await, before, "nothing was written");

    // The claim is a keyed hash; the event holds the email sealed.
    let claims: Vec<String> =
        sqlx::query_scalar("SELECT value FROM unique_claims WHERE kind = 'email'")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(claims.len(), 1);
    assert!(
        claims[0].len() == 64 && claims[0].chars().all(|c| c.is_ascii_hexdigit()),
        "{claims:?}"
    );
    let (version, payload): (String, serde_json::Value) = sqlx::query_as(
        "SELECT event_version, payload FROM events WHERE event_type = 'UserRegistered'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(version, "2.0");
    let data = &payload["UserRegistered"];
    for field in ["email", "name"] {
        let value = data[field].as_str().unwrap_or_default();
        assert!(
            value.starts_with(&format!("pd1.{}.", first.id())),
            "{field}: {value}"
        );
    }
    assert!(!payload.to_string().to_lowercase().contains("privacy@"));
    // /aggregates shows the stream as stored: sealed.
    let stream = app
        .get(&format!("/aggregates/user/{}/events", first.id()))
        .await;
    assert_eq!(stream.status, 200, "{}", stream.body);
    assert!(
        !stream.body.to_string().contains("privacy@"),
        "{}",
        stream.body
    );
    // The vault opens what it sealed; a flipped character does not open.
    let sealed = data["email"].as_str().unwrap();
    let vault = &app.state.aggregates.vault;
    assert_eq!(
        vault.open(sealed).await.unwrap().as_deref(),
        Some(format!("\"{nfc}\"").as_str())
    );
    let (head, body) = sealed.rsplit_once('.').unwrap();
    let mut bytes = STANDARD.decode(body).unwrap();
    bytes[20] ^= 1;
    let tampered = format!("{head}.{}", STANDARD.encode(bytes));
    assert_eq!(vault.open(&tampered).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_by_the_user_or_an_admin_only_and_its_tokens_refused_at_once() {
    let db = new_db().await;
    let options = authed(&prefix());
    let app = spawn_listening(db.clone(), options.clone()).await;
    let other_process = spawn_listening(db, options).await;
    let (ada_email, bob_email) = (
        format!("ada-{}@erase.example", Uuid::now_v7()),
        format!("bob-{}@erase.example", Uuid::now_v7()),
    );
    let ada = app.sign_up(&ada_email, PASSWORD).await;
    app.sign_up(&bob_email, PASSWORD).await;
    let (ada_token, ada_refresh) = app.signed_in(&ada_email, PASSWORD).await;
    let (bob_token, _) = app.signed_in(&bob_email, PASSWORD).await;
    let admin = token("ops-admin", Role::Admin);
    let before = app.event_count().await;

    // Another customer: 403; nobody: 401; an unknown user or an id that is
    // none: 404.
    let erase =
        |token: &str, id: String| app.bearer(Method::DELETE, &format!("/users/{id}"), token);
    let answer = app.send(erase(&bob_token, ada.to_string())).await;
    assert_problem(&answer, 403, "/problems/forbidden");
    let answer = app
        .send(app.request(Method::DELETE, &format!("/users/{ada}")))
        .await;
    assert_problem(&answer, 401, "/problems/unauthorized");
    let answer = app.send(erase(&admin, Uuid::now_v7().to_string())).await;
    assert_problem(&answer, 404, "/problems/not-found");
    let answer = app.send(erase(&admin, "not-a-uuid".to_owned())).await;
    assert_problem(&answer, 404, "/problems/not-found");
    assert_eq!(app.event_count().await, before, "nothing was written");
    assert_eq!(app.rename(ada, &ada_token).await.status, 200);
    assert_eq!(other_process.rename(ada, &ada_token).await.status, 200);

    // The user itself.
    let answer = app.send(erase(&ada_token, ada.to_string())).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let version = answer.body["version"].as_i64().unwrap();
    assert_eq!(
        answer.body,
        json!({ "id": ada.to_string(), "status": "erased", "version": version })
    );
    assert_eq!(answer.etag(), format!("\"{version}\""));
    assert_eq!(app.events_of_type("UserErased").await, 1);

    // Its tokens are refused at once, here and on the other process; its
    // refresh token and its password are gone.
    assert_problem(
        &app.rename(ada, &ada_token).await,
        401,
        "/problems/invalid-token",
    );
    testkit::eventually(
        "the other process refuses the erased user's token",
        || async { other_process.rename(ada, &ada_token).await.status == 401 },
    )
    .await;
    assert_problem(
        &app.refresh(&ada_refresh).await,
        401,
        "/problems/invalid-token",
    );
    assert_problem(
        &app.login(&ada_email, PASSWORD).await,
        401,
        "/problems/invalid-credentials",
    );
    assert_eq!(
        app.rows(&format!(
            "SELECT count(*) FROM credentials WHERE user_id = '{ada}'"
        ))
        .await,
        0
    );
    assert_eq!(
        app.rows(&format!(
            "SELECT count(*) FROM agora_keys.data_keys WHERE user_id = '{ada}' AND wrapped_key IS NULL AND erased_at IS NOT NULL"
        ))
        .await,
        1
    );
    // Nothing sealed for it opens any more.
    let sealed: String = sqlx::query_scalar(
        "SELECT payload->'UserRegistered'->>'email' FROM events WHERE aggregate_id = $1 AND sequence = 1",
    )
    .bind(ada.to_string())
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        other_process
            .state
            .aggregates
            .vault
            .open(&sealed)
            .await
            .unwrap(),
        None
    );

    // A repeat (by an admin: the user's tokens are refused) answers the same
    // and writes nothing; other commands on it are 404.
    let count = app.event_count().await;
    let again = app.send(erase(&admin, ada.to_string())).await;
    assert_eq!((again.status, &again.body), (200, &answer.body));
    assert_eq!(app.event_count().await, count);
    let rename = app
        .send(
            app.bearer(Method::PATCH, &format!("/users/{ada}"), &admin)
                .json(&json!({ "name": "Back" })),
        )
        .await;
    assert_problem(&rename, 404, "/problems/not-found");

    // The email may be registered again, and signs in to the new account.
    let again = app.sign_up(&ada_email.to_uppercase(), PASSWORD).await;
    assert_ne!(again, ada);
    let answer = app.login(&ada_email, PASSWORD).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["user_id"], again.to_string());
}
