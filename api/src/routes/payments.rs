use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use domain::order::{OrderCommand, OrderStatus};
use domain::payment::{Payment, PaymentCommand};
use domain::values::Money;
use domain::RefusalKind;
use schemars::JsonSchema;
use serde::Serialize;
use uuid::Uuid;

use super::written;
use crate::auth::{Admin, Caller};
use crate::error::ApiError;
use crate::extract::{parse_id, Context, IfMatch};
use crate::state::AppState;

/// The answer to a write on a payment: the aggregate as it now is.
#[derive(Serialize, JsonSchema)]
pub(crate) struct PaymentView<'a> {
    id: String,
    order_id: Option<Uuid>,
    amount: Option<&'a Money>,
    status: domain::payment::PaymentStatus,
    attempts: u32,
    version: usize,
}

/// Refunds a captured payment. Its order follows: a confirmed order is
/// cancelled with reason `refunded` (its stock returns), a shipped one moves
/// to `refunded` (the goods are with the customer: no stock returns).
///
/// This records the decision; the money moves afterwards. The saga sees the
/// `PaymentRefunded` event (the event store is its outbox), sends the refund
/// to the gateway under the idempotency key `<payment id>:refund`, retrying
/// until the gateway answers, and returns a cancelled order's stock.
///
/// Policy: admin only.
pub async fn refund(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    IfMatch(expected): IfMatch,
    Context(metadata): Context,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?.to_string();
    // Both aggregates change, so the order's side is checked first and a
    // refusal writes nothing. A payment is captured a moment before the saga
    // confirms its order, and an order cancelled or refunded already has
    // nothing to follow. Read from the store: the saga writes in another
    // process.
    let (payment, _) = state.aggregates.payments.load(&id).await?;
    let order_id = payment.aggregate.order_id();
    if let Some(order_id) = order_id {
        let order = state
            .aggregates
            .orders
            .load_stored(&order_id.to_string())
            .await?;
        match order.aggregate.status() {
            OrderStatus::Confirmed | OrderStatus::Shipped => {}
            OrderStatus::Pending => {
                return Err(ApiError::refused(
                    RefusalKind::InvalidTransition,
                    "the order is still being paid for; refund it once it is confirmed",
                ))
            }
            status @ (OrderStatus::Cancelled | OrderStatus::Refunded) => {
                return Err(ApiError::refused(
                    RefusalKind::InvalidTransition,
                    format!(
                        "the order is {status} already; its payment is settled by the order flow"
                    ),
                ))
            }
        }
    }
    let done = state
        .aggregates
        .payments
        .execute(&id, PaymentCommand::Refund, expected, &metadata)
        .await?;
    if let Some(order_id) = order_id {
        state
            .aggregates
            .orders
            .execute(&order_id.to_string(), OrderCommand::Refund, None, &metadata)
            .await?;
    }
    let payment: &Payment = &done.aggregate;
    let body = PaymentView {
        id: id.clone(),
        order_id: payment.order_id(),
        amount: payment.amount(),
        status: payment.status(),
        attempts: payment.attempts(),
        version: done.version,
    };
    Ok(written(StatusCode::OK, None, done.version, body))
}

/// 401 without a token; 403 unless the caller owns the order payment `id`
/// is for, or is an admin. Read from the event streams, like
/// [`super::orders::authorize_order`]: neither link ever changes.
pub(crate) async fn authorize_payment(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<(), ApiError> {
    if caller.restricted_to()?.is_some() {
        let payment = state.aggregates.payments.load_id(id).await?;
        let owner = match payment.aggregate.order_id() {
            Some(order_id) => state
                .aggregates
                .orders
                .load_id(order_id)
                .await?
                .aggregate
                .user_id(),
            None => None,
        };
        caller.require_owner(owner)?;
    }
    Ok(())
}
