//! The aggregate store: cache, snapshot plus tail and the full stream agree;
//! concurrent writers neither lose nor duplicate events; If-Match and refusals
//! write nothing.

use std::collections::BTreeSet;

use commands::{AggregateStore, CommandError, Committed, StoreOptions};
use domain::{Product, ProductCommand, ProductError, ProductEvent};
use testkit::TestDatabase;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::support::{
    create_product, description, eur, event_count, fold, metadata, name, snapshot_row,
    stored_events, Lcg,
};

const PRODUCT: &str = "product";

fn product_store(db: &TestDatabase, options: StoreOptions) -> AggregateStore<Product> {
    AggregateStore::new(db.pool.clone(), options)
}

/// A command for the long-stream test, drawn from a fixed mix.
fn next_command(rng: &mut Lcg, orders: &mut Vec<Uuid>, order_counter: &mut u128) -> ProductCommand {
    fn pick_order(rng: &mut Lcg, orders: &[Uuid]) -> Uuid {
        orders[rng.below(orders.len() as u64) as usize]
    }
    let roll = if orders.is_empty() { 7 } else { rng.below(22) };
    match roll {
        0..=5 => {
            let magnitude = 1 + rng.below(300) as i64;
            let delta = if rng.below(2) == 0 {
                magnitude
            } else {
                -magnitude
            };
            ProductCommand::AdjustStock { delta }
        }
        // More than there is: refused.
        6 => ProductCommand::AdjustStock { delta: -50_000_000 },
        7..=9 => {
            *order_counter += 1;
            let order_id =
                Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + *order_counter);
            orders.push(order_id);
            ProductCommand::ReserveStock {
                order_id,
                quantity: 1 + rng.below(40) as u32,
            }
        }
        // A retried reservation: answered without a new event.
        10 => ProductCommand::ReserveStock {
            order_id: pick_order(rng, orders),
            quantity: 3,
        },
        11..=12 => ProductCommand::ReleaseReservation {
            order_id: pick_order(rng, orders),
        },
        13..=14 => ProductCommand::CommitReservation {
            order_id: pick_order(rng, orders),
        },
        15..=16 => ProductCommand::ReturnStock {
            order_id: pick_order(rng, orders),
            quantity: 3,
        },
        17..=18 => ProductCommand::ChangePrice {
            price: eur(100 + rng.below(4) as i64),
        },
        _ => {
            const NAMES: [&str; 4] = ["Widget", "Gadget", "Gizmo", "Doohickey"];
            const DESCRIPTIONS: [&str; 3] = ["", "Blue", "Red and large"];
            ProductCommand::UpdateDetails {
                name: (rng.below(3) != 0).then(|| name(NAMES[rng.below(4) as usize])),
                description: (rng.below(2) == 0)
                    .then(|| description(DESCRIPTIONS[rng.below(3) as usize])),
                attributes: None,
            }
        }
    }
}

/// `available` and `reserved` tallied from the events alone, independently of
/// the aggregate's own bookkeeping.
#[derive(Debug, Default, PartialEq)]
struct Tally {
    available: i64,
    reserved: i64,
}

