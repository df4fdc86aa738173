//! A read model built live by the workers equals one rebuilt from the store.

use projections::replay::verify;
use projections::Projection;
use serde_json::json;
use uuid::Uuid;

use crate::support::{eur, Env, Recorder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_equals_the_live_read_models() {
    let env = Env::new().await;
    let workers = env.start(&Projection::ALL);
    let mut r = Recorder::new(env.pool());

    let mut products = Vec::new();
    for i in 0..3 {
        let id = Uuid::now_v7();
        products.push(id);
        let e = r
            .record(
                "product",
                id,
                "ProductCreated",
                json!({
                    "product_id": id, "sku": format!("SKU-{i}"), "name": format!("Product {i}"),
                    "description": if i == 0 { json!(null) } else { json!("described") },
                    "price": eur(100 * (i + 1)), "stock": 50
                }),
            )
            .await;
        env.publish(&e).await;
    }
    for u in 0..4 {
        let user = Uuid::now_v7();
        let e = r.record("user", user, "UserRegistered", json!({
            "user_id": user, "email": format!("User{u}@Example.com"), "name": format!("User {u}")
        })).await;
        env.publish(&e).await;
        for o in 0..2 {
            let (order, payment) = (Uuid::now_v7(), Uuid::now_v7());
            let product = products[(u + o) % products.len()];
            let mut flow = vec![
                r.record("order", order, "OrderPlaced", json!({
                    "order_id": order, "user_id": user,
                    "lines": [{"product_id": product, "quantity": 2, "unit_price": eur(100)}],
                    "total": eur(200), "payment_token": "tok_ok"
                })).await,
                r.record("product", product, "StockReserved", json!({"order_id": order, "quantity": 2})).await,
                r.record("payment", payment, "PaymentRequested", json!({
                    "payment_id": payment, "order_id": order, "amount": eur(200), "token": "tok_ok"
                })).await,
                r.record("order", order, "OrderPaymentAssigned", json!({"payment_id": payment})).await,
            ];
            if (u + o) % 3 == 0 {
                flow.extend([
                    r.record(
                        "payment",
                        payment,
                        "PaymentDeclined",
                        json!({"reason": "declined"}),
                    )
                    .await,
                    r.record(
                        "product",
                        product,
                        "StockReservationReleased",
                        json!({"order_id": order, "quantity": 2}),
                    )
                    .await,
                    r.record(
                        "order",
                        order,
                        "OrderCancelled",
                        json!({"reason": "payment_declined", "previous_status": "pending"}),
                    )
                    .await,
                ]);
            } else {
                flow.extend([
                    r.record(
                        "payment",
                        payment,
                        "PaymentAttemptFailed",
                        json!({"error": "503"}),
                    )
                    .await,
                    r.record(
                        "payment",
                        payment,
                        "PaymentAuthorized",
                        json!({"authorization_id": "a"}),
                    )
                    .await,
                    r.record("payment", payment, "PaymentCaptured", json!({}))
                        .await,
                    r.record(
                        "product",
                        product,
                        "StockReservationCommitted",
                        json!({"order_id": order, "quantity": 2}),
                    )
                    .await,
                    r.record("order", order, "OrderConfirmed", json!({})).await,
                    r.record("order", order, "OrderShipped", json!({})).await,
                ]);
                if o == 1 {
                    flow.extend([
                        r.record("payment", payment, "PaymentRefunded", json!({}))
                            .await,
                        r.record(
                            "order",
                            order,
                            "OrderCancelled",
                            json!({"reason": "refunded", "previous_status": "shipped"}),
                        )
                        .await,
                    ]);
                }
            }
            for e in &flow {
                env.publish(e).await;
            }
        }
        let e = r
            .record(
                "user",
                user,
                "UserNameChanged",
                json!({"name": format!("User {u} renamed")}),
            )
            .await;
        env.publish(&e).await;
    }
    env.drained(&Projection::ALL).await;
    workers.stop().await;

    let live_checkpoints: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT projection, position, events_applied FROM projection_checkpoints ORDER BY 1",
    )
    .fetch_all(env.pool())
    .await
    .unwrap();

    // A replay's rebuild (the whole events table folded in memory) finds
    // exactly what the workers built batch by batch.
    assert_eq!(verify(env.pool()).await.unwrap(), Vec::<String>::new());
    // Verifying wrote nothing live.
    let after: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT projection, position, events_applied FROM projection_checkpoints ORDER BY 1",
    )
    .fetch_all(env.pool())
    .await
    .unwrap();
    assert_eq!(after, live_checkpoints);

    // updated_at is not compared; anything else is.
    sqlx::query("UPDATE rm_users SET updated_at = now()")
        .execute(env.pool())
        .await
        .unwrap();
    assert!(verify(env.pool()).await.unwrap().is_empty());
    sqlx::query("UPDATE rm_products SET available = available + 1 WHERE id = $1")
        .bind(products[0])
        .execute(env.pool())
        .await
        .unwrap();
    sqlx::query("DELETE FROM rm_notifications WHERE kind = 'welcome' AND ctid = (SELECT min(ctid) FROM rm_notifications WHERE kind = 'welcome')")
        .execute(env.pool())
        .await
        .unwrap();
    let lines = verify(env.pool()).await.unwrap();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("rm_products: live row not in the rebuild"))
            .count(),
        1
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("rm_products: rebuilt row not in the live table"))
            .count(),
        1
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("rm_notifications: rebuilt row not in the live table")));
    assert!(lines.iter().any(|l| l.contains(&products[0].to_string())));
}
