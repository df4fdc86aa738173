use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ProductCommand, ProductError, ProductEvent};
use crate::values::{Attributes, Description, Money, Name, Sku};

#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProductStatus {
    #[default]
    Active,
    Discontinued,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationState {
    Held,
    Committed,
    Released,
    Returned,
}

/// Stock set aside for one order, as far as the product remembers it: while
/// it is held, and for [`SETTLED_WINDOW`] settlements after it ended, so that
/// retried saga commands are recognised and answered idempotently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub quantity: u32,
    pub state: ReservationState,
}

/// How many ended reservations (released, committed, returned) a product
/// remembers, the newest ones. The state therefore holds the open
/// reservations plus at most this many, however many orders the product
/// has seen. Why that suffices: a saga command is repeated only by a re-run
/// of the same order's step after a crash or a lost lease (the lease is
/// 30 s), so a retry comes within seconds of the first attempt: inside the
/// window unless this one product settled more than 1024 other orders
/// meanwhile (over 30 a second throughout). A retried reserve beyond the
/// window is taken for a new order. A return long after the commit (a
/// confirmed order cancelled weeks later) is no retry: the saga sends it
/// once, naming the quantity (`ProductCommand::ReturnStock`).
pub const SETTLED_WINDOW: usize = 1024;

/// One ended reservation: order id, quantity, how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Settled(Uuid, u32, ReservationState);

/// The reservations a product keeps: bounded by the open ones plus
/// [`SETTLED_WINDOW`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Reservations {
    /// Open reservations by order.
    held: BTreeMap<Uuid, u32>,
    /// Ended reservations, oldest first, at most `SETTLED_WINDOW`. (Order
    /// ids say nothing about when an order settles: a cart's order takes
    /// its id from the cart, so the window is by settlement, not by id.)
    /// Shared between copies of the state (the store clones it for each
    /// command and for its cache) and copied only by a command that ends a
    /// reservation; in a snapshot, one string (`window`).
    #[serde(with = "window")]
    settled: Arc<VecDeque<Settled>>,
}

impl Reservations {
    fn get(&self, order_id: Uuid) -> Option<Reservation> {
        if let Some(quantity) = self.held.get(&order_id) {
            return Some(Reservation {
                quantity: *quantity,
                state: ReservationState::Held,
            });
        }
        self.settled
            .iter()
            .rev()
            .find(|s| s.0 == order_id)
            .map(|s| Reservation {
                quantity: s.1,
                state: s.2,
            })
    }

    fn forget_settled(&mut self, order_id: Uuid) {
        if let Some(at) = self.settled.iter().rposition(|s| s.0 == order_id) {
            Arc::make_mut(&mut self.settled).remove(at);
        }
    }

    fn hold(&mut self, order_id: Uuid, quantity: u32) {
        self.forget_settled(order_id);
        self.held.insert(order_id, quantity);
    }

    /// Ends a reservation (or records how it ended later on): it leaves the
    /// open ones and becomes the newest ended one, pushing the oldest out
    /// once the window is full.
    fn settle(&mut self, order_id: Uuid, quantity: u32, state: ReservationState) {
        self.held.remove(&order_id);
        self.forget_settled(order_id);
        let settled = Arc::make_mut(&mut self.settled);
        settled.push_back(Settled(order_id, quantity, state));
        while settled.len() > SETTLED_WINDOW {
            settled.pop_front();
        }
    }

    fn len(&self) -> usize {
        self.held.len() + self.settled.len()
    }
}

/// The window in a snapshot: one string of fixed-width entries, the order
/// id in 32 hex digits, the quantity in 8, and `r`, `c` or `t` (released,
/// committed, returned): 41 bytes an entry, and read without a JSON token
/// per field.
mod window {
    use std::collections::VecDeque;
    use std::sync::Arc;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};
    use uuid::Uuid;

    use super::{ReservationState, Settled};

    const WIDTH: usize = 41;

    pub fn serialize<S: Serializer>(
        settled: &Arc<VecDeque<Settled>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        use std::fmt::Write as _;
        let mut text = String::with_capacity(settled.len() * WIDTH);
        for Settled(order_id, quantity, state) in settled.iter() {
            let state = match state {
                ReservationState::Released => 'r',
                ReservationState::Committed => 'c',
                ReservationState::Returned => 't',
                // Never in the window; written so that it fails to read.
                ReservationState::Held => 'h',
            };
            let _ = write!(text, "{}{quantity:08x}{state}", order_id.simple());
        }
        serializer.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Arc<VecDeque<Settled>>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let bytes = text.as_bytes();
        if bytes.len() % WIDTH != 0 {
            return Err(D::Error::custom("a reservation window of a wrong length"));
        }
        let bad = || D::Error::custom("an unreadable reservation window");
        bytes
            .chunks(WIDTH)
            .map(|entry| {
                let field = |range: std::ops::Range<usize>| {
                    std::str::from_utf8(&entry[range]).map_err(|_| bad())
                };
                let order_id = Uuid::try_parse(field(0..32)?).map_err(|_| bad())?;
                let quantity = u32::from_str_radix(field(32..40)?, 16).map_err(|_| bad())?;
                let state = match entry[40] {
                    b'r' => ReservationState::Released,
                    b'c' => ReservationState::Committed,
                    b't' => ReservationState::Returned,
                    _ => return Err(bad()),
                };
                Ok(Settled(order_id, quantity, state))
            })
            .collect::<Result<VecDeque<_>, _>>()
            .map(Arc::new)
    }
}

