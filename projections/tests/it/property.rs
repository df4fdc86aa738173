//! The two paths into a read model agree, whatever the stream: random valid
//! event streams over several users, products, orders and payments are
//! delivered to every projection the way the broker may deliver them (in
//! batches of random sizes, with redeliveries, and with events held back so
//! that later ones arrive first), and the tables the live batches build are
//! exactly what `agora replay` folds from the events table.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use projections::{apply_batch, Outcome, Projection, ProjectionError, Subscriber};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use schemas::EventEnvelope;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{database, eur};

/// What a case is made of: the choices that build the stream, and those
/// that shape its delivery.
#[derive(Debug, Clone)]
struct Case {
    script: Vec<u8>,
    batches: Vec<usize>,
    delivery_seed: u64,
}

fn cases() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(any::<u8>(), 10..120),
        prop::collection::vec(1usize..40, 1..12),
        any::<u64>(),
    )
        .prop_map(|(script, batches, delivery_seed)| Case {
            script,
            batches,
            delivery_seed,
        })
}

#[test]
fn live_batches_redeliveries_and_replay_build_the_same_tables() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = runtime.block_on(database());
    // Streams include event types from a "newer build", which the published
    // schemas do not know; everything else is checked as usual.
    db.allow_invalid_events();
    let mut runner = TestRunner::new(Config {
        cases: 24,
        ..Config::default()
    });
    let outcome = runner.run(&cases(), |case| runtime.block_on(check(&db.pool, case)));
    if let Err(error) = outcome {
        panic!("{error}");
    }
}

async fn check(pool: &PgPool, case: Case) -> Result<(), TestCaseError> {
    reset(pool).await;
    let stream = Shop::default().build(pool, &case.script).await;
    let mut rng = Rng(case.delivery_seed | 1);
    for projection in Projection::ALL {
        deliver(pool, projection, &stream, &case.batches, &mut rng).await?;
    }
    let drift = projections::replay::verify(pool).await.unwrap();
    prop_assert!(
        drift.is_empty(),
        "the live tables differ from the replay: {drift:#?}"
    );
    let misrecorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM projection_applied p
           JOIN (SELECT aggregate_type, aggregate_id, max(sequence) AS last FROM events
                  GROUP BY 1, 2) e USING (aggregate_type, aggregate_id)
          WHERE p.sequence <> e.last",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    prop_assert_eq!(misrecorded, 0);
    Ok(())
}

/// Every table a case writes, emptied.
async fn reset(pool: &PgPool) {
    let mut tables: Vec<&str> = Projection::ALL
        .iter()
        .flat_map(|p| p.tables().iter().copied())
        .collect();
    tables.extend([
        "projection_applied",
        "projection_checkpoints",
        "dead_letters",
        "replay_runs",
        "events",
    ]);
    sqlx::query(&format!("TRUNCATE {}", tables.join(", ")))
        .execute(pool)
        .await
        .unwrap();
}

/// Delivers the projection's share of the stream as a broker might: in
/// batches of the case's sizes, some events twice, some held back behind
/// later ones; what must wait (a gap, a retryable failure) comes again in a
/// later batch, as a nak'd message does.
async fn deliver(
    pool: &PgPool,
    projection: Projection,
    stream: &[EventEnvelope],
    batches: &[usize],
    rng: &mut Rng,
) -> Result<(), TestCaseError> {
    let mut queue: Vec<EventEnvelope> = Vec::new();
    for event in stream {
        // A consumer on `events.>` receives events it does not follow, too.
        if !projection.follows(&event.aggregate_type) && rng.below(4) != 0 {
            continue;
        }
        queue.push(event.clone());
        if rng.below(6) == 0 {
            queue.push(event.clone());
        }
    }
    // Hold some back: each swapped a few places later.
    for i in 0..queue.len() {
        if rng.below(5) == 0 {
            let j = (i + 1 + rng.below(4)).min(queue.len() - 1);
            queue.swap(i, j);
        }
    }
    let mut sizes = batches.iter().cycle();
    let mut rounds = 0;
    while !queue.is_empty() {
        rounds += 1;
        prop_assert!(rounds < 10_000, "{projection}: delivery never settles");
        let size = (*sizes.next().unwrap()).min(queue.len());
        let batch: Vec<EventEnvelope> = queue.drain(..size).collect();
        let outcomes = apply_batch(pool, &projection, &batch).await.unwrap();
        for (event, outcome) in batch.into_iter().zip(outcomes) {
            match outcome {
                Outcome::Applied(_) | Outcome::Duplicate | Outcome::Skipped => {}
                Outcome::Gap { .. } | Outcome::Failed(ProjectionError::Retryable(_)) => {
                    queue.push(event)
                }
                Outcome::Failed(error) => {
                    prop_assert!(false, "{projection}: a valid event failed: {error}")
                }
            }
        }
    }
    Ok(())
}