impl Tally {
    fn add(&mut self, event: &ProductEvent) {
        match event {
            ProductEvent::ProductCreated { stock, .. } => self.available = *stock,
            ProductEvent::ProductStockAdjusted { stock_delta } => self.available += stock_delta,
            ProductEvent::StockReserved { quantity, .. } => {
                self.available -= i64::from(*quantity);
                self.reserved += i64::from(*quantity);
            }
            ProductEvent::StockReservationReleased { quantity, .. } => {
                self.available += i64::from(*quantity);
                self.reserved -= i64::from(*quantity);
            }
            ProductEvent::StockReservationCommitted { quantity, .. } => {
                self.reserved -= i64::from(*quantity)
            }
            ProductEvent::StockReturned { quantity, .. } => self.available += i64::from(*quantity),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_snapshot_and_full_stream_agree_after_thousands_of_commands() {
    let db = TestDatabase::with_pool_size(4).await;
    let options = StoreOptions {
        snapshot_every: 100,
        ..StoreOptions::default()
    };
    let store = product_store(&db, options.clone());
    let meta = metadata();
    let product_id = Uuid::now_v7();
    let id = product_id.to_string();

    let created = store
        .execute(
            &id,
            create_product(product_id, "SNAP-0001", 1_000_000),
            None,
            &meta,
        )
        .await
        .unwrap();
    assert_eq!(created.version, 1);

    let mut tally = Tally::default();
    created.events.iter().for_each(|e| tally.add(e));
    let mut rng = Lcg::new(0x5EED_CAFE);
    let (mut orders, mut order_counter) = (Vec::new(), 0u128);
    let (mut version, mut refused, mut unchanged, mut snapshots_checked) = (1usize, 0, 0, 0);
    let mut last: Option<Committed<Product>> = None;

    for step in 0..3_000 {
        // Now and then drop the cached copy, so later commands run on a
        // state loaded from snapshot plus tail rather than the cache.
        if step % 97 == 96 {
            store.forget(&id);
        }
        let command = next_command(&mut rng, &mut orders, &mut order_counter);
        match store.execute(&id, command.clone(), None, &meta).await {
            Ok(committed) => {
                assert_eq!(
                    committed.version,
                    version + committed.events.len(),
                    "step {step}: {command:?}"
                );
                if committed.events.is_empty() {
                    unchanged += 1;
                }
                committed.events.iter().for_each(|e| tally.add(e));
                if committed.version / 100 > version / 100 {
                    // This command crossed a multiple of 100: its snapshot
                    // must be exactly the state the command produced.
                    let (snap_version, payload) = snapshot_row(&db.pool, PRODUCT, &id)
                        .await
                        .expect("snapshot written");
                    assert_eq!(snap_version as usize, committed.version, "step {step}");
                    let snapshotted: Product = serde_json::from_value(payload).unwrap();
                    assert_eq!(snapshotted, committed.aggregate, "step {step}");
                    snapshots_checked += 1;
                } else if version >= 100 {
                    // No crossing: the snapshot is left where it was.
                    let (snap_version, _) = snapshot_row(&db.pool, PRODUCT, &id).await.unwrap();
                    assert_eq!(snap_version as usize, version / 100 * 100, "step {step}");
                }
                version = committed.version;
                last = Some(committed);
            }
            Err(CommandError::Rejected(_)) => refused += 1,
            Err(other) => panic!("step {step}: {command:?} failed: {other:?}"),
        }
    }

    println!("{version} events, {refused} refused, {unchanged} unchanged, {snapshots_checked} snapshots checked");
    // The mix really exercised every path.
    assert!(version > 1_500, "only {version} events");
    assert!(refused > 50, "only {refused} refusals");
    assert!(unchanged > 50, "only {unchanged} no-op commands");
    assert!(
        snapshots_checked >= 15,
        "only {snapshots_checked} snapshots checked"
    );

    // The stream holds exactly `version` events, numbered 1..=version.
    assert_eq!(event_count(&db.pool, PRODUCT, &id).await as usize, version);
    assert_eq!(store.stored_version(&id).await.unwrap(), version);

    // Cached state.
    let (cached, from_cache) = store.load(&id).await.unwrap();
    assert!(from_cache, "the last command's state should be cached");
    assert_eq!(cached.version, version);
    assert_eq!(cached.aggregate, last.unwrap().aggregate);

    // Snapshot plus tail, bypassing the cache.
    let stored = store.load_stored(&id).await.unwrap();
    store.forget(&id);
    let (reloaded, from_cache) = store.load(&id).await.unwrap();
    assert!(!from_cache);
    let other_store = product_store(&db, options);
    let (other, other_from_cache) = other_store.load(&id).await.unwrap();
    assert!(!other_from_cache);

    // All events through the stock postgres-es repository.
    let full = store.load_from_all_events(&id).await.unwrap();

    assert_eq!(full.version, version);
    assert_eq!(*cached, full);
    assert_eq!(stored, full);
    assert_eq!(*reloaded, full);
    assert_eq!(*other, full);

    // And the numbers match a tally made from the events alone.
    assert_eq!(full.aggregate.available(), tally.available);
    assert_eq!(full.aggregate.reserved(), tally.reserved);
    assert_ne!(tally.available, 1_000_000);

    // The snapshot sits on the last multiple of 100 and equals the state
    // folded from exactly that many events: no event applied twice or missed.
    let (snap_version, payload) = snapshot_row(&db.pool, PRODUCT, &id).await.unwrap();
    let snap_version = snap_version as usize;
    assert!(
        snap_version > 0 && snap_version.is_multiple_of(100),
        "snapshot at {snap_version}"
    );
    assert_eq!(snap_version, version / 100 * 100);
    let events = stored_events::<Product>(&db.pool, &id).await;
    assert_eq!(events.len(), version);
    let snapshotted: Product = serde_json::from_value(payload).unwrap();
    assert_eq!(
        snapshotted,
        fold::<Product>(events[..snap_version].iter().cloned())
    );
    assert_eq!(full.aggregate, fold::<Product>(events));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_load_starts_from_the_snapshot_and_survives_an_unreadable_one() {
    let db = TestDatabase::new().await;
    let store = product_store(&db, StoreOptions::default());
    let meta = metadata();
    let product_id = Uuid::now_v7();
    let id = product_id.to_string();
    store
        .execute(&id, create_product(product_id, "COLD-1", 0), None, &meta)
        .await
        .unwrap();
    for _ in 0..149 {
        store
            .execute(&id, ProductCommand::AdjustStock { delta: 1 }, None, &meta)
            .await
            .unwrap();
    }
    let (snap_version, _) = snapshot_row(&db.pool, PRODUCT, &id).await.unwrap();
    assert_eq!(snap_version, 100);
    let full = store.load_from_all_events(&id).await.unwrap();
    assert_eq!(full.version, 150);
    assert_eq!(full.aggregate.available(), 149);

    // Mark the snapshot: a cold load must start from it and add the 50
    // events after it, not replay the whole stream.
    sqlx::query(
        "UPDATE aggregate_snapshots SET payload = jsonb_set(payload, '{available}', '1000000') WHERE aggregate_id = $1",
    )
    .bind(&id)
    .execute(&db.pool)
    .await
    .unwrap();
    store.forget(&id);
    let stored = store.load_stored(&id).await.unwrap();
    assert_eq!(stored.version, 150);
    assert_eq!(stored.aggregate.available(), 1_000_050);

    // A snapshot that no longer deserializes is ignored: the stream is the truth.
    sqlx::query("UPDATE aggregate_snapshots SET payload = '{\"not\": \"a product\"}' WHERE aggregate_id = $1")
        .bind(&id)
        .execute(&db.pool)
        .await
        .unwrap();
    let stored = store.load_stored(&id).await.unwrap();
    assert_eq!(stored, full);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_racing_on_one_product_lose_nothing() {
    let db = TestDatabase::with_pool_size(8).await;
    // A budget large enough that a lost race is always retried: this test is
    // about correctness under contention, not about the budget.
    let options = StoreOptions {
        max_retries: 100_000,
        ..StoreOptions::default()
    };
    let a = product_store(&db, options.clone());
    let b = product_store(&db, options);
    let meta = metadata();
    let product_id = Uuid::now_v7();
    let id = product_id.to_string();
    a.execute(&id, create_product(product_id, "RACE-1", 10), None, &meta)
        .await
        .unwrap();
    // Both caches hold version 1.
    assert_eq!(a.load(&id).await.unwrap().0.version, 1);
    assert_eq!(b.load(&id).await.unwrap().0.version, 1);

    let mut tasks = JoinSet::new();
    for i in 0..100 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (id, meta) = (id.clone(), meta.clone());
        tasks.spawn(async move {
            store
                .execute(&id, ProductCommand::AdjustStock { delta: 1 }, None, &meta)
                .await
        });
    }
    let mut versions = BTreeSet::new();
    while let Some(result) = tasks.join_next().await {
        let committed = result.unwrap().expect("every increment is accepted");
        assert_eq!(
            committed.events,
            vec![ProductEvent::ProductStockAdjusted { stock_delta: 1 }]
        );
        // Each command got its own slot in the stream.
        assert!(
            versions.insert(committed.version),
            "version {} twice",
            committed.version
        );
    }
    assert_eq!(versions, (2..=101).collect::<BTreeSet<_>>());

    let full = a.load_from_all_events(&id).await.unwrap();
    assert_eq!(full.version, 101);
    assert_eq!(full.aggregate.available(), 110);
    assert_eq!(a.stored_version(&id).await.unwrap(), 101);
    assert_eq!(event_count(&db.pool, PRODUCT, &id).await, 101);
    assert_eq!(a.load_stored(&id).await.unwrap(), full);
    assert_eq!(b.load_stored(&id).await.unwrap(), full);
    assert_eq!(b.load_from_all_events(&id).await.unwrap(), full);

    // Whatever each cache holds is a true prefix of the stream, never a
    // state that was not stored.
    let events = crate::support::stored_events::<Product>(&db.pool, &id).await;
    for store in [&a, &b] {
        let (cached, _) = store.load(&id).await.unwrap();
        assert!(cached.version >= 1 && cached.version <= 101);
        assert_eq!(
            cached.aggregate,
            fold::<Product>(events[..cached.version].iter().cloned())
        );
    }

    // Make A's cache stale: it holds 101, B then writes 102.
    a.forget(&id);
    assert_eq!(a.load(&id).await.unwrap().0.version, 101);
    assert!(a.load(&id).await.unwrap().1);
    b.execute(&id, ProductCommand::AdjustStock { delta: 5 }, None, &meta)
        .await
        .unwrap();

    // If-Match on A's stale version is refused with the stored version, and
    // nothing is written.
    match a
        .execute(
            &id,
            ProductCommand::AdjustStock { delta: 1 },
            Some(101),
            &meta,
        )
        .await
    {
        Err(CommandError::PreconditionFailed { expected, current }) => {
            assert_eq!((expected, current), (101, 102));
        }
        other => panic!("expected a precondition failure, got {other:?}"),
    }
    assert_eq!(event_count(&db.pool, PRODUCT, &id).await, 102);

    // Stale again: A holds 102, B writes 103. If-Match with the true version
    // must succeed through A despite its cache.
    assert_eq!(a.load(&id).await.unwrap().0.version, 102);
    b.execute(&id, ProductCommand::AdjustStock { delta: 1 }, None, &meta)
        .await
        .unwrap();
    let (cached, from_cache) = a.load(&id).await.unwrap();
    assert!(from_cache);
    assert_eq!(cached.version, 102);
    let committed = a
        .execute(
            &id,
            ProductCommand::AdjustStock { delta: 1 },
            Some(103),
            &meta,
        )
        .await
        .expect("If-Match with the stored version succeeds through a stale cache");
    assert_eq!(committed.version, 104);
    assert_eq!(committed.aggregate.available(), 117);

    // A refusal computed on a stale cache is checked against the store:
    // A holds 104 (117 available), B adds 1000; taking 500 is fine.
    b.execute(
        &id,
        ProductCommand::AdjustStock { delta: 1_000 },
        None,
        &meta,
    )
    .await
    .unwrap();
    let (cached, from_cache) = a.load(&id).await.unwrap();
    assert!(from_cache);
    assert_eq!(cached.aggregate.available(), 117);
    let committed = a
        .execute(
            &id,
            ProductCommand::AdjustStock { delta: -500 },
            None,
            &meta,
        )
        .await
        .expect("a refusal based on a stale cache is re-checked");
    assert_eq!(committed.version, 106);
    assert_eq!(committed.aggregate.available(), 617);

    let full = b.load_from_all_events(&id).await.unwrap();
    assert_eq!(full.version, 106);
    assert_eq!(a.load(&id).await.unwrap().0.as_ref(), &full);
    assert_eq!(b.load_stored(&id).await.unwrap(), full);
}

// A flash sale on one store: commands queued on one aggregate are decided
// one after another on the state in memory and appended together. Given 40
// units, when 100 reservations of one unit arrive at once, then exactly 40
// are accepted, each with a version of its own, the other 60 are refused
// for want of stock, every stored event carries its own command's metadata,
// and the 40 took fewer transactions than commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_queued_on_one_aggregate_are_decided_in_turn_and_appended_together() {
    let db = TestDatabase::with_pool_size(4).await;
    let store = product_store(&db, StoreOptions::default());
    let product_id = Uuid::now_v7();
    let id = product_id.to_string();
    store
        .execute(
            &id,
            create_product(product_id, "HOT-1", 40),
            None,
            &metadata(),
        )
        .await
        .unwrap();

    let mut tasks = JoinSet::new();
    for n in 0..100u128 {
        let (store, id) = (store.clone(), id.clone());
        let meta = commands::CommandMetadata {
            correlation_id: format!("order-{n}"),
            ..metadata()
        };
        tasks.spawn(async move {
            let order_id = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n);
            let command = ProductCommand::ReserveStock {
                order_id,
                quantity: 1,
            };
            (n, store.execute(&id, command, None, &meta).await)
        });
    }
    let mut answered = std::collections::BTreeMap::new();
    let mut refused = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            (n, Ok(committed)) => {
                let [ProductEvent::StockReserved { quantity: 1, .. }] = committed.events[..] else {
                    panic!("one reservation per answer: {:?}", committed.events);
                };
                assert!(answered.insert(committed.version, n).is_none());
            }
            (_, Err(CommandError::Rejected(ProductError::InsufficientStock { .. }))) => {
                refused += 1
            }
            (_, other) => panic!("expected a reservation or a refusal, got {other:?}"),
        }
    }
    assert_eq!(refused, 60);
    assert_eq!(
        answered.keys().copied().collect::<Vec<_>>(),
        (2..=41).collect::<Vec<_>>()
    );

    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT sequence, metadata->>'correlation_id', xmin::text FROM events
          WHERE aggregate_id = $1 AND sequence > 1 ORDER BY sequence",
    )
    .bind(&id)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 40);
    for (sequence, correlation, _) in &rows {
        let n = answered[&(*sequence as usize)];
        assert_eq!(correlation, &format!("order-{n}"), "event {sequence}");
    }
    let transactions: BTreeSet<&str> = rows.iter().map(|(_, _, xmin)| xmin.as_str()).collect();
    assert!(
        transactions.len() < rows.len(),
        "40 reservations in {} transactions",
        transactions.len()
    );
    let full = store.load_from_all_events(&id).await.unwrap();
    assert_eq!(
        (full.aggregate.available(), full.aggregate.reserved()),
        (0, 40)
    );
    assert_eq!(store.load(&id).await.unwrap().0.as_ref(), &full);
}

