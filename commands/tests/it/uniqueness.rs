//! Values unique across aggregates (user email, product sku): claimed in the
//! same statement as the event, case-insensitively, released on change.

use commands::{AggregateStore, CommandError, StoreOptions};
use domain::{Product, User, UserCommand, UserError, UserEvent};
use sqlx::PgPool;
use testkit::TestDatabase;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::support::{
    create_product, email, event_count, event_type_count, metadata, name, register,
};

/// `value` with the case of each letter flipped where `pattern` has a 1 bit.
fn recase(value: &str, pattern: u32) -> String {
    value
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i < 32 && pattern & (1 << i) != 0 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// (email, aggregate_id) of every email claim: claims hold the keyed hash
/// of the normalized email, never the email, so each is named by the one of
/// this file's addresses that hashes to it.
async fn email_claims(pool: &PgPool, users: &AggregateStore<User>) -> Vec<(String, String)> {
    const KNOWN: [&str; 4] = [
        "same.person@example.com",
        "first@example.com",
        "second@example.com",
        "third@example.com",
    ];
    let mut named: Vec<(String, String)> = claims(pool, "email")
        .await
        .into_iter()
        .map(|(value, id)| {
            let email = KNOWN
                .iter()
                .find(|known| users.vault().email_claim(known) == value)
                .map_or_else(
                    || format!("unknown claim {value}"),
                    |known| known.to_string(),
                );
            (email, id)
        })
        .collect();
    named.sort();
    named
}

/// (value, aggregate_id) of every claim of one kind.
async fn claims(pool: &PgPool, kind: &str) -> Vec<(String, String)> {
    sqlx::query_as("SELECT value, aggregate_id FROM unique_claims WHERE kind = $1 ORDER BY value")
        .bind(kind)
        .fetch_all(pool)
        .await
        .unwrap()
}

fn is_duplicate<E: std::error::Error>(
    result: &Result<impl Sized, CommandError<E>>,
    field: &str,
) -> bool {
    matches!(result, Err(CommandError::Duplicate { field: f }) if *f == field)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_of_one_email_in_any_case_admit_exactly_one() {
    let db = TestDatabase::with_pool_size(8).await;
    let users = AggregateStore::<User>::new(db.pool.clone(), StoreOptions::default());
    let meta = metadata();

    let mut tasks = JoinSet::new();
    let mut addresses = Vec::new();
    for i in 0..10u32 {
        let address = recase("same.person@example.com", i * 0x2493 + 1);
        addresses.push(address.clone());
        let (users, meta) = (users.clone(), meta.clone());
        tasks.spawn(async move {
            let id = Uuid::now_v7();
            let result = users
                .execute(&id.to_string(), register(id, &address), None, &meta)
                .await;
            (id, result)
        });
    }
    // The case variants really are ten different strings.
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 10);

    let (mut winners, mut duplicates, mut losers) = (Vec::new(), 0, Vec::new());
    while let Some(joined) = tasks.join_next().await {
        let (id, result) = joined.unwrap();
        if result.is_ok() {
            winners.push(id);
        } else if is_duplicate(&result, "email") {
            duplicates += 1;
            losers.push(id);
        } else {
            panic!("unexpected outcome {result:?}");
        }
    }
    assert_eq!(winners.len(), 1, "exactly one registration wins");
    assert_eq!(duplicates, 9);

    assert_eq!(event_type_count(&db.pool, "UserRegistered").await, 1);
    let winner = winners[0].to_string();
    assert_eq!(
        email_claims(&db.pool, &users).await,
        vec![("same.person@example.com".to_owned(), winner.clone())]
    );
    for loser in losers {
        let loser = loser.to_string();
        assert_eq!(event_count(&db.pool, "user", &loser).await, 0);
        assert!(!users.load(&loser).await.unwrap().0.aggregate.exists());
    }
    assert!(users.load(&winner).await.unwrap().0.aggregate.is_active());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_changes_release_the_old_claim_and_refuse_taken_addresses() {
    let db = TestDatabase::new().await;
    let users = AggregateStore::<User>::new(db.pool.clone(), StoreOptions::default());
    let meta = metadata();
    let (ada_id, bob_id, eve_id) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let (ada, bob, eve) = (ada_id.to_string(), bob_id.to_string(), eve_id.to_string());

    users
        .execute(&ada, register(ada_id, "First@Example.com"), None, &meta)
        .await
        .unwrap();
    let change = |address: &str| UserCommand::UpdateProfile {
        name: None,
        email: Some(email(address)),
    };

    // Ada moves to a new address: the old one is released.
    let committed = users
        .execute(&ada, change("second@example.com"), None, &meta)
        .await
        .unwrap();
    assert_eq!(committed.version, 2);
    assert_eq!(
        email_claims(&db.pool, &users).await,
        vec![("second@example.com".to_owned(), ada.clone())]
    );

    // So Bob can register it, in another case.
    users
        .execute(&bob, register(bob_id, "FIRST@example.COM"), None, &meta)
        .await
        .unwrap();
    assert_eq!(
        email_claims(&db.pool, &users).await,
        vec![
            ("first@example.com".to_owned(), bob.clone()),
            ("second@example.com".to_owned(), ada.clone()),
        ]
    );

    // Bob may not take Ada's address in any case, not even together with a
    // name change: the whole command writes nothing.
    let taken = users
        .execute(
            &bob,
            UserCommand::UpdateProfile {
                name: Some(name("Robert")),
                email: Some(email("Second@Example.com")),
            },
            None,
            &meta,
        )
        .await;
    assert!(is_duplicate(&taken, "email"), "{taken:?}");
    assert_eq!(event_count(&db.pool, "user", &bob).await, 1);
    let bob_now = users.load_from_all_events(&bob).await.unwrap();
    assert_eq!(
        bob_now.aggregate.email().unwrap().as_str(),
        "FIRST@example.COM"
    );
    assert_eq!(bob_now.aggregate.name().unwrap().as_str(), "Ada");
    assert_eq!(*users.load(&bob).await.unwrap().0, bob_now);

    // A case-only change of one's own address is accepted and keeps the claim.
    let recased = users
        .execute(&ada, change("SECOND@example.com"), None, &meta)
        .await
        .unwrap();
    assert_eq!(recased.version, 3);
    assert_eq!(
        recased.events,
        vec![UserEvent::UserEmailChanged {
            previous_email: email("second@example.com"),
            email: email("SECOND@example.com"),
        }]
    );
    assert_eq!(
        email_claims(&db.pool, &users).await,
        vec![
            ("first@example.com".to_owned(), bob.clone()),
            ("second@example.com".to_owned(), ada.clone()),
        ]
    );
    // The claim still guards the address.
    let result = users
        .execute(&eve, register(eve_id, "second@EXAMPLE.com"), None, &meta)
        .await;
    assert!(is_duplicate(&result, "email"), "{result:?}");
    assert_eq!(event_count(&db.pool, "user", &eve).await, 0);

    // Ada moves on again; now Bob can take her previous address.
    users
        .execute(&ada, change("third@example.com"), None, &meta)
        .await
        .unwrap();
    users
        .execute(&bob, change("second@example.com"), None, &meta)
        .await
        .unwrap();
    assert_eq!(
        email_claims(&db.pool, &users).await,
        vec![
            ("second@example.com".to_owned(), bob.clone()),
            ("third@example.com".to_owned(), ada.clone()),
        ]
    );

    // Registering an existing id again is a business refusal, not a new claim.
    let again = users
        .execute(&ada, register(ada_id, "fourth@example.com"), None, &meta)
        .await;
    assert!(
        matches!(again, Err(CommandError::Rejected(UserError::AlreadyExists))),
        "{again:?}"
    );
    assert_eq!(email_claims(&db.pool, &users).await.len(), 2);
    assert_eq!(event_type_count(&db.pool, "UserRegistered").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_products_with_one_sku_in_any_case_admit_exactly_one() {
    let db = TestDatabase::with_pool_size(8).await;
    let products = AggregateStore::<Product>::new(db.pool.clone(), StoreOptions::default());
    let meta = metadata();

    let mut tasks = JoinSet::new();
    for i in 0..10u32 {
        let sku = recase("tsh-blue-xl", i * 0x49 + 1);
        let (products, meta) = (products.clone(), meta.clone());
        tasks.spawn(async move {
            let id = Uuid::now_v7();
            let result = products
                .execute(&id.to_string(), create_product(id, &sku, 5), None, &meta)
                .await;
            (id, result)
        });
    }
    let (mut winners, mut duplicates) = (Vec::new(), 0);
    while let Some(joined) = tasks.join_next().await {
        let (id, result) = joined.unwrap();
        if result.is_ok() {
            winners.push(id);
        } else if is_duplicate(&result, "sku") {
            duplicates += 1;
            assert_eq!(event_count(&db.pool, "product", &id.to_string()).await, 0);
        } else {
            panic!("unexpected outcome {result:?}");
        }
    }
    assert_eq!(winners.len(), 1);
    assert_eq!(duplicates, 9);
    assert_eq!(event_type_count(&db.pool, "ProductCreated").await, 1);
    assert_eq!(
        claims(&db.pool, "sku").await,
        vec![("TSH-BLUE-XL".to_owned(), winners[0].to_string())]
    );

    // Sequentially too, and another sku is free.
    let id = Uuid::now_v7();
    let result = products
        .execute(
            &id.to_string(),
            create_product(id, "Tsh-Blue-Xl", 5),
            None,
            &meta,
        )
        .await;
    assert!(is_duplicate(&result, "sku"), "{result:?}");
    let id = Uuid::now_v7();
    products
        .execute(
            &id.to_string(),
            create_product(id, "tsh-blue-l", 5),
            None,
            &meta,
        )
        .await
        .unwrap();
    assert_eq!(claims(&db.pool, "sku").await.len(), 2);
    assert_eq!(event_type_count(&db.pool, "ProductCreated").await, 2);
}
