//! The workers end to end: JetStream in, read models and change
//! announcements out, with redeliveries, gaps and poison messages.

use async_nats::jetstream::consumer::AckPolicy;
use projections::{status, worker, Projection};
use schemas::subjects;
use serde_json::json;
use uuid::Uuid;

use crate::support::{eur, eventually, Env, Recorder};

async fn product_stock(env: &Env, id: Uuid) -> Option<(i64, i64, i64)> {
    sqlx::query_as("SELECT available, reserved, version FROM rm_products WHERE id = $1")
        .bind(id)
        .fetch_optional(env.pool())
        .await
        .unwrap()
}

async fn count(env: &Env, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(env.pool()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_build_every_model_and_announce_changes() {
    let env = Env::new().await;
    let changes = env.listen_changes().await;
    let workers = env.start(&Projection::ALL);
    let mut r = Recorder::new(env.pool());
    let (user, product, order, payment) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    let events = vec![
        r.record("user", user, "UserRegistered", json!({"user_id": user, "email": "Buyer@Example.com", "name": "Buyer"})).await,
        r.record("product", product, "ProductCreated", json!({
            "product_id": product, "sku": "TEA-1", "name": "Tea", "description": "Green", "price": eur(450), "stock": 20
        })).await,
        r.record("order", order, "OrderPlaced", json!({
            "order_id": order, "user_id": user,
            "lines": [{"product_id": product, "quantity": 2, "unit_price": eur(450)}],
            "total": eur(900), "payment_token": "tok_ok"
        })).await,
        r.record("product", product, "StockReserved", json!({"order_id": order, "quantity": 2})).await,
        r.record("payment", payment, "PaymentRequested", json!({
            "payment_id": payment, "order_id": order, "amount": eur(900), "token": "tok_ok"
        })).await,
        r.record("order", order, "OrderPaymentAssigned", json!({"payment_id": payment})).await,
        r.record("payment", payment, "PaymentAuthorized", json!({"authorization_id": "auth"})).await,
        r.record("payment", payment, "PaymentCaptured", json!({})).await,
        r.record("product", product, "StockReservationCommitted", json!({"order_id": order, "quantity": 2})).await,
        r.record("order", order, "OrderConfirmed", json!({})).await,
        r.record("order", order, "OrderShipped", json!({})).await,
    ];
    for event in &events {
        env.publish(event).await;
    }

    eventually("the order is shipped in its read model", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT version FROM rm_orders WHERE id = $1 AND status = 'shipped'",
        )
        .bind(order)
        .fetch_optional(env.pool())
        .await
        .unwrap()
            == Some(4)
    })
    .await;
    eventually("the stock is committed", || async {
        product_stock(&env, product).await == Some((18, 0, 3))
    })
    .await;
    eventually("the payment is captured", || async {
        sqlx::query_as::<_, (String, i32, i64)>(
            "SELECT status, attempts, version FROM rm_payments WHERE id = $1",
        )
        .bind(payment)
        .fetch_optional(env.pool())
        .await
        .unwrap()
            == Some(("captured".into(), 1, 3))
    })
    .await;
    eventually("the user is there", || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM rm_users WHERE id = $1")
            .bind(user)
            .fetch_optional(env.pool())
            .await
            .unwrap()
            .as_deref()
            == Some("active")
    })
    .await;
    eventually("three notifications", || async {
        count(&env, "SELECT count(*) FROM rm_notifications").await == 3
    })
    .await;

    let p = &env.prefix;
    for (model, id, version) in [
        ("users", user, "1"),
        ("products", product, "3"),
        ("orders", order, "4"),
        ("payments", payment, "3"),
        ("notifications", user, "0"),
    ] {
        let subject = subjects::change(p, model, &id.to_string());
        eventually(&format!("{subject} {version} is announced"), || async {
            changes.contains(&subject, version)
        })
        .await;
    }

    // Everything delivered again (new message ids, so JetStream keeps them),
    // then one new event: nothing applies twice.
    for event in &events {
        env.republish(event).await;
    }
    let renamed = r
        .record(
            "user",
            user,
            "UserNameChanged",
            json!({"name": "Buyer Two"}),
        )
        .await;
    env.publish(&renamed).await;
    env.drained(&Projection::ALL).await;
    assert_eq!(product_stock(&env, product).await, Some((18, 0, 3)));
    assert_eq!(
        count(&env, "SELECT count(*) FROM rm_notifications").await,
        3
    );
    let name: (String, i64) = sqlx::query_as("SELECT name, version FROM rm_users WHERE id = $1")
        .bind(user)
        .fetch_one(env.pool())
        .await
        .unwrap();
    assert_eq!(name, ("Buyer Two".into(), 2));

    let statuses = status(env.pool(), &Projection::subscribers())
        .await
        .unwrap();
    let names: Vec<&str> = statuses.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "users",
            "products",
            "orders",
            "payments",
            "notifications",
            "categories",
            "carts"
        ]
    );
    for s in &statuses {
        assert_eq!(s.lag, 0, "{s:?}");
        assert_eq!(s.dead_letters, 0, "{s:?}");
    }
    // No cart or category events here: those two never wrote a checkpoint.
    let statuses = &statuses[..5];
    for s in statuses {
        assert!(s.updated_at.is_some(), "{s:?}");
    }
    let applied: Vec<i64> = statuses.iter().map(|s| s.events_applied).collect();
    // users 2, products 3, orders 4, payments 3; notifications follows
    // users, orders and payments: 2 + 4 + 3.
    assert_eq!(applied, [2, 3, 4, 3, 9]);
    assert_eq!(statuses[0].position, renamed.position);
    assert_eq!(statuses[4].position, renamed.position);

    workers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_fills_a_gap_from_the_store() {
    let env = Env::new().await;
    let workers = env.start(&[Projection::Products]);
    let mut r = Recorder::new(env.pool());
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
            json!({"order_id": order, "quantity": 4}),
        )
        .await;
    let e3 = r
        .record(
            "product",
            product,
            "StockReservationReleased",
            json!({"order_id": order, "quantity": 4}),
        )
        .await;

    // 2 is committed but its message is late: the worker takes it from the store.
    env.publish(&e1).await;
    env.publish(&e3).await;
    eventually("events 1 to 3 are applied", || async {
        product_stock(&env, product).await == Some((10, 0, 3))
    })
    .await;
    // 2's message arrives after all: a duplicate, no second effect.
    env.publish(&e2).await;
    env.drained(&[Projection::Products]).await;
    assert_eq!(count(&env, "SELECT count(*) FROM dead_letters").await, 0);
    workers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_and_the_worker_goes_on() {
    let env = Env::new().await;
    // The poison includes a stored event with a malformed payload.
    env.db.allow_invalid_events();
    let workers = env.start(&[Projection::Products]);
    let mut r = Recorder::new(env.pool());
    let (product, other) = (Uuid::now_v7(), Uuid::now_v7());

    let created = r.record("product", product, "ProductCreated", json!({
        "product_id": product, "sku": "S", "name": "N", "description": null, "price": eur(100), "stock": 10
    })).await;
    env.publish(&created).await;
    // Not JSON at all.
    let subject = subjects::event(&env.prefix, "product", &product.to_string());
    env.publish_raw(&subject, b"{not json".to_vec(), "garbage-1")
        .await;
    // A well-formed envelope whose event cannot be applied.
    let bad = r
        .record(
            "product",
            product,
            "ProductStockAdjusted",
            json!({"delta": "lots"}),
        )
        .await;
    env.publish(&bad).await;
    // Valid events after them, of the same product and of another.
    let after = r
        .record(
            "product",
            product,
            "ProductStockAdjusted",
            json!({"delta": 5}),
        )
        .await;
    env.publish(&after).await;
    let other_created = r.record("product", other, "ProductCreated", json!({
        "product_id": other, "sku": "O", "name": "O", "description": null, "price": eur(100), "stock": 1
    })).await;
    env.publish(&other_created).await;

    eventually("the valid events are applied", || async {
        product_stock(&env, product).await == Some((15, 0, 3))
            && product_stock(&env, other).await == Some((1, 0, 1))
    })
    .await;
    eventually("two dead letters", || async {
        count(&env, "SELECT count(*) FROM dead_letters").await == 2
    })
    .await;

    type Letter = (
        String,
        String,
        i64,
        Option<String>,
        Option<String>,
        Option<i64>,
        String,
        String,
        i64,
    );
    let letters: Vec<Letter> =
        sqlx::query_as(
            "SELECT projection, subject, stream_sequence, aggregate_type, aggregate_id, sequence, message, error, deliveries
             FROM dead_letters ORDER BY stream_sequence",
        )
        .fetch_all(env.pool())
        .await
        .unwrap();
    let garbage = &letters[0];
    assert_eq!(garbage.0, "products");
    assert_eq!(garbage.1, subject);
    assert_eq!(garbage.2, 2);
    assert_eq!(
        (garbage.3.as_deref(), garbage.4.as_deref(), garbage.5),
        (None, None, None)
    );
    assert_eq!(garbage.6, "{not json");
    assert!(
        garbage.7.contains("cannot decode the event envelope"),
        "{}",
        garbage.7
    );
    assert_eq!(garbage.8, 1, "poison is not retried");
    let unappliable = &letters[1];
    assert_eq!(unappliable.2, 3);
    assert_eq!(unappliable.3.as_deref(), Some("product"));
    assert_eq!(unappliable.4.as_deref(), Some(product.to_string().as_str()));
    assert_eq!(unappliable.5, Some(2));
    assert!(unappliable.6.contains("\"lots\""));
    assert!(
        unappliable.7.contains("cannot decode ProductStockAdjusted"),
        "{}",
        unappliable.7
    );

    env.drained(&[Projection::Products]).await;
    let statuses = status(env.pool(), &Projection::subscribers())
        .await
        .unwrap();
    let products = statuses.iter().find(|s| s.name == "products").unwrap();
    assert_eq!(products.dead_letters, 2);
    assert_eq!(products.events_applied, 3);
    assert_eq!(products.lag, 0);
    assert!(statuses
        .iter()
        .filter(|s| s.name != "products")
        .all(|s| s.dead_letters == 0));
    workers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_is_configured_explicitly_and_idempotently() {
    let env = Env::new().await;
    for _ in 0..2 {
        worker::ensure_consumer(&env.jetstream, &Projection::Payments, &env.prefix)
            .await
            .expect("create or keep the consumer");
    }
    let stream = env
        .jetstream
        .get_stream(subjects::stream(&env.prefix))
        .await
        .unwrap();
    let info = stream
        .consumer_info(subjects::consumer(&env.prefix, "payments"))
        .await
        .unwrap();
    let config = &info.config;
    assert_eq!(
        config.durable_name.as_deref(),
        Some(subjects::consumer(&env.prefix, "payments").as_str())
    );
    assert_eq!(
        config.filter_subject,
        format!("{}.events.payment.>", env.prefix)
    );
    assert_eq!(config.ack_policy, AckPolicy::Explicit);
    assert_eq!(config.max_deliver, worker::MAX_DELIVER);
    assert_eq!(config.backoff, worker::BACKOFF.to_vec());
    assert_eq!(config.ack_wait, worker::ACK_WAIT);
    assert_eq!(config.max_ack_pending, worker::MAX_ACK_PENDING);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_failure_is_retried_until_it_applies_and_a_restart_resumes() {
    let env = Env::new().await;
    let workers = env.start(&[Projection::Notifications]);
    let mut r = Recorder::new(env.pool());
    let (user, order, payment) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let registered = r
        .record(
            "user",
            user,
            "UserRegistered",
            json!({"user_id": user, "email": "r@example.com", "name": "R"}),
        )
        .await;
    let placed = r.record("order", order, "OrderPlaced", json!({
        "order_id": order, "user_id": user, "lines": [], "total": eur(100), "payment_token": "tok_ok"
    })).await;
    let requested = r
        .record(
            "payment",
            payment,
            "PaymentRequested",
            json!({
                "payment_id": payment, "order_id": order, "amount": eur(100), "token": "tok_ok"
            }),
        )
        .await;
    let refunded = r
        .record("payment", payment, "PaymentRefunded", json!({}))
        .await;

    // The payment and its refund arrive before the order they belong to is
    // known: they cannot find their user yet, and are retried.
    env.publish(&registered).await;
    env.publish(&requested).await;
    env.publish(&refunded).await;
    eventually(
        "the welcome is there (the payment still waits for its order)",
        || async {
            count(
                &env,
                "SELECT count(*) FROM rm_notifications WHERE kind = 'welcome'",
            )
            .await
                == 1
        },
    )
    .await;
    assert_eq!(
        count(&env, "SELECT count(*) FROM rm_notification_payments").await,
        0
    );
    env.publish(&placed).await;
    eventually("the refund notification is there", || async {
        count(
            &env,
            "SELECT count(*) FROM rm_notifications WHERE kind = 'payment_refunded'",
        )
        .await
            == 1
    })
    .await;
    env.drained(&[Projection::Notifications]).await;
    assert_eq!(count(&env, "SELECT count(*) FROM dead_letters").await, 0);

    // Stopped, the worker misses nothing: its durable consumer remembers.
    workers.stop().await;
    let confirmed = r.record("order", order, "OrderShipped", json!({})).await;
    env.publish(&confirmed).await;
    let workers = env.start(&[Projection::Notifications]);
    eventually("the shipping notification is there", || async {
        count(
            &env,
            "SELECT count(*) FROM rm_notifications WHERE kind = 'order_shipped'",
        )
        .await
            == 1
    })
    .await;
    assert_eq!(
        count(&env, "SELECT count(*) FROM rm_notifications").await,
        3
    );
    workers.stop().await;
}
