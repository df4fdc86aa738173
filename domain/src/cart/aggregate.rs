use std::collections::BTreeSet;
use std::fmt;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{CartCommand, CartError, CartEvent};
use crate::values::{Currency, Quantity};

/// Most lines one cart may hold (an order's limit too).
pub const MAX_CART_LINES: usize = crate::order::MAX_LINES;

/// The id of the one order a cart may become: a UUID v8 made from the cart's
/// id (its first 48 bits, the cart's creation time, kept; the rest flipped by
/// a fixed mask). Every checkout of a cart, repeated or concurrent, on any
/// process, names the same order, so the event store's key on the order's
/// first event lets exactly one place it. No v7 id (every other id) has
/// version 8, and the mapping is one to one, so it names no other order.
pub fn order_id_for(cart_id: Uuid) -> Uuid {
    const MASK: u128 = 0x0000_0000_0000_0a5a_5a5a_5a5a_5a5a_5a5a;
    let bits = (cart_id.as_u128() ^ MASK) & !(0xf << 76) | (0x8 << 76);
    let bits = bits & !(0b11 << 62) | (0b10 << 62);
    Uuid::from_u128(bits)
}

#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CartStatus {
    #[default]
    Open,
    CheckedOut,
    Merged,
    Expired,
}

impl CartStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::CheckedOut => "checked_out",
            Self::Merged => "merged",
            Self::Expired => "expired",
        }
    }
}

impl fmt::Display for CartStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLine {
    pub product_id: Uuid,
    pub quantity: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cart {
    id: Option<Uuid>,
    user_id: Option<Uuid>,
    token_hash: Option<String>,
    lines: Vec<CartLine>,
    currency: Option<Currency>,
    status: CartStatus,
    order_id: Option<Uuid>,
    merged_into: Option<Uuid>,
    merged_from: BTreeSet<Uuid>,
}

impl Cart {
    pub fn exists(&self) -> bool {
        self.id.is_some()
    }

    pub fn id(&self) -> Option<Uuid> {
        self.id
    }

    /// The customer; none for a guest cart.
    pub fn user_id(&self) -> Option<Uuid> {
        self.user_id
    }

    /// A guest cart's token hash (hex SHA-256).
    pub fn token_hash(&self) -> Option<&str> {
        self.token_hash.as_deref()
    }

    pub fn lines(&self) -> &[CartLine] {
        &self.lines
    }

    pub fn currency(&self) -> Option<&Currency> {
        self.currency.as_ref()
    }

    pub fn status(&self) -> CartStatus {
        self.status
    }

    pub fn order_id(&self) -> Option<Uuid> {
        self.order_id
    }

    pub fn merged_into(&self) -> Option<Uuid> {
        self.merged_into
    }

    fn ensure_open(&self) -> Result<(), CartError> {
        match self.status {
            CartStatus::Open => Ok(()),
            closed => Err(CartError::Closed(closed)),
        }
    }

    fn quantity_of(&self, product_id: Uuid) -> Option<u32> {
        self.lines
            .iter()
            .find(|l| l.product_id == product_id)
            .map(|l| l.quantity)
    }

    fn set_line(
        &self,
        product_id: Uuid,
        quantity: u32,
        offer: &super::Offer,
    ) -> Result<Option<CartEvent>, CartError> {
        if quantity == 0 {
            return Ok(self
                .quantity_of(product_id)
                .map(|_| CartEvent::CartLineRemoved { product_id }));
        }
        if quantity > Quantity::MAX {
            return Err(CartError::InvalidQuantity);
        }
        if !offer.active {
            return Err(CartError::ProductDiscontinued);
        }
        let others = self.lines.iter().any(|l| l.product_id != product_id);
        if others && self.currency.as_ref() != Some(&offer.currency) {
            return Err(CartError::CurrencyMismatch);
        }
        match self.quantity_of(product_id) {
            Some(current) if current == quantity => return Ok(None),
            None if self.lines.len() >= MAX_CART_LINES => return Err(CartError::TooManyLines),
            _ => {}
        }
        Ok(Some(CartEvent::CartLineSet {
            product_id,
            quantity,
            currency: offer.currency.clone(),
        }))
    }

