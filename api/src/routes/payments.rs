use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use domain::order::{CancelReason, OrderCommand};
use domain::payment::{Payment, PaymentCommand};
use domain::values::Money;
use serde::Serialize;
use uuid::Uuid;

use super::written;
use crate::auth::{Admin, Caller};
use crate::error::ApiError;
use crate::extract::{parse_id, Context, IfMatch};
use crate::state::AppState;

#[derive(Serialize)]
struct PaymentView<'a> {
    id: String,
    order_id: Option<Uuid>,
    amount: Option<&'a Money>,
    status: domain::payment::PaymentStatus,
    attempts: u32,
    version: usize,
}

/// Refunds a captured payment and cancels its order with reason `refunded`.
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
