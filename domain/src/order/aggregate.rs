use std::collections::BTreeSet;
use std::fmt;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{OrderCommand, OrderError, OrderEvent};
use crate::address::ShippingAddress;
use crate::values::{Money, Quantity};

/// Most lines one order may have.
pub const MAX_LINES: usize = 50;

#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    #[default]
    Pending,
    Confirmed,
    Shipped,
    Cancelled,
    /// Shipped, then its payment refunded: the goods stay with the customer.
    Refunded,
}

impl OrderStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Shipped => "shipped",
            Self::Cancelled => "cancelled",
            Self::Refunded => "refunded",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    OutOfStock,
    PaymentDeclined,
    PaymentUnavailable,
    CustomerRequest,
    Refunded,
}

impl CancelReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::OutOfStock => "out_of_stock",
            Self::PaymentDeclined => "payment_declined",
            Self::PaymentUnavailable => "payment_unavailable",
            Self::CustomerRequest => "customer_request",
            Self::Refunded => "refunded",
        }
    }

    /// The statuses from which an order may be cancelled for this reason.
    fn allowed_from(self, status: OrderStatus) -> bool {
        use OrderStatus::{Confirmed, Pending};
        match self {
            Self::CustomerRequest => matches!(status, Pending | Confirmed),
            Self::OutOfStock | Self::PaymentDeclined | Self::PaymentUnavailable => {
                status == Pending
            }
            // A shipped order is refunded (`OrderCommand::Refund`), never cancelled.
            Self::Refunded => status == Confirmed,
        }
    }
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: Uuid,
    pub quantity: u32,
    pub unit_price: Money,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Order {
    id: Option<Uuid>,
    user_id: Option<Uuid>,
    lines: Vec<OrderLine>,
    total: Option<Money>,
    payment_token: Option<String>,
    payment_id: Option<Uuid>,
    status: OrderStatus,
    cancel_reason: Option<CancelReason>,
    #[serde(default)]
    cancel_note: Option<String>,
    #[serde(default)]
    cart_id: Option<Uuid>,
    #[serde(default)]
    shipping_address: Option<ShippingAddress>,
}

impl Order {
    pub fn cancel_note(&self) -> Option<&str> {
        self.cancel_note.as_deref()
    }

    pub fn cart_id(&self) -> Option<Uuid> {
        self.cart_id
    }

    pub fn shipping_address(&self) -> Option<&ShippingAddress> {
        self.shipping_address.as_ref()
    }

    pub fn id(&self) -> Option<Uuid> {
        self.id
    }

    pub fn exists(&self) -> bool {
        self.id.is_some()
    }

    pub fn user_id(&self) -> Option<Uuid> {
        self.user_id
    }

    pub fn lines(&self) -> &[OrderLine] {
        &self.lines
    }

    pub fn total(&self) -> Option<&Money> {
        self.total.as_ref()
    }

    pub fn payment_token(&self) -> Option<&str> {
        self.payment_token.as_deref()
    }

    pub fn payment_id(&self) -> Option<Uuid> {
        self.payment_id
    }

    pub fn status(&self) -> OrderStatus {
        self.status
    }

    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.cancel_reason
    }

    fn ensure_exists(&self) -> Result<(), OrderError> {
        if self.exists() {
            Ok(())
        } else {
            Err(OrderError::NotFound)
        }
    }

    fn transition(&self, allowed: bool, to: OrderStatus) -> Result<(), OrderError> {
        if allowed {
            Ok(())
        } else {
            Err(OrderError::InvalidTransition {
                from: self.status,
                to,
            })
        }
    }
}

