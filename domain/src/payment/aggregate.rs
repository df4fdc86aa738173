use std::fmt;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{PaymentCommand, PaymentError, PaymentEvent};
use crate::values::Money;

#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    #[default]
    Pending,
    Authorized,
    Captured,
    Refunded,
    Declined,
    Failed,
}

impl PaymentStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Authorized => "authorized",
            Self::Captured => "captured",
            Self::Refunded => "refunded",
            Self::Declined => "declined",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    id: Option<Uuid>,
    order_id: Option<Uuid>,
    amount: Option<Money>,
    token: Option<String>,
    status: PaymentStatus,
    attempts: u32,
    authorization_id: Option<String>,
    last_error: Option<String>,
}

impl Payment {
    pub fn id(&self) -> Option<Uuid> {
        self.id
    }

    pub fn exists(&self) -> bool {
        self.id.is_some()
    }

    pub fn order_id(&self) -> Option<Uuid> {
        self.order_id
    }

    pub fn amount(&self) -> Option<&Money> {
        self.amount.as_ref()
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub fn status(&self) -> PaymentStatus {
        self.status
    }

    /// Gateway calls made so far, successful or not.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    pub fn authorization_id(&self) -> Option<&str> {
        self.authorization_id.as_deref()
    }

    /// The most recent gateway error, decline or failure reason.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    fn transition(&self, from: PaymentStatus, to: PaymentStatus) -> Result<(), PaymentError> {
        if !self.exists() {
            return Err(PaymentError::NotFound);
        }
        if self.status != from {
            return Err(PaymentError::InvalidTransition {
                from: self.status,
                to,
            });
        }
        Ok(())
    }
}

impl Aggregate for Payment {
    const TYPE: &'static str = "payment";
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type Error = PaymentError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        use PaymentStatus::{Authorized, Captured, Declined, Failed, Pending, Refunded};
        let event = match command {
            PaymentCommand::Request {
                payment_id,
                order_id,
                amount,
                token,
            } => {
                if self.exists() {
                    return Err(PaymentError::AlreadyExists);
                }
                if amount.amount <= 0 {
                    return Err(PaymentError::InvalidAmount);
                }
                PaymentEvent::PaymentRequested {
                    payment_id,
                    order_id,
                    amount,
                    token,
                }
            }
            PaymentCommand::RecordFailedAttempt { error } => {
                self.transition(Pending, Pending)?;
                PaymentEvent::PaymentAttemptFailed { error }
            }
            PaymentCommand::Authorize { authorization_id } => {
                self.transition(Pending, Authorized)?;
                PaymentEvent::PaymentAuthorized { authorization_id }
            }
            PaymentCommand::Decline { reason } => {
                self.transition(Pending, Declined)?;
                PaymentEvent::PaymentDeclined { reason }
            }
            PaymentCommand::Fail { reason } => {
                self.transition(Pending, Failed)?;
                PaymentEvent::PaymentFailed { reason }
            }
            PaymentCommand::Capture => {
                self.transition(Authorized, Captured)?;
                PaymentEvent::PaymentCaptured {}
            }
            PaymentCommand::Refund => {
                self.transition(Captured, Refunded)?;
                PaymentEvent::PaymentRefunded {}
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            PaymentEvent::PaymentRequested {
                payment_id,
                order_id,
                amount,
                token,
            } => {
                self.id = Some(payment_id);
                self.order_id = Some(order_id);
                self.amount = Some(amount);
                self.token = Some(token);
                self.status = PaymentStatus::Pending;
            }
            PaymentEvent::PaymentAttemptFailed { error } => {
                self.attempts = self.attempts.saturating_add(1);
                self.last_error = Some(error);
            }
            PaymentEvent::PaymentAuthorized { authorization_id } => {
                self.attempts = self.attempts.saturating_add(1);
                self.authorization_id = Some(authorization_id);
                self.status = PaymentStatus::Authorized;
            }
            PaymentEvent::PaymentDeclined { reason } => {
                self.attempts = self.attempts.saturating_add(1);
                self.last_error = Some(reason);
                self.status = PaymentStatus::Declined;
            }
            PaymentEvent::PaymentFailed { reason } => {
                self.attempts = self.attempts.saturating_add(1);
                self.last_error = Some(reason);
                self.status = PaymentStatus::Failed;
            }
            PaymentEvent::PaymentCaptured {} => self.status = PaymentStatus::Captured,
            PaymentEvent::PaymentRefunded {} => self.status = PaymentStatus::Refunded,
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

    type PaymentTest = TestFramework<Payment>;

    const ALL_STATUSES: [PaymentStatus; 6] = [
        PaymentStatus::Pending,
        PaymentStatus::Authorized,
        PaymentStatus::Captured,
        PaymentStatus::Refunded,
        PaymentStatus::Declined,
        PaymentStatus::Failed,
    ];

    fn payment_id() -> Uuid {
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0030)
    }

    fn order_id() -> Uuid {
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0020)
    }

