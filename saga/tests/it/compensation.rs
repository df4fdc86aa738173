//! Giving back: a customer's cancellation, an admin's refund, notifications.

use domain::order::{CancelReason, OrderStatus};
use domain::payment::PaymentStatus;
use domain::product::{ProductCommand, SETTLED_WINDOW};
use uuid::Uuid;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_confirmed_order_refunds_once_and_returns_the_stock() {
    let system = System::start().await;
    let _saga = system.start_saga();
    let product = system.product(4).await;
    let order_id = system.place(vec![(product, 3)], "tok_ok").await;
    let order = system.settled(order_id, OrderStatus::Confirmed).await;
    let payment_id = order.payment_id().unwrap();
    assert_eq!(system.stock(product).await.available(), 1);

    system.cancel(order_id).await;
    eventually("the payment is refunded and the saga done", || async {
        system.payment(payment_id).await.status() == PaymentStatus::Refunded
            && system.saga_done(order_id).await
    })
    .await;
    let order = system.order(order_id).await;
    assert_eq!(order.cancel_reason(), Some(CancelReason::CustomerRequest));
    let stock = system.stock(product).await;
    assert_eq!((stock.available(), stock.reserved()), (4, 0));

    let refunds = system.refunds().await;
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[0].charge_key, payment_id.to_string());
    assert_eq!(refunds[0].status, "refunded");
    assert_eq!(refunds[0].amount, 750);
    assert_eq!(charges_for(&system.charges().await, payment_id).len(), 1);
    assert_eq!(
        system
            .events("payment", payment_id, "PaymentRefunded")
            .await,
        1
    );
    assert_eq!(system.events("product", product, "StockReturned").await, 1);

    for kind in ["order_confirmed", "order_cancelled", "payment_refunded"] {
        eventually(&format!("{kind} is notified"), || async {
            system.notifications(order_id, kind).await >= 1
        })
        .await;
    }
    // Each event is notified once, even though the saga looked at the
    // order again after every one of its own events.
    for kind in ["order_confirmed", "order_cancelled", "payment_refunded"] {
        assert_eq!(system.notifications(order_id, kind).await, 1, "{kind}");
    }
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_pending_order_before_payment_charges_nothing() {
    let system = System::start().await;
    // No saga yet: the order is cancelled before anyone reserved anything.
    let product = system.product(2).await;
    let order_id = system.place(vec![(product, 1)], "tok_ok").await;
    system.cancel(order_id).await;
    let _saga = system.start_saga();
    system.settled(order_id, OrderStatus::Cancelled).await;
    let stock = system.stock(product).await;
    assert_eq!((stock.available(), stock.reserved()), (2, 0));
    assert!(system.charges().await.is_empty());
    assert!(system.refunds().await.is_empty());
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_refund_moves_the_money_back_through_the_gateway_once() {
    let system = System::start().await;
    let _saga = system.start_saga();
    let product = system.product(3).await;
    let kept = system.place(vec![(product, 1)], "tok_ok").await;
    let shipped = system.place(vec![(product, 1)], "tok_ok").await;
    let kept = system.settled(kept, OrderStatus::Confirmed).await;
    let shipped_order = system.settled(shipped, OrderStatus::Confirmed).await;
    system.ship(shipped).await;

    let (kept_payment, shipped_payment) = (
        kept.payment_id().unwrap(),
        shipped_order.payment_id().unwrap(),
    );
    system.refund(kept_payment).await;
    system.refund(shipped_payment).await;
    eventually("both refunds reached the gateway", || async {
        system.refunds().await.len() == 2
            && system.saga_done(kept.id().unwrap()).await
            && system.saga_done(shipped).await
    })
    .await;
    for refund in system.refunds().await {
        assert_eq!(refund.status, "refunded");
        assert_eq!(refund.amount, 250);
    }
    // The confirmed order is cancelled; the shipped one is refunded, not
    // cancelled (a shipped order cannot be cancelled).
    let kept = system.order(kept.id().unwrap()).await;
    assert_eq!(
        (kept.status(), kept.cancel_reason()),
        (OrderStatus::Cancelled, Some(CancelReason::Refunded))
    );
    let shipped = system.order(shipped).await;
    assert_eq!(
        (shipped.status(), shipped.cancel_reason()),
        (OrderStatus::Refunded, None)
    );
    // The kept order's unit comes back; the shipped one is with the customer.
    let stock = system.stock(product).await;
    assert_eq!((stock.available(), stock.reserved()), (2, 0));
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redelivered_events_change_nothing() {
    let system = System::start().await;
    let _saga = system.start_saga();
    let product = system.product(2).await;
    let order_id = system.place(vec![(product, 1)], "tok_ok").await;
    system.settled(order_id, OrderStatus::Confirmed).await;
    eventually("the confirmation is notified", || async {
        system.notifications(order_id, "order_confirmed").await == 1
    })
    .await;
    let events_before: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&system.db.pool)
        .await
        .unwrap();

    // Every message of the order published again under a new id, so
    // JetStream delivers each a second time to the saga and the projections.
    let messages = system.nats.messages().await;
    let mut again = 0;
    for message in messages {
        let envelope: schemas::EventEnvelope = serde_json::from_slice(&message.payload).unwrap();
        if envelope.aggregate_id != order_id.to_string() {
            continue;
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", uuid::Uuid::new_v4().to_string().as_str());
        system
            .nats
            .jetstream
            .publish_with_headers(message.subject.to_string(), headers, message.payload)
            .await
            .unwrap()
            .await
            .unwrap();
        again += 1;
    }
    assert!(again >= 3, "placed, payment assigned, confirmed");
    let consumer = saga::intake::consumer_name(&system.nats.prefix);
    eventually("the saga consumed the copies", || async {
        let Ok(stream) = system
            .nats
            .jetstream
            .get_stream(system.nats.stream_name())
            .await
        else {
            return false;
        };
        let Ok(info) = stream.consumer_info(&consumer).await else {
            return false;
        };
        let last = stream.cached_info().state.last_sequence;
        info.delivered.stream_sequence >= last && info.num_ack_pending == 0
    })
    .await;
    assert!(system.saga_done(order_id).await);
    let events_after: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    assert_eq!(events_after, events_before, "no step was done again");
    assert_eq!(system.notifications(order_id, "order_confirmed").await, 1);
    assert_eq!(
        charges_for(
            &system.charges().await,
            system.order(order_id).await.payment_id().unwrap()
        )
        .len(),
        1
    );
    system.stop().await;
}

/// Settles `count` other orders on the product (reserve, release), each
/// newer than any placed before.
async fn settle_others(system: &System, product: Uuid, count: usize) {
    let id = product.to_string();
    for _ in 0..count {
        let other = Uuid::now_v7();
        for command in [
            ProductCommand::ReserveStock {
                order_id: other,
                quantity: 1,
            },
            ProductCommand::ReleaseReservation { order_id: other },
        ] {
            system
                .aggregates
                .products
                .execute(&id, command, None, &system.metadata)
                .await
                .expect("settle another order");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_confirmed_order_its_product_has_forgotten_gets_its_stock_back_once() {
    let system = System::start().await;
    let _saga = system.start_saga();
    let product = system.product(5).await;
    let order_id = system.place(vec![(product, 3)], "tok_ok").await;
    let order = system.settled(order_id, OrderStatus::Confirmed).await;
    let payment_id = order.payment_id().unwrap();

    // So many orders after it that the product no longer remembers this one.
    settle_others(&system, product, SETTLED_WINDOW).await;
    let stock = system.stock(product).await;
    assert_eq!(stock.reservation(order_id), None);
    assert_eq!((stock.available(), stock.reserved()), (2, 0));

    system.cancel(order_id).await;
    eventually("the payment is refunded and the saga done", || async {
        system.payment(payment_id).await.status() == PaymentStatus::Refunded
            && system.saga_done(order_id).await
    })
    .await;
    let stock = system.stock(product).await;
    assert_eq!((stock.available(), stock.reserved()), (5, 0));
    assert_eq!(system.events("product", product, "StockReturned").await, 1);

    // The order's step runs again once the product has forgotten the return
    // as well (as it would while a refund kept failing): nothing goes back twice.
    settle_others(&system, product, SETTLED_WINDOW).await;
    assert_eq!(system.stock(product).await.reservation(order_id), None);
    sqlx::query(
        "UPDATE saga_orders SET done = false, next_attempt_at = now(), lease_until = NULL
          WHERE order_id = $1",
    )
    .bind(order_id)
    .execute(&system.db.pool)
    .await
    .unwrap();
    eventually("the saga has looked again", || async {
        system.saga_done(order_id).await
    })
    .await;
    assert_eq!(system.events("product", product, "StockReturned").await, 1);
    assert_eq!(system.stock(product).await.available(), 5);
    system.stop().await;
}

/// An order with one line in stock and one not: the held line goes back,
/// the refused one is never released, and nothing is charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_out_of_stock_on_one_line_gives_the_other_line_back() {
    let system = System::start().await;
    let _saga = system.start_saga();
    let plenty = system.product(10).await;
    let none = system.product(0).await;
    let order_id = system.place(vec![(plenty, 2), (none, 1)], "tok_ok").await;
    let order = system.settled(order_id, OrderStatus::Cancelled).await;
    assert_eq!(order.cancel_reason(), Some(CancelReason::OutOfStock));
    let stock = system.stock(plenty).await;
    assert_eq!((stock.available(), stock.reserved()), (10, 0));
    assert_eq!(system.events("product", plenty, "StockReserved").await, 1);
    assert_eq!(
        system
            .events("product", plenty, "StockReservationReleased")
            .await,
        1
    );
    assert_eq!(
        system
            .events("product", none, "StockReservationReleased")
            .await,
        0
    );
    assert!(system.charges().await.is_empty());
    system.stop().await;
}

/// A cancellation wakes its order's row for the compensation, except when
/// the row is done with its stock given back: the saga made that
/// cancellation itself and has compensated it already.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_wakes_only_a_row_not_yet_compensated() {
    let system = System::start().await;
    let pool = &system.db.pool;
    // Rows as the saga leaves them: cancelled by the saga itself, confirmed
    // (then cancelled by an admin), and still on its way.
    let rows = [(true, true), (true, false), (false, false)];
    let mut ids = Vec::new();
    for (done, given_back) in rows {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO saga_orders (order_id, placed_at, done, stock_given_back) VALUES ($1, now(), $2, $3)",
        )
        .bind(id)
        .bind(done)
        .bind(given_back)
        .execute(pool)
        .await
        .unwrap();
        ids.push(id);
    }
    let wakes: Vec<saga::store::Wake> = ids
        .iter()
        .map(|&order_id| saga::store::Wake::Compensate {
            order_id,
            at: chrono::Utc::now(),
        })
        .collect();
    let mut tx = pool.begin().await.unwrap();
    saga::store::wake(&mut tx, &wakes).await.unwrap();
    tx.commit().await.unwrap();
    let mut woken = Vec::new();
    for id in &ids {
        let row: (bool, i64) =
            sqlx::query_as("SELECT done, generation FROM saga_orders WHERE order_id = $1")
                .bind(id)
                .fetch_one(pool)
                .await
                .unwrap();
        woken.push(row);
    }
    assert_eq!(woken, [(true, 0), (false, 1), (false, 1)]);
    system.stop().await;
}
