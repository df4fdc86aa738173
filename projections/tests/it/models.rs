//! Each read model, built by `apply_batch` from a realistic stream.

use chrono::{DateTime, Utc};
use projections::{apply_batch, Change, Outcome, Projection, ProjectionError};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::{assert_all_applied, database, eur, time_of, Recorder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_model_follows_registration_changes_and_deactivation() {
    let db = database().await;
    let mut r = Recorder::new(&db.pool);
    let id = Uuid::now_v7();
    let events = vec![
        r.record(
            "user",
            id,
            "UserRegistered",
            json!({"user_id": id, "email": "Ada@Example.com", "name": "Ada"}),
        )
        .await,
        r.record(
            "user",
            id,
            "UserNameChanged",
            json!({"name": "Ada Lovelace"}),
        )
        .await,
        r.record(
            "user",
            id,
            "UserEmailChanged",
            json!({"previous_email": "Ada@Example.com", "email": "ADA@Lovelace.Example"}),
        )
        .await,
        r.record("user", id, "UserDeactivated", json!({})).await,
    ];
    let outcomes = apply_batch(&db.pool, &Projection::Users, &events)
        .await
        .unwrap();
    assert_all_applied(&outcomes);
    assert_eq!(
        outcomes[3],
        Outcome::Applied(vec![Change {
            model: "users".into(),
            id: id.to_string(),
            version: 4,
            stock_only: false,
        }])
    );

    // The row keeps what the events hold (here cleartext of version 1.0
    // events; sealed strings for 2.0), and no searchable lower-cased copy.
    let row: (String, String, String, i64, DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
        "SELECT email, name, status, version, created_at, updated_at FROM rm_users WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(row.0, "ADA@Lovelace.Example");
    assert_eq!(row.1, "Ada Lovelace");
    assert_eq!(row.2, "deactivated");
    assert_eq!(row.3, 4);
    assert_eq!(row.4, time_of(&events[0]));
    assert_eq!(row.5, time_of(&events[3]));

    // Events of other aggregates are not the users projection's business.
    let product = r
        .record("product", Uuid::now_v7(), "ProductDiscontinued", json!({}))
        .await;
    let outcomes = apply_batch(&db.pool, &Projection::Users, &[product])
        .await
        .unwrap();
    assert_eq!(outcomes, vec![Outcome::Skipped]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn products_model_tracks_details_price_and_stock() {
    let db = database().await;
    let mut r = Recorder::new(&db.pool);
    let id = Uuid::now_v7();
    let order = Uuid::now_v7();
    let mut events = Vec::new();
    events.push(r.record("product", id, "ProductCreated", json!({
        "product_id": id, "sku": "MUG-1", "name": "Mug", "description": "Blue", "price": eur(1200), "stock": 10
    })).await);
    events.push(
        r.record(
            "product",
            id,
            "ProductDetailsUpdated",
            json!({"name": "Mug XL", "description": null}),
        )
        .await,
    );
    events.push(
        r.record(
            "product",
            id,
            "ProductPriceChanged",
            json!({"price": eur(1500)}),
        )
        .await,
    );
    events.push(
        r.record("product", id, "ProductStockAdjusted", json!({"delta": 5}))
            .await,
    ); // 15 / 0
    events.push(
        r.record(
            "product",
            id,
            "StockReserved",
            json!({"order_id": order, "quantity": 3}),
        )
        .await,
    ); // 12 / 3
    events.push(
        r.record(
            "product",
            id,
            "StockReservationReleased",
            json!({"order_id": order, "quantity": 1}),
        )
        .await,
    ); // 13 / 2
    events.push(
        r.record(
            "product",
            id,
            "StockReserved",
            json!({"order_id": order, "quantity": 4}),
        )
        .await,
    ); // 9 / 6
    events.push(
        r.record(
            "product",
            id,
            "StockReservationCommitted",
            json!({"order_id": order, "quantity": 4}),
        )
        .await,
    ); // 9 / 2
    events.push(
        r.record(
            "product",
            id,
            "StockReturned",
            json!({"order_id": order, "quantity": 2}),
        )
        .await,
    ); // 11 / 2
    events.push(
        r.record("product", id, "ProductStockAdjusted", json!({"delta": -1}))
            .await,
    ); // 10 / 2
    events.push(
        r.record("product", id, "ProductDiscontinued", json!({}))
            .await,
    );

    // Applied in a few batches of different sizes.
    let mut stock_only = Vec::new();
    for chunk in [&events[..1], &events[1..4], &events[4..]] {
        let outcomes = apply_batch(&db.pool, &Projection::Products, chunk)
            .await
            .unwrap();
        assert_all_applied(&outcomes);
        for outcome in outcomes {
            match outcome {
                Outcome::Applied(changes) => {
                    stock_only.extend(changes.iter().map(|c| c.stock_only))
                }
                other => panic!("{other:?}"),
            }
        }
    }
    // Announced as stock only: the stock events, and nothing else.
    assert_eq!(
        stock_only,
        [false, false, false, true, true, true, true, true, true, true, false]
    );

    type Row = (
        String,
        String,
        Option<String>,
        i64,
        String,
        i64,
        i64,
        String,
        i64,
        DateTime<Utc>,
        DateTime<Utc>,
    );
    let row: Row = sqlx::query_as(
        "SELECT sku, name, description, price_amount, price_currency, available, reserved, status, version,
                created_at, updated_at FROM rm_products WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(row.0, "MUG-1");
    assert_eq!(row.1, "Mug XL");
    assert_eq!(
        row.2.as_deref(),
        Some("Blue"),
        "a null field is left as it was"
    );
    assert_eq!((row.3, row.4.as_str()), (1500, "EUR"));
    assert_eq!((row.5, row.6), (10, 2), "available, reserved");
    assert_eq!(row.7, "discontinued");
    assert_eq!(row.8, events.len() as i64);
    assert_eq!(row.9, time_of(&events[0]));
    assert_eq!(row.10, time_of(events.last().unwrap()));

    // No description at first, then only the description changes.
    let plain = Uuid::now_v7();
    let more = [
        r.record("product", plain, "ProductCreated", json!({
            "product_id": plain, "sku": "PLAIN", "name": "Plain", "description": null, "price": eur(100), "stock": 0
        })).await,
        r.record("product", plain, "ProductDetailsUpdated", json!({"name": null, "description": "Now described"})).await,
    ];
    assert_all_applied(
        &apply_batch(&db.pool, &Projection::Products, &more[..1])
            .await
            .unwrap(),
    );
    let description: Option<String> =
        sqlx::query_scalar("SELECT description FROM rm_products WHERE id = $1")
            .bind(plain)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(description, None);
    assert_all_applied(
        &apply_batch(&db.pool, &Projection::Products, &more[1..])
            .await
            .unwrap(),
    );
    let row: (String, Option<String>, i64, i64, String) = sqlx::query_as(
        "SELECT name, description, available, version, status FROM rm_products WHERE id = $1",
    )
    .bind(plain)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        row,
        (
            "Plain".into(),
            Some("Now described".into()),
            0,
            2,
            "active".into()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_model_follows_the_order_flow() {
    let db = database().await;
    let mut r = Recorder::new(&db.pool);
    let (id, user, payment) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let (p1, p2) = (Uuid::now_v7(), Uuid::now_v7());
    let lines = json!([
        {"product_id": p1, "quantity": 2, "unit_price": eur(1200)},
        {"product_id": p2, "quantity": 1, "unit_price": eur(500)}
    ]);
    let events = vec![
        r.record("order", id, "OrderPlaced", json!({
            "order_id": id, "user_id": user, "lines": lines, "total": eur(2900), "payment_token": "tok_ok"
        })).await,
        r.record("order", id, "OrderPaymentAssigned", json!({"payment_id": payment})).await,
        r.record("order", id, "OrderConfirmed", json!({})).await,
        r.record("order", id, "OrderShipped", json!({})).await,
    ];
    assert_all_applied(
        &apply_batch(&db.pool, &Projection::Orders, &events)
            .await
            .unwrap(),
    );

    type Row = (
        Uuid,
        Value,
        i64,
        String,
        String,
        Option<String>,
        Option<Uuid>,
        i64,
        DateTime<Utc>,
        DateTime<Utc>,
    );
    let row: Row = sqlx::query_as(
        "SELECT user_id, lines, total_amount, total_currency, status, cancel_reason, payment_id, version,
                placed_at, updated_at FROM rm_orders WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(row.0, user);
    assert_eq!(row.1, lines);
    assert_eq!((row.2, row.3.as_str()), (2900, "EUR"));
    assert_eq!(row.4, "shipped");
    assert_eq!(row.5, None);
    assert_eq!(row.6, Some(payment));
    assert_eq!(row.7, 4);
    assert_eq!(row.8, time_of(&events[0]));
    assert_eq!(row.9, time_of(&events[3]));

    // An order refused for lack of stock.
    let refused = Uuid::now_v7();
    let events = vec![
        r.record(
            "order",
            refused,
            "OrderPlaced",
            json!({
                "order_id": refused, "user_id": user,
                "lines": [{"product_id": p1, "quantity": 1000, "unit_price": eur(1200)}],
                "total": eur(1_200_000), "payment_token": "tok_ok"
            }),
        )
        .await,
        r.record(
            "order",
            refused,
            "OrderCancelled",
            json!({"reason": "out_of_stock", "previous_status": "pending"}),
        )
        .await,
    ];
    assert_all_applied(
        &apply_batch(&db.pool, &Projection::Orders, &events)
            .await
            .unwrap(),
    );
    let row: (String, Option<String>, Option<Uuid>, i64) = sqlx::query_as(
        "SELECT status, cancel_reason, payment_id, version FROM rm_orders WHERE id = $1",
    )
    .bind(refused)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        row,
        ("cancelled".into(), Some("out_of_stock".into()), None, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_model_counts_attempts() {
    let db = database().await;
    let mut r = Recorder::new(&db.pool);
    let (id, order) = (Uuid::now_v7(), Uuid::now_v7());
    let events = [
        r.record(
            "payment",
            id,
            "PaymentRequested",
            json!({
                "payment_id": id, "order_id": order, "amount": eur(2900), "token": "tok_flaky"
            }),
        )
        .await,
        r.record(
            "payment",
            id,
            "PaymentAttemptFailed",
            json!({"error": "gateway answered 503"}),
        )
        .await,
        r.record(
            "payment",
            id,
            "PaymentAttemptFailed",
            json!({"error": "gateway answered 502"}),
        )
        .await,
        r.record(
            "payment",
            id,
            "PaymentAuthorized",
            json!({"authorization_id": "auth-1"}),
        )
        .await,
        r.record("payment", id, "PaymentCaptured", json!({})).await,
        r.record("payment", id, "PaymentRefunded", json!({})).await,
    ];
    // After the request alone: pending, no attempt yet.
    assert_all_applied(
        &apply_batch(&db.pool, &Projection::Payments, &events[..1])
            .await
            .unwrap(),
    );
    let row: (String, i32, Option<String>) =
        sqlx::query_as("SELECT status, attempts, last_error FROM rm_payments WHERE id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(row, ("pending".into(), 0, None));

    assert_all_applied(
        &apply_batch(&db.pool, &Projection::Payments, &events[1..])
            .await
            .unwrap(),
    );
    type Row = (
        Uuid,
        i64,
        String,
        String,
        i32,
        Option<String>,
        i64,
        DateTime<Utc>,
        DateTime<Utc>,
    );
    let row: Row = sqlx::query_as(
        "SELECT order_id, amount, currency, status, attempts, last_error, version, created_at, updated_at
         FROM rm_payments WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(row.0, order);
    assert_eq!((row.1, row.2.as_str()), (2900, "EUR"));
    assert_eq!(row.3, "refunded");
    assert_eq!(row.4, 3, "two failed attempts and the one authorized");
    assert_eq!(row.5.as_deref(), Some("gateway answered 502"));
    assert_eq!(row.6, 6);
    assert_eq!(row.7, time_of(&events[0]));
    assert_eq!(row.8, time_of(&events[5]));

    for (event_type, data, status) in [
        (
            "PaymentDeclined",
            json!({"reason": "insufficient funds"}),
            "declined",
        ),
        (
            "PaymentFailed",
            json!({"reason": "gateway down past the deadline"}),
            "failed",
        ),
    ] {
        let other = Uuid::now_v7();
        let events = vec![
            r.record(
                "payment",
                other,
                "PaymentRequested",
                json!({
                    "payment_id": other, "order_id": order, "amount": eur(100), "token": "tok"
                }),
            )
            .await,
            r.record("payment", other, event_type, data.clone()).await,
        ];
        assert_all_applied(
            &apply_batch(&db.pool, &Projection::Payments, &events)
                .await
                .unwrap(),
        );
        let row: (String, i32, Option<String>, i64) = sqlx::query_as(
            "SELECT status, attempts, last_error, version FROM rm_payments WHERE id = $1",
        )
        .bind(other)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(
            row,
            (
                status.into(),
                1,
                data["reason"].as_str().map(String::from),
                2
            )
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_model_tells_the_user_once_per_event() {
    let db = database().await;
    let mut r = Recorder::new(&db.pool);
    let (user, order, payment, product) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    let events = vec![
        r.record("user", user, "UserRegistered", json!({"user_id": user, "email": "u@example.com", "name": "U"})).await,
        r.record("product", product, "ProductCreated", json!({
            "product_id": product, "sku": "S", "name": "N", "description": null, "price": eur(100), "stock": 5
        })).await,
        r.record("order", order, "OrderPlaced", json!({
            "order_id": order, "user_id": user,
            "lines": [{"product_id": product, "quantity": 1, "unit_price": eur(100)}],
            "total": eur(100), "payment_token": "tok_ok"
        })).await,
        r.record("payment", payment, "PaymentRequested", json!({
            "payment_id": payment, "order_id": order, "amount": eur(100), "token": "tok_ok"
        })).await,
        r.record("user", user, "UserNameChanged", json!({"name": "V"})).await,
        r.record("order", order, "OrderPaymentAssigned", json!({"payment_id": payment})).await,
        r.record("order", order, "OrderConfirmed", json!({})).await,
        r.record("order", order, "OrderShipped", json!({})).await,
        r.record("payment", payment, "PaymentAuthorized", json!({"authorization_id": "a"})).await,
        r.record("payment", payment, "PaymentCaptured", json!({})).await,
        r.record("payment", payment, "PaymentRefunded", json!({})).await,
        r.record("order", order, "OrderCancelled", json!({"reason": "refunded", "previous_status": "shipped"})).await,
    ];
    let outcomes = apply_batch(&db.pool, &Projection::Notifications, &events)
        .await
        .unwrap();
    assert_eq!(
        outcomes[1],
        Outcome::Skipped,
        "product events are not followed"
    );
    let changes: Vec<&Change> = outcomes
        .iter()
        .flat_map(|o| match o {
            Outcome::Applied(changes) => changes.iter().collect(),
            Outcome::Skipped => Vec::new(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(changes.len(), 5);
    assert!(changes
        .iter()
        .all(|c| c.model == "notifications" && c.id == user.to_string() && c.version == 0));

    let rows: Vec<(String, Option<Uuid>, DateTime<Utc>, Uuid)> = sqlx::query_as(
        "SELECT kind, order_id, created_at, id FROM rm_notifications WHERE user_id = $1 ORDER BY created_at",
    )
    .bind(user)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let kinds: Vec<(&str, Option<Uuid>, DateTime<Utc>)> = rows
        .iter()
        .map(|(k, o, t, _)| (k.as_str(), *o, *t))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("welcome", None, time_of(&events[0])),
            ("order_confirmed", Some(order), time_of(&events[6])),
            ("order_shipped", Some(order), time_of(&events[7])),
            ("payment_refunded", Some(order), time_of(&events[10])),
            ("order_cancelled", Some(order), time_of(&events[11])),
        ]
    );
    let sources: Vec<String> =
        sqlx::query_scalar("SELECT source FROM rm_notifications ORDER BY created_at")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(sources[0], format!("{}:welcome", events[0].message_id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_whose_order_is_unknown_yet_is_retryable() {
    let db = database().await;
    let mut r = Recorder::new(&db.pool);
    let (user, order, payment) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
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
    let placed = r.record("order", order, "OrderPlaced", json!({
        "order_id": order, "user_id": user, "lines": [], "total": eur(100), "payment_token": "tok_ok"
    })).await;

    // The payment arrives before its order: whose it is cannot be known
    // yet, and its refund waits behind it.
    let outcomes = apply_batch(
        &db.pool,
        &Projection::Notifications,
        &[requested.clone(), refunded.clone()],
    )
    .await
    .unwrap();
    assert!(
        matches!(outcomes[0], Outcome::Failed(ProjectionError::Retryable(_))),
        "{:?}",
        outcomes[0]
    );
    assert!(
        matches!(outcomes[1], Outcome::Gap { last: 0 }),
        "{:?}",
        outcomes[1]
    );

    // Once the order is placed, the retries go through.
    assert_all_applied(
        &apply_batch(&db.pool, &Projection::Notifications, &[placed])
            .await
            .unwrap(),
    );
    assert_all_applied(
        &apply_batch(&db.pool, &Projection::Notifications, &[requested, refunded])
            .await
            .unwrap(),
    );
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM rm_notifications WHERE user_id = $1")
            .bind(user)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(kinds, vec!["payment_refunded".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_event_types_count_as_applied() {
    let db = database().await;
    // An event type no schema knows, on purpose.
    db.allow_invalid_events();
    let mut r = Recorder::new(&db.pool);
    let id = Uuid::now_v7();
    let events = vec![
        r.record(
            "user",
            id,
            "UserRegistered",
            json!({"user_id": id, "email": "x@example.com", "name": "X"}),
        )
        .await,
        r.record(
            "user",
            id,
            "UserAvatarUploaded",
            json!({"url": "https://example.com/x.png"}),
        )
        .await,
        r.record("user", id, "UserNameChanged", json!({"name": "Y"}))
            .await,
    ];
    assert_all_applied(
        &apply_batch(&db.pool, &Projection::Users, &events)
            .await
            .unwrap(),
    );
    let row: (String, i64) = sqlx::query_as("SELECT name, version FROM rm_users WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(row, ("Y".into(), 3));
}
