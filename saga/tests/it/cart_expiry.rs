//! The cart expiry timer against real Postgres: an idle open cart expires
//! once, however many processes run the timer, a cart changed since it was
//! seen is left alone, and a fresh process (a restart) picks up where the
//! read model says.

use std::time::Duration;

use commands::{Aggregates, CommandMetadata, StoreOptions};
use domain::cart::{CartCommand, Offer};
use domain::values::Currency;
use saga::cart_expiry::{expire_due, ExpiryOptions};
use testkit::TestDatabase;
use uuid::Uuid;

async fn cart(aggregates: &Aggregates) -> Uuid {
    let cart_id = Uuid::now_v7();
    let metadata = CommandMetadata::system();
    for command in [
        CartCommand::Create {
            cart_id,
            user_id: Some(Uuid::now_v7()),
            token_hash: None,
        },
        CartCommand::SetLine {
            product_id: Uuid::now_v7(),
            quantity: 1,
            offer: Offer {
                active: true,
                currency: Currency::parse("EUR").expect("EUR"),
            },
        },
    ] {
        aggregates
            .carts
            .execute(&cart_id.to_string(), command, None, &metadata)
            .await
            .expect("write the cart");
    }
    cart_id
}

async fn project(db: &TestDatabase) {
    projections::replay(
        &db.pool,
        &projections::ReplayOptions::default(),
        &mut projections::replay::Quiet,
    )
    .await
    .expect("replay");
}

async fn expired_events(db: &TestDatabase) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'CartExpired'")
        .fetch_one(&db.pool)
        .await
        .expect("count")
}

fn options(ttl: Duration) -> ExpiryOptions {
    ExpiryOptions {
        ttl,
        ..ExpiryOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_carts_expire_once_across_processes_and_restarts() {
    let db = TestDatabase::new().await;
    let first = Aggregates::new(db.pool.clone(), StoreOptions::default());
    let carts = [cart(&first).await, cart(&first).await, cart(&first).await];
    project(&db).await;

    // Not idle for the TTL yet: nothing expires.
    assert_eq!(
        expire_due(&db.pool, &first, &options(Duration::from_secs(3600)))
            .await
            .expect("a round"),
        0
    );

    // One cart changes after the read model saw it: it is left alone.
    first
        .carts
        .execute(
            &carts[2].to_string(),
            CartCommand::SetLine {
                product_id: Uuid::now_v7(),
                quantity: 2,
                offer: Offer {
                    active: true,
                    currency: Currency::parse("EUR").expect("EUR"),
                },
            },
            None,
            &CommandMetadata::system(),
        )
        .await
        .expect("a change");
    tokio::time::sleep(Duration::from_millis(20)).await;

    // Three processes (own caches, one database) run a round at once.
    let processes: Vec<Aggregates> = (0..3)
        .map(|_| Aggregates::new(db.pool.clone(), StoreOptions::default()))
        .collect();
    let quick = options(Duration::from_millis(10));
    let rounds =
        futures::future::join_all(processes.iter().map(|p| expire_due(&db.pool, p, &quick))).await;
    let total: usize = rounds.into_iter().map(|r| r.expect("a round")).sum();
    assert_eq!(total, 2, "each idle cart once, the changed one not");
    assert_eq!(expired_events(&db).await, 2);

    // A fresh process (a restart): before the read model catches up the
    // expired carts are refused by their versions; after, the changed cart,
    // idle by then, expires, and nothing else does.
    let restarted = Aggregates::new(db.pool.clone(), StoreOptions::default());
    assert_eq!(
        expire_due(&db.pool, &restarted, &quick)
            .await
            .expect("a round"),
        0
    );
    project(&db).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        expire_due(&db.pool, &restarted, &quick)
            .await
            .expect("a round"),
        1
    );
    project(&db).await;
    assert_eq!(
        expire_due(&db.pool, &restarted, &quick)
            .await
            .expect("a round"),
        0
    );
    assert_eq!(expired_events(&db).await, 3);
}
