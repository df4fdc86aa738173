//! No oversell, and several saga processes at once.

use std::time::Duration;

use domain::order::{CancelReason, OrderStatus};
use futures::future::join_all;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn thirty_orders_for_ten_units_confirm_exactly_ten() {
    let system = System::start().await;
    let _saga = system.start_saga();
    let product = system.product(10).await;
    let orders = join_all((0..30).map(|_| system.place(vec![(product, 1)], "tok_ok"))).await;

    let mut confirmed = 0;
    let mut out_of_stock = 0;
    for &order in &orders {
        eventually("the order is settled", || async {
            system.order(order).await.status() != OrderStatus::Pending
                && system.saga_done(order).await
        })
        .await;
        let order = system.order(order).await;
        match (order.status(), order.cancel_reason()) {
            (OrderStatus::Confirmed, None) => confirmed += 1,
            (OrderStatus::Cancelled, Some(CancelReason::OutOfStock)) => out_of_stock += 1,
            other => panic!("unexpected end {other:?}"),
        }
    }
    assert_eq!((confirmed, out_of_stock), (10, 20));
    let stock = system.stock(product).await;
    assert_eq!((stock.available(), stock.reserved()), (0, 0));
    assert_eq!(system.charges().await.len(), 10);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_saga_processes_never_do_a_step_twice() {
    let system = System::start().await;
    let _first = system.start_saga();
    let _second = system.start_saga();
    let (a, b) = (system.product(100).await, system.product(100).await);
    let tokens = ["tok_ok", "tok_flaky", "tok_decline"];
    let orders = join_all((0..24).map(|i| system.place(vec![(a, 1), (b, 2)], tokens[i % 3]))).await;

    for (i, &order) in orders.iter().enumerate() {
        let end = if tokens[i % 3] == "tok_decline" {
            OrderStatus::Cancelled
        } else {
            OrderStatus::Confirmed
        };
        let order_state = system.settled(order, end).await;
        for event in ["OrderPaymentAssigned", "OrderCancelled", "OrderConfirmed"] {
            assert!(system.events("order", order, event).await <= 1, "{event}");
        }
        let payment_id = order_state.payment_id().unwrap();
        assert_eq!(
            system
                .events("payment", payment_id, "PaymentRequested")
                .await,
            1
        );
        for event in ["PaymentAuthorized", "PaymentCaptured", "PaymentDeclined"] {
            assert!(system.events("payment", payment_id, event).await <= 1);
        }
        assert_eq!(charges_for(&system.charges().await, payment_id).len(), 1);
    }
    let payments: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'PaymentRequested'")
            .fetch_one(&system.db.pool)
            .await
            .unwrap();
    assert_eq!(payments, 24, "one payment per order");
    // 16 orders confirmed: a 1 and b 2 each, and the declined gave theirs back.
    for (product, each) in [(a, 1), (b, 2)] {
        let stock = system.stock(product).await;
        assert_eq!((stock.available(), stock.reserved()), (100 - 16 * each, 0));
        let reserved: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE aggregate_type = 'product' AND aggregate_id = $1
                AND event_type = 'StockReserved'",
        )
        .bind(product.to_string())
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
        assert_eq!(reserved, 24, "one reservation per order");
    }
    system.stop().await;
}

// A flash sale: far more orders than units, and a deadline shorter than the
// time the last of them waits for its turn. The deadline runs from an
// order's first charge attempt, so queueing never cancels an order
// `payment_unavailable`: every unit is sold, every other order is
// `out_of_stock`, and nothing is left reserved.
#[tokio::test(flavor = "multi_thread")]
async fn a_flash_sale_sells_every_unit_and_refuses_the_rest_out_of_stock() {
    let system = System::with(Settings {
        payment_deadline: Duration::from_millis(300),
        ..Settings::default()
    })
    .await;
    let product = system.product(40).await;
    // Placed before the saga starts, so the last of them waits far longer
    // than the deadline for its turn.
    let orders = join_all((0..400).map(|_| system.place(vec![(product, 1)], "tok_ok"))).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let _saga = system.start_saga();

    let mut ends = std::collections::BTreeMap::new();
    for &order in &orders {
        eventually("the order is settled", || async {
            system.order(order).await.status() != OrderStatus::Pending
                && system.saga_done(order).await
        })
        .await;
        let order = system.order(order).await;
        *ends
            .entry(format!("{:?} {:?}", order.status(), order.cancel_reason()))
            .or_insert(0) += 1;
    }
    let expected = std::collections::BTreeMap::from([
        ("Cancelled Some(OutOfStock)".to_owned(), 360),
        ("Confirmed None".to_owned(), 40),
    ]);
    assert_eq!(ends, expected);
    let stock = system.stock(product).await;
    assert_eq!((stock.available(), stock.reserved()), (0, 0));
    assert_eq!(system.charges().await.len(), 40);
    system.stop().await;
}