/// A tiny deterministic generator for delivery choices.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[derive(Default)]
struct Shop {
    next: HashMap<(&'static str, Uuid), i64>,
    clock: Option<DateTime<Utc>>,
    users: Vec<(Uuid, bool)>,
    products: Vec<Product>,
    orders: Vec<Order>,
    payments: Vec<Payment>,
    stream: Vec<EventEnvelope>,
}

struct Product {
    id: Uuid,
    available: i64,
}

struct Order {
    id: Uuid,
    status: &'static str,
    lines: Vec<(usize, u32)>,
    payment: Option<usize>,
}

struct Payment {
    id: Uuid,
    order: usize,
    status: &'static str,
}

impl Shop {
    /// Turns the script into a valid stream: each byte picks the next thing
    /// that happens, among those possible now.
    async fn build(mut self, pool: &PgPool, script: &[u8]) -> Vec<EventEnvelope> {
        let mut bytes = script.iter().copied();
        while let Some(op) = bytes.next() {
            let arg = usize::from(bytes.next().unwrap_or(0));
            self.step(pool, op % 18, arg).await;
        }
        self.stream
    }

    async fn step(&mut self, pool: &PgPool, op: u8, arg: usize) {
        let user = (!self.users.is_empty()).then(|| arg % self.users.len());
        let product = (!self.products.is_empty()).then(|| arg % self.products.len());
        let order = (!self.orders.is_empty()).then(|| arg % self.orders.len());
        let payment = (!self.payments.is_empty()).then(|| arg % self.payments.len());
        match (op, user, product, order, payment) {
            (0, ..) | (1..=3, None, ..) => {
                let id = Uuid::now_v7();
                self.users.push((id, true));
                let email = format!("u{}@example.com", self.users.len());
                self.record(
                    pool,
                    "user",
                    id,
                    "UserRegistered",
                    "1.0",
                    json!({"user_id": id, "email": email, "name": "User"}),
                )
                .await;
            }
            (1, Some(u), ..) => {
                let id = self.users[u].0;
                self.record(
                    pool,
                    "user",
                    id,
                    "UserNameChanged",
                    "1.0",
                    json!({"name": format!("Name {arg}")}),
                )
                .await;
            }
            (2, Some(u), ..) => {
                let id = self.users[u].0;
                self.record(pool, "user", id, "UserEmailChanged", "1.0", json!({"previous_email": "a@example.com", "email": format!("New{arg}@Example.com")})).await;
            }
            (3, Some(u), ..) if self.users[u].1 => {
                self.users[u].1 = false;
                let id = self.users[u].0;
                self.record(pool, "user", id, "UserDeactivated", "1.0", json!({}))
                    .await;
            }
            (4, ..) | (5..=8, _, None, ..) => {
                let id = Uuid::now_v7();
                let stock = (arg % 7) as i64 + 3;
                self.products.push(Product {
                    id,
                    available: stock,
                });
                let description = if arg.is_multiple_of(2) {
                    json!(null)
                } else {
                    json!("described")
                };
                self.record(pool, "product", id, "ProductCreated", "1.0", json!({
                    "product_id": id, "sku": format!("SKU-{}", self.products.len()), "name": "Pen",
                    "description": description, "price": eur(100 + arg as i64), "stock": stock
                })).await;
            }
            (5, _, Some(p), ..) => {
                let id = self.products[p].id;
                let data = match arg % 3 {
                    0 => json!({"name": format!("Pen {arg}"), "description": null}),
                    1 => json!({"name": null, "description": format!("about {arg}")}),
                    _ => json!({"name": null, "description": null}),
                };
                self.record(pool, "product", id, "ProductDetailsUpdated", "1.0", data)
                    .await;
            }
            (6, _, Some(p), ..) => {
                let id = self.products[p].id;
                self.record(
                    pool,
                    "product",
                    id,
                    "ProductPriceChanged",
                    "1.0",
                    json!({"price": eur(50 + arg as i64)}),
                )
                .await;
            }
            (7, _, Some(p), ..) => {
                let delta = (arg % 9) as i64 - 3;
                let delta = if delta == 0 || self.products[p].available + delta < 0 {
                    4
                } else {
                    delta
                };
                self.products[p].available += delta;
                let id = self.products[p].id;
                // Both stored versions: v1 is upcast when read.
                if arg.is_multiple_of(2) {
                    self.record(
                        pool,
                        "product",
                        id,
                        "ProductStockAdjusted",
                        "1.0",
                        json!({"delta": delta}),
                    )
                    .await;
                } else {
                    self.record(
                        pool,
                        "product",
                        id,
                        "ProductStockAdjusted",
                        "2.0",
                        json!({"stock_delta": delta}),
                    )
                    .await;
                }
            }
            (8, _, Some(p), ..) => {
                let id = self.products[p].id;
                self.record(pool, "product", id, "ProductDiscontinued", "1.0", json!({}))
                    .await;
            }
            (9, Some(u), Some(p), ..) | (10..=15, Some(u), Some(p), None, _) => {
                self.place(pool, u, p, arg).await;
            }
            (10, _, _, Some(o), _)
                if self.orders[o].payment.is_none() && self.orders[o].status == "pending" =>
            {
                let (order_id, id) = (self.orders[o].id, Uuid::now_v7());
                self.payments.push(Payment {
                    id,
                    order: o,
                    status: "pending",
                });
                self.orders[o].payment = Some(self.payments.len() - 1);
                self.record(pool, "payment", id, "PaymentRequested", "1.0", json!({
                    "payment_id": id, "order_id": order_id, "amount": eur(100), "token": "tok_ok"
                })).await;
                self.record(
                    pool,
                    "order",
                    order_id,
                    "OrderPaymentAssigned",
                    "1.0",
                    json!({"payment_id": id}),
                )
                .await;
            }
            (11, .., Some(m)) => {
                let id = self.payments[m].id;
                match self.payments[m].status {
                    "pending" if arg.is_multiple_of(3) => {
                        self.record(
                            pool,
                            "payment",
                            id,
                            "PaymentAttemptFailed",
                            "1.0",
                            json!({"error": format!("timeout {arg}")}),
                        )
                        .await;
                    }
                    "pending" => {
                        self.payments[m].status = "authorized";
                        self.record(
                            pool,
                            "payment",
                            id,
                            "PaymentAuthorized",
                            "1.0",
                            json!({"authorization_id": format!("a-{arg}")}),
                        )
                        .await;
                    }
                    "authorized" => {
                        self.payments[m].status = "captured";
                        self.record(pool, "payment", id, "PaymentCaptured", "1.0", json!({}))
                            .await;
                    }
                    _ => {}
                }
            }
            (12, _, _, Some(o), _) if self.orders[o].status == "pending" => {
                self.orders[o].status = "confirmed";
                let order_id = self.orders[o].id;
                for (p, quantity) in self.orders[o].lines.clone() {
                    let id = self.products[p].id;
                    self.record(
                        pool,
                        "product",
                        id,
                        "StockReservationCommitted",
                        "1.0",
                        json!({"order_id": order_id, "quantity": quantity}),
                    )
                    .await;
                }
                self.record(pool, "order", order_id, "OrderConfirmed", "1.0", json!({}))
                    .await;
            }
            (13, _, _, Some(o), _) if self.orders[o].status == "confirmed" => {
                self.orders[o].status = "shipped";
                let id = self.orders[o].id;
                self.record(pool, "order", id, "OrderShipped", "1.0", json!({}))
                    .await;
            }
            (14, _, _, Some(o), _) if matches!(self.orders[o].status, "pending" | "confirmed") => {
                let previous = self.orders[o].status;
                self.orders[o].status = "cancelled";
                let order_id = self.orders[o].id;
                let moved = if previous == "pending" {
                    "StockReservationReleased"
                } else {
                    "StockReturned"
                };
                for (p, quantity) in self.orders[o].lines.clone() {
                    self.products[p].available += i64::from(quantity);
                    let id = self.products[p].id;
                    self.record(
                        pool,
                        "product",
                        id,
                        moved,
                        "1.0",
                        json!({"order_id": order_id, "quantity": quantity}),
                    )
                    .await;
                }
                self.record(
                    pool,
                    "order",
                    order_id,
                    "OrderCancelled",
                    "1.0",
                    json!({"reason": "customer_request", "previous_status": previous}),
                )
                .await;
            }
            (15, .., Some(m)) if self.payments[m].status == "captured" => {
                self.payments[m].status = "refunded";
                let id = self.payments[m].id;
                self.record(pool, "payment", id, "PaymentRefunded", "1.0", json!({}))
                    .await;
                let o = self.payments[m].order;
                let order_id = self.orders[o].id;
                match self.orders[o].status {
                    // A shipped order is refunded; older builds stored a
                    // cancellation that means the same.
                    "shipped" if arg.is_multiple_of(2) => {
                        self.orders[o].status = "refunded";
                        self.record(pool, "order", order_id, "OrderRefunded", "1.0", json!({}))
                            .await;
                    }
                    "cancelled" | "refunded" => {}
                    previous => {
                        self.orders[o].status = if previous == "shipped" {
                            "refunded"
                        } else {
                            "cancelled"
                        };
                        self.record(
                            pool,
                            "order",
                            order_id,
                            "OrderCancelled",
                            "1.0",
                            json!({"reason": "refunded", "previous_status": previous}),
                        )
                        .await;
                    }
                }
            }
            (16, ..) => {
                // A type a newer build writes: it only lengthens the stream.
                let target = match arg % 4 {
                    0 => user.map(|u| ("user", self.users[u].0)),
                    1 => product.map(|p| ("product", self.products[p].id)),
                    2 => order.map(|o| ("order", self.orders[o].id)),
                    _ => payment.map(|m| ("payment", self.payments[m].id)),
                };
                if let Some((kind, id)) = target {
                    self.record(pool, kind, id, "SomethingNewer", "1.0", json!({"n": arg}))
                        .await;
                }
            }
            (17, .., Some(m)) if self.payments[m].status == "pending" => {
                self.payments[m].status = "declined";
                let id = self.payments[m].id;
                let (kind, reason) = if arg.is_multiple_of(2) {
                    ("PaymentDeclined", "declined")
                } else {
                    ("PaymentFailed", "gateway")
                };
                self.record(pool, "payment", id, kind, "1.0", json!({"reason": reason}))
                    .await;
            }
            _ => {}
        }
    }

