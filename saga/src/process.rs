//! One step of one order: look at the aggregates, do what comes next, say
//! when to look again.
//!
//! The aggregates are the truth about how far an order got, so a step
//! always starts by reading them and never trusts a remembered stage: a step
//! re-run after a crash finds the work already done and moves on. Every
//! command it sends is idempotent (reservations are keyed by order, the
//! payment id is chosen before the payment exists, gateway calls carry an
//! idempotency key), so re-running a step changes nothing in effect.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use commands::{Aggregates, CommandError, CommandMetadata, StoreError};
use domain::order::{CancelReason, Order, OrderCommand, OrderLine, OrderStatus};
use domain::payment::{Payment, PaymentCommand, PaymentError, PaymentStatus};
use domain::product::{ProductCommand, ProductError, ReservationState};
use futures::future::try_join_all;
use sqlx::PgPool;
use uuid::Uuid;

use crate::breaker::Breaker;
use crate::client::{record_rejected, ChargeOutcome, GatewayClient, RefundOutcome};
use crate::store::{self, Claimed, Next};
use crate::SagaOptions;

/// Why a step could not finish; the row is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Command(String),
    /// Another process took the row over (this one was too slow): stop.
    #[error("the lease on the order was lost")]
    LeaseLost,
}

fn failed<E: std::error::Error>(what: &str, err: CommandError<E>) -> StepError {
    match err {
        CommandError::Store(err) => StepError::Store(err),
        other => StepError::Command(format!("{what}: {other}")),
    }
}

/// What a step asks for next.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// Something changed: look again now.
    Again,
    Done,
    Wait(DateTime<Utc>),
}

/// The state of one claimed row while it is stepped.
struct Ctx {
    row: Claimed,
    failures: i32,
    error: Option<String>,
    metadata: CommandMetadata,
}

fn count(step: &'static str, outcome: &'static str) {
    metrics::counter!("agora_saga_steps_total", "step" => step, "outcome" => outcome).increment(1);
}

/// Steps at most this many times in one claim before handing the row back:
/// a bound, should two writers keep undoing each other.
const STEPS_PER_CLAIM: usize = 16;

pub(crate) struct Process {
    pub(crate) pool: PgPool,
    pub(crate) aggregates: Aggregates,
    pub(crate) client: GatewayClient,
    pub(crate) breaker: Breaker,
    pub(crate) options: SagaOptions,
    pub(crate) owner: Uuid,
}

