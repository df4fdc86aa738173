//! The bounded product state (issue 18, item 4): what it keeps after many
//! orders, and that it decides like the unbounded one it replaced.
//!
//! `Reference` below is the old product's reservation logic, which kept
//! every reservation forever, with the one deliberate change marked in it.
//! It lives only here, as the model the aggregate is checked against; the
//! aggregate is the one implementation.

use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use proptest::prelude::*;
use uuid::Uuid;

use super::{
    Product, ProductCommand, ProductError, ProductEvent, ReservationState, SETTLED_WINDOW,
};
use crate::values::{Currency, Description, Money, Name, Sku};

fn product_id() -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0010)
}

/// Order ids as the API mints them: UUID v7, growing with placement.
fn order(n: u128) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0100_0000 + n)
}

fn created(stock: i64) -> ProductEvent {
    ProductEvent::ProductCreated {
        product_id: product_id(),
        sku: Sku::parse("TSH-01").unwrap(),
        name: Name::parse("T-shirt").unwrap(),
        description: Some(Description::parse("Cotton").unwrap()),
        price: Money::new(1999, Currency::parse("EUR").unwrap()),
        stock,
    }
}

/// Runs one command the way the store does: on the state, its events
/// applied through the sink.
fn decide(
    product: &mut Product,
    command: ProductCommand,
) -> Result<Vec<ProductEvent>, ProductError> {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
    }
    RUNTIME.with(|runtime| {
        runtime.block_on(async {
            let sink = EventSink::default();
            product.handle(command, &(), &sink).await?;
            Ok(sink.collect().await)
        })
    })
}

fn reserve(order_id: Uuid, quantity: u32) -> ProductCommand {
    ProductCommand::ReserveStock { order_id, quantity }
}

fn commit(order_id: Uuid) -> ProductCommand {
    ProductCommand::CommitReservation { order_id }
}

fn release(order_id: Uuid) -> ProductCommand {
    ProductCommand::ReleaseReservation { order_id }
}

fn give_back(order_id: Uuid, quantity: u32) -> ProductCommand {
    ProductCommand::ReturnStock { order_id, quantity }
}

/// A product through `orders` orders, each reserving 2 units: every third
/// released, the rest committed and every fifth of those returned; the last
/// `open` are still held.
fn through_orders(orders: u128, open: u128) -> Product {
    let mut product = Product::default();
    product.apply(created(1_000_000));
    for n in 0..orders {
        let id = order(n);
        decide(&mut product, reserve(id, 2)).unwrap();
        if n >= orders - open {
            continue;
        }
        if n % 3 == 0 {
            decide(&mut product, release(id)).unwrap();
        } else {
            decide(&mut product, commit(id)).unwrap();
            if n % 5 == 0 {
                decide(&mut product, give_back(id, 2)).unwrap();
            }
        }
    }
    product
}

// One JSON entry of the window is about 50 bytes; the rest of the product
// well under 1 KB.
const SNAPSHOT_BOUND: usize = SETTLED_WINDOW * 60 + 2_000;

#[test]
fn a_product_through_ten_thousand_orders_keeps_a_bounded_state() {
    let open = 7;
    let product = through_orders(10_000, open);
    assert_eq!(product.reservations_kept(), SETTLED_WINDOW + open as usize);
    assert_eq!(product.reserved(), 2 * open as i64);
    let snapshot = serde_json::to_string(&product).unwrap();
    assert!(
        snapshot.len() < SNAPSHOT_BOUND,
        "snapshot of {} bytes",
        snapshot.len()
    );
    // The same bound after ten times as many: the state does not grow.
    let product = through_orders(20_000, open);
    assert_eq!(product.reservations_kept(), SETTLED_WINDOW + open as usize);
    assert!(serde_json::to_string(&product).unwrap().len() < SNAPSHOT_BOUND);
}

#[test]
fn the_bounded_state_survives_a_snapshot() {
    let product = through_orders(3_000, 3);
    let json = serde_json::to_string(&product).unwrap();
    let back: Product = serde_json::from_str(&json).unwrap();
    assert_eq!(back, product);
    assert_eq!(back.reservation(order(0)), None);
}

#[test]
fn retried_saga_commands_within_the_window_are_no_ops() {
    let orders = 10_000;
    let mut product = through_orders(orders, 1);
    let held = order(orders - 1);
    let (released, committed, returned) = (order(9_996), order(9_997), order(9_995));
    assert_eq!(
        product.reservation(released).map(|r| r.state),
        Some(ReservationState::Released)
    );
    assert_eq!(
        product.reservation(committed).map(|r| r.state),
        Some(ReservationState::Committed)
    );
    assert_eq!(
        product.reservation(returned).map(|r| r.state),
        Some(ReservationState::Returned)
    );
    let before = product.clone();
    for command in [
        reserve(held, 2),
        reserve(released, 2),
        reserve(committed, 2),
        reserve(returned, 2),
        release(released),
        release(committed),
        release(returned),
        commit(committed),
        give_back(returned, 2),
    ] {
        assert_eq!(
            decide(&mut product, command.clone()),
            Ok(vec![]),
            "{command:?}"
        );
    }
    assert_eq!(product, before);
    // Refusals within the window are the old ones too.
    for (command, id) in [
        (commit(released), released),
        (give_back(released, 2), released),
    ] {
        assert_eq!(
            decide(&mut product, command),
            Err(ProductError::UnknownReservation { order_id: id })
        );
    }
}

