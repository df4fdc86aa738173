//! Personal data through the store: sealed on append, opened on load, old
//! cleartext (1.0) events still read, and nothing readable once the owner's
//! key is destroyed.

use commands::vault::VaultError;
use commands::{AggregateStore, Aggregates, StoreOptions};
use domain::user::UserStatus;
use domain::{User, UserCommand};
use serde_json::json;
use testkit::TestDatabase;
use uuid::Uuid;

use crate::support::{metadata, register};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_cleartext_v1_events_still_load() {
    let db = TestDatabase::new().await;
    let (user, order) = (Uuid::now_v7(), Uuid::now_v7());
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('user', $1, 1, 'UserRegistered', '1.0', $3, '{\"actor\": \"test\"}'),
                ('order', $2, 1, 'OrderPlaced', '1.0', $4, '{\"actor\": \"test\"}')",
    )
    .bind(user.to_string())
    .bind(order.to_string())
    .bind(json!({"UserRegistered": {"user_id": user, "email": "old@example.com", "name": "Old Timer"}}))
    .bind(json!({"OrderPlaced": {"order_id": order, "user_id": user,
        "lines": [{"product_id": Uuid::now_v7(), "quantity": 1, "unit_price": {"amount": 100, "currency": "EUR"}}],
        "total": {"amount": 100, "currency": "EUR"}, "payment_token": "tok_ok",
        "shipping_address": {"name": "Old Timer", "line1": "1 Old Road", "city": "Oldham", "postal_code": "OL1", "country": "GB"}}}))
    .execute(&db.pool)
    .await
    .unwrap();
    let aggregates = Aggregates::new(db.pool.clone(), StoreOptions::default());
    let loaded = aggregates
        .users
        .load_stored(&user.to_string())
        .await
        .unwrap();
    assert_eq!(
        loaded.aggregate.email().unwrap().as_str(),
        "old@example.com"
    );
    let placed = aggregates
        .orders
        .load_stored(&order.to_string())
        .await
        .unwrap();
    assert_eq!(placed.aggregate.payment_token(), Some("tok_ok"));
    assert_eq!(
        placed.aggregate.shipping_address().unwrap().line1,
        "1 Old Road"
    );
    // The next event of the old stream is sealed, at 2.0.
    aggregates
        .users
        .execute(
            &user.to_string(),
            UserCommand::UpdateProfile {
                name: Some(domain::values::Name::parse("New Timer").unwrap()),
                email: None,
            },
            None,
            &metadata(),
        )
        .await
        .unwrap();
    let (version, name): (String, String) = sqlx::query_as(
        "SELECT event_version, payload->'UserNameChanged'->>'name' FROM events WHERE aggregate_id = $1 AND sequence = 2",
    )
    .bind(user.to_string())
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(version, "2.0");
    assert!(name.starts_with(&format!("pd1.{user}.")), "{name}");
    let fresh = AggregateStore::<User>::new(db.pool.clone(), StoreOptions::default());
    let reloaded = fresh.load_stored(&user.to_string()).await.unwrap();
    assert_eq!(reloaded.aggregate.name().unwrap().as_str(), "New Timer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_users_data_opens_nowhere_and_nothing_new_is_sealed_for_it() {
    let db = TestDatabase::new().await;
    let users = AggregateStore::<User>::new(db.pool.clone(), StoreOptions::default());
    let id = Uuid::now_v7();
    users
        .execute(
            &id.to_string(),
            register(id, "Erase.Me@example.com"),
            None,
            &metadata(),
        )
        .await
        .unwrap();
    let vault = users.vault().clone();
    let sealed = vault.seal(id, "\"a secret\"").await.unwrap();
    assert_eq!(
        vault.open(&sealed).await.unwrap().as_deref(),
        Some("\"a secret\"")
    );
    // Another process's vault (no cache) opens it from the wrapped key.
    let other = AggregateStore::<User>::new(db.pool.clone(), StoreOptions::default());
    assert_eq!(
        other.vault().open(&sealed).await.unwrap().as_deref(),
        Some("\"a secret\"")
    );
    // Under another AGORA_DATA_KEY the wrapped key does not unwrap.
    let wrong = commands::Vault::new(
        db.pool.clone(),
        &commands::MasterKey::parse("q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=").unwrap(),
    );
    assert!(matches!(wrong.open(&sealed).await, Err(VaultError::Unwrap)));
    // No key row holds the key in clear, and no row holds the email.
    let wrapped: Vec<u8> =
        sqlx::query_scalar("SELECT wrapped_key FROM agora_keys.data_keys WHERE user_id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(wrapped.len(), 12 + 32 + 16, "nonce, key, tag");

    let erased = users
        .execute(&id.to_string(), UserCommand::Erase, None, &metadata())
        .await
        .unwrap();
    assert_eq!(erased.aggregate.status(), UserStatus::Erased);
    vault.destroy(id).await.unwrap();
    other.vault().forget(id);
    assert_eq!(vault.open(&sealed).await.unwrap(), None);
    assert_eq!(other.vault().open(&sealed).await.unwrap(), None);
    assert!(matches!(
        vault.seal(id, "\"x\"").await,
        Err(VaultError::Erased(_))
    ));
    // The stream still loads, with nothing of it readable.
    let reloaded = other.load_stored(&id.to_string()).await.unwrap();
    assert_eq!(reloaded.aggregate.status(), UserStatus::Erased);
    assert_eq!(reloaded.aggregate.email(), None);
    assert_eq!(reloaded.version, 2);
    // The email claim went with the erasure.
    let claims: i64 = sqlx::query_scalar("SELECT count(*) FROM unique_claims WHERE kind = 'email'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(claims, 0);
}
