//! Every payment token of the test gateway, end to end.

use domain::order::{CancelReason, OrderStatus};
use domain::payment::PaymentStatus;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn tok_ok_confirms_the_order_and_charges_once() {
    let system = System::start().await;
    let _saga = system.start_saga();
    let product = system.product(5).await;
    let order_id = system.place(vec![(product, 2)], "tok_ok").await;

    let order = system.settled(order_id, OrderStatus::Confirmed).await;
    let payment_id = order.payment_id().expect("a payment is assigned");
    let payment = system.payment(payment_id).await;
    assert_eq!(payment.status(), PaymentStatus::Captured);
    assert_eq!(payment.attempts(), 1);
    let stock = system.stock(product).await;
    assert_eq!((stock.available(), stock.reserved()), (3, 0));

    let charges = charges_for(&system.charges().await, payment_id);
    assert_eq!(charges.len(), 1, "{charges:?}");
    assert_eq!(charges[0].status, "approved");
    assert_eq!(charges[0].amount, 500);
    assert_eq!(charges[0].currency, "EUR");
    assert_eq!(
        payment.authorization_id(),
        Some(charges[0].id.to_string().as_str())
    );

    eventually("the confirmation is notified", || async {
        system.notifications(order_id, "order_confirmed").await == 1
    })
    .await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tok_decline_cancels_the_order_and_releases_its_stock() {
    let system = System::start().await;
    let _saga = system.start_saga();
    let (first, second) = (system.product(5).await, system.product(1).await);
    let order_id = system
        .place(vec![(first, 2), (second, 1)], "tok_decline")
        .await;

    let order = system.settled(order_id, OrderStatus::Cancelled).await;
    assert_eq!(order.cancel_reason(), Some(CancelReason::PaymentDeclined));
    let payment_id = order.payment_id().unwrap();
    assert_eq!(
        system.payment(payment_id).await.status(),
        PaymentStatus::Declined
    );
    for (product, stock) in [(first, 5), (second, 1)] {
        let product = system.stock(product).await;
        assert_eq!((product.available(), product.reserved()), (stock, 0));
    }
    let charges = charges_for(&system.charges().await, payment_id);
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0].status, "declined");
    assert!(system.refunds().await.is_empty(), "nothing to give back");
    eventually("the cancellation is notified", || async {
        system.notifications(order_id, "order_cancelled").await == 1
    })
    .await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_token_is_declined() {
    let system = System::start().await;
    let _saga = system.start_saga();
    let product = system.product(1).await;
    let order_id = system.place(vec![(product, 1)], "tok_nonsense").await;
    let order = system.settled(order_id, OrderStatus::Cancelled).await;
    assert_eq!(order.cancel_reason(), Some(CancelReason::PaymentDeclined));
    assert_eq!(system.stock(product).await.available(), 1);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tok_slow_is_waited_for_and_approved() {
    let system = System::start().await;
    let _saga = system.start_saga();
    let product = system.product(1).await;
    let order_id = system.place(vec![(product, 1)], "tok_slow").await;
    let order = system.settled(order_id, OrderStatus::Confirmed).await;
    let payment = system.payment(order.payment_id().unwrap()).await;
    assert_eq!(payment.status(), PaymentStatus::Captured);
    assert_eq!(payment.attempts(), 1, "one call, no timeout");
    assert_eq!(system.charges().await.len(), 1);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tok_flaky_is_retried_until_approved_and_charged_once() {
    let system = System::start().await;
    let _saga = system.start_saga();
    let product = system.product(1).await;
    let order_id = system.place(vec![(product, 1)], "tok_flaky").await;
    let order = system.settled(order_id, OrderStatus::Confirmed).await;
    let payment_id = order.payment_id().unwrap();
    let payment = system.payment(payment_id).await;
    assert_eq!(payment.status(), PaymentStatus::Captured);
    assert_eq!(payment.attempts(), 3, "two failed tries, then the approval");
    assert_eq!(
        system
            .events("payment", payment_id, "PaymentAttemptFailed")
            .await,
        2
    );
    assert_eq!(system.charge_requests().await, 3);
    let charges = charges_for(&system.charges().await, payment_id);
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0].status, "approved");
    system.stop().await;
}