    async fn place(&mut self, pool: &PgPool, user: usize, product: usize, arg: usize) {
        let id = Uuid::now_v7();
        let user_id = self.users[user].0;
        let mut lines = vec![(product, (arg % 3) as u32 + 1)];
        let second = (product + 1 + arg) % self.products.len();
        if arg % 2 == 1 && second != product {
            lines.push((second, 1));
        }
        let wire: Vec<Value> = lines
            .iter()
            .map(|(p, q)| json!({"product_id": self.products[*p].id, "quantity": q, "unit_price": eur(100)}))
            .collect();
        let total: i64 = lines.iter().map(|(_, q)| 100 * i64::from(*q)).sum();
        self.orders.push(Order {
            id,
            status: "pending",
            lines: lines.clone(),
            payment: None,
        });
        self.record(pool, "order", id, "OrderPlaced", "1.0", json!({
            "order_id": id, "user_id": user_id, "lines": wire, "total": eur(total), "payment_token": "tok_ok"
        })).await;
        for (p, quantity) in lines {
            self.products[p].available -= i64::from(quantity);
            let product_id = self.products[p].id;
            self.record(
                pool,
                "product",
                product_id,
                "StockReserved",
                "1.0",
                json!({"order_id": id, "quantity": quantity}),
            )
            .await;
        }
    }

