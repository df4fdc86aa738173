//! The gateway down, slow past the deadline, restarted; the saga killed.

use std::time::Duration;

use domain::order::{CancelReason, OrderStatus};
use domain::payment::PaymentStatus;
use saga::CircuitState;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_outage_opens_the_circuit_and_orders_wait_until_it_is_back() {
    let system = System::with(Settings {
        threshold: 3,
        cool_down: Duration::from_millis(1500),
        ..Settings::default()
    })
    .await;
    let saga = system.start_saga();
    let product = system.product(100).await;
    system.outage(true).await;
    let mut orders = Vec::new();
    for _ in 0..12 {
        orders.push(system.place(vec![(product, 1)], "tok_ok").await);
    }

    // While the circuit is open, refused calls never reach the gateway. The
    // window checked starts open with no call in flight (calls let through
    // before it opened may still be on their way) and has no state change.
    let mut checked = false;
    for _ in 0..10 {
        eventually("the circuit is open with no call in flight", || async {
            saga.breaker.state() == CircuitState::Open && saga.breaker.in_flight() == 0
        })
        .await;
        let (transitions, refused) = (saga.breaker.transitions(), saga.breaker.refused());
        if saga.breaker.state() != CircuitState::Open || saga.breaker.in_flight() != 0 {
            continue;
        }
        let calls = system.charge_requests().await;
        eventually("calls are refused by the open circuit", || async {
            saga.breaker.refused() >= refused + 2 || saga.breaker.transitions() != transitions
        })
        .await;
        let calls_after = system.charge_requests().await;
        if saga.breaker.transitions() == transitions {
            assert_eq!(calls_after, calls, "no call while the circuit is open");
            checked = true;
            break;
        }
    }
    assert!(checked, "saw calls refused within one open spell");
    for &order in &orders {
        assert_eq!(system.order(order).await.status(), OrderStatus::Pending);
    }

    system.outage(false).await;
    for &order in &orders {
        let order = system.settled(order, OrderStatus::Confirmed).await;
        let payment_id = order.payment_id().unwrap();
        let charges = charges_for(&system.charges().await, payment_id);
        assert_eq!(charges.len(), 1);
        assert_eq!(charges[0].status, "approved");
    }
    assert_eq!(saga.breaker.state(), CircuitState::Closed);
    let stock = system.stock(product).await;
    assert_eq!((stock.available(), stock.reserved()), (88, 0));
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_deadline_the_order_is_cancelled_and_its_stock_released() {
    let system = System::with(Settings {
        payment_deadline: Duration::from_millis(1500),
        ..Settings::default()
    })
    .await;
    let _saga = system.start_saga();
    let product = system.product(2).await;
    system.outage(true).await;
    let order_id = system.place(vec![(product, 2)], "tok_ok").await;

    eventually("the order is cancelled", || async {
        system.order(order_id).await.status() == OrderStatus::Cancelled
    })
    .await;
    let order = system.order(order_id).await;
    assert_eq!(
        order.cancel_reason(),
        Some(CancelReason::PaymentUnavailable)
    );
    let payment_id = order.payment_id().unwrap();
    let payment = system.payment(payment_id).await;
    assert_eq!(payment.status(), PaymentStatus::Failed);
    assert!(payment.attempts() >= 1);
    let stock = system.stock(product).await;
    assert_eq!((stock.available(), stock.reserved()), (2, 0));

    // Calls were made, so the saga makes sure none lands later: once the
    // gateway is back it voids the charge key.
    assert!(!system.saga_done(order_id).await);
    system.outage(false).await;
    system.settled(order_id, OrderStatus::Cancelled).await;
    let refunds = system.refunds().await;
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].status, "voided");
    let charges = charges_for(&system.charges().await, payment_id);
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0].status, "voided", "nothing was ever charged");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_saga_killed_between_charge_and_capture_charges_each_order_once() {
    let system = System::with(Settings {
        slow_delay: Duration::from_millis(1500),
        gateway_timeout: Duration::from_secs(3),
        lease: Duration::from_secs(6),
        ..Settings::default()
    })
    .await;
    let first = system.start_saga();
    let product = system.product(10).await;
    let mut orders = Vec::new();
    for _ in 0..3 {
        orders.push(system.place(vec![(product, 1)], "tok_slow").await);
    }
    // The gateway records a charge before it answers slowly: once all three
    // are recorded, the saga is waiting on the answers. Kill it there.
    eventually("the gateway has charged all three", || async {
        system.charges().await.len() == 3
    })
    .await;
    first.kill().await;
    for &order in &orders {
        assert_eq!(system.order(order).await.status(), OrderStatus::Pending);
    }

    // A new process takes the orders over once the leases run out.
    let _second = system.start_saga();
    for &order in &orders {
        let order = system.settled(order, OrderStatus::Confirmed).await;
        let payment_id = order.payment_id().unwrap();
        assert_eq!(
            system.payment(payment_id).await.status(),
            PaymentStatus::Captured
        );
        assert_eq!(charges_for(&system.charges().await, payment_id).len(), 1);
    }
    assert_eq!(system.charges().await.len(), 3, "one charge per order");
    assert!(
        system.charge_requests().await > 3,
        "the charges were sent again after the kill"
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_ledger_survives_a_restart() {
    let mut system = System::start().await;
    let _saga = system.start_saga();
    let product = system.product(2).await;
    let before = system.place(vec![(product, 1)], "tok_ok").await;
    system.settled(before, OrderStatus::Confirmed).await;

    system.stop_gateway().await;
    let during = system.place(vec![(product, 1)], "tok_ok").await;
    eventually("the saga tried the stopped gateway", || async {
        system
            .payment(system.order(during).await.payment_id().unwrap_or_default())
            .await
            .attempts()
            >= 1
    })
    .await;
    system.restart_gateway().await;
    system.settled(during, OrderStatus::Confirmed).await;
    let charges = system.charges().await;
    assert_eq!(
        charges.len(),
        2,
        "the charge from before the restart is kept"
    );
    system.stop().await;
}