    fn absorb(
        &self,
        from: Uuid,
        lines: Vec<CartLine>,
        currency: Option<Currency>,
    ) -> Result<CartEvent, CartError> {
        if !lines.is_empty() && !self.lines.is_empty() && currency != self.currency {
            return Err(CartError::CurrencyMismatch);
        }
        let mut changed = Vec::new();
        let mut count = self.lines.len();
        for line in lines {
            let quantity = match self.quantity_of(line.product_id) {
                Some(current) => (current + line.quantity).min(Quantity::MAX),
                None => {
                    count += 1;
                    line.quantity.min(Quantity::MAX)
                }
            };
            changed.push(CartLine {
                product_id: line.product_id,
                quantity,
            });
        }
        if count > MAX_CART_LINES {
            return Err(CartError::TooManyLines);
        }
        let currency = if self.lines.is_empty() {
            currency
        } else {
            self.currency.clone()
        };
        Ok(CartEvent::CartLinesMerged {
            from,
            lines: changed,
            currency,
        })
    }
}

impl Aggregate for Cart {
    const TYPE: &'static str = "cart";
    type Command = CartCommand;
    type Event = CartEvent;
    type Error = CartError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            CartCommand::Create {
                cart_id,
                user_id,
                token_hash,
            } => {
                if self.exists() {
                    return Err(CartError::AlreadyExists);
                }
                Some(CartEvent::CartCreated {
                    cart_id,
                    user_id,
                    token_hash,
                })
            }
            _ if !self.exists() => return Err(CartError::NotFound),
            CartCommand::SetLine {
                product_id,
                quantity,
                offer,
            } => {
                self.ensure_open()?;
                self.set_line(product_id, quantity, &offer)?
            }
            CartCommand::RemoveLine { product_id } => {
                self.ensure_open()?;
                self.quantity_of(product_id)
                    .map(|_| CartEvent::CartLineRemoved { product_id })
            }
            CartCommand::Claim { user_id } => {
                if self.user_id == Some(user_id) && self.status == CartStatus::Open {
                    None
                } else {
                    self.ensure_open()?;
                    if self.user_id.is_some() {
                        return Err(CartError::NotAGuestCart);
                    }
                    Some(CartEvent::CartClaimed { user_id })
                }
            }
            CartCommand::MergeInto { into, user_id } => {
                if self.merged_into == Some(into) {
                    None
                } else {
                    self.ensure_open()?;
                    if self.user_id.is_some() {
                        return Err(CartError::NotAGuestCart);
                    }
                    Some(CartEvent::CartMerged { into, user_id })
                }
            }
            CartCommand::Absorb {
                from,
                lines,
                currency,
            } => {
                if self.merged_from.contains(&from) {
                    None
                } else {
                    self.ensure_open()?;
                    Some(self.absorb(from, lines, currency)?)
                }
            }
            CartCommand::CheckOut { order_id } => match self.order_id {
                Some(placed) if placed == order_id => None,
                Some(_) => return Err(CartError::OtherOrder),
                None => {
                    self.ensure_open()?;
                    if self.lines.is_empty() {
                        return Err(CartError::Empty);
                    }
                    Some(CartEvent::CartCheckedOut { order_id })
                }
            },
            CartCommand::Expire => {
                (self.status == CartStatus::Open).then_some(CartEvent::CartExpired {})
            }
        };
        if let Some(event) = event {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            CartEvent::CartCreated {
                cart_id,
                user_id,
                token_hash,
            } => {
                self.id = Some(cart_id);
                self.user_id = user_id;
                self.token_hash = token_hash;
                self.status = CartStatus::Open;
            }
            CartEvent::CartLineSet {
                product_id,
                quantity,
                currency,
            } => {
                match self.lines.iter_mut().find(|l| l.product_id == product_id) {
                    Some(line) => line.quantity = quantity,
                    None => self.lines.push(CartLine {
                        product_id,
                        quantity,
                    }),
                }
                self.currency = Some(currency);
            }
            CartEvent::CartLineRemoved { product_id } => {
                self.lines.retain(|l| l.product_id != product_id);
                if self.lines.is_empty() {
                    self.currency = None;
                }
            }
            CartEvent::CartClaimed { user_id } => self.user_id = Some(user_id),
            CartEvent::CartMerged { into, .. } => {
                self.status = CartStatus::Merged;
                self.merged_into = Some(into);
            }
            CartEvent::CartLinesMerged {
                from,
                lines,
                currency,
            } => {
                self.merged_from.insert(from);
                for line in lines {
                    match self
                        .lines
                        .iter_mut()
                        .find(|l| l.product_id == line.product_id)
                    {
                        Some(existing) => existing.quantity = line.quantity,
                        None => self.lines.push(line),
                    }
                }
                if !self.lines.is_empty() {
                    self.currency = currency;
                }
            }
            CartEvent::CartCheckedOut { order_id } => {
                self.status = CartStatus::CheckedOut;
                self.order_id = Some(order_id);
            }
            CartEvent::CartExpired {} => self.status = CartStatus::Expired,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;
    use cqrs_es::DomainEvent;

    use super::*;
    use crate::cart::Offer;
    use crate::refusal::{Refusal, RefusalKind};

    type CartTest = TestFramework<Cart>;

    fn cart_id() -> Uuid {
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0c01)
    }