impl Process {
    /// Steps a claimed row until it must wait or is done, then records that.
    pub(crate) async fn run(&self, row: Claimed) {
        let metadata = CommandMetadata {
            correlation_id: row
                .correlation_id
                .clone()
                .unwrap_or_else(|| row.order_id.to_string()),
            causation_id: format!("saga:{}", row.order_id),
            actor: "saga".to_owned(),
            time: Utc::now(),
            // Continue the placing request's trace when it came with one.
            traceparent: row
                .traceparent
                .as_deref()
                .and_then(|t| t.parse::<schemas::TraceParent>().ok())
                .map_or_else(schemas::TraceParent::new_root, |t| t.child()),
        };
        let mut ctx = Ctx {
            failures: row.failures,
            row,
            error: None,
            metadata,
        };
        let mut next = Next::At(Utc::now());
        for _ in 0..STEPS_PER_CLAIM {
            ctx.metadata.time = Utc::now();
            match self.advance(&mut ctx).await {
                Ok(Step::Again) => continue,
                Ok(Step::Done) => {
                    next = Next::Done;
                    break;
                }
                Ok(Step::Wait(at)) => {
                    next = Next::At(at);
                    break;
                }
                Err(StepError::LeaseLost) => {
                    tracing::warn!(order_id = %ctx.row.order_id, "lost the lease on an order; another saga process has it");
                    return;
                }
                Err(error) => {
                    ctx.failures += 1;
                    let delay = self.backoff(ctx.failures);
                    tracing::warn!(order_id = %ctx.row.order_id, correlation_id = %ctx.metadata.correlation_id, %error, ?delay, "saga step failed; retrying");
                    count("step", "error");
                    ctx.error = Some(error.to_string());
                    next = Next::At(Utc::now() + delay);
                    break;
                }
            }
        }
        match store::finish(
            &self.pool,
            self.owner,
            &ctx.row,
            &next,
            ctx.failures,
            ctx.error.as_deref(),
        )
        .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(order_id = %ctx.row.order_id, "lost the lease before recording the step")
            }
            // The lease runs out and the row is stepped again: harmless.
            Err(error) => {
                tracing::error!(order_id = %ctx.row.order_id, %error, "cannot record a saga step")
            }
        }
    }

    pub(crate) fn backoff(&self, failures: i32) -> Duration {
        retry_delay(self.options.retry_base, self.options.retry_max, failures)
    }

    async fn advance(&self, ctx: &mut Ctx) -> Result<Step, StepError> {
        let order_id = ctx.row.order_id.to_string();
        let order = self.aggregates.orders.load_stored(&order_id).await?;
        let order = order.aggregate;
        if !order.exists() {
            // The row comes from a published event, so its order was
            // committed: only a foreign database would get here.
            tracing::error!(
                order_id,
                "the saga has a row for an order that does not exist"
            );
            return Ok(Step::Done);
        }
        match order.status() {
            OrderStatus::Pending => self.forward(ctx, &order).await,
            // A refunded order keeps its stock: the goods are with the customer.
            OrderStatus::Confirmed | OrderStatus::Shipped | OrderStatus::Refunded => {
                self.settle(ctx, &order, false).await
            }
            OrderStatus::Cancelled => {
                if !ctx.row.stock_given_back {
                    self.give_back_stock(ctx, &order).await?;
                    self.record_stock_given_back(ctx).await?;
                }
                self.settle(ctx, &order, true).await
            }
        }
    }

    // ---- the way forward: reserve, pay, confirm ----

    async fn forward(&self, ctx: &mut Ctx, order: &Order) -> Result<Step, StepError> {
        let held = self.reserve(ctx, order.lines()).await?;
        if held.len() < order.lines().len() {
            count("reserve", "refused");
            // A refused line holds nothing to release: in a flash sale that
            // is every line of every order but the first thousand, each a
            // command on the one hot product.
            return self.abandon(ctx, &held, CancelReason::OutOfStock).await;
        }
        count("reserve", "ok");
        let payment_id = self.payment_id(ctx).await?;
        let payment = self.request_payment(ctx, order, payment_id).await?;
        if order.payment_id() != Some(payment_id) {
            let command = OrderCommand::AssignPayment { payment_id };
            match self.execute_order(ctx, command).await {
                Ok(_) => {}
                // The order moved on (a cancellation): look again.
                Err(CommandError::Rejected(_)) => return Ok(Step::Again),
                Err(err) => return Err(failed("assign the payment", err)),
            }
        }
        match payment.status() {
            PaymentStatus::Pending => self.charge(ctx, order, &payment, payment_id).await,
            PaymentStatus::Authorized => self.capture(ctx, order, payment_id).await,
            PaymentStatus::Captured => self.confirm(ctx, order).await,
            PaymentStatus::Declined => {
                self.abandon(ctx, order.lines(), CancelReason::PaymentDeclined)
                    .await
            }
            PaymentStatus::Failed => {
                self.abandon(ctx, order.lines(), CancelReason::PaymentUnavailable)
                    .await
            }
            PaymentStatus::Refunded => Err(StepError::Command(format!(
                "payment {payment_id} is refunded while its order is pending"
            ))),
        }
    }

    /// Reserves every line and returns the lines held; a line is not held
    /// when its product refused (or had released this order's reservation
    /// before, which a re-run must also treat as a refusal: the release was
    /// the first run's answer).
    async fn reserve(&self, ctx: &Ctx, lines: &[OrderLine]) -> Result<Vec<OrderLine>, StepError> {
        let order_id = ctx.row.order_id;
        let held = try_join_all(lines.iter().map(|line| async move {
            let command = ProductCommand::ReserveStock {
                order_id,
                quantity: line.quantity,
            };
            match self
                .aggregates
                .products
                .execute(&line.product_id.to_string(), command, None, &ctx.metadata)
                .await
            {
                Ok(done) => Ok(matches!(
                    done.aggregate.reservation(order_id).map(|r| r.state),
                    Some(ReservationState::Held | ReservationState::Committed)
                )),
                Err(CommandError::Rejected(_)) => Ok(false),
                Err(err) => Err(failed("reserve stock", err)),
            }
        }))
        .await?;
        Ok(lines
            .iter()
            .zip(held)
            .filter(|(_, held)| *held)
            .map(|(line, _)| line.clone())
            .collect())
    }

    async fn payment_id(&self, ctx: &mut Ctx) -> Result<Uuid, StepError> {
        if let Some(id) = ctx.row.payment_id {
            return Ok(id);
        }
        let id = store::choose_payment_id(&self.pool, ctx.row.order_id, self.owner, Uuid::now_v7())
            .await?
            .ok_or(StepError::LeaseLost)?;
        ctx.row.payment_id = Some(id);
        Ok(id)
    }

    async fn request_payment(
        &self,
        ctx: &Ctx,
        order: &Order,
        payment_id: Uuid,
    ) -> Result<Payment, StepError> {
        let id = payment_id.to_string();
        let stored = self.aggregates.payments.load_stored(&id).await?;
        if stored.aggregate.exists() {
            return Ok(stored.aggregate);
        }
        let amount = order
            .total()
            .cloned()
            .ok_or_else(|| StepError::Command("the order has no total".to_owned()))?;
        let command = PaymentCommand::Request {
            payment_id,
            order_id: ctx.row.order_id,
            amount,
            token: order.payment_token().unwrap_or_default().to_owned(),
        };
        match self
            .aggregates
            .payments
            .execute_new(&id, command, &ctx.metadata)
            .await
        {
            Ok(done) => {
                count("request_payment", "ok");
                Ok(done.aggregate)
            }
            Err(CommandError::Rejected(PaymentError::AlreadyExists)) => {
                Ok(self.aggregates.payments.load_stored(&id).await?.aggregate)
            }
            Err(err) => Err(failed("request the payment", err)),
        }
    }

    /// The payment deadline: `payment_deadline` after the order's first
    /// charge attempt; before that attempt, as if it were made now.
    fn deadline(&self, ctx: &Ctx) -> DateTime<Utc> {
        let deadline = chrono::Duration::from_std(self.options.payment_deadline)
            .unwrap_or(chrono::Duration::MAX);
        ctx.row
            .charging_since
            .unwrap_or_else(Utc::now)
            .checked_add_signed(deadline)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    async fn charge(
        &self,
        ctx: &mut Ctx,
        order: &Order,
        payment: &Payment,
        payment_id: Uuid,
    ) -> Result<Step, StepError> {
        if ctx.row.charging_since.is_some() && Utc::now() >= self.deadline(ctx) {
            let reason = "the payment gateway stayed unavailable past the deadline".to_owned();
            match self
                .execute_payment(ctx, payment_id, PaymentCommand::Fail { reason })
                .await
            {
                Ok(()) | Err(CommandError::Rejected(_)) => {}
                Err(err) => return Err(failed("fail the payment", err)),
            }
            count("charge", "deadline");
            return Ok(Step::Again);
        }
        let (amount, currency) = match payment.amount() {
            Some(money) => (money.amount, money.currency.as_str().to_owned()),
            None => return Err(StepError::Command("the payment has no amount".to_owned())),
        };
        let token = payment.token().unwrap_or_default();
        let permit = match self.breaker.try_acquire() {
            Ok(permit) => permit,
            Err(refused) => {
                record_rejected("charge");
                count("charge", "circuit_open");
                if ctx.row.charging_since.is_none() {
                    ctx.row.charging_since =
                        store::charging(&self.pool, ctx.row.order_id, self.owner)
                            .await?
                            .ok_or(StepError::LeaseLost)
                            .map(Some)?;
                }
                let wait = refused
                    .retry_at
                    .saturating_duration_since(tokio::time::Instant::now());
                return Ok(Step::Wait(later(wait).min(self.deadline(ctx))));
            }
        };
        // Nothing was sent if this fails: the breaker gets no verdict.
        match store::start_charge(&self.pool, ctx.row.order_id, self.owner, self.options.lease)
            .await
        {
            Ok(Some(since)) => ctx.row.charging_since = Some(since),
            Ok(None) => {
                permit.abandon();
                return Err(StepError::LeaseLost);
            }
            Err(err) => {
                permit.abandon();
                return Err(err.into());
            }
        }
        if ctx.row.charge_attempts > 0 {
            metrics::counter!("agora_gateway_retries_total", "operation" => "charge").increment(1);
        }
        ctx.row.charge_attempts += 1;
        match self
            .client
            .charge(payment_id, amount, &currency, token)
            .await
        {
            Ok(ChargeOutcome::Approved { charge_id }) => {
                permit.succeeded();
                ctx.failures = 0;
                count("charge", "approved");
                let command = PaymentCommand::Authorize {
                    authorization_id: charge_id,
                };
                match self.execute_payment(ctx, payment_id, command).await {
                    Ok(()) => self.capture(ctx, order, payment_id).await,
                    Err(CommandError::Rejected(_)) => Ok(Step::Again),
                    Err(err) => Err(failed("authorize the payment", err)),
                }
            }
            Ok(ChargeOutcome::Declined { reason }) => {
                permit.succeeded();
                ctx.failures = 0;
                count("charge", "declined");
                match self
                    .execute_payment(ctx, payment_id, PaymentCommand::Decline { reason })
                    .await
                {
                    Ok(()) | Err(CommandError::Rejected(_)) => Ok(Step::Again),
                    Err(err) => Err(failed("decline the payment", err)),
                }
            }
            Err(error) => {
                if error.is_gateway_fault() {
                    permit.failed();
                } else {
                    permit.succeeded();
                }
                count("charge", "failed");
                let command = PaymentCommand::RecordFailedAttempt {
                    error: error.to_string(),
                };
                match self.execute_payment(ctx, payment_id, command).await {
                    Ok(()) | Err(CommandError::Rejected(_)) => {}
                    Err(err) => return Err(failed("record the failed attempt", err)),
                }
                ctx.failures += 1;
                ctx.error = Some(error.to_string());
                tracing::info!(order_id = %ctx.row.order_id, %payment_id, %error, failures = ctx.failures, "charge failed; it will be retried");
                Ok(Step::Wait(
                    later(self.backoff(ctx.failures)).min(self.deadline(ctx)),
                ))
            }
        }
    }

    async fn capture(&self, ctx: &Ctx, order: &Order, payment_id: Uuid) -> Result<Step, StepError> {
        match self
            .execute_payment(ctx, payment_id, PaymentCommand::Capture)
            .await
        {
            Ok(()) => {
                count("capture", "ok");
                self.confirm(ctx, order).await
            }
            Err(CommandError::Rejected(_)) => Ok(Step::Again),
            Err(err) => Err(failed("capture the payment", err)),
        }
    }

    async fn confirm(&self, ctx: &Ctx, order: &Order) -> Result<Step, StepError> {
        let order_id = ctx.row.order_id;
        try_join_all(order.lines().iter().map(|line| {
            let command = ProductCommand::CommitReservation { order_id };
            async move {
                self.aggregates
                    .products
                    .execute(&line.product_id.to_string(), command, None, &ctx.metadata)
                    .await
                    .map_err(|err| failed("commit the reservation", err))
            }
        }))
        .await?;
        match self.execute_order(ctx, OrderCommand::Confirm).await {
            Ok(_) => {
                count("confirm", "ok");
                Ok(Step::Done)
            }
            // Cancelled meanwhile: the next look gives the stock and money back.
            Err(CommandError::Rejected(_)) => Ok(Step::Again),
            Err(err) => Err(failed("confirm the order", err)),
        }
    }

    /// Releases the lines held and cancels the order. Nothing of it was
    /// committed (stock is committed only after the capture, and a captured
    /// order is confirmed, never abandoned), so once the cancellation is in,
    /// its stock is all back: the compensation skips that step, and the
    /// cancellation's own wake-up finds the row done.
    async fn abandon(
        &self,
        ctx: &mut Ctx,
        held: &[OrderLine],
        reason: CancelReason,
    ) -> Result<Step, StepError> {
        self.release_all(ctx, held).await?;
        match self
            .execute_order(ctx, OrderCommand::Cancel { reason, note: None })
            .await
        {
            // The step a fresh look would take next, on the order as this
            // commit left it, rather than reading it back from the store:
            // for an order refused its stock that ends the saga.
            Ok(cancelled) => {
                count("cancel", reason.as_str());
                self.record_stock_given_back(ctx).await?;
                self.settle(ctx, &cancelled, true).await
            }
            Err(CommandError::Rejected(_)) => Ok(Step::Again),
            Err(err) => Err(failed("cancel the order", err)),
        }
    }

    async fn release_all(&self, ctx: &Ctx, lines: &[OrderLine]) -> Result<(), StepError> {
        let order_id = ctx.row.order_id;
        try_join_all(lines.iter().map(|line| async move {
            let command = ProductCommand::ReleaseReservation { order_id };
            match self
                .aggregates
                .products
                .execute(&line.product_id.to_string(), command, None, &ctx.metadata)
                .await
            {
                Ok(_) | Err(CommandError::Rejected(ProductError::NotFound)) => Ok(()),
                Err(err) => Err(failed("release the reservation", err)),
            }
        }))
        .await?;
        Ok(())
    }

    // ---- the way back: stock and money ----

    /// Records on the row, under this process's lease, that the cancelled
    /// order's stock is back.
    async fn record_stock_given_back(&self, ctx: &mut Ctx) -> Result<(), StepError> {
        if !store::stock_given_back(&self.pool, ctx.row.order_id, self.owner).await? {
            return Err(StepError::LeaseLost);
        }
        ctx.row.stock_given_back = true;
        Ok(())
    }

    /// Releases held reservations and returns committed stock. A cancelled
    /// order never shipped (a shipped one is `refunded` instead), so its
    /// goods are all still here. Run once per order (`stock_given_back`).
    ///
    /// A product remembers an ended reservation only for its last
    /// `SETTLED_WINDOW` settlements. A line it does not know, on this first
    /// run, was committed long ago if the payment was captured (a confirmed
    /// order cancelled later): holds are never forgotten, stock is committed
    /// only after the capture, and a release happens right before or in this
    /// step, so within the window. Without a capture, such a line was never
    /// reserved. The return names the line's quantity.
    async fn give_back_stock(&self, ctx: &Ctx, order: &Order) -> Result<(), StepError> {
        let order_id = ctx.row.order_id;
        let captured = match order.payment_id().or(ctx.row.payment_id) {
            Some(payment_id) => matches!(
                self.aggregates
                    .payments
                    .load_stored(&payment_id.to_string())
                    .await?
                    .aggregate
                    .status(),
                PaymentStatus::Captured | PaymentStatus::Refunded
            ),
            None => false,
        };
        try_join_all(order.lines().iter().map(|line| async move {
            let id = line.product_id.to_string();
            let products = &self.aggregates.products;
            let release = ProductCommand::ReleaseReservation { order_id };
            let product = match products.execute(&id, release, None, &ctx.metadata).await {
                Ok(done) => done.aggregate,
                Err(CommandError::Rejected(ProductError::NotFound)) => return Ok(()),
                Err(err) => return Err(failed("release the reservation", err)),
            };
            let committed = match product.reservation(order_id) {
                Some(r) => r.state == ReservationState::Committed,
                None => captured,
            };
            if committed {
                let command = ProductCommand::ReturnStock {
                    order_id,
                    quantity: line.quantity,
                };
                products
                    .execute(&id, command, None, &ctx.metadata)
                    .await
                    .map_err(|err| failed("return the stock", err))?;
                count("return_stock", "ok");
            }
            Ok(())
        }))
        .await?;
        Ok(())
    }

    /// Brings the payment of a finished order in line with it: for a
    /// cancelled order, money taken goes back through the gateway; for any
    /// order, a refund recorded by an admin is sent to the gateway.
    async fn settle(
        &self,
        ctx: &mut Ctx,
        order: &Order,
        cancelled: bool,
    ) -> Result<Step, StepError> {
        let Some(payment_id) = order.payment_id().or(ctx.row.payment_id) else {
            return Ok(Step::Done);
        };
        let payment = self
            .aggregates
            .payments
            .load_stored(&payment_id.to_string())
            .await?
            .aggregate;
        if !payment.exists() {
            // Created only before the first charge, so no money moved.
            return Ok(Step::Done);
        }
        let charged = ctx.row.charge_attempts > 0;
        let status = payment.status();
        if !cancelled {
            if status == PaymentStatus::Refunded && !ctx.row.refund_sent {
                return self.refund(ctx, payment_id, status).await;
            }
            return Ok(Step::Done);
        }
        match status {
            PaymentStatus::Pending if !charged => {
                let reason = "the order was cancelled before any charge".to_owned();
                match self
                    .execute_payment(ctx, payment_id, PaymentCommand::Fail { reason })
                    .await
                {
                    Ok(()) | Err(CommandError::Rejected(_)) => Ok(Step::Again),
                    Err(err) => Err(failed("fail the payment", err)),
                }
            }
            PaymentStatus::Authorized => match self
                .execute_payment(ctx, payment_id, PaymentCommand::Capture)
                .await
            {
                Ok(()) | Err(CommandError::Rejected(_)) => Ok(Step::Again),
                Err(err) => Err(failed("capture the payment", err)),
            },
            PaymentStatus::Pending | PaymentStatus::Captured => {
                self.refund(ctx, payment_id, status).await
            }
            PaymentStatus::Refunded | PaymentStatus::Failed
                if charged || status == PaymentStatus::Refunded =>
            {
                if ctx.row.refund_sent {
                    Ok(Step::Done)
                } else {
                    self.refund(ctx, payment_id, status).await
                }
            }
            _ => Ok(Step::Done),
        }
    }

    /// Sends the refund of `payment_id` to the gateway (idempotent under
    /// `<payment id>:refund`), then records on the payment what happened.
    async fn refund(
        &self,
        ctx: &mut Ctx,
        payment_id: Uuid,
        status: PaymentStatus,
    ) -> Result<Step, StepError> {
        let permit = match self.breaker.try_acquire() {
            Ok(permit) => permit,
            Err(refused) => {
                record_rejected("refund");
                count("refund", "circuit_open");
                let wait = refused
                    .retry_at
                    .saturating_duration_since(tokio::time::Instant::now());
                return Ok(Step::Wait(later(wait)));
            }
        };
        if ctx.failures > 0 {
            metrics::counter!("agora_gateway_retries_total", "operation" => "refund").increment(1);
        }
        let outcome = match self.client.refund(payment_id).await {
            Ok(outcome) => {
                permit.succeeded();
                ctx.failures = 0;
                outcome
            }
            Err(error) => {
                if error.is_gateway_fault() {
                    permit.failed();
                } else {
                    permit.succeeded();
                }
                count("refund", "failed");
                ctx.failures += 1;
                ctx.error = Some(error.to_string());
                tracing::info!(order_id = %ctx.row.order_id, %payment_id, %error, "refund failed; it will be retried");
                return Ok(Step::Wait(later(self.backoff(ctx.failures))));
            }
        };
        count("refund", "ok");
        match (status, outcome) {
            // The charge had landed after all: record the money's whole way.
            (PaymentStatus::Pending, RefundOutcome::Refunded { charge_id }) => {
                for command in [
                    PaymentCommand::Authorize {
                        authorization_id: charge_id,
                    },
                    PaymentCommand::Capture,
                    PaymentCommand::Refund,
                ] {
                    self.payment_step(ctx, payment_id, command).await?;
                }
            }
            (PaymentStatus::Pending, RefundOutcome::Voided) => {
                let reason = "the order was cancelled before the charge went through".to_owned();
                self.payment_step(ctx, payment_id, PaymentCommand::Fail { reason })
                    .await?;
            }
            (PaymentStatus::Captured, outcome) => {
                if outcome == RefundOutcome::Voided {
                    tracing::error!(%payment_id, "a captured payment had no charge at the gateway");
                }
                self.payment_step(ctx, payment_id, PaymentCommand::Refund)
                    .await?;
            }
            (status, outcome) => {
                tracing::info!(%payment_id, %status, ?outcome, "refund sent to the gateway");
            }
        }
        store::refund_sent(&self.pool, ctx.row.order_id, self.owner).await?;
        ctx.row.refund_sent = true;
        Ok(Step::Again)
    }

    async fn payment_step(
        &self,
        ctx: &Ctx,
        payment_id: Uuid,
        command: PaymentCommand,
    ) -> Result<(), StepError> {
        match self.execute_payment(ctx, payment_id, command).await {
            Ok(()) | Err(CommandError::Rejected(PaymentError::InvalidTransition { .. })) => Ok(()),
            Err(err) => Err(failed("record the refund", err)),
        }
    }

    /// The order as the command's commit left it.
    async fn execute_order(
        &self,
        ctx: &Ctx,
        command: OrderCommand,
    ) -> Result<Order, CommandError<domain::order::OrderError>> {
        self.aggregates
            .orders
            .execute(&ctx.row.order_id.to_string(), command, None, &ctx.metadata)
            .await
            .map(|done| done.aggregate)
    }

    async fn execute_payment(
        &self,
        ctx: &Ctx,
        payment_id: Uuid,
        command: PaymentCommand,
    ) -> Result<(), CommandError<PaymentError>> {
        self.aggregates
            .payments
            .execute(&payment_id.to_string(), command, None, &ctx.metadata)
            .await
            .map(|_| ())
    }
}