// A command sent the moment the one before it was answered may arrive while
// that turn is ending: it must start or join a turn, never be dropped (a
// turn's clean-up once removed the next turn's queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_sent_one_after_another_on_one_aggregate_are_each_answered() {
    let db = TestDatabase::with_pool_size(2).await;
    let store = product_store(&db, StoreOptions::default());
    let product_id = Uuid::now_v7();
    let id = product_id.to_string();
    let meta = metadata();
    store
        .execute(&id, create_product(product_id, "SEQ-1", 0), None, &meta)
        .await
        .unwrap();
    for n in 0..500 {
        let committed = store
            .execute(&id, ProductCommand::AdjustStock { delta: 1 }, None, &meta)
            .await
            .unwrap_or_else(|err| panic!("command {n}: {err:?}"));
        assert_eq!(committed.version, n + 2);
    }
    assert_eq!(event_count(&db.pool, PRODUCT, &id).await, 501);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_mismatch_is_refused_and_writes_nothing() {
    let db = TestDatabase::new().await;
    let store = product_store(&db, StoreOptions::default());
    let meta = metadata();
    let product_id = Uuid::now_v7();
    let id = product_id.to_string();

    // Version 0 is "does not exist yet".
    let created = store
        .execute(
            &id,
            create_product(product_id, "MATCH-1", 5),
            Some(0),
            &meta,
        )
        .await
        .unwrap();
    assert_eq!(created.version, 1);
    store
        .execute(
            &id,
            ProductCommand::AdjustStock { delta: 1 },
            Some(1),
            &meta,
        )
        .await
        .unwrap();

    // Once with the state cached, once loaded from the store.
    for forget in [false, true] {
        if forget {
            store.forget(&id);
        }
        for expected in [0, 1, 3, 99] {
            match store
                .execute(
                    &id,
                    ProductCommand::AdjustStock { delta: 7 },
                    Some(expected),
                    &meta,
                )
                .await
            {
                Err(CommandError::PreconditionFailed {
                    expected: e,
                    current,
                }) => assert_eq!((e, current), (expected, 2)),
                other => panic!("expected a precondition failure, got {other:?}"),
            }
        }
    }
    assert_eq!(event_count(&db.pool, PRODUCT, &id).await, 2);
    let full = store.load_from_all_events(&id).await.unwrap();
    assert_eq!(full.aggregate.available(), 6);
    assert_eq!(store.load(&id).await.unwrap().0.as_ref(), &full);

    // The matching version is accepted.
    let committed = store
        .execute(
            &id,
            ProductCommand::AdjustStock { delta: 7 },
            Some(2),
            &meta,
        )
        .await
        .unwrap();
    assert_eq!(committed.version, 3);
    assert_eq!(committed.aggregate.available(), 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_no_op_commands_write_nothing() {
    let db = TestDatabase::new().await;
    let store = product_store(&db, StoreOptions::default());
    let meta = metadata();
    let product_id = Uuid::now_v7();
    let id = product_id.to_string();
    store
        .execute(&id, create_product(product_id, "REFUSE-1", 10), None, &meta)
        .await
        .unwrap();

    match store
        .execute(&id, ProductCommand::AdjustStock { delta: -11 }, None, &meta)
        .await
    {
        Err(CommandError::Rejected(ProductError::InsufficientStock {
            available,
            requested,
        })) => assert_eq!((available, requested), (10, 11)),
        other => panic!("expected insufficient stock, got {other:?}"),
    }
    let order_id = Uuid::now_v7();
    match store
        .execute(
            &id,
            ProductCommand::ReserveStock {
                order_id,
                quantity: 11,
            },
            None,
            &meta,
        )
        .await
    {
        Err(CommandError::Rejected(ProductError::InsufficientStock {
            available,
            requested,
        })) => assert_eq!((available, requested), (10, 11)),
        other => panic!("expected insufficient stock, got {other:?}"),
    }
    match store
        .execute(
            &id,
            ProductCommand::CommitReservation { order_id },
            None,
            &meta,
        )
        .await
    {
        Err(CommandError::Rejected(ProductError::UnknownReservation { order_id: o })) => {
            assert_eq!(o, order_id)
        }
        other => panic!("expected an unknown reservation, got {other:?}"),
    }
    // A command on a product that does not exist is refused and creates nothing.
    let missing = Uuid::now_v7().to_string();
    assert!(matches!(
        store
            .execute(
                &missing,
                ProductCommand::AdjustStock { delta: 1 },
                None,
                &meta
            )
            .await,
        Err(CommandError::Rejected(ProductError::NotFound))
    ));
    assert_eq!(event_count(&db.pool, PRODUCT, &missing).await, 0);

    // Accepted but changing nothing: no event, same version.
    let unchanged = store
        .execute(
            &id,
            ProductCommand::ChangePrice { price: eur(1999) },
            None,
            &meta,
        )
        .await
        .unwrap();
    assert!(unchanged.events.is_empty());
    assert_eq!(unchanged.version, 1);

    assert_eq!(event_count(&db.pool, PRODUCT, &id).await, 1);
    assert!(snapshot_row(&db.pool, PRODUCT, &id).await.is_none());
    let (cached, _) = store.load(&id).await.unwrap();
    assert_eq!(cached.version, 1);
    assert_eq!(cached.aggregate.available(), 10);
    assert_eq!(cached.aggregate.reserved(), 0);
    assert_eq!(*cached, store.load_from_all_events(&id).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_aggregate_is_created_without_a_load_and_an_existing_id_falls_back() {
    let db = testkit::TestDatabase::new().await;
    let store = commands::AggregateStore::<domain::Product>::new(
        db.pool.clone(),
        commands::StoreOptions::default(),
    );
    let id = uuid::Uuid::now_v7();
    let created = store
        .execute_new(
            &id.to_string(),
            crate::support::create_product(id, "NEW-1", 5),
            &crate::support::metadata(),
        )
        .await
        .expect("created");
    assert_eq!(created.version, 1);
    // The same id again: the append clashes, the command runs on the stored
    // aggregate and is refused as the domain refuses a second create.
    let again = store
        .execute_new(
            &id.to_string(),
            crate::support::create_product(id, "NEW-2", 5),
            &crate::support::metadata(),
        )
        .await;
    assert!(
        matches!(
            again,
            Err(commands::CommandError::Rejected(
                domain::ProductError::AlreadyExists
            ))
        ),
        "{again:?}"
    );
    assert_eq!(store.stored_version(&id.to_string()).await.unwrap(), 1);
    // A taken sku is still a clash.
    let other = uuid::Uuid::now_v7();
    let clash = store
        .execute_new(
            &other.to_string(),
            crate::support::create_product(other, "new-1", 5),
            &crate::support::metadata(),
        )
        .await;
    assert!(
        matches!(
            clash,
            Err(commands::CommandError::Duplicate { field: "sku" })
        ),
        "{clash:?}"
    );
}

// Postgres checks a statement's text and its parameters' types when it is
// prepared, so every shape is proven against the real tables here, including
// shapes no command of today's aggregates produces.
#[tokio::test(flavor = "multi_thread")]
async fn every_shape_of_the_append_statement_prepares_against_the_schema() {
    use commands::store::AppendShape;
    use sqlx::{Executor, Statement};

    let db = testkit::TestDatabase::new().await;
    for index in 0..AppendShape::COUNT {
        let shape = AppendShape::from_index(index);
        assert_eq!(shape.index(), index);
        let statement = db
            .pool
            .prepare(shape.sql())
            .await
            .unwrap_or_else(|err| panic!("{shape:?}: {err}\n{}", shape.sql()));
        let parameters = match statement.parameters() {
            Some(sqlx::Either::Left(types)) => types.len(),
            Some(sqlx::Either::Right(count)) => count,
            None => 0,
        };
        let expected = 7
            + 2 * usize::from(shape.releases)
            + 2 * usize::from(shape.claims)
            + 2 * usize::from(shape.snapshot);
        assert_eq!(parameters, expected, "{shape:?}");
    }
}