#[test]
fn commands_beyond_the_window_meet_an_unknown_order() {
    let mut product = through_orders(10_000, 0);
    // Order 1 was committed, order 0 released, both long ago.
    let (committed, released) = (order(1), order(0));
    for id in [committed, released] {
        assert_eq!(product.reservation(id), None);
    }
    let available = product.available();
    // A release changes nothing; a commit is refused, as for any order
    // without a hold (the saga commits only what it saw held on this run).
    assert_eq!(decide(&mut product, release(committed)), Ok(vec![]));
    assert_eq!(
        decide(&mut product, commit(committed)),
        Err(ProductError::UnknownReservation {
            order_id: committed
        })
    );
    // A return takes the caller's quantity, which must be positive: the
    // saga sends it once, for an order whose payment was captured.
    assert_eq!(
        decide(&mut product, give_back(committed, 0)),
        Err(ProductError::UnknownReservation {
            order_id: committed
        })
    );
    assert_eq!(
        decide(&mut product, give_back(committed, 2)),
        Ok(vec![ProductEvent::StockReturned {
            order_id: committed,
            quantity: 2
        }])
    );
    assert_eq!(product.available(), available + 2);
    // ... and is remembered again: a retry is a no-op.
    assert_eq!(decide(&mut product, give_back(committed, 2)), Ok(vec![]));
    assert_eq!(product.available(), available + 2);
    // A reserve beyond the window is taken for a new order (the cost of the
    // bound: see `SETTLED_WINDOW`).
    assert_eq!(
        decide(&mut product, reserve(released, 2)),
        Ok(vec![ProductEvent::StockReserved {
            order_id: released,
            quantity: 2
        }])
    );
}

#[test]
fn a_snapshot_of_the_unbounded_shape_does_not_read() {
    let product = through_orders(10, 2);
    let mut json = serde_json::to_value(&product).unwrap();
    let object = json.as_object_mut().unwrap();
    object.remove("holds");
    object.insert(
        "reservations".to_owned(),
        serde_json::json!({ order(1).to_string(): { "quantity": 2, "state": "committed" } }),
    );
    // The store then rebuilds the product from its events.
    assert!(serde_json::from_value::<Product>(json).is_err());
}

// --- The reference: the unbounded product, reservation logic only ---

#[derive(Debug, Clone, Copy, PartialEq)]
struct Kept {
    quantity: u32,
    state: ReservationState,
}

#[derive(Debug, Clone, Default)]
struct Reference {
    exists: bool,
    discontinued: bool,
    available: i64,
    reserved: i64,
    reservations: BTreeMap<Uuid, Kept>,
}

impl Reference {
    fn check_available(&self, new: Option<i64>, requested: i64) -> Result<(), ProductError> {
        match new {
            Some(n) if n < 0 => Err(ProductError::InsufficientStock {
                available: self.available,
                requested,
            }),
            Some(n) if n.checked_add(self.reserved).is_some() => Ok(()),
            _ => Err(ProductError::StockOverflow),
        }
    }

    fn decide(&self, command: &ProductCommand) -> Result<Vec<ProductEvent>, ProductError> {
        use ReservationState::*;
        if !self.exists {
            return Err(ProductError::NotFound);
        }
        let kept = |id: &Uuid| self.reservations.get(id).copied();
        Ok(match *command {
            ProductCommand::AdjustStock { delta } => {
                if self.discontinued {
                    return Err(ProductError::Discontinued);
                }
                if delta == 0 {
                    return Err(ProductError::ZeroDelta);
                }
                self.check_available(self.available.checked_add(delta), delta.saturating_neg())?;
                vec![ProductEvent::ProductStockAdjusted { stock_delta: delta }]
            }
            ProductCommand::Discontinue => {
                if self.discontinued {
                    return Err(ProductError::Discontinued);
                }
                vec![ProductEvent::ProductDiscontinued {}]
            }
            ProductCommand::ReserveStock { order_id, quantity } => {
                if kept(&order_id).is_some() {
                    return Ok(vec![]);
                }
                if self.discontinued {
                    return Err(ProductError::Discontinued);
                }
                if quantity == 0 {
                    return Err(ProductError::ZeroDelta);
                }
                let requested = i64::from(quantity);
                if requested > self.available {
                    return Err(ProductError::InsufficientStock {
                        available: self.available,
                        requested,
                    });
                }
                vec![ProductEvent::StockReserved { order_id, quantity }]
            }
            ProductCommand::ReleaseReservation { order_id } => match kept(&order_id) {
                Some(Kept {
                    quantity,
                    state: Held,
                }) => vec![ProductEvent::StockReservationReleased { order_id, quantity }],
                _ => vec![],
            },
            ProductCommand::CommitReservation { order_id } => match kept(&order_id) {
                Some(Kept {
                    quantity,
                    state: Held,
                }) => vec![ProductEvent::StockReservationCommitted { order_id, quantity }],
                Some(Kept {
                    state: Committed, ..
                }) => vec![],
                _ => return Err(ProductError::UnknownReservation { order_id }),
            },
            ProductCommand::ReturnStock {
                order_id,
                quantity: named,
            } => match kept(&order_id) {
                // The one deliberate change from the old product: a return
                // for an order it does not know takes the named quantity
                // (the order may have been committed beyond the window).
                // The old one refused it.
                found @ (Some(Kept {
                    state: Committed, ..
                })
                | None) => {
                    let quantity = match found {
                        Some(kept) => kept.quantity,
                        None if named > 0 => named,
                        None => return Err(ProductError::UnknownReservation { order_id }),
                    };
                    let requested = i64::from(quantity);
                    self.check_available(self.available.checked_add(requested), requested)?;
                    vec![ProductEvent::StockReturned { order_id, quantity }]
                }
                Some(Kept {
                    state: Returned, ..
                }) => vec![],
                _ => return Err(ProductError::UnknownReservation { order_id }),
            },
            _ => unreachable!("the reference covers stock commands only"),
        })
    }

