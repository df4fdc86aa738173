//! Every event takes effect once: redeliveries are skipped, an event ahead of
//! a gap waits, and one bad event does not hold up its batch.

use projections::{apply_batch, Outcome, Projection, ProjectionError};
use serde_json::json;
use uuid::Uuid;

use crate::support::{assert_all_applied, database, eur, Recorder};

async fn stock(pool: &sqlx::PgPool, id: Uuid) -> (i64, i64, i64) {
    sqlx::query_as("SELECT available, reserved, version FROM rm_products WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn checkpoint(pool: &sqlx::PgPool, projection: Projection) -> (i64, i64) {
    sqlx::query_as(
        "SELECT position, events_applied FROM projection_checkpoints WHERE projection = $1",
    )
    .bind(projection.name())
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_a_batch_twice_has_no_second_effect() {
    let db = database().await;
    let mut r = Recorder::new(&db.pool);
    let (product, user, order) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let products = vec![
        r.record("product", product, "ProductCreated", json!({
            "product_id": product, "sku": "S", "name": "N", "description": null, "price": eur(100), "stock": 10
        })).await,
        r.record("product", product, "StockReserved", json!({"order_id": order, "quantity": 3})).await,
        r.record("product", product, "StockReserved", json!({"order_id": order, "quantity": 2})).await,
    ];
    let stream = vec![
        r.record("user", user, "UserRegistered", json!({"user_id": user, "email": "a@example.com", "name": "A"})).await,
        r.record("order", order, "OrderPlaced", json!({
            "order_id": order, "user_id": user, "lines": [], "total": eur(100), "payment_token": "t"
        })).await,
        r.record("order", order, "OrderConfirmed", json!({})).await,
    ];

    assert_all_applied(
        &apply_batch(&db.pool, &Projection::Products, &products)
            .await
            .unwrap(),
    );
    assert_all_applied(
        &apply_batch(&db.pool, &Projection::Notifications, &stream)
            .await
            .unwrap(),
    );
    assert_eq!(stock(&db.pool, product).await, (5, 5, 3));
    let before = checkpoint(&db.pool, Projection::Products).await;
    assert_eq!(before, (products[2].position, 3));

    for _ in 0..2 {
        let again = apply_batch(&db.pool, &Projection::Products, &products)
            .await
            .unwrap();
        assert_eq!(again, vec![Outcome::Duplicate; 3]);
        let again = apply_batch(&db.pool, &Projection::Notifications, &stream)
            .await
            .unwrap();
        assert_eq!(again, vec![Outcome::Duplicate; 3]);
    }
    assert_eq!(stock(&db.pool, product).await, (5, 5, 3));
    assert_eq!(checkpoint(&db.pool, Projection::Products).await, before);
    let notifications: i64 =
        sqlx::query_scalar("SELECT count(*) FROM rm_notifications WHERE user_id = $1")
            .bind(user)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(notifications, 2, "welcome and order_confirmed, once each");

    // The same event twice in one batch: the second copy is a duplicate.
    let more = r
        .record(
            "product",
            product,
            "StockReturned",
            json!({"order_id": order, "quantity": 1}),
        )
        .await;
    let outcomes = apply_batch(&db.pool, &Projection::Products, &[more.clone(), more])
        .await
        .unwrap();
    assert!(matches!(outcomes[0], Outcome::Applied(_)));
    assert_eq!(outcomes[1], Outcome::Duplicate);
    assert_eq!(stock(&db.pool, product).await, (6, 5, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_ahead_of_a_gap_brings_the_missing_ones_from_the_store() {
    let db = database().await;
    let mut r = Recorder::new(&db.pool);
    let product = Uuid::now_v7();
    let order = Uuid::now_v7();
    let e1 = r.record("product", product, "ProductCreated", json!({
        "product_id": product, "sku": "S", "name": "N", "description": null, "price": eur(100), "stock": 10
    })).await;
    let e2 = r
        .record(
            "product",
            product,
            "StockReserved",
            json!({"order_id": order, "quantity": 3}),
        )
        .await;
    let e3 = r
        .record(
            "product",
            product,
            "StockReservationCommitted",
            json!({"order_id": order, "quantity": 3}),
        )
        .await;
    let e4 = r
        .record(
            "product",
            product,
            "ProductStockAdjusted",
            json!({"delta": 1}),
        )
        .await;

    assert_all_applied(
        &apply_batch(&db.pool, &Projection::Products, &[e1])
            .await
            .unwrap(),
    );
    // 3 and 4 before 2: 2 is taken from the store, then 3 and 4 follow.
    let outcomes = apply_batch(&db.pool, &Projection::Products, &[e3.clone(), e4.clone()])
        .await
        .unwrap();
    assert_all_applied(&outcomes);
    assert_eq!(stock(&db.pool, product).await, (8, 0, 4));
    // 2's own message, arriving late, is a duplicate.
    let outcomes = apply_batch(&db.pool, &Projection::Products, &[e2, e3])
        .await
        .unwrap();
    assert_eq!(outcomes, vec![Outcome::Duplicate, Outcome::Duplicate]);
    assert_eq!(stock(&db.pool, product).await, (8, 0, 4));

    // An event whose predecessors the store lacks waits.
    let mut orphan = e4.clone();
    orphan.sequence = 7;
    orphan.position += 1000;
    let outcomes = apply_batch(&db.pool, &Projection::Products, &[orphan])
        .await
        .unwrap();
    assert_eq!(outcomes, vec![Outcome::Gap { last: 4 }]);
    assert_eq!(stock(&db.pool, product).await, (8, 0, 4));

    // Handed over out of order in one batch, they are applied in position order.
    let e5 = r
        .record(
            "product",
            product,
            "ProductStockAdjusted",
            json!({"delta": 10}),
        )
        .await;
    let e6 = r
        .record(
            "product",
            product,
            "ProductStockAdjusted",
            json!({"delta": 1}),
        )
        .await;
    let outcomes = apply_batch(&db.pool, &Projection::Products, &[e6, e5])
        .await
        .unwrap();
    assert_all_applied(&outcomes);
    assert_eq!(stock(&db.pool, product).await, (19, 0, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_event_does_not_hold_up_the_rest_of_its_batch() {
    let db = database().await;
    // The failing event is a malformed ProductCreated, on purpose.
    db.allow_invalid_events();
    let mut r = Recorder::new(&db.pool);
    let (good, bad, other) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let created = |id: Uuid| {
        json!({
            "product_id": id, "sku": "S", "name": "N", "description": null, "price": eur(100), "stock": 1
        })
    };
    let events = vec![
        r.record("product", good, "ProductCreated", created(good))
            .await,
        r.record("product", bad, "ProductCreated", json!({"sku": 42}))
            .await,
        r.record("product", other, "ProductCreated", created(other))
            .await,
        r.record("product", bad, "ProductStockAdjusted", json!({"delta": 1}))
            .await,
        r.record("product", good, "ProductStockAdjusted", json!({"delta": 4}))
            .await,
    ];
    let outcomes = apply_batch(&db.pool, &Projection::Products, &events)
        .await
        .unwrap();
    assert!(matches!(outcomes[0], Outcome::Applied(_)));
    assert!(
        matches!(&outcomes[1], Outcome::Failed(ProjectionError::Poison(m)) if m.contains("ProductCreated")),
        "{:?}",
        outcomes[1]
    );
    assert!(matches!(outcomes[2], Outcome::Applied(_)));
    assert_eq!(outcomes[3], Outcome::Gap { last: 0 });
    assert!(matches!(outcomes[4], Outcome::Applied(_)));
    assert_eq!(stock(&db.pool, good).await, (5, 0, 2));
    assert_eq!(stock(&db.pool, other).await, (1, 0, 1));
    assert_eq!(
        checkpoint(&db.pool, Projection::Products).await,
        (events[4].position, 3)
    );

    // An aggregate id that is not a UUID is poison too.
    let odd = r
        .record("product", Uuid::now_v7(), "ProductDiscontinued", json!({}))
        .await;
    let mut odd = odd;
    odd.aggregate_id = "not-a-uuid".into();
    odd.sequence = 1;
    let outcomes = apply_batch(&db.pool, &Projection::Products, &[odd])
        .await
        .unwrap();
    assert!(
        matches!(outcomes[0], Outcome::Failed(ProjectionError::Poison(_))),
        "{outcomes:?}"
    );
}
