use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use domain::order::{CancelReason, OrderCommand};
use domain::payment::{Payment, PaymentCommand};
use domain::values::Money;
use schemars::JsonSchema;
use serde::Serialize;
use uuid::Uuid;

use super::written;
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
pub async fn refund(
    State(state): State<AppState>,
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