/// Checks the lines and returns the order total.
fn validate_lines(lines: &[OrderLine]) -> Result<Money, OrderError> {
    let Some(first) = lines.first() else {
        return Err(OrderError::NoLines);
    };
    if lines.len() > MAX_LINES {
        return Err(OrderError::TooManyLines);
    }
    let mut seen = BTreeSet::new();
    for line in lines {
        let product_id = line.product_id;
        if !(Quantity::MIN..=Quantity::MAX).contains(&line.quantity) {
            return Err(OrderError::InvalidQuantity { product_id });
        }
        if line.unit_price.amount <= 0 {
            return Err(OrderError::InvalidUnitPrice { product_id });
        }
        if !seen.insert(product_id) {
            return Err(OrderError::DuplicateLine { product_id });
        }
        if line.unit_price.currency != first.unit_price.currency {
            return Err(OrderError::CurrencyMismatch);
        }
    }
    let zero = Money::new(0, first.unit_price.currency.clone());
    lines.iter().try_fold(zero, |total, line| {
        line.unit_price
            .checked_mul(line.quantity)
            .and_then(|subtotal| total.checked_add(&subtotal))
            .ok_or(OrderError::TotalOverflow)
    })
}

impl Aggregate for Order {
    const TYPE: &'static str = "order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if !matches!(command, OrderCommand::Place { .. }) {
            self.ensure_exists()?;
        }
        match command {
            OrderCommand::Place {
                order_id,
                user_id,
                lines,
                payment_token,
                cart_id,
                shipping_address,
            } => {
                if self.exists() {
                    return Err(OrderError::AlreadyExists);
                }
                let total = validate_lines(&lines)?;
                let event = OrderEvent::OrderPlaced {
                    order_id,
                    user_id,
                    lines,
                    total,
                    payment_token,
                    cart_id,
                    shipping_address,
                };
                sink.write(event, self).await;
            }
            OrderCommand::AssignPayment { payment_id } => {
                // Checked before the status so a saga retry after the order
                // moved on still succeeds quietly.
                if self.payment_id == Some(payment_id) {
                    return Ok(());
                }
                // `to: Pending` names the status this command requires.
                self.transition(self.status == OrderStatus::Pending, OrderStatus::Pending)?;
                if self.payment_id.is_some() {
                    return Err(OrderError::PaymentAlreadyAssigned);
                }
                sink.write(OrderEvent::OrderPaymentAssigned { payment_id }, self)
                    .await;
            }
            OrderCommand::Confirm => {
                self.transition(self.status == OrderStatus::Pending, OrderStatus::Confirmed)?;
                sink.write(OrderEvent::OrderConfirmed {}, self).await;
            }
            OrderCommand::Ship => {
                self.transition(self.status == OrderStatus::Confirmed, OrderStatus::Shipped)?;
                sink.write(OrderEvent::OrderShipped {}, self).await;
            }
            OrderCommand::Cancel { reason, note } => {
                self.transition(reason.allowed_from(self.status), OrderStatus::Cancelled)?;
                let event = OrderEvent::OrderCancelled {
                    reason,
                    previous_status: self.status,
                    note,
                };
                sink.write(event, self).await;
            }
            OrderCommand::Refund => {
                let event = match self.status {
                    OrderStatus::Confirmed => OrderEvent::OrderCancelled {
                        reason: CancelReason::Refunded,
                        previous_status: OrderStatus::Confirmed,
                        note: None,
                    },
                    OrderStatus::Shipped => OrderEvent::OrderRefunded {},
                    from => {
                        return Err(OrderError::InvalidTransition {
                            from,
                            to: OrderStatus::Refunded,
                        })
                    }
                };
                sink.write(event, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            OrderEvent::OrderPlaced {
                order_id,
                user_id,
                lines,
                total,
                payment_token,
                cart_id,
                shipping_address,
            } => {
                self.id = Some(order_id);
                self.cart_id = cart_id;
                self.shipping_address = shipping_address;
                self.user_id = Some(user_id);
                self.lines = lines;
                self.total = Some(total);
                self.payment_token = Some(payment_token);
                self.status = OrderStatus::Pending;
            }
            OrderEvent::OrderPaymentAssigned { payment_id } => self.payment_id = Some(payment_id),
            OrderEvent::OrderConfirmed {} => self.status = OrderStatus::Confirmed,
            OrderEvent::OrderShipped {} => self.status = OrderStatus::Shipped,
            // Before `OrderRefunded` existed, refunding a shipped order
            // stored this cancellation; it meant what `OrderRefunded` means.
            OrderEvent::OrderCancelled {
                reason: CancelReason::Refunded,
                previous_status: OrderStatus::Shipped,
                ..
            } => self.status = OrderStatus::Refunded,
            OrderEvent::OrderCancelled { reason, note, .. } => {
                self.status = OrderStatus::Cancelled;
                self.cancel_reason = Some(reason);
                self.cancel_note = note;
            }
            OrderEvent::OrderRefunded {} => self.status = OrderStatus::Refunded,
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

    type OrderTest = TestFramework<Order>;

    fn order_id() -> Uuid {
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0020)
    }

    fn user_id() -> Uuid {
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001)
    }

    fn product(n: u128) -> Uuid {
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_1000 + n)
    }

    fn payment_id() -> Uuid {
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0030)
    }

    fn other_payment_id() -> Uuid {
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0031)
    }

    fn money(amount: i64, currency: &str) -> Money {
        Money::new(amount, Currency::parse(currency).unwrap())
    }

    fn line(n: u128, quantity: u32, unit_price: i64) -> OrderLine {
        OrderLine {
            product_id: product(n),
            quantity,
            unit_price: money(unit_price, "EUR"),
        }
    }

    fn place(lines: Vec<OrderLine>) -> OrderCommand {
        OrderCommand::Place {
            order_id: order_id(),
            user_id: user_id(),
            lines,
            payment_token: "tok_visa".to_string(),
            cart_id: None,
            shipping_address: None,
        }
    }

    fn placed() -> OrderEvent {
        OrderEvent::OrderPlaced {
            order_id: order_id(),
            user_id: user_id(),
            lines: vec![line(1, 2, 1999), line(2, 1, 500)],
            total: money(4498, "EUR"),
            payment_token: "tok_visa".to_string(),
            cart_id: None,
            shipping_address: None,
        }
    }

    fn payment_assigned() -> OrderEvent {
        OrderEvent::OrderPaymentAssigned {
            payment_id: payment_id(),
        }
    }

    fn confirmed() -> OrderEvent {
        OrderEvent::OrderConfirmed {}
    }

    fn shipped() -> OrderEvent {
        OrderEvent::OrderShipped {}
    }

    fn cancelled(reason: CancelReason, previous_status: OrderStatus) -> OrderEvent {
        OrderEvent::OrderCancelled {
            reason,
            previous_status,
            note: None,
        }
    }

    fn history(status: OrderStatus) -> Vec<OrderEvent> {
        match status {
            OrderStatus::Pending => vec![placed()],
            OrderStatus::Confirmed => vec![placed(), confirmed()],
            OrderStatus::Shipped => vec![placed(), confirmed(), shipped()],
            OrderStatus::Cancelled => vec![
                placed(),
                cancelled(CancelReason::CustomerRequest, OrderStatus::Pending),
            ],
            OrderStatus::Refunded => vec![placed(), confirmed(), shipped(), refunded()],
        }
    }

    fn invalid(from: OrderStatus, to: OrderStatus) -> OrderError {
        OrderError::InvalidTransition { from, to }
    }

    fn refunded() -> OrderEvent {
        OrderEvent::OrderRefunded {}
    }

    const ALL_STATUSES: [OrderStatus; 5] = [
        OrderStatus::Pending,
        OrderStatus::Confirmed,
        OrderStatus::Shipped,
        OrderStatus::Cancelled,
        OrderStatus::Refunded,
    ];

    // --- Place ---

    #[test]
    fn place_computes_the_total() {
        OrderTest::with(())
            .given_no_previous_events()
            .when(place(vec![line(1, 2, 1999), line(2, 1, 500)]))
            .then_expect_events(vec![placed()]);
    }

    #[test]
    fn place_twice_is_refused() {
        OrderTest::with(())
            .given(vec![placed()])
            .when(place(vec![line(1, 1, 100)]))
            .then_expect_error(OrderError::AlreadyExists);
    }

    #[test]
    fn place_without_lines_is_refused() {
        OrderTest::with(())
            .given_no_previous_events()
            .when(place(vec![]))
            .then_expect_error(OrderError::NoLines);
    }

    #[test]
    fn place_accepts_up_to_50_lines_and_refuses_more() {
        let lines = |n: u128| (0..n).map(|i| line(i, 1, 100)).collect::<Vec<_>>();
        OrderTest::with(())
            .given_no_previous_events()
            .when(place(lines(50)))
            .inspect_result()
            .unwrap();
        OrderTest::with(())
            .given_no_previous_events()
            .when(place(lines(51)))
            .then_expect_error(OrderError::TooManyLines);
    }

    #[test]
    fn place_refuses_quantities_outside_1_to_1000() {
        for quantity in [0, 1001, u32::MAX] {
            OrderTest::with(())
                .given_no_previous_events()
                .when(place(vec![line(1, 1, 100), line(2, quantity, 100)]))
                .then_expect_error(OrderError::InvalidQuantity {
                    product_id: product(2),
                });
        }
        OrderTest::with(())
            .given_no_previous_events()
            .when(place(vec![line(1, 1000, 100)]))
            .inspect_result()
            .unwrap();
    }

    #[test]
    fn place_refuses_non_positive_unit_prices() {
        for price in [0, -1] {
            OrderTest::with(())
                .given_no_previous_events()
                .when(place(vec![line(1, 1, price)]))
                .then_expect_error(OrderError::InvalidUnitPrice {
                    product_id: product(1),
                });
        }
    }

    #[test]
    fn place_refuses_duplicate_products() {
        OrderTest::with(())
            .given_no_previous_events()
            .when(place(vec![
                line(1, 1, 100),
                line(2, 1, 100),
                line(1, 2, 100),
            ]))
            .then_expect_error(OrderError::DuplicateLine {
                product_id: product(1),
            });
    }

    #[test]
    fn place_refuses_mixed_currencies() {
        let usd_line = OrderLine {
            product_id: product(2),
            quantity: 1,
            unit_price: money(100, "USD"),
        };
        OrderTest::with(())
            .given_no_previous_events()
            .when(place(vec![line(1, 1, 100), usd_line]))
            .then_expect_error(OrderError::CurrencyMismatch);
    }

    #[test]
    fn place_refuses_a_total_that_overflows() {
        OrderTest::with(())
            .given_no_previous_events()
            .when(place(vec![line(1, 2, i64::MAX)]))
            .then_expect_error(OrderError::TotalOverflow);
        OrderTest::with(())
            .given_no_previous_events()
            .when(place(vec![line(1, 1, i64::MAX), line(2, 1, 1)]))
            .then_expect_error(OrderError::TotalOverflow);
    }

    // --- Missing order ---

    #[test]
    fn commands_on_a_missing_order_are_not_found() {
        let commands = vec![
            OrderCommand::AssignPayment {
                payment_id: payment_id(),
            },
            OrderCommand::Confirm,
            OrderCommand::Ship,
            OrderCommand::Cancel {
                reason: CancelReason::CustomerRequest,
                note: None,
            },
        ];
        for command in commands {
            OrderTest::with(())
                .given_no_previous_events()
                .when(command)
                .then_expect_error(OrderError::NotFound);
        }
    }

    // --- AssignPayment ---

    #[test]
    fn assign_payment_to_a_pending_order() {
        OrderTest::with(())
            .given(vec![placed()])
            .when(OrderCommand::AssignPayment {
                payment_id: payment_id(),
            })
            .then_expect_events(vec![payment_assigned()]);
    }

    #[test]
    fn assign_the_same_payment_again_is_a_no_op() {
        OrderTest::with(())
            .given(vec![placed(), payment_assigned()])
            .when(OrderCommand::AssignPayment {
                payment_id: payment_id(),
            })
            .then_expect_events(vec![]);
        OrderTest::with(())
            .given(vec![placed(), payment_assigned(), confirmed()])
            .when(OrderCommand::AssignPayment {
                payment_id: payment_id(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn assign_a_different_payment_is_refused() {
        OrderTest::with(())
            .given(vec![placed(), payment_assigned()])
            .when(OrderCommand::AssignPayment {
                payment_id: other_payment_id(),
            })
            .then_expect_error(OrderError::PaymentAlreadyAssigned);
    }

    #[test]
    fn assign_payment_outside_pending_is_refused() {
        for status in [
            OrderStatus::Confirmed,
            OrderStatus::Shipped,
            OrderStatus::Cancelled,
        ] {
            OrderTest::with(())
                .given(history(status))
                .when(OrderCommand::AssignPayment {
                    payment_id: payment_id(),
                })
                .then_expect_error(invalid(status, OrderStatus::Pending));
        }
    }

    // --- Confirm / Ship ---

    #[test]
    fn confirm_a_pending_order() {
        OrderTest::with(())
            .given(vec![placed(), payment_assigned()])
            .when(OrderCommand::Confirm)
            .then_expect_events(vec![confirmed()]);
    }

    #[test]
    fn confirm_outside_pending_is_refused() {
        for status in [
            OrderStatus::Confirmed,
            OrderStatus::Shipped,
            OrderStatus::Cancelled,
        ] {
            OrderTest::with(())
                .given(history(status))
                .when(OrderCommand::Confirm)
                .then_expect_error(invalid(status, OrderStatus::Confirmed));
        }
    }

    #[test]
    fn ship_a_confirmed_order() {
        OrderTest::with(())
            .given(history(OrderStatus::Confirmed))
            .when(OrderCommand::Ship)
            .then_expect_events(vec![shipped()]);
    }

    #[test]
    fn ship_outside_confirmed_is_refused() {
        for status in [
            OrderStatus::Pending,
            OrderStatus::Shipped,
            OrderStatus::Cancelled,
        ] {
            OrderTest::with(())
                .given(history(status))
                .when(OrderCommand::Ship)
                .then_expect_error(invalid(status, OrderStatus::Shipped));
        }
    }

    // --- Cancel ---

    #[test]
    fn cancel_follows_the_reason_rules() {
        use CancelReason::*;
        use OrderStatus::*;
        let allowed: &[(CancelReason, &[OrderStatus])] = &[
            (CustomerRequest, &[Pending, Confirmed]),
            (OutOfStock, &[Pending]),
            (PaymentDeclined, &[Pending]),
            (PaymentUnavailable, &[Pending]),
            (CancelReason::Refunded, &[Confirmed]),
        ];
        for (reason, from) in allowed {
            for status in ALL_STATUSES {
                let result =
                    OrderTest::with(())
                        .given(history(status))
                        .when(OrderCommand::Cancel {
                            reason: *reason,
                            note: None,
                        });
                if from.contains(&status) {
                    result.then_expect_events(vec![cancelled(*reason, status)]);
                } else {
                    result.then_expect_error(invalid(status, Cancelled));
                }
            }
        }
    }

    // --- Refund ---

    #[test]
    fn refunding_a_confirmed_order_cancels_it() {
        OrderTest::with(())
            .given(history(OrderStatus::Confirmed))
            .when(OrderCommand::Refund)
            .then_expect_events(vec![cancelled(
                CancelReason::Refunded,
                OrderStatus::Confirmed,
            )]);
    }

    #[test]
    fn refunding_a_shipped_order_refunds_it_and_does_not_cancel_it() {
        OrderTest::with(())
            .given(history(OrderStatus::Shipped))
            .when(OrderCommand::Refund)
            .then_expect_events(vec![refunded()]);
        let mut order = Order::default();
        for event in history(OrderStatus::Refunded) {
            order.apply(event);
        }
        assert_eq!(order.status(), OrderStatus::Refunded);
        assert_eq!(order.cancel_reason(), None);
    }

    #[test]
    fn refund_is_refused_outside_confirmed_and_shipped() {
        for status in [
            OrderStatus::Pending,
            OrderStatus::Cancelled,
            OrderStatus::Refunded,
        ] {
            OrderTest::with(())
                .given(history(status))
                .when(OrderCommand::Refund)
                .then_expect_error(invalid(status, OrderStatus::Refunded));
        }
    }

    #[test]
    fn a_refunded_order_takes_no_further_command() {
        for command in [
            OrderCommand::Confirm,
            OrderCommand::Ship,
            OrderCommand::Cancel {
                reason: CancelReason::CustomerRequest,
                note: None,
            },
        ] {
            let result = OrderTest::with(())
                .given(history(OrderStatus::Refunded))
                .when(command)
                .inspect_result();
            assert!(matches!(
                result,
                Err(OrderError::InvalidTransition {
                    from: OrderStatus::Refunded,
                    ..
                })
            ));
        }
    }

    #[test]
    fn a_legacy_refund_of_a_shipped_order_reads_as_refunded() {
        let mut order = Order::default();
        for event in [
            placed(),
            confirmed(),
            shipped(),
            cancelled(CancelReason::Refunded, OrderStatus::Shipped),
        ] {
            order.apply(event);
        }
        assert_eq!(order.status(), OrderStatus::Refunded);
    }

    #[test]
    fn cancel_twice_is_refused() {
        OrderTest::with(())
            .given(history(OrderStatus::Cancelled))
            .when(OrderCommand::Cancel {
                reason: CancelReason::CustomerRequest,
                note: None,
            })
            .then_expect_error(invalid(OrderStatus::Cancelled, OrderStatus::Cancelled));
    }

    // --- State and wire format ---

    #[test]
    fn accessors_reflect_history() {
        let mut order = Order::default();
        assert!(!order.exists());
        for event in [placed(), payment_assigned(), confirmed()] {
            order.apply(event);
        }
        assert_eq!(order.id(), Some(order_id()));
        assert_eq!(order.user_id(), Some(user_id()));
        assert_eq!(order.lines().len(), 2);
        assert_eq!(order.total(), Some(&money(4498, "EUR")));
        assert_eq!(order.payment_token(), Some("tok_visa"));
        assert_eq!(order.payment_id(), Some(payment_id()));
        assert_eq!(order.status(), OrderStatus::Confirmed);
        assert_eq!(order.cancel_reason(), None);
        order.apply(cancelled(CancelReason::Refunded, OrderStatus::Confirmed));
        assert_eq!(order.status(), OrderStatus::Cancelled);
        assert_eq!(order.cancel_reason(), Some(CancelReason::Refunded));
    }

    #[test]
    fn wire_format() {
        let event = cancelled(CancelReason::OutOfStock, OrderStatus::Pending);
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"OrderCancelled":{"reason":"out_of_stock","previous_status":"pending"}}"#
        );
        assert_eq!(event.event_type(), "OrderCancelled");
        assert_eq!(placed().event_version(), crate::PERSONAL_DATA_VERSION);
        for reason in [
            CancelReason::OutOfStock,
            CancelReason::PaymentDeclined,
            CancelReason::PaymentUnavailable,
            CancelReason::CustomerRequest,
            CancelReason::Refunded,
        ] {
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
        }
        for status in ALL_STATUSES {
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{status}\""));
        }
    }

    #[test]
    fn error_messages_and_rules() {
        let err = invalid(OrderStatus::Pending, OrderStatus::Shipped);
        assert_eq!(err.to_string(), "cannot go from pending to shipped");
        assert_eq!(err.kind(), RefusalKind::InvalidTransition);
        assert_eq!(
            OrderError::PaymentAlreadyAssigned.kind(),
            RefusalKind::InvalidTransition
        );
        assert_eq!(OrderError::AlreadyExists.kind(), RefusalKind::AlreadyExists);
        assert_eq!(OrderError::NotFound.kind(), RefusalKind::NotFound);
        assert_eq!(
            OrderError::CurrencyMismatch.kind(),
            RefusalKind::CurrencyMismatch
        );
        let p = product(1);
        for e in [
            OrderError::NoLines,
            OrderError::TooManyLines,
            OrderError::InvalidQuantity { product_id: p },
            OrderError::InvalidUnitPrice { product_id: p },
            OrderError::DuplicateLine { product_id: p },
            OrderError::TotalOverflow,
        ] {
            assert_eq!(e.kind(), RefusalKind::Invalid);
        }
    }
}