    fn apply(&mut self, event: &ProductEvent) {
        use ReservationState::*;
        let mut set = |id: Uuid, quantity: u32, state| {
            self.reservations.insert(id, Kept { quantity, state });
        };
        match *event {
            ProductEvent::ProductCreated { stock, .. } => {
                self.exists = true;
                self.available = stock;
            }
            ProductEvent::ProductStockAdjusted { stock_delta } => {
                self.available = self.available.saturating_add(stock_delta);
            }
            ProductEvent::ProductDiscontinued {} => self.discontinued = true,
            ProductEvent::StockReserved { order_id, quantity } => {
                set(order_id, quantity, Held);
                self.available = self.available.saturating_sub(i64::from(quantity));
                self.reserved = self.reserved.saturating_add(i64::from(quantity));
            }
            ProductEvent::StockReservationReleased { order_id, quantity } => {
                set(order_id, quantity, Released);
                self.reserved = self.reserved.saturating_sub(i64::from(quantity));
                self.available = self.available.saturating_add(i64::from(quantity));
            }
            ProductEvent::StockReservationCommitted { order_id, quantity } => {
                set(order_id, quantity, Committed);
                self.reserved = self.reserved.saturating_sub(i64::from(quantity));
            }
            ProductEvent::StockReturned { order_id, quantity } => {
                set(order_id, quantity, Returned);
                self.available = self.available.saturating_add(i64::from(quantity));
            }
            _ => {}
        }
    }
}

fn stock_command() -> impl Strategy<Value = ProductCommand> {
    // Few orders, so that commands keep meeting the same reservations.
    let id = (0u128..8).prop_map(order);
    prop_oneof![
        (id.clone(), 0u32..6).prop_map(|(id, q)| reserve(id, q)),
        id.clone().prop_map(release),
        id.clone().prop_map(commit),
        (id, 0u32..6).prop_map(|(id, q)| give_back(id, q)),
        (-8i64..8).prop_map(|delta| ProductCommand::AdjustStock { delta }),
        Just(ProductCommand::Discontinue),
    ]
}

proptest! {
    // Far fewer settlements than `SETTLED_WINDOW`: nothing is forgotten, so
    // the bounded product must decide exactly as the unbounded one.
    #[test]
    fn decides_like_the_unbounded_product_within_the_window(
        stock in 0i64..12,
        commands in proptest::collection::vec(stock_command(), 0..200),
    ) {
        let mut product = Product::default();
        let mut reference = Reference::default();
        let create = created(stock);
        product.apply(create.clone());
        reference.apply(&create);
        for command in commands {
            let expected = reference.decide(&command);
            let got = decide(&mut product, command.clone());
            prop_assert_eq!(&got, &expected, "{:?}", command);
            for event in expected.iter().flatten() {
                reference.apply(event);
            }
            prop_assert_eq!(product.available(), reference.available);
            prop_assert_eq!(product.reserved(), reference.reserved);
            for (id, kept) in &reference.reservations {
                prop_assert_eq!(
                    product.reservation(*id).map(|r| (r.quantity, r.state)),
                    Some((kept.quantity, kept.state))
                );
            }
        }
    }
}

#[test]
fn a_garbled_window_does_not_read() {
    let product = through_orders(10, 0);
    let json = serde_json::to_value(&product).unwrap();
    let window = json["holds"]["settled"].as_str().unwrap().to_owned();
    assert_eq!(window.len(), 41 * 10);
    let mut held_in_window = window.clone().into_bytes();
    held_in_window[40] = b'h';
    for bad in [
        window[1..].to_owned(),
        String::from_utf8(held_in_window).unwrap(),
        window.replacen(|c: char| c.is_ascii_hexdigit(), "x", 1),
    ] {
        let mut json = json.clone();
        json["holds"]["settled"] = serde_json::Value::String(bad);
        assert!(serde_json::from_value::<Product>(json).is_err());
    }
}
