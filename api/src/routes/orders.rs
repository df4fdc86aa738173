use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use domain::order::{CancelReason, Order, OrderCommand, OrderLine};
use domain::placement::{self, Requested};
use domain::values::{Money, Quantity};
use domain::ShippingAddress;
use futures::future::try_join_all;
use schemars::JsonSchema;
use schemas::commands::{CancelOrder, PlaceOrder};
use serde::Serialize;
use uuid::Uuid;

use super::auth::MaybeJson;
use super::{written, Fields};
use crate::auth::{Admin, Caller, SignedIn};
use crate::error::ApiError;
use crate::extract::{parse_id, Context, IfMatch, IfMatchNothing, JsonBody};
use crate::state::AppState;

const MAX_TOKEN_LEN: usize = 255;
const MAX_NOTE_LEN: usize = 500;

/// The answer to a write on an order: the aggregate as it now is.
#[derive(Serialize, JsonSchema)]
pub(crate) struct OrderView<'a> {
    id: String,
    user_id: Option<Uuid>,
    lines: &'a [OrderLine],
    total: Option<&'a Money>,
    status: domain::order::OrderStatus,
    cancel_reason: Option<CancelReason>,
    cancel_note: Option<&'a str>,
    payment_id: Option<Uuid>,
    shipping_address: Option<&'a ShippingAddress>,
    cart_id: Option<Uuid>,
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
        cancel_note: order.cancel_note(),
        payment_id: order.payment_id(),
        shipping_address: order.shipping_address(),
        cart_id: order.cart_id(),
        version,
    }
}

/// An order's write answer with `status` (201 with `Location` when placed).
pub(crate) fn answer(status: StatusCode, id: Uuid, order: &Order, version: usize) -> Response {
    let id = id.to_string();
    let location = (status == StatusCode::CREATED).then(|| format!("/orders/{id}"));
    written(status, location, version, view(&id, order, version))
}

/// `payment_token`: 1 to 255 characters, none a control character.
pub(crate) fn check_payment_token(fields: &mut Fields, token: &str) {
    let token_length = token.chars().count();
    if token_length == 0 || token_length > MAX_TOKEN_LEN {
        fields.fail(
            "payment_token",
            format!("must be 1 to {MAX_TOKEN_LEN} characters"),
        );
    } else if token.chars().any(char::is_control) {
        // Stored in the event's JSON, where Postgres refuses NUL outright.
        fields.fail("payment_token", "must not contain control characters");
    }
}

/// `shipping_address`, if given: every field as api.md says.
pub(crate) fn check_address(
    fields: &mut Fields,
    body: Option<schemas::commands::ShippingAddressBody>,
) -> Option<ShippingAddress> {
    body.and_then(|body| super::carts::parse_address(fields, body))
}

/// What to place: everything but the prices, which are read now.
pub(crate) struct Placement {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub requested: Vec<Requested>,
    pub payment_token: String,
    pub cart_id: Option<Uuid>,
    pub shipping_address: Option<ShippingAddress>,
}

/// Loads the user and the products, lets the domain's placement rules
/// (`domain::placement`) price the lines or refuse, and places the order.
/// `false` when the order existed already (a concurrent checkout placed it).
pub(crate) async fn place_order(
    state: &AppState,
    placement: Placement,
    metadata: &commands::CommandMetadata,
) -> Result<bool, ApiError> {
    let user = state.aggregates.users.load_id(placement.user_id).await?;
    let products = try_join_all(
        placement
            .requested
            .iter()
            .map(|line| state.aggregates.products.load_id(line.product_id)),
    )
    .await?;
    let products: Vec<&domain::Product> = products.iter().map(|p| &p.aggregate).collect();
    let lines = placement::place(&user.aggregate, &placement.requested, &products)?;
    let command = OrderCommand::Place {
        order_id: placement.order_id,
        user_id: placement.user_id,
        lines,
        payment_token: placement.payment_token,
        cart_id: placement.cart_id,
        shipping_address: placement.shipping_address,
    };
    let placed = state
        .aggregates
        .orders
        .execute_new(&placement.order_id.to_string(), command, metadata)
        .await;
    match placed {
        Ok(_) => Ok(true),
        Err(commands::CommandError::Rejected(domain::OrderError::AlreadyExists)) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// Places an order: the user must be active and every product active and
/// priced in one currency (`domain::placement`). Unit prices are taken from
/// the products now.
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
    check_payment_token(&mut fields, &body.payment_token);
    let mut requested = Vec::with_capacity(body.lines.len());
    for (index, line) in body.lines.iter().enumerate() {
        let product_id = Uuid::parse_str(&line.product_id).ok();
        if product_id.is_none() {
            fields.fail(format!("lines[{index}].product_id"), "must be a UUID");
        }
        let quantity = fields.check(
            &format!("lines[{index}].quantity"),
            Quantity::parse(line.quantity),
        );
        if let (Some(product_id), Some(quantity)) = (product_id, quantity) {
            requested.push(Requested {
                product_id,
                quantity: quantity.get(),
            });
        }
    }
    if requested.len() == body.lines.len() {
        for error in placement::check_lines(&requested) {
            fields.fail(error.field().unwrap_or_default(), error.to_string());
        }
    } else if body.lines.is_empty() || body.lines.len() > domain::order::MAX_LINES {
        fields.fail("lines", placement::PlacementError::LineCount.to_string());
    }
    let shipping_address = check_address(&mut fields, body.shipping_address);
    fields.finish()?;
    let Some(user_id) = user_id else {
        return Err(ApiError::validation(Vec::new()));
    };
    let order_id = Uuid::now_v7();
    let placement = Placement {
        order_id,
        user_id,
        requested,
        payment_token: body.payment_token,
        cart_id: None,
        shipping_address,
    };
    place_order(&state, placement, &metadata).await?;
    let order = state.aggregates.orders.load_id(order_id).await?;
    Ok(answer(
        StatusCode::CREATED,
        order_id,
        &order.aggregate,
        order.version,
    ))
}

/// Policy: the order's user, or an admin.
pub async fn cancel(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    Path(id): Path<String>,
    IfMatch(expected): IfMatch,
    Context(metadata): Context,
    MaybeJson(body): MaybeJson<CancelOrder>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    authorize_order(&state, &caller, id).await?;
    let id = id.to_string();
    let note = body.reason.filter(|note| !note.is_empty());
    if let Some(note) = &note {
        let mut fields = Fields::default();
        if note.chars().count() > MAX_NOTE_LEN {
            fields.fail(
                "reason",
                format!("must be at most {MAX_NOTE_LEN} characters"),
            );
        } else if note
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            // Stored in the event's JSON, where Postgres refuses NUL outright.
            fields.fail(
                "reason",
                "must not contain control characters but line breaks and tabs",
            );
        }
        fields.finish()?;
    }
    let command = OrderCommand::Cancel {
        reason: CancelReason::CustomerRequest,
        note,
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