    fn eur(amount: i64) -> Money {
        Money::new(amount, Currency::parse("EUR").unwrap())
    }

    fn request(amount: i64) -> PaymentCommand {
        PaymentCommand::Request {
            payment_id: payment_id(),
            order_id: order_id(),
            amount: eur(amount),
            token: "tok_visa".to_string(),
        }
    }

    fn requested() -> PaymentEvent {
        PaymentEvent::PaymentRequested {
            payment_id: payment_id(),
            order_id: order_id(),
            amount: eur(4498),
            token: "tok_visa".to_string(),
        }
    }

    fn attempt_failed() -> PaymentEvent {
        PaymentEvent::PaymentAttemptFailed {
            error: "gateway timeout".to_string(),
        }
    }

    fn authorized() -> PaymentEvent {
        PaymentEvent::PaymentAuthorized {
            authorization_id: "auth_123".to_string(),
        }
    }

    fn declined() -> PaymentEvent {
        PaymentEvent::PaymentDeclined {
            reason: "insufficient funds".to_string(),
        }
    }

    fn failed() -> PaymentEvent {
        PaymentEvent::PaymentFailed {
            reason: "retries exhausted".to_string(),
        }
    }

    fn history(status: PaymentStatus) -> Vec<PaymentEvent> {
        match status {
            PaymentStatus::Pending => vec![requested()],
            PaymentStatus::Authorized => vec![requested(), authorized()],
            PaymentStatus::Captured => {
                vec![requested(), authorized(), PaymentEvent::PaymentCaptured {}]
            }
            PaymentStatus::Refunded => vec![
                requested(),
                authorized(),
                PaymentEvent::PaymentCaptured {},
                PaymentEvent::PaymentRefunded {},
            ],
            PaymentStatus::Declined => vec![requested(), declined()],
            PaymentStatus::Failed => vec![requested(), failed()],
        }
    }

    /// Every non-Request command with the status it needs and the event it
    /// produces.
    fn transitions() -> Vec<(PaymentCommand, PaymentStatus, PaymentStatus, PaymentEvent)> {
        use PaymentStatus::*;
        vec![
            (
                PaymentCommand::RecordFailedAttempt {
                    error: "gateway timeout".to_string(),
                },
                Pending,
                Pending,
                attempt_failed(),
            ),
            (
                PaymentCommand::Authorize {
                    authorization_id: "auth_123".to_string(),
                },
                Pending,
                Authorized,
                authorized(),
            ),
            (
                PaymentCommand::Decline {
                    reason: "insufficient funds".to_string(),
                },
                Pending,
                Declined,
                declined(),
            ),
            (
                PaymentCommand::Fail {
                    reason: "retries exhausted".to_string(),
                },
                Pending,
                Failed,
                failed(),
            ),
            (
                PaymentCommand::Capture,
                Authorized,
                Captured,
                PaymentEvent::PaymentCaptured {},
            ),
            (
                PaymentCommand::Refund,
                Captured,
                Refunded,
                PaymentEvent::PaymentRefunded {},
            ),
        ]
    }

    #[test]
    fn request_creates_the_payment() {
        PaymentTest::with(())
            .given_no_previous_events()
            .when(request(4498))
            .then_expect_events(vec![requested()]);
    }

    #[test]
    fn request_twice_is_refused() {
        PaymentTest::with(())
            .given(vec![requested()])
            .when(request(4498))
            .then_expect_error(PaymentError::AlreadyExists);
    }

