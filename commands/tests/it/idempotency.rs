//! `Idempotency-Key` records: claim, replay, mismatch, abandon and expiry.

use commands::idempotency::{Claim, IdempotencyStore, StoredResponse};
use sqlx::PgPool;
use testkit::TestDatabase;
use tokio::task::JoinSet;

/// Backdates a record, as if it had been written `age` ago.
async fn age(pool: &PgPool, scope: &str, key: &str, age: &str) {
    let updated = sqlx::query(&format!(
        "UPDATE idempotency_keys SET created_at = now() - interval '{age}' WHERE scope = $1 AND key = $2"
    ))
    .bind(IdempotencyStore::scope_hash(scope))
    .bind(key)
    .execute(pool)
    .await
    .unwrap();
    assert_eq!(updated.rows_affected(), 1);
}

fn response() -> StoredResponse {
    StoredResponse {
        status: 201,
        etag: Some("\"1\"".to_owned()),
        location: Some("/products/0190a".to_owned()),
        body: br#"{"id":"0190a","stock":3}"#.to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_replay_mismatch_abandon_and_expiry() {
    let db = TestDatabase::new().await;
    let keys = IdempotencyStore::new(db.pool.clone());

    assert_eq!(
        keys.claim("alice", "k1", "h1").await.unwrap(),
        Claim::Acquired
    );
    assert_eq!(
        keys.claim("alice", "k1", "h1").await.unwrap(),
        Claim::InFlight
    );
    assert_eq!(
        keys.claim("alice", "k1", "h2").await.unwrap(),
        Claim::Mismatch
    );
    // Scopes do not share keys.
    assert_eq!(
        keys.claim("bob", "k1", "h2").await.unwrap(),
        Claim::Acquired
    );

    // The completed answer is replayed byte for byte, to the same request only.
    keys.complete("alice", "k1", "h1", &response())
        .await
        .unwrap();
    assert_eq!(
        keys.claim("alice", "k1", "h1").await.unwrap(),
        Claim::Replay(response())
    );
    assert_eq!(
        keys.claim("alice", "k1", "h1").await.unwrap(),
        Claim::Replay(response())
    );
    assert_eq!(
        keys.claim("alice", "k1", "h2").await.unwrap(),
        Claim::Mismatch
    );
    // Bob's record is untouched by Alice's.
    assert_eq!(
        keys.claim("bob", "k1", "h2").await.unwrap(),
        Claim::InFlight
    );

    // An answer without etag, location or body replays as such.
    let bare = StoredResponse {
        status: 204,
        etag: None,
        location: None,
        body: Vec::new(),
    };
    keys.complete("bob", "k1", "h2", &bare).await.unwrap();
    assert_eq!(
        keys.claim("bob", "k1", "h2").await.unwrap(),
        Claim::Replay(bare)
    );

    // Abandoning frees an in-flight key for the retry (even with another body)...
    assert_eq!(
        keys.claim("alice", "k2", "h1").await.unwrap(),
        Claim::Acquired
    );
    keys.abandon("alice", "k2", "h1").await.unwrap();
    assert_eq!(
        keys.claim("alice", "k2", "h3").await.unwrap(),
        Claim::Acquired
    );
    assert_eq!(
        keys.claim("alice", "k2", "h3").await.unwrap(),
        Claim::InFlight
    );
    // ...but never a completed one.
    keys.abandon("alice", "k1", "h1").await.unwrap();
    assert_eq!(
        keys.claim("alice", "k1", "h1").await.unwrap(),
        Claim::Replay(response())
    );

    // A record older than 24 hours is reused as if new, whatever it held.
    age(&db.pool, "alice", "k1", "23 hours").await;
    assert_eq!(
        keys.claim("alice", "k1", "h1").await.unwrap(),
        Claim::Replay(response())
    );
    age(&db.pool, "alice", "k1", "25 hours").await;
    assert_eq!(
        keys.claim("alice", "k1", "h9").await.unwrap(),
        Claim::Acquired
    );
    assert_eq!(
        keys.claim("alice", "k1", "h9").await.unwrap(),
        Claim::InFlight
    );
    assert_eq!(
        keys.claim("alice", "k1", "h1").await.unwrap(),
        Claim::Mismatch
    );
    let (state, body): (String, Option<Vec<u8>>) =
        sqlx::query_as("SELECT state, body FROM idempotency_keys WHERE scope = $1 AND key = 'k1'")
            .bind(IdempotencyStore::scope_hash("alice"))
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), body), ("in_flight", None));

    // A claim left in flight by a process that died is taken over after a
    // while, but not while it may still be running.
    age(&db.pool, "alice", "k2", "1 minute").await;
    assert_eq!(
        keys.claim("alice", "k2", "h3").await.unwrap(),
        Claim::InFlight
    );
    age(&db.pool, "alice", "k2", "6 minutes").await;
    assert_eq!(
        keys.claim("alice", "k2", "h3").await.unwrap(),
        Claim::Acquired
    );
    assert_eq!(
        keys.claim("alice", "k2", "h3").await.unwrap(),
        Claim::InFlight
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_of_one_key_acquire_it_once() {
    let db = TestDatabase::with_pool_size(8).await;
    let keys = IdempotencyStore::new(db.pool.clone());
    let mut tasks = JoinSet::new();
    for _ in 0..10 {
        let keys = keys.clone();
        tasks.spawn(async move { keys.claim("carol", "same-key", "h1").await.unwrap() });
    }
    let mut outcomes = Vec::new();
    while let Some(outcome) = tasks.join_next().await {
        outcomes.push(outcome.unwrap());
    }
    assert_eq!(
        outcomes.iter().filter(|c| **c == Claim::Acquired).count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|c| **c == Claim::InFlight).count(),
        9,
        "{outcomes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_holder_cannot_complete_or_abandon_a_claim_taken_over() {
    let db = TestDatabase::new().await;
    let keys = IdempotencyStore::new(db.pool.clone());
    assert_eq!(
        keys.claim("carol", "k", "first").await.unwrap(),
        Claim::Acquired
    );
    age(&db.pool, "carol", "k", "6 minutes").await;
    // The first holder stalled; another request takes the stale claim over.
    assert_eq!(
        keys.claim("carol", "k", "second").await.unwrap(),
        Claim::Acquired
    );
    // The first holder wakes up: neither its answer nor its release lands.
    keys.complete("carol", "k", "first", &response())
        .await
        .unwrap();
    keys.abandon("carol", "k", "first").await.unwrap();
    assert_eq!(
        keys.claim("carol", "k", "second").await.unwrap(),
        Claim::InFlight
    );
    keys.complete("carol", "k", "second", &response())
        .await
        .unwrap();
    assert_eq!(
        keys.claim("carol", "k", "second").await.unwrap(),
        Claim::Replay(response())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_scope_fits_because_it_is_stored_as_its_hash() {
    let db = TestDatabase::new().await;
    let keys = IdempotencyStore::new(db.pool.clone());
    // A token subject of 9,000 characters overflowed the key's index.
    let scope = format!("admin:{}", "s".repeat(9_000));
    assert_eq!(keys.claim(&scope, "k", "h").await.unwrap(), Claim::Acquired);
    keys.complete(&scope, "k", "h", &response()).await.unwrap();
    assert_eq!(
        keys.claim(&scope, "k", "h").await.unwrap(),
        Claim::Replay(response())
    );
    let stored: String = sqlx::query_scalar("SELECT scope FROM idempotency_keys")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 64, "the SHA-256 in hex");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_deletes_records_past_24_hours_in_bounded_batches() {
    let db = TestDatabase::new().await;
    let keys = IdempotencyStore::new(db.pool.clone());
    for i in 0..7 {
        let key = format!("old-{i}");
        keys.claim("alice", &key, "h").await.unwrap();
        keys.complete("alice", &key, "h", &response())
            .await
            .unwrap();
        age(&db.pool, "alice", &key, "25 hours").await;
    }
    keys.claim("alice", "fresh", "h").await.unwrap();
    keys.complete("alice", "fresh", "h", &response())
        .await
        .unwrap();
    age(&db.pool, "alice", "fresh", "23 hours").await;

    // One statement deletes at most a batch, oldest first.
    assert_eq!(keys.sweep_once(3).await.unwrap(), 3);
    assert_eq!(keys.count().await.unwrap(), 5);

    // The background sweep goes on batch after batch until none is left,
    // and leaves what is younger than 24 hours.
    let options = commands::idempotency::SweepOptions {
        interval: std::time::Duration::from_millis(20),
        batch: 3,
    };
    let sweeper = tokio::spawn(commands::idempotency::sweep(
        keys.clone(),
        options,
        std::future::pending(),
    ));
    testkit::eventually("the expired records are swept", || async {
        keys.count().await.unwrap() == 1
    })
    .await;
    sweeper.abort();
    assert_eq!(
        keys.claim("alice", "fresh", "h").await.unwrap(),
        Claim::Replay(response())
    );
}
