use std::collections::HashSet;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use domain::order::{CancelReason, Order, OrderCommand, OrderLine};
use domain::values::{Money, Quantity};
use domain::RefusalKind;
use futures::future::try_join_all;
use schemars::JsonSchema;
use schemas::commands::{CancelOrder, PlaceOrder};
use serde::Serialize;
use uuid::Uuid;

use super::{written, Fields};
use crate::auth::{Admin, Caller, SignedIn};
use crate::error::ApiError;
use crate::extract::{parse_id, Context, IfMatch, IfMatchNothing, JsonBody};
use crate::state::AppState;

const MAX_LINES: usize = 50;
const MAX_TOKEN_LEN: usize = 255;

/// The answer to a write on an order: the aggregate as it now is.
#[derive(Serialize, JsonSchema)]
pub(crate) struct OrderView<'a> {
    id: String,
    user_id: Option<Uuid>,
    lines: &'a [OrderLine],
    total: Option<&'a Money>,
    status: domain::order::OrderStatus,
    cancel_reason: Option<CancelReason>,
    payment_id: Option<Uuid>,
    version: usize,
}

fn view<'a>(id: &str, order: &'a Order, version: usize) -> OrderView<'a> {
    OrderView {
        id: id.to_owned(),
        user_id: order.user_id(),
        lines: order.lines(),
        total: order.total(),
        status: order.status(),
        cancel_reason: order.cancel_reason(),
        payment_id: order.payment_id(),
        version,
    }
}

/// Places an order: the user must be active and every product active and
/// priced in one currency. Unit prices are taken from the products now.
///
/// Policy: a customer orders only for itself (`user_id` is its own, else
/// 403 whatever else is wrong with the body); an admin for anyone.
pub async fn place(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    _new: IfMatchNothing,
    Context(metadata): Context,
    JsonBody(body): JsonBody<PlaceOrder>,
) -> Result<Response, ApiError> {
    let mut fields = Fields::default();
    let user_id = Uuid::parse_str(&body.user_id).ok();
    match user_id {
        Some(user_id) => caller.require_user(user_id)?,
        None => fields.fail("user_id", "must be a UUID"),
    }
    if body.lines.is_empty() || body.lines.len() > MAX_LINES {
        fields.fail("lines", format!("must hold 1 to {MAX_LINES} lines"));
    }
    let token_length = body.payment_token.chars().count();
    if token_length == 0 || token_length > MAX_TOKEN_LEN {
        fields.fail(
            "payment_token",
            format!("must be 1 to {MAX_TOKEN_LEN} characters"),
        );
    } else if body.payment_token.chars().any(char::is_control) {
        // Stored in the event's JSON, where Postgres refuses NUL outright.
        fields.fail("payment_token", "must not contain control characters");
    }
    let mut seen = HashSet::new();
    let mut wanted = Vec::with_capacity(body.lines.len());
    for (index, line) in body.lines.iter().enumerate() {
        let product_id = Uuid::parse_str(&line.product_id).ok();
        if product_id.is_none() {
            fields.fail(format!("lines[{index}].product_id"), "must be a UUID");
        }
        let quantity = fields.check(
            &format!("lines[{index}].quantity"),
            Quantity::parse(line.quantity),
        );
        if let Some(product_id) = product_id {
            if !seen.insert(product_id) {
                fields.fail(
                    format!("lines[{index}].product_id"),
                    "appears on more than one line",
                );
            }
            if let Some(quantity) = quantity {
                wanted.push((index, product_id, quantity));
            }
        }
    }
    fields.finish()?;
    let Some(user_id) = user_id else {
        return Err(ApiError::validation(Vec::new()));
    };

    let (user, _) = state.aggregates.users.load(&user_id.to_string()).await?;
    if !user.aggregate.exists() {
        let mut fields = Fields::default();
        fields.fail("user_id", "no such user");
        fields.finish()?;
    }
    if !user.aggregate.is_active() {
        return Err(ApiError::refused(
            RefusalKind::UserDeactivated,
            "a deactivated user cannot place orders",
        ));
    }

    let products = try_join_all(
        wanted
            .iter()
            .map(|(_, product_id, _)| state.aggregates.products.load_id(*product_id)),
    )
    .await?;
    let mut fields = Fields::default();
    let mut lines = Vec::with_capacity(wanted.len());
    for ((index, product_id, quantity), product) in wanted.iter().zip(&products) {
        let product = &product.aggregate;
        match product.price() {
            Some(price) if product.exists() => {
                if !product.is_active() {
                    return Err(ApiError::refused(
                        RefusalKind::ProductDiscontinued,
                        format!("product {product_id} is discontinued"),
                    ));
                }
                lines.push(OrderLine {
                    product_id: *product_id,
                    quantity: quantity.get(),
                    unit_price: price.clone(),
                });
            }
            _ => fields.fail(format!("lines[{index}].product_id"), "no such product"),
        }
    }
    fields.finish()?;
    if let Some(first) = lines.first() {
        if lines
            .iter()
            .any(|l| l.unit_price.currency != first.unit_price.currency)
        {
            return Err(ApiError::refused(
                RefusalKind::CurrencyMismatch,
                "all products of one order must be priced in one currency",
            ));
        }
    }

    let order_id = Uuid::now_v7();
    let id = order_id.to_string();
    let command = OrderCommand::Place {
        order_id,
        user_id,
        lines,
        payment_token: body.payment_token,
    };
    let done = state
        .aggregates
        .orders
        .execute_new(&id, command, &metadata)
        .await?;
    Ok(written(
        StatusCode::CREATED,
        Some(format!("/orders/{id}")),
        done.version,
        view(&id, &done.aggregate, done.version),
    ))
}

/// Policy: the order's user, or an admin.
pub async fn cancel(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    Path(id): Path<String>,
    IfMatch(expected): IfMatch,
    Context(metadata): Context,
    JsonBody(body): JsonBody<CancelOrder>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    authorize_order(&state, &caller, id).await?;
    let id = id.to_string();
    if body.reason != "customer_request" {
        let mut fields = Fields::default();
        fields.fail("reason", "must be \"customer_request\"");
        fields.finish()?;
    }
    let command = OrderCommand::Cancel {
        reason: CancelReason::CustomerRequest,
    };
    let done = state
        .aggregates
        .orders
        .execute(&id, command, expected, &metadata)
        .await?;
    Ok(written(
        StatusCode::OK,
        None,
        done.version,
        view(&id, &done.aggregate, done.version),
    ))
}

/// Policy: admin only.
pub async fn ship(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    IfMatch(expected): IfMatch,
    Context(metadata): Context,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?.to_string();
    let done = state
        .aggregates
        .orders
        .execute(&id, OrderCommand::Ship, expected, &metadata)
        .await?;
    Ok(written(
        StatusCode::OK,
        None,
        done.version,
        view(&id, &done.aggregate, done.version),
    ))
}

/// 401 without a token; 403 unless the caller owns order `id` or is an
/// admin. A customer gets 403 for an order that does not exist, too.
///
/// The owner is read from the order's own stream (through the aggregate
/// cache), not from the read model, which may not hold a new order yet. An
/// order's user is set when it is placed and never changes, so a cached
/// aggregate answers as well as a fresh one.
pub(crate) async fn authorize_order(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<(), ApiError> {
    if caller.restricted_to()?.is_some() {
        let order = state.aggregates.orders.load_id(id).await?;
        caller.require_owner(order.aggregate.user_id())?;
    }
    Ok(())
}