    fn guest_cart() -> Uuid {
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0c02)
    }

    fn user() -> Uuid {
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001)
    }

    fn other_user() -> Uuid {
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002)
    }

    fn order() -> Uuid {
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0020)
    }

    fn product(n: u128) -> Uuid {
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_1000 + n)
    }

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }

    fn usd() -> Currency {
        Currency::parse("USD").unwrap()
    }

    fn offer(currency: Currency) -> Offer {
        Offer {
            active: true,
            currency,
        }
    }

    fn created_guest() -> CartEvent {
        CartEvent::CartCreated {
            cart_id: cart_id(),
            user_id: None,
            token_hash: Some("ab".repeat(32)),
        }
    }

    fn created_for(user_id: Uuid) -> CartEvent {
        CartEvent::CartCreated {
            cart_id: cart_id(),
            user_id: Some(user_id),
            token_hash: None,
        }
    }

    fn line_set(n: u128, quantity: u32) -> CartEvent {
        CartEvent::CartLineSet {
            product_id: product(n),
            quantity,
            currency: eur(),
        }
    }

    fn set(n: u128, quantity: u32) -> CartCommand {
        CartCommand::SetLine {
            product_id: product(n),
            quantity,
            offer: offer(eur()),
        }
    }

    fn line(n: u128, quantity: u32) -> CartLine {
        CartLine {
            product_id: product(n),
            quantity,
        }
    }

    fn closed(status: CartStatus) -> Vec<CartEvent> {
        let mut events = vec![created_for(user()), line_set(1, 1)];
        events.push(match status {
            CartStatus::CheckedOut => CartEvent::CartCheckedOut { order_id: order() },
            CartStatus::Merged => CartEvent::CartMerged {
                into: guest_cart(),
                user_id: user(),
            },
            CartStatus::Expired => CartEvent::CartExpired {},
            CartStatus::Open => unreachable!("not a closed status"),
        });
        events
    }

    const CLOSED: [CartStatus; 3] = [
        CartStatus::CheckedOut,
        CartStatus::Merged,
        CartStatus::Expired,
    ];

    // --- Create ---

    #[test]
    fn create_a_guest_cart_and_a_customer_cart() {
        CartTest::with(())
            .given_no_previous_events()
            .when(CartCommand::Create {
                cart_id: cart_id(),
                user_id: None,
                token_hash: Some("ab".repeat(32)),
            })
            .then_expect_events(vec![created_guest()]);
        CartTest::with(())
            .given_no_previous_events()
            .when(CartCommand::Create {
                cart_id: cart_id(),
                user_id: Some(user()),
                token_hash: None,
            })
            .then_expect_events(vec![created_for(user())]);
    }

    #[test]
    fn create_twice_is_refused() {
        CartTest::with(())
            .given(vec![created_guest()])
            .when(CartCommand::Create {
                cart_id: cart_id(),
                user_id: None,
                token_hash: None,
            })
            .then_expect_error(CartError::AlreadyExists);
    }

    #[test]
    fn commands_on_a_missing_cart_are_not_found() {
        for command in [
            set(1, 1),
            CartCommand::RemoveLine {
                product_id: product(1),
            },
            CartCommand::Claim { user_id: user() },
            CartCommand::CheckOut { order_id: order() },
            CartCommand::Expire,
        ] {
            CartTest::with(())
                .given_no_previous_events()
                .when(command)
                .then_expect_error(CartError::NotFound);
        }
    }

    // --- Lines ---

    #[test]
    fn set_a_line_then_change_its_quantity() {
        CartTest::with(())
            .given(vec![created_guest()])
            .when(set(1, 3))
            .then_expect_events(vec![line_set(1, 3)]);
        CartTest::with(())
            .given(vec![created_guest(), line_set(1, 3)])
            .when(set(1, 1000))
            .then_expect_events(vec![line_set(1, 1000)]);
    }

    #[test]
    fn setting_the_same_quantity_again_writes_nothing() {
        CartTest::with(())
            .given(vec![created_guest(), line_set(1, 3)])
            .when(set(1, 3))
            .then_expect_events(vec![]);
    }

    #[test]
    fn quantity_zero_removes_the_line_and_removing_an_absent_line_writes_nothing() {
        CartTest::with(())
            .given(vec![created_guest(), line_set(1, 3)])
            .when(set(1, 0))
            .then_expect_events(vec![CartEvent::CartLineRemoved {
                product_id: product(1),
            }]);
        CartTest::with(())
            .given(vec![created_guest(), line_set(1, 3)])
            .when(CartCommand::RemoveLine {
                product_id: product(1),
            })
            .then_expect_events(vec![CartEvent::CartLineRemoved {
                product_id: product(1),
            }]);
        CartTest::with(())
            .given(vec![created_guest()])
            .when(CartCommand::RemoveLine {
                product_id: product(1),
            })
            .then_expect_events(vec![]);
        CartTest::with(())
            .given(vec![created_guest()])
            .when(set(1, 0))
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_quantity_over_1000_is_refused() {
        CartTest::with(())
            .given(vec![created_guest()])
            .when(set(1, 1001))
            .then_expect_error(CartError::InvalidQuantity);
    }

    #[test]
    fn a_discontinued_product_is_refused_but_its_line_may_be_removed() {
        CartTest::with(())
            .given(vec![created_guest()])
            .when(CartCommand::SetLine {
                product_id: product(1),
                quantity: 1,
                offer: Offer {
                    active: false,
                    currency: eur(),
                },
            })
            .then_expect_error(CartError::ProductDiscontinued);
        CartTest::with(())
            .given(vec![created_guest(), line_set(1, 2)])
            .when(CartCommand::SetLine {
                product_id: product(1),
                quantity: 0,
                offer: Offer {
                    active: false,
                    currency: eur(),
                },
            })
            .then_expect_events(vec![CartEvent::CartLineRemoved {
                product_id: product(1),
            }]);
    }

    #[test]
    fn a_line_in_another_currency_is_refused() {
        CartTest::with(())
            .given(vec![created_guest(), line_set(1, 1)])
            .when(CartCommand::SetLine {
                product_id: product(2),
                quantity: 1,
                offer: offer(usd()),
            })
            .then_expect_error(CartError::CurrencyMismatch);
    }

    #[test]
    fn an_emptied_cart_takes_any_currency() {
        CartTest::with(())
            .given(vec![
                created_guest(),
                line_set(1, 1),
                CartEvent::CartLineRemoved {
                    product_id: product(1),
                },
            ])
            .when(CartCommand::SetLine {
                product_id: product(2),
                quantity: 1,
                offer: offer(usd()),
            })
            .then_expect_events(vec![CartEvent::CartLineSet {
                product_id: product(2),
                quantity: 1,
                currency: usd(),
            }]);
    }

    #[test]
    fn the_51st_line_is_refused_but_the_50_change() {
        let mut given = vec![created_guest()];
        given.extend((0..50).map(|n| line_set(n, 1)));
        CartTest::with(())
            .given(given.clone())
            .when(set(50, 1))
            .then_expect_error(CartError::TooManyLines);
        CartTest::with(())
            .given(given)
            .when(set(49, 2))
            .then_expect_events(vec![line_set(49, 2)]);
    }

    #[test]
    fn a_closed_cart_takes_no_change() {
        for status in CLOSED {
            for command in [
                set(2, 1),
                CartCommand::RemoveLine {
                    product_id: product(1),
                },
                CartCommand::Claim {
                    user_id: other_user(),
                },
                CartCommand::Absorb {
                    from: Uuid::from_u128(9),
                    lines: vec![],
                    currency: None,
                },
            ] {
                CartTest::with(())
                    .given(closed(status))
                    .when(command)
                    .then_expect_error(CartError::Closed(status));
            }
        }
    }

    // --- Claim and merge ---

    #[test]
    fn claiming_a_guest_cart_makes_it_the_customers() {
        CartTest::with(())
            .given(vec![created_guest(), line_set(1, 1)])
            .when(CartCommand::Claim { user_id: user() })
            .then_expect_events(vec![CartEvent::CartClaimed { user_id: user() }]);
    }

    #[test]
    fn claiming_again_by_the_same_customer_writes_nothing() {
        CartTest::with(())
            .given(vec![
                created_guest(),
                CartEvent::CartClaimed { user_id: user() },
            ])
            .when(CartCommand::Claim { user_id: user() })
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_customers_cart_cannot_be_claimed_or_merged_by_another() {
        CartTest::with(())
            .given(vec![created_for(user())])
            .when(CartCommand::Claim {
                user_id: other_user(),
            })
            .then_expect_error(CartError::NotAGuestCart);
        CartTest::with(())
            .given(vec![created_for(user())])
            .when(CartCommand::MergeInto {
                into: guest_cart(),
                user_id: other_user(),
            })
            .then_expect_error(CartError::NotAGuestCart);
    }

    #[test]
    fn merging_a_guest_cart_closes_it_once() {
        let merged = CartEvent::CartMerged {
            into: guest_cart(),
            user_id: user(),
        };
        CartTest::with(())
            .given(vec![created_guest(), line_set(1, 1)])
            .when(CartCommand::MergeInto {
                into: guest_cart(),
                user_id: user(),
            })
            .then_expect_events(vec![merged.clone()]);
        CartTest::with(())
            .given(vec![created_guest(), line_set(1, 1), merged])
            .when(CartCommand::MergeInto {
                into: guest_cart(),
                user_id: user(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn absorbing_adds_quantities_up_to_1000_once_per_guest_cart() {
        let absorb = CartCommand::Absorb {
            from: guest_cart(),
            lines: vec![line(1, 900), line(2, 5)],
            currency: Some(eur()),
        };
        let merged = CartEvent::CartLinesMerged {
            from: guest_cart(),
            lines: vec![line(1, 1000), line(2, 5)],
            currency: Some(eur()),
        };
        CartTest::with(())
            .given(vec![created_for(user()), line_set(1, 200)])
            .when(absorb.clone())
            .then_expect_events(vec![merged.clone()]);
        CartTest::with(())
            .given(vec![created_for(user()), line_set(1, 200), merged])
            .when(absorb)
            .then_expect_events(vec![]);
    }

    #[test]
    fn absorbing_lines_of_another_currency_or_past_50_lines_is_refused() {
        CartTest::with(())
            .given(vec![created_for(user()), line_set(1, 1)])
            .when(CartCommand::Absorb {
                from: guest_cart(),
                lines: vec![line(2, 1)],
                currency: Some(usd()),
            })
            .then_expect_error(CartError::CurrencyMismatch);
        let mut given = vec![created_for(user())];
        given.extend((0..50).map(|n| line_set(n, 1)));
        CartTest::with(())
            .given(given)
            .when(CartCommand::Absorb {
                from: guest_cart(),
                lines: vec![line(100, 1)],
                currency: Some(eur()),
            })
            .then_expect_error(CartError::TooManyLines);
    }

    #[test]
    fn an_empty_cart_absorbs_the_guest_carts_currency() {
        let mut cart = Cart::default();
        for event in [
            created_for(user()),
            CartEvent::CartLinesMerged {
                from: guest_cart(),
                lines: vec![line(1, 2)],
                currency: Some(usd()),
            },
        ] {
            cart.apply(event);
        }
        assert_eq!(cart.currency(), Some(&usd()));
        assert_eq!(cart.lines(), &[line(1, 2)]);
    }

    // --- Checkout ---

    #[test]
    fn checking_out_records_the_order_once() {
        let given = vec![created_for(user()), line_set(1, 1)];
        CartTest::with(())
            .given(given.clone())
            .when(CartCommand::CheckOut { order_id: order() })
            .then_expect_events(vec![CartEvent::CartCheckedOut { order_id: order() }]);
        CartTest::with(())
            .given(closed(CartStatus::CheckedOut))
            .when(CartCommand::CheckOut { order_id: order() })
            .then_expect_events(vec![]);
        CartTest::with(())
            .given(closed(CartStatus::CheckedOut))
            .when(CartCommand::CheckOut {
                order_id: Uuid::from_u128(1),
            })
            .then_expect_error(CartError::OtherOrder);
    }

    #[test]
    fn an_empty_cart_cannot_be_checked_out() {
        CartTest::with(())
            .given(vec![created_for(user())])
            .when(CartCommand::CheckOut { order_id: order() })
            .then_expect_error(CartError::Empty);
    }

    #[test]
    fn a_merged_or_expired_cart_cannot_be_checked_out() {
        for status in [CartStatus::Merged, CartStatus::Expired] {
            CartTest::with(())
                .given(closed(status))
                .when(CartCommand::CheckOut { order_id: order() })
                .then_expect_error(CartError::Closed(status));
        }
    }

    // --- Expiry ---

    #[test]
    fn an_open_cart_expires_and_a_closed_one_stays_as_it_is() {
        CartTest::with(())
            .given(vec![created_guest(), line_set(1, 1)])
            .when(CartCommand::Expire)
            .then_expect_events(vec![CartEvent::CartExpired {}]);
        for status in CLOSED {
            CartTest::with(())
                .given(closed(status))
                .when(CartCommand::Expire)
                .then_expect_events(vec![]);
        }
    }

    // --- The order of a cart ---

    #[test]
    fn a_cart_names_one_order_of_its_own() {
        let cart = Uuid::parse_str("0193a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b").unwrap();
        let order = order_id_for(cart);
        assert_eq!(order, order_id_for(cart));
        assert_ne!(order, cart);
        assert_eq!(order.get_version_num(), 8);
        assert_eq!(order.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(order.as_bytes()[..6], cart.as_bytes()[..6]);
        let other = Uuid::parse_str("0193a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2c").unwrap();
        assert_ne!(order_id_for(other), order);
    }

    // --- State and wire format ---

    #[test]
    fn accessors_reflect_history() {
        let mut cart = Cart::default();
        assert!(!cart.exists());
        for event in [
            created_guest(),
            line_set(1, 2),
            line_set(2, 1),
            CartEvent::CartLineRemoved {
                product_id: product(1),
            },
            CartEvent::CartClaimed { user_id: user() },
            CartEvent::CartCheckedOut { order_id: order() },
        ] {
            cart.apply(event);
        }
        assert_eq!(cart.id(), Some(cart_id()));
        assert_eq!(cart.user_id(), Some(user()));
        assert_eq!(cart.token_hash(), Some("ab".repeat(32).as_str()));
        assert_eq!(cart.lines(), &[line(2, 1)]);
        assert_eq!(cart.currency(), Some(&eur()));
        assert_eq!(cart.status(), CartStatus::CheckedOut);
        assert_eq!(cart.order_id(), Some(order()));
        assert_eq!(cart.merged_into(), None);
    }

    #[test]
    fn wire_format_and_kinds() {
        assert_eq!(
            serde_json::to_string(&CartEvent::CartExpired {}).unwrap(),
            r#"{"CartExpired":{}}"#
        );
        assert_eq!(line_set(1, 1).event_type(), "CartLineSet");
        assert_eq!(
            CartEvent::CartCheckedOut { order_id: order() }.event_type(),
            "CartCheckedOut"
        );
        for status in [CartStatus::Open, CLOSED[0], CLOSED[1], CLOSED[2]] {
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{status}\"")
            );
        }
        assert_eq!(
            CartError::Closed(CartStatus::Expired).kind(),
            RefusalKind::CartClosed
        );
        assert_eq!(CartError::Empty.kind(), RefusalKind::CartEmpty);
        assert_eq!(
            CartError::ProductDiscontinued.kind(),
            RefusalKind::ProductDiscontinued
        );
        assert_eq!(
            CartError::CurrencyMismatch.kind(),
            RefusalKind::CurrencyMismatch
        );
        assert_eq!(CartError::TooManyLines.kind(), RefusalKind::Invalid);
    }
}
