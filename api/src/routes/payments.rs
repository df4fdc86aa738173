use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use domain::order::{CancelReason, OrderCommand, OrderStatus};
use domain::payment::{Payment, PaymentCommand};
use domain::values::Money;
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

/// Refunds a captured payment and cancels its order with reason `refunded`.
///
/// This records the decision; the money moves afterwards. The saga sees the
/// `PaymentRefunded` event (the event store is its outbox), sends the refund
/// to the gateway under the idempotency key `<payment id>:refund`, retrying
/// until the gateway answers, and returns the order's stock.
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
    // A payment is captured a moment before the saga confirms its order. A
    // refund in that moment could not cancel the order (`refunded` needs a
    // confirmed or shipped order), so it is refused before anything is
    // written. Read from the store: the saga confirms in another process.
    let (payment, _) = state.aggregates.payments.load(&id).await?;
    if let Some(order_id) = payment.aggregate.order_id() {
        let order = state
            .aggregates
            .orders
            .load_stored(&order_id.to_string())
            .await?;
        if order.aggregate.status() == OrderStatus::Pending {
            return Err(ApiError::rule(
                "invalid-transition",
                "the order is still being paid for; refund it once it is confirmed",
            ));
        }
    }
    let done = state
        .aggregates
        .payments
        .execute(&id, PaymentCommand::Refund, expected, &metadata)
        .await?;
    let payment: &Payment = &done.aggregate;
    if let Some(order_id) = payment.order_id() {
        let command = OrderCommand::Cancel {
            reason: CancelReason::Refunded,
        };
        state
            .aggregates
            .orders
            .execute(&order_id.to_string(), command, None, &metadata)
            .await?;
    }
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