    /// Stores the event as the write side does, and keeps it for delivery.
    async fn record(
        &mut self,
        pool: &PgPool,
        aggregate_type: &'static str,
        id: Uuid,
        event_type: &str,
        version: &str,
        data: Value,
    ) {
        let sequence = self.next.entry((aggregate_type, id)).or_insert(0);
        *sequence += 1;
        let sequence = *sequence;
        let clock = self.clock.get_or_insert_with(|| {
            DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap()
        });
        *clock += chrono::Duration::milliseconds(1500);
        let payload = json!({ event_type: data });
        let metadata = json!({
            "correlation_id": "property", "causation_id": "property", "actor": "test",
            "time": clock.to_rfc3339_opts(SecondsFormat::Micros, true),
        });
        let (position, recorded_at): (i64, DateTime<Utc>) = sqlx::query_as(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING position, recorded_at",
        )
        .bind(aggregate_type)
        .bind(id.to_string())
        .bind(sequence)
        .bind(event_type)
        .bind(version)
        .bind(&payload)
        .bind(&metadata)
        .fetch_one(pool)
        .await
        .unwrap();
        self.stream.push(EventEnvelope {
            aggregate_type: aggregate_type.into(),
            aggregate_id: id.to_string(),
            sequence,
            event_type: event_type.into(),
            event_version: version.into(),
            payload,
            metadata,
            position,
            recorded_at,
        });
    }
}