/// The delay before retry number `failures` (1-based): doubling from `base`,
/// capped at `max`, then stretched by a random jitter of up to as much again
/// (backon's), so orders that failed together do not retry in step.
pub(crate) fn retry_delay(base: Duration, max: Duration, failures: i32) -> Duration {
    ExponentialBuilder::default()
        .with_min_delay(base)
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        // Past 32 doublings any sane base has long reached the cap, and the
        // iterator need not walk a long outage's failure count.
        .nth(usize::try_from(failures.clamp(1, 32) - 1).unwrap_or(0))
        .unwrap_or(max)
}

fn later(wait: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(wait)
        .ok()
        .and_then(|wait| Utc::now().checked_add_signed(wait))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_from_the_base_and_stay_under_twice_the_cap() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(2));
        for failures in 1..=3 {
            let floor = base * 2u32.pow(failures as u32 - 1);
            let delay = retry_delay(base, max, failures);
            assert!(delay >= floor && delay < floor * 2, "{failures}: {delay:?}");
        }
        for failures in [10, 1000, i32::MAX] {
            let delay = retry_delay(base, max, failures);
            assert!(delay >= max && delay < max * 2, "{failures}: {delay:?}");
        }
        assert!(retry_delay(base, max, 0) < base * 2);
    }
}