    #[test]
    fn request_with_non_positive_amount_is_refused() {
        for amount in [0, -1] {
            PaymentTest::with(())
                .given_no_previous_events()
                .when(request(amount))
                .then_expect_error(PaymentError::InvalidAmount);
        }
    }

    #[test]
    fn commands_on_a_missing_payment_are_not_found() {
        for (command, ..) in transitions() {
            PaymentTest::with(())
                .given_no_previous_events()
                .when(command)
                .then_expect_error(PaymentError::NotFound);
        }
    }

    #[test]
    fn each_command_succeeds_from_its_status() {
        for (command, from, _, event) in transitions() {
            PaymentTest::with(())
                .given(history(from))
                .when(command)
                .then_expect_events(vec![event]);
        }
    }

    #[test]
    fn each_command_is_refused_from_any_other_status() {
        for (command, from, to, _) in transitions() {
            for status in ALL_STATUSES.into_iter().filter(|s| *s != from) {
                PaymentTest::with(())
                    .given(history(status))
                    .when(command.clone())
                    .then_expect_error(PaymentError::InvalidTransition { from: status, to });
            }
        }
    }

    #[test]
    fn failed_attempts_keep_the_payment_pending() {
        PaymentTest::with(())
            .given(vec![requested(), attempt_failed(), attempt_failed()])
            .when(PaymentCommand::Authorize {
                authorization_id: "auth_123".to_string(),
            })
            .then_expect_events(vec![authorized()]);
    }

    #[test]
    fn capture_twice_is_refused() {
        PaymentTest::with(())
            .given(history(PaymentStatus::Captured))
            .when(PaymentCommand::Capture)
            .then_expect_error(PaymentError::InvalidTransition {
                from: PaymentStatus::Captured,
                to: PaymentStatus::Captured,
            });
    }

    #[test]
    fn attempts_count_every_gateway_call() {
        let state = |events: Vec<PaymentEvent>| {
            let mut payment = Payment::default();
            for event in events {
                payment.apply(event);
            }
            payment
        };
        let p = state(vec![requested()]);
        assert_eq!((p.attempts(), p.status()), (0, PaymentStatus::Pending));
        let p = state(vec![
            requested(),
            attempt_failed(),
            attempt_failed(),
            authorized(),
            PaymentEvent::PaymentCaptured {},
        ]);
        assert_eq!(p.attempts(), 3);
        assert_eq!(p.status(), PaymentStatus::Captured);
        assert_eq!(p.authorization_id(), Some("auth_123"));
        assert_eq!(p.last_error(), Some("gateway timeout"));
        assert_eq!(p.id(), Some(payment_id()));
        assert!(p.exists());
        assert_eq!(p.order_id(), Some(order_id()));
        assert_eq!(p.amount(), Some(&eur(4498)));
        assert_eq!(p.token(), Some("tok_visa"));
        let p = state(vec![requested(), attempt_failed(), declined()]);
        assert_eq!(
            (p.attempts(), p.last_error()),
            (2, Some("insufficient funds"))
        );
        let p = state(vec![requested(), failed()]);
        assert_eq!((p.attempts(), p.status()), (1, PaymentStatus::Failed));
    }

    #[test]
    fn wire_format_messages_and_rules() {
        assert_eq!(
            serde_json::to_string(&PaymentEvent::PaymentCaptured {}).unwrap(),
            r#"{"PaymentCaptured":{}}"#
        );
        assert_eq!(requested().event_type(), "PaymentRequested");
        assert_eq!(requested().event_version(), crate::PERSONAL_DATA_VERSION);
        for status in ALL_STATUSES {
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{status}\""));
        }
        let err = PaymentError::InvalidTransition {
            from: PaymentStatus::Pending,
            to: PaymentStatus::Captured,
        };
        assert_eq!(err.to_string(), "cannot go from pending to captured");
        assert_eq!(err.kind(), RefusalKind::InvalidTransition);
        assert_eq!(
            PaymentError::AlreadyExists.kind(),
            RefusalKind::AlreadyExists
        );
        assert_eq!(PaymentError::NotFound.kind(), RefusalKind::NotFound);
        assert_eq!(PaymentError::InvalidAmount.kind(), RefusalKind::Invalid);
    }
}