/// Invariants: `available >= 0`, `reserved >= 0` and `available + reserved`
/// fits in an `i64`, so moving stock between the two can never overflow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Product {
    id: Option<Uuid>,
    sku: Option<Sku>,
    name: Option<Name>,
    description: Option<Description>,
    price: Option<Money>,
    available: i64,
    reserved: i64,
    status: ProductStatus,
    // Required, and named unlike the unbounded map that snapshots taken
    // before it held: such a snapshot does not read, and the store rebuilds
    // the product from its events (migration 0014 deletes them as well).
    holds: Reservations,
    // Defaults: snapshots written before categories and attributes existed.
    #[serde(default)]
    categories: Vec<Uuid>,
    #[serde(default)]
    attributes: Attributes,
}

/// A product is listed in at most this many categories.
pub const MAX_CATEGORIES: usize = 20;

impl Product {
    pub fn id(&self) -> Option<Uuid> {
        self.id
    }

    pub fn exists(&self) -> bool {
        self.id.is_some()
    }

    pub fn is_active(&self) -> bool {
        self.exists() && self.status == ProductStatus::Active
    }

    pub fn sku(&self) -> Option<&Sku> {
        self.sku.as_ref()
    }

    pub fn name(&self) -> Option<&Name> {
        self.name.as_ref()
    }

    /// `None` when the product has no (or an empty) description.
    pub fn description(&self) -> Option<&Description> {
        self.description.as_ref()
    }

    pub fn price(&self) -> Option<&Money> {
        self.price.as_ref()
    }

    /// Units that can still be reserved.
    pub fn available(&self) -> i64 {
        self.available
    }

    /// Units held for orders that are not yet confirmed.
    pub fn reserved(&self) -> i64 {
        self.reserved
    }

    pub fn status(&self) -> ProductStatus {
        self.status
    }

    /// The categories it is listed in, in the order last given.
    pub fn categories(&self) -> &[Uuid] {
        &self.categories
    }

    pub fn attributes(&self) -> &Attributes {
        &self.attributes
    }

    /// This order's reservation, while it is held and for
    /// [`SETTLED_WINDOW`] settlements after it ended.
    pub fn reservation(&self, order_id: Uuid) -> Option<Reservation> {
        self.holds.get(order_id)
    }

    /// How many reservations the state holds: the open ones plus at most
    /// [`SETTLED_WINDOW`] ended ones.
    pub fn reservations_kept(&self) -> usize {
        self.holds.len()
    }

    fn ensure_exists(&self) -> Result<(), ProductError> {
        if self.exists() {
            Ok(())
        } else {
            Err(ProductError::NotFound)
        }
    }

    fn ensure_active(&self) -> Result<(), ProductError> {
        self.ensure_exists()?;
        if self.status == ProductStatus::Discontinued {
            return Err(ProductError::Discontinued);
        }
        Ok(())
    }

    fn description_text(&self) -> &str {
        self.description.as_ref().map_or("", Description::as_str)
    }

    /// Refuses an `available` level that would break the invariants.
    fn check_available(
        &self,
        new_available: Option<i64>,
        requested: i64,
    ) -> Result<(), ProductError> {
        match new_available {
            Some(n) if n < 0 => Err(ProductError::InsufficientStock {
                available: self.available,
                requested,
            }),
            Some(n) if n.checked_add(self.reserved).is_some() => Ok(()),
            // Only growth can overflow: `available` starts non-negative.
            _ => Err(ProductError::StockOverflow),
        }
    }
}

fn non_empty(description: Option<Description>) -> Option<Description> {
    description.filter(|d| !d.is_empty())
}

