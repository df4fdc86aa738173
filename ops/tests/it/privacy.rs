//! Erasure through the whole system: after `DELETE /users/{id}`, neither the
//! database (`pg_dump`) nor the JetStream stream holds the user's email,
//! name or address in any form readable without the destroyed key; the
//! answers show nulls, the email registers again, and a replay rebuilds
//! the same read models.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::{eventually_within, TestDatabase};

use crate::support::{migrate_for, test_prefix, Agora};

// Distinctive, so a hit in a dump can only be this user's data.
const EMAIL: &str = "Grace.Hopper.Erasable@Example.com";
const NAME: &str = "Grace Brewster Murray Hopper";
const SHIP_TO: &str = "Amazing Grace Recipient";
const LINE1: &str = "1701 Cobolstrasse Nordwing";
const LINE2: &str = "Flat Flowmatic Seventeen";

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

/// Every needle found in `haystack`, as bytes (any case of the email).
fn found_in(haystack: &[u8], what: &str) -> Vec<&'static str> {
    let lower = String::from_utf8_lossy(haystack).to_lowercase();
    [EMAIL, NAME, SHIP_TO, LINE1, LINE2]
        .into_iter()
        .filter(|needle| lower.contains(&needle.to_lowercase()))
        .inspect(|needle| eprintln!("{what} still holds {needle:?}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_user_is_unreadable_in_the_database_and_the_stream() {
    let db = TestDatabase::with_pool_size(4).await;
    let nats_url = testkit::nats_url();
    let prefix = test_prefix();
    migrate_for(&db, &nats_url, &prefix).await;
    let mut agora = Agora::new(&db, &nats_url, &prefix);
    agora.start_with(&[(
        "AGORA_DATA_KEY",
        "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=",
    )]);
    let http = reqwest::Client::new();
    let base = agora.base();
    agora.wait_ready().await;

    let (status, user) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/users"),
        Some(json!({ "email": EMAIL, "name": NAME })),
    )
    .await;
    assert_eq!(status, 201, "{user}");
    let user_id = user["id"].as_str().expect("an id").to_owned();
    let (status, product) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/products"),
        Some(json!({ "sku": "ERASE-1", "name": "Lamp", "price": { "amount": 900, "currency": "EUR" }, "stock": 5 })),
    )
    .await;
    assert_eq!(status, 201, "{product}");
    let (status, order) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/orders"),
        Some(json!({
            "user_id": user_id,
            "lines": [{ "product_id": product["id"], "quantity": 1 }],
            "payment_token": "tok_ok",
            "shipping_address": { "name": SHIP_TO, "line1": LINE1, "line2": LINE2,
                "city": "Arlington", "postal_code": "22201", "country": "US" }
        })),
    )
    .await;
    assert_eq!(status, 201, "{order}");
    let order_id = order["id"].as_str().expect("an id").to_owned();

    // Before: the answers show the data, opened at the edge, while the
    // read model holds it sealed.
    eventually_within("the order is read back", Duration::from_secs(30), || {
        let (http, url) = (http.clone(), format!("{base}/orders/{order_id}"));
        async move {
            let (status, body) = call(&http, reqwest::Method::GET, url, None).await;
            status == 200 && body["shipping_address"]["line1"] == LINE1
        }
    })
    .await;
    let (status, shown) = call(
        &http,
        reqwest::Method::GET,
        format!("{base}/users/{user_id}"),
        None,
    )
    .await;
    assert_eq!(
        (status, &shown["email"], &shown["name"]),
        (200, &json!(EMAIL), &json!(NAME))
    );
    let (status, found) = call(
        &http,
        reqwest::Method::GET,
        format!("{base}/users?email={}", EMAIL.to_uppercase()),
        None,
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["items"][0]["id"], json!(user_id), "{found}");
    let sealed: String = sqlx::query_scalar("SELECT email FROM rm_users WHERE id = $1::uuid")
        .bind(&user_id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(sealed.starts_with("pd1."), "{sealed}");
    crate::support::assert_saga_finished(&db).await;

    let (status, erased) = call(
        &http,
        reqwest::Method::DELETE,
        format!("{base}/users/{user_id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{erased}");
    assert_eq!(erased["status"], "erased");
    assert_eq!(erased["id"], json!(user_id));
    let version = erased["version"].as_i64().expect("a version");
    // A repeat answers the same.
    let (status, again) = call(
        &http,
        reqwest::Method::DELETE,
        format!("{base}/users/{user_id}"),
        None,
    )
    .await;
    assert_eq!((status, &again), (200, &erased));

    eventually_within("the user reads as erased", Duration::from_secs(30), || {
        let (http, url) = (
            http.clone(),
            format!("{base}/users/{user_id}?min_version={version}"),
        );
        async move {
            let (status, body) = call(&http, reqwest::Method::GET, url, None).await;
            status == 200 && body["status"] == "erased"
        }
    })
    .await;
    let (_, shown) = call(
        &http,
        reqwest::Method::GET,
        format!("{base}/users/{user_id}"),
        None,
    )
    .await;
    assert_eq!(
        (&shown["email"], &shown["name"]),
        (&Value::Null, &Value::Null),
        "{shown}"
    );
    let (status, order) = call(
        &http,
        reqwest::Method::GET,
        format!("{base}/orders/{order_id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{order}");
    assert_eq!(order["shipping_address"], Value::Null, "{order}");
    assert_eq!(order["total"], json!({ "amount": 900, "currency": "EUR" }));
    let (_, listed) = call(
        &http,
        reqwest::Method::GET,
        format!("{base}/users/{user_id}/orders"),
        None,
    )
    .await;
    assert_eq!(
        listed["items"][0]["shipping_address"],
        Value::Null,
        "{listed}"
    );
    let (_, notes) = call(
        &http,
        reqwest::Method::GET,
        format!("{base}/users/{user_id}/notifications"),
        None,
    )
    .await;
    assert_eq!(notes["items"], json!([]), "{notes}");
    let (_, found) = call(
        &http,
        reqwest::Method::GET,
        format!("{base}/users?email={EMAIL}"),
        None,
    )
    .await;
    assert_eq!(found["items"], json!([]), "{found}");

    // The database, as a backup would take it, and the stream.
    let dump = Command::new("pg_dump")
        .arg(db.url())
        .output()
        .expect("run pg_dump");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    assert!(dump.stdout.len() > 10_000, "a real dump");
    assert_eq!(found_in(&dump.stdout, "pg_dump"), Vec::<&str>::new());
    let client = async_nats::connect(&nats_url).await.expect("nats");
    let stream = async_nats::jetstream::new(client)
        .get_stream(schemas::subjects::stream(&prefix))
        .await
        .expect("the test's stream");
    let last = stream.cached_info().state.last_sequence;
    assert!(last >= 4, "the stream holds the events");
    for sequence in 1..=last {
        let Ok(message) = stream.get_raw_message(sequence).await else {
            continue;
        };
        let mut bytes = message.payload.to_vec();
        bytes.extend(format!("{:?}", message.headers).into_bytes());
        assert_eq!(found_in(&bytes, "a JetStream message"), Vec::<&str>::new());
    }

    // The email is free again, in any case.
    let (status, again) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/users"),
        Some(json!({ "email": EMAIL.to_lowercase(), "name": "Another Grace" })),
    )
    .await;
    assert_eq!(status, 201, "{again}");

    // A replay after the erasure rebuilds the same read models.
    crate::support::assert_read_models_match_rebuild(&db, &nats_url, &prefix).await;
}