impl Aggregate for Product {
    const TYPE: &'static str = "product";
    type Command = ProductCommand;
    type Event = ProductEvent;
    type Error = ProductError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            ProductCommand::Create {
                product_id,
                sku,
                name,
                description,
                price,
                stock,
            } => {
                if self.exists() {
                    return Err(ProductError::AlreadyExists);
                }
                if price.amount <= 0 {
                    return Err(ProductError::InvalidPrice);
                }
                if stock < 0 {
                    return Err(ProductError::InvalidStock);
                }
                let event = ProductEvent::ProductCreated {
                    product_id,
                    sku,
                    name,
                    description: non_empty(description),
                    price,
                    stock,
                };
                sink.write(event, self).await;
            }
            ProductCommand::UpdateDetails {
                name,
                description,
                attributes,
            } => {
                self.ensure_active()?;
                let name = name.filter(|n| self.name.as_ref() != Some(n));
                let description = description.filter(|d| d.as_str() != self.description_text());
                let attributes = attributes.filter(|a| *a != self.attributes);
                if name.is_some() || description.is_some() {
                    let event = ProductEvent::ProductDetailsUpdated { name, description };
                    sink.write(event, self).await;
                }
                if let Some(attributes) = attributes {
                    sink.write(ProductEvent::ProductAttributesSet { attributes }, self)
                        .await;
                }
            }
            ProductCommand::SetCategories { category_ids } => {
                self.ensure_active()?;
                let mut seen = std::collections::HashSet::new();
                if category_ids.len() > MAX_CATEGORIES
                    || !category_ids.iter().all(|id| seen.insert(*id))
                {
                    return Err(ProductError::InvalidCategories {
                        max: MAX_CATEGORIES,
                    });
                }
                if category_ids != self.categories {
                    sink.write(ProductEvent::ProductCategoriesSet { category_ids }, self)
                        .await;
                }
            }
            ProductCommand::ChangePrice { price } => {
                self.ensure_active()?;
                if price.amount <= 0 {
                    return Err(ProductError::InvalidPrice);
                }
                if self.price.as_ref() != Some(&price) {
                    sink.write(ProductEvent::ProductPriceChanged { price }, self)
                        .await;
                }
            }
            ProductCommand::AdjustStock { delta } => {
                self.ensure_active()?;
                if delta == 0 {
                    return Err(ProductError::ZeroDelta);
                }
                self.check_available(self.available.checked_add(delta), delta.saturating_neg())?;
                sink.write(
                    ProductEvent::ProductStockAdjusted { stock_delta: delta },
                    self,
                )
                .await;
            }
            ProductCommand::Discontinue => {
                self.ensure_active()?;
                sink.write(ProductEvent::ProductDiscontinued {}, self).await;
            }
            ProductCommand::ReserveStock { order_id, quantity } => {
                self.ensure_exists()?;
                // A retry must get the answer the first attempt got, even if
                // the product was discontinued in between.
                if self.holds.get(order_id).is_some() {
                    return Ok(());
                }
                if self.status == ProductStatus::Discontinued {
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
                sink.write(ProductEvent::StockReserved { order_id, quantity }, self)
                    .await;
            }
            ProductCommand::ReleaseReservation { order_id } => {
                self.ensure_exists()?;
                if let Some(&quantity) = self.holds.held.get(&order_id) {
                    let event = ProductEvent::StockReservationReleased { order_id, quantity };
                    sink.write(event, self).await;
                }
            }
            ProductCommand::CommitReservation { order_id } => {
                self.ensure_exists()?;
                match self.holds.get(order_id) {
                    Some(r) if r.state == ReservationState::Held => {
                        let event = ProductEvent::StockReservationCommitted {
                            order_id,
                            quantity: r.quantity,
                        };
                        sink.write(event, self).await;
                    }
                    Some(r) if r.state == ReservationState::Committed => {}
                    _ => return Err(ProductError::UnknownReservation { order_id }),
                }
            }
            ProductCommand::ReturnStock { order_id, quantity } => {
                self.ensure_exists()?;
                let quantity = match self.holds.get(order_id) {
                    Some(r) if r.state == ReservationState::Committed => r.quantity,
                    Some(r) if r.state == ReservationState::Returned => return Ok(()),
                    // Unknown: committed longer ago than the product
                    // remembers. The caller (the saga) vouches for that, for
                    // the quantity, and for sending it once.
                    None if quantity > 0 => quantity,
                    _ => return Err(ProductError::UnknownReservation { order_id }),
                };
                let requested = i64::from(quantity);
                self.check_available(self.available.checked_add(requested), requested)?;
                sink.write(ProductEvent::StockReturned { order_id, quantity }, self)
                    .await;
            }
        }
        Ok(())
    }

    // Saturating arithmetic: handle() keeps the numbers in range, and apply()
    // must not panic even on a hand-edited event stream.
    fn apply(&mut self, event: Self::Event) {
        match event {
            ProductEvent::ProductCreated {
                product_id,
                sku,
                name,
                description,
                price,
                stock,
            } => {
                self.id = Some(product_id);
                self.sku = Some(sku);
                self.name = Some(name);
                self.description = non_empty(description);
                self.price = Some(price);
                self.available = stock;
                self.status = ProductStatus::Active;
            }
            ProductEvent::ProductDetailsUpdated { name, description } => {
                if let Some(name) = name {
                    self.name = Some(name);
                }
                if description.is_some() {
                    self.description = non_empty(description);
                }
            }
            ProductEvent::ProductPriceChanged { price } => self.price = Some(price),
            ProductEvent::ProductStockAdjusted { stock_delta } => {
                self.available = self.available.saturating_add(stock_delta);
            }
            ProductEvent::ProductDiscontinued {} => self.status = ProductStatus::Discontinued,
            ProductEvent::StockReserved { order_id, quantity } => {
                let q = i64::from(quantity);
                self.available = self.available.saturating_sub(q);
                self.reserved = self.reserved.saturating_add(q);
                self.holds.hold(order_id, quantity);
            }
            ProductEvent::StockReservationReleased { order_id, quantity } => {
                let q = i64::from(quantity);
                self.reserved = self.reserved.saturating_sub(q);
                self.available = self.available.saturating_add(q);
                self.holds
                    .settle(order_id, quantity, ReservationState::Released);
            }
            ProductEvent::StockReservationCommitted { order_id, quantity } => {
                self.reserved = self.reserved.saturating_sub(i64::from(quantity));
                self.holds
                    .settle(order_id, quantity, ReservationState::Committed);
            }
            ProductEvent::StockReturned { order_id, quantity } => {
                self.available = self.available.saturating_add(i64::from(quantity));
                self.holds
                    .settle(order_id, quantity, ReservationState::Returned);
            }
            ProductEvent::ProductCategoriesSet { category_ids } => self.categories = category_ids,
            ProductEvent::ProductAttributesSet { attributes } => self.attributes = attributes,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;
    use cqrs_es::DomainEvent;

    use super::*;
    use crate::refusal::{Refusal, RefusalKind};
    use crate::values::Currency;

    type ProductTest = TestFramework<Product>;

    fn product_id() -> Uuid {
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0010)
    }

    fn order_id() -> Uuid {
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0020)
    }

    fn other_order_id() -> Uuid {
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0021)
    }

    fn eur(amount: i64) -> Money {
        Money::new(amount, Currency::parse("EUR").unwrap())
    }

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    fn description(s: &str) -> Description {
        Description::parse(s).unwrap()
    }

    fn create_with(price: Money, stock: i64) -> ProductCommand {
        ProductCommand::Create {
            product_id: product_id(),
            sku: Sku::parse("TSH-01").unwrap(),
            name: name("T-shirt"),
            description: Some(description("Cotton")),
            price,
            stock,
        }
    }

    fn created_with_stock(stock: i64) -> ProductEvent {
        ProductEvent::ProductCreated {
            product_id: product_id(),
            sku: Sku::parse("TSH-01").unwrap(),
            name: name("T-shirt"),
            description: Some(description("Cotton")),
            price: eur(1999),
            stock,
        }
    }

    fn created() -> ProductEvent {
        created_with_stock(10)
    }

    fn discontinued() -> ProductEvent {
        ProductEvent::ProductDiscontinued {}
    }

    fn reserved(quantity: u32) -> ProductEvent {
        ProductEvent::StockReserved {
            order_id: order_id(),
            quantity,
        }
    }

    fn released(quantity: u32) -> ProductEvent {
        ProductEvent::StockReservationReleased {
            order_id: order_id(),
            quantity,
        }
    }

    fn committed(quantity: u32) -> ProductEvent {
        ProductEvent::StockReservationCommitted {
            order_id: order_id(),
            quantity,
        }
    }

    fn returned(quantity: u32) -> ProductEvent {
        ProductEvent::StockReturned {
            order_id: order_id(),
            quantity,
        }
    }

    fn reserve(quantity: u32) -> ProductCommand {
        ProductCommand::ReserveStock {
            order_id: order_id(),
            quantity,
        }
    }

    fn state_after(events: Vec<ProductEvent>) -> Product {
        let mut product = Product::default();
        for event in events {
            product.apply(event);
        }
        product
    }

    // --- Create ---

    #[test]
    fn create_creates_the_product() {
        ProductTest::with(())
            .given_no_previous_events()
            .when(create_with(eur(1999), 10))
            .then_expect_events(vec![created()]);
    }

    #[test]
    fn create_with_zero_stock_is_allowed() {
        ProductTest::with(())
            .given_no_previous_events()
            .when(create_with(eur(1999), 0))
            .then_expect_events(vec![created_with_stock(0)]);
    }

    #[test]
    fn create_drops_an_empty_description() {
        ProductTest::with(())
            .given_no_previous_events()
            .when(ProductCommand::Create {
                product_id: product_id(),
                sku: Sku::parse("TSH-01").unwrap(),
                name: name("T-shirt"),
                description: Some(description("")),
                price: eur(1999),
                stock: 1,
            })
            .then_expect_events(vec![ProductEvent::ProductCreated {
                product_id: product_id(),
                sku: Sku::parse("TSH-01").unwrap(),
                name: name("T-shirt"),
                description: None,
                price: eur(1999),
                stock: 1,
            }]);
    }

    #[test]
    fn create_twice_is_refused() {
        ProductTest::with(())
            .given(vec![created()])
            .when(create_with(eur(1999), 10))
            .then_expect_error(ProductError::AlreadyExists);
    }

    #[test]
    fn create_with_non_positive_price_is_refused() {
        for amount in [0, -1] {
            ProductTest::with(())
                .given_no_previous_events()
                .when(create_with(eur(amount), 10))
                .then_expect_error(ProductError::InvalidPrice);
        }
    }

    #[test]
    fn create_with_negative_stock_is_refused() {
        ProductTest::with(())
            .given_no_previous_events()
            .when(create_with(eur(1999), -1))
            .then_expect_error(ProductError::InvalidStock);
    }

    // --- Commands on a missing product ---

    #[test]
    fn commands_on_a_missing_product_are_not_found() {
        let commands = vec![
            ProductCommand::UpdateDetails {
                name: Some(name("X")),
                description: None,
                attributes: None,
            },
            ProductCommand::ChangePrice { price: eur(100) },
            ProductCommand::AdjustStock { delta: 1 },
            ProductCommand::Discontinue,
            reserve(1),
            ProductCommand::ReleaseReservation {
                order_id: order_id(),
            },
            ProductCommand::CommitReservation {
                order_id: order_id(),
            },
            ProductCommand::ReturnStock {
                order_id: order_id(),
                quantity: 3,
            },
        ];
        for command in commands {
            ProductTest::with(())
                .given_no_previous_events()
                .when(command)
                .then_expect_error(ProductError::NotFound);
        }
    }

    // --- Discontinued ---

    #[test]
    fn discontinue_discontinues() {
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::Discontinue)
            .then_expect_events(vec![discontinued()]);
    }

    #[test]
    fn catalogue_commands_on_a_discontinued_product_are_refused() {
        let commands = vec![
            ProductCommand::UpdateDetails {
                name: Some(name("X")),
                description: None,
                attributes: None,
            },
            ProductCommand::ChangePrice { price: eur(100) },
            ProductCommand::AdjustStock { delta: 1 },
            ProductCommand::Discontinue,
            reserve(1),
        ];
        for command in commands {
            ProductTest::with(())
                .given(vec![created(), discontinued()])
                .when(command)
                .then_expect_error(ProductError::Discontinued);
        }
    }

    #[test]
    fn in_flight_reservations_can_finish_after_discontinuation() {
        ProductTest::with(())
            .given(vec![created(), reserved(2), discontinued()])
            .when(ProductCommand::ReleaseReservation {
                order_id: order_id(),
            })
            .then_expect_events(vec![released(2)]);
        ProductTest::with(())
            .given(vec![created(), reserved(2), discontinued()])
            .when(ProductCommand::CommitReservation {
                order_id: order_id(),
            })
            .then_expect_events(vec![committed(2)]);
        ProductTest::with(())
            .given(vec![created(), reserved(2), committed(2), discontinued()])
            .when(ProductCommand::ReturnStock {
                order_id: order_id(),
                quantity: 3,
            })
            .then_expect_events(vec![returned(2)]);
    }

    #[test]
    fn retried_reserve_after_discontinuation_is_still_a_no_op() {
        ProductTest::with(())
            .given(vec![created(), reserved(2), discontinued()])
            .when(reserve(2))
            .then_expect_events(vec![]);
    }

    // --- UpdateDetails ---

    #[test]
    fn update_details_changes_name_and_description() {
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::UpdateDetails {
                name: Some(name("Shirt")),
                description: Some(description("Organic cotton")),
                attributes: None,
            })
            .then_expect_events(vec![ProductEvent::ProductDetailsUpdated {
                name: Some(name("Shirt")),
                description: Some(description("Organic cotton")),
            }]);
    }

    #[test]
    fn update_details_carries_only_what_differs() {
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::UpdateDetails {
                name: Some(name("T-shirt")),
                description: Some(description("Linen")),
                attributes: None,
            })
            .then_expect_events(vec![ProductEvent::ProductDetailsUpdated {
                name: None,
                description: Some(description("Linen")),
            }]);
    }

    #[test]
    fn update_details_without_changes_emits_nothing() {
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::UpdateDetails {
                name: Some(name("T-shirt")),
                description: Some(description("Cotton")),
                attributes: None,
            })
            .then_expect_events(vec![]);
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::UpdateDetails {
                name: None,
                description: None,
                attributes: None,
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn an_empty_description_clears_it() {
        let clear = ProductEvent::ProductDetailsUpdated {
            name: None,
            description: Some(description("")),
        };
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::UpdateDetails {
                name: None,
                description: Some(description("")),
                attributes: None,
            })
            .then_expect_events(vec![clear.clone()]);
        ProductTest::with(())
            .given(vec![created(), clear.clone()])
            .when(ProductCommand::UpdateDetails {
                name: None,
                description: Some(description("")),
                attributes: None,
            })
            .then_expect_events(vec![]);
        assert_eq!(state_after(vec![created(), clear]).description(), None);
    }

    // --- ChangePrice ---

    #[test]
    fn change_price_changes_the_price() {
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::ChangePrice { price: eur(2499) })
            .then_expect_events(vec![ProductEvent::ProductPriceChanged { price: eur(2499) }]);
    }

    #[test]
    fn change_price_to_the_same_price_emits_nothing() {
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::ChangePrice { price: eur(1999) })
            .then_expect_events(vec![]);
    }

    #[test]
    fn change_price_to_non_positive_is_refused() {
        for amount in [0, -100] {
            ProductTest::with(())
                .given(vec![created()])
                .when(ProductCommand::ChangePrice { price: eur(amount) })
                .then_expect_error(ProductError::InvalidPrice);
        }
    }

    // --- AdjustStock ---

    #[test]
    fn adjust_stock_up_and_down() {
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::AdjustStock { delta: 5 })
            .then_expect_events(vec![ProductEvent::ProductStockAdjusted { stock_delta: 5 }]);
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::AdjustStock { delta: -10 })
            .then_expect_events(vec![ProductEvent::ProductStockAdjusted {
                stock_delta: -10,
            }]);
    }

    #[test]
    fn adjust_stock_by_zero_is_refused() {
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::AdjustStock { delta: 0 })
            .then_expect_error(ProductError::ZeroDelta);
    }

    #[test]
    fn adjust_stock_below_zero_is_refused() {
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::AdjustStock { delta: -11 })
            .then_expect_error(ProductError::InsufficientStock {
                available: 10,
                requested: 11,
            });
    }

    #[test]
    fn adjust_stock_ignores_reserved_units() {
        ProductTest::with(())
            .given(vec![created(), reserved(4)])
            .when(ProductCommand::AdjustStock { delta: -7 })
            .then_expect_error(ProductError::InsufficientStock {
                available: 6,
                requested: 7,
            });
    }

    #[test]
    fn adjust_stock_with_extreme_deltas_does_not_overflow() {
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::AdjustStock { delta: i64::MAX })
            .then_expect_error(ProductError::StockOverflow);
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::AdjustStock { delta: i64::MIN })
            .then_expect_error(ProductError::InsufficientStock {
                available: 10,
                requested: i64::MAX,
            });
        ProductTest::with(())
            .given(vec![created_with_stock(0)])
            .when(ProductCommand::AdjustStock { delta: i64::MAX })
            .then_expect_events(vec![ProductEvent::ProductStockAdjusted {
                stock_delta: i64::MAX,
            }]);
    }

    #[test]
    fn adjust_stock_counts_reserved_units_towards_the_maximum() {
        ProductTest::with(())
            .given(vec![created(), reserved(4)])
            .when(ProductCommand::AdjustStock {
                delta: i64::MAX - 6,
            })
            .then_expect_error(ProductError::StockOverflow);
        ProductTest::with(())
            .given(vec![created(), reserved(4)])
            .when(ProductCommand::AdjustStock {
                delta: i64::MAX - 10,
            })
            .then_expect_events(vec![ProductEvent::ProductStockAdjusted {
                stock_delta: i64::MAX - 10,
            }]);
    }

    // --- ReserveStock ---

    #[test]
    fn reserve_stock_reserves() {
        ProductTest::with(())
            .given(vec![created()])
            .when(reserve(10))
            .then_expect_events(vec![reserved(10)]);
    }

    #[test]
    fn reserve_stock_again_for_the_same_order_is_a_no_op() {
        let histories = vec![
            vec![created(), reserved(2)],
            vec![created(), reserved(2), released(2)],
            vec![created(), reserved(2), committed(2)],
            vec![created(), reserved(2), committed(2), returned(2)],
        ];
        for history in histories {
            ProductTest::with(())
                .given(history)
                .when(reserve(3))
                .then_expect_events(vec![]);
        }
    }

    #[test]
    fn reserve_zero_is_refused() {
        ProductTest::with(())
            .given(vec![created()])
            .when(reserve(0))
            .then_expect_error(ProductError::ZeroDelta);
    }

    #[test]
    fn reserve_more_than_available_is_refused() {
        ProductTest::with(())
            .given(vec![created(), reserved(4)])
            .when(ProductCommand::ReserveStock {
                order_id: other_order_id(),
                quantity: 7,
            })
            .then_expect_error(ProductError::InsufficientStock {
                available: 6,
                requested: 7,
            });
        ProductTest::with(())
            .given(vec![created()])
            .when(reserve(u32::MAX))
            .then_expect_error(ProductError::InsufficientStock {
                available: 10,
                requested: i64::from(u32::MAX),
            });
    }

    // --- ReleaseReservation ---

    #[test]
    fn release_returns_held_stock() {
        ProductTest::with(())
            .given(vec![created(), reserved(3)])
            .when(ProductCommand::ReleaseReservation {
                order_id: order_id(),
            })
            .then_expect_events(vec![released(3)]);
    }

    #[test]
    fn release_without_a_held_reservation_is_a_no_op() {
        let histories = vec![
            vec![created()],
            vec![created(), reserved(3), released(3)],
            vec![created(), reserved(3), committed(3)],
            vec![created(), reserved(3), committed(3), returned(3)],
        ];
        for history in histories {
            ProductTest::with(())
                .given(history)
                .when(ProductCommand::ReleaseReservation {
                    order_id: order_id(),
                })
                .then_expect_events(vec![]);
        }
    }

    // --- CommitReservation ---

    #[test]
    fn commit_takes_held_stock_out() {
        ProductTest::with(())
            .given(vec![created(), reserved(3)])
            .when(ProductCommand::CommitReservation {
                order_id: order_id(),
            })
            .then_expect_events(vec![committed(3)]);
    }

    #[test]
    fn commit_twice_is_a_no_op() {
        ProductTest::with(())
            .given(vec![created(), reserved(3), committed(3)])
            .when(ProductCommand::CommitReservation {
                order_id: order_id(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn commit_without_a_held_reservation_is_refused() {
        let histories = vec![
            vec![created()],
            vec![created(), reserved(3), released(3)],
            vec![created(), reserved(3), committed(3), returned(3)],
        ];
        for history in histories {
            ProductTest::with(())
                .given(history)
                .when(ProductCommand::CommitReservation {
                    order_id: order_id(),
                })
                .then_expect_error(ProductError::UnknownReservation {
                    order_id: order_id(),
                });
        }
    }

    // --- ReturnStock ---

    #[test]
    fn return_puts_committed_stock_back() {
        ProductTest::with(())
            .given(vec![created(), reserved(3), committed(3)])
            .when(ProductCommand::ReturnStock {
                order_id: order_id(),
                quantity: 3,
            })
            .then_expect_events(vec![returned(3)]);
    }

    #[test]
    fn return_twice_is_a_no_op() {
        ProductTest::with(())
            .given(vec![created(), reserved(3), committed(3), returned(3)])
            .when(ProductCommand::ReturnStock {
                order_id: order_id(),
                quantity: 3,
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn return_without_a_committed_reservation_is_refused() {
        // `[created()]` was refused too; now an order the product does not
        // know may have been committed beyond its window, so a return for it
        // takes the caller's quantity (`bounded_tests`).
        let histories = vec![
            vec![created(), reserved(3)],
            vec![created(), reserved(3), released(3)],
        ];
        for history in histories {
            ProductTest::with(())
                .given(history)
                .when(ProductCommand::ReturnStock {
                    order_id: order_id(),
                    quantity: 3,
                })
                .then_expect_error(ProductError::UnknownReservation {
                    order_id: order_id(),
                });
        }
    }

    #[test]
    fn return_that_would_overflow_is_refused() {
        ProductTest::with(())
            .given(vec![
                created(),
                reserved(3),
                committed(3),
                ProductEvent::ProductStockAdjusted {
                    stock_delta: i64::MAX - 8,
                },
            ])
            .when(ProductCommand::ReturnStock {
                order_id: order_id(),
                quantity: 3,
            })
            .then_expect_error(ProductError::StockOverflow);
    }

    // --- Categories and attributes ---

    fn attributes(pairs: &[(&str, &str)]) -> Attributes {
        Attributes::parse(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
        .unwrap()
    }

    fn category(n: u128) -> Uuid {
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0c00 + n)
    }

    #[test]
    fn set_categories_records_the_list() {
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::SetCategories {
                category_ids: vec![category(2), category(1)],
            })
            .then_expect_events(vec![ProductEvent::ProductCategoriesSet {
                category_ids: vec![category(2), category(1)],
            }]);
    }

    #[test]
    fn set_categories_to_the_same_list_records_nothing_and_an_empty_one_clears() {
        let listed = ProductEvent::ProductCategoriesSet {
            category_ids: vec![category(1)],
        };
        ProductTest::with(())
            .given(vec![created(), listed.clone()])
            .when(ProductCommand::SetCategories {
                category_ids: vec![category(1)],
            })
            .then_expect_events(vec![]);
        ProductTest::with(())
            .given(vec![created(), listed])
            .when(ProductCommand::SetCategories {
                category_ids: vec![],
            })
            .then_expect_events(vec![ProductEvent::ProductCategoriesSet {
                category_ids: vec![],
            }]);
    }

    #[test]
    fn set_categories_takes_twenty_and_refuses_more_or_repeats() {
        let twenty: Vec<Uuid> = (0..20).map(category).collect();
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::SetCategories {
                category_ids: twenty.clone(),
            })
            .then_expect_events(vec![ProductEvent::ProductCategoriesSet {
                category_ids: twenty,
            }]);
        for category_ids in [
            (0..21).map(category).collect(),
            vec![category(1), category(1)],
        ] {
            ProductTest::with(())
                .given(vec![created()])
                .when(ProductCommand::SetCategories { category_ids })
                .then_expect_error(ProductError::InvalidCategories { max: 20 });
        }
    }

    #[test]
    fn set_categories_of_a_discontinued_or_missing_product_is_refused() {
        ProductTest::with(())
            .given(vec![created(), discontinued()])
            .when(ProductCommand::SetCategories {
                category_ids: vec![category(1)],
            })
            .then_expect_error(ProductError::Discontinued);
        ProductTest::with(())
            .given_no_previous_events()
            .when(ProductCommand::SetCategories {
                category_ids: vec![],
            })
            .then_expect_error(ProductError::NotFound);
    }

    #[test]
    fn update_with_attributes_replaces_them_after_the_details() {
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::UpdateDetails {
                name: Some(name("Pen")),
                description: None,
                attributes: Some(attributes(&[("colour", "blue")])),
            })
            .then_expect_events(vec![
                ProductEvent::ProductDetailsUpdated {
                    name: Some(name("Pen")),
                    description: None,
                },
                ProductEvent::ProductAttributesSet {
                    attributes: attributes(&[("colour", "blue")]),
                },
            ]);
    }

    #[test]
    fn update_with_the_same_attributes_records_nothing() {
        let set = ProductEvent::ProductAttributesSet {
            attributes: attributes(&[("colour", "blue")]),
        };
        ProductTest::with(())
            .given(vec![created(), set])
            .when(ProductCommand::UpdateDetails {
                name: None,
                description: None,
                attributes: Some(attributes(&[("colour", "blue")])),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn categories_and_attributes_are_part_of_the_state() {
        let product = state_after(vec![
            created(),
            ProductEvent::ProductCategoriesSet {
                category_ids: vec![category(3)],
            },
            ProductEvent::ProductAttributesSet {
                attributes: attributes(&[("ink", "gel")]),
            },
        ]);
        assert_eq!(product.categories(), &[category(3)]);
        assert_eq!(product.attributes(), &attributes(&[("ink", "gel")]));
    }

    // --- State ---

    #[test]
    fn stock_moves_between_available_and_reserved() {
        let p = state_after(vec![created(), reserved(4)]);
        assert_eq!((p.available(), p.reserved()), (6, 4));
        assert_eq!(
            p.reservation(order_id()),
            Some(Reservation {
                quantity: 4,
                state: ReservationState::Held
            })
        );
        let p = state_after(vec![created(), reserved(4), released(4)]);
        assert_eq!((p.available(), p.reserved()), (10, 0));
        let p = state_after(vec![created(), reserved(4), committed(4)]);
        assert_eq!((p.available(), p.reserved()), (6, 0));
        let p = state_after(vec![created(), reserved(4), committed(4), returned(4)]);
        assert_eq!((p.available(), p.reserved()), (10, 0));
        assert_eq!(
            p.reservation(order_id()).map(|r| r.state),
            Some(ReservationState::Returned)
        );
    }

    #[test]
    fn accessors_reflect_history() {
        let p = state_after(vec![
            created(),
            ProductEvent::ProductDetailsUpdated {
                name: Some(name("Shirt")),
                description: None,
            },
            ProductEvent::ProductPriceChanged { price: eur(2500) },
        ]);
        assert!(p.exists() && p.is_active());
        assert_eq!(p.id(), Some(product_id()));
        assert_eq!(p.sku().map(Sku::as_str), Some("TSH-01"));
        assert_eq!(p.name(), Some(&name("Shirt")));
        assert_eq!(p.description(), Some(&description("Cotton")));
        assert_eq!(p.price(), Some(&eur(2500)));
        assert_eq!(p.status(), ProductStatus::Active);
        let p = state_after(vec![created(), discontinued()]);
        assert!(p.exists() && !p.is_active());
        assert_eq!(p.status(), ProductStatus::Discontinued);
    }

    #[test]
    fn snapshot_round_trips_through_json() {
        let p = state_after(vec![created(), reserved(4)]);
        let json = serde_json::to_string(&p).unwrap();
        let back: Product = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn event_type_and_version() {
        assert_eq!(created().event_type(), "ProductCreated");
        assert_eq!(reserved(1).event_type(), "StockReserved");
        assert_eq!(discontinued().event_version(), crate::EVENT_VERSION);
        let json = serde_json::to_value(reserved(1)).unwrap();
        assert_eq!(json["StockReserved"]["quantity"], 1);
    }

    #[test]
    fn error_rules() {
        assert_eq!(
            ProductError::AlreadyExists.kind(),
            RefusalKind::AlreadyExists
        );
        assert_eq!(ProductError::NotFound.kind(), RefusalKind::NotFound);
        assert_eq!(
            ProductError::Discontinued.kind(),
            RefusalKind::ProductDiscontinued
        );
        assert_eq!(
            ProductError::InsufficientStock {
                available: 1,
                requested: 2
            }
            .kind(),
            RefusalKind::InsufficientStock
        );
        for e in [
            ProductError::InvalidPrice,
            ProductError::InvalidStock,
            ProductError::ZeroDelta,
            ProductError::StockOverflow,
        ] {
            assert_eq!(e.kind(), RefusalKind::Invalid);
        }
        assert_eq!(
            ProductError::UnknownReservation {
                order_id: order_id()
            }
            .kind(),
            RefusalKind::InvalidTransition
        );
    }
}
