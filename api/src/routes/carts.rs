//! Carts: guest carts reached by their token, customers' carts, lines,
//! claim and merge on sign-in, and checkout to one order.
//!
//! Who may reach a cart is decided from its own stream (through the
//! aggregate cache), as for orders: the read model may not hold a new cart
//! yet. A guest cart's token is 256 random bits; only its SHA-256 is stored
//! (in `CartCreated`), compared in constant time, and a missing or wrong
//! token is the same 404 as an unknown id, so nothing tells a cart exists.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use commands::Loaded;
use domain::cart::{order_id_for, Cart, CartCommand, CartStatus, Offer};
use domain::placement::Requested;
use domain::{RefusalKind, ShippingAddress};
use futures::future::try_join_all;
use projections::queries::{self, CartLineView, MoneyView, Page};
use schemars::JsonSchema;
use schemas::commands::{CheckoutCart, ClaimCart, CreateCart, SetCartLine};
use serde::Serialize;
use uuid::Uuid;

use super::auth::MaybeJson;
use super::orders::{self, Placement};
use super::queries::{OneParams, PageParams, QueryParams};
use super::{written, Fields};
use crate::auth::{Caller, SignedIn};
use crate::error::ApiError;
use crate::extract::{parse_id, Context, IfMatch, IfMatchNothing, JsonBody};
use crate::state::AppState;

/// The header a guest cart's token travels in.
pub const CART_TOKEN: &str = "x-cart-token";

/// The answer to a write on a cart: the cart as it now is, each line with
/// its product's current price and stock.
#[derive(Serialize, JsonSchema)]
pub(crate) struct CartWritten {
    id: Uuid,
    /// Only in the answer to `POST /carts` of a guest cart: send it as
    /// `X-Cart-Token` to reach the cart. It is never shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    cart_token: Option<String>,
    user_id: Option<Uuid>,
    status: CartStatus,
    lines: Vec<CartLineView>,
    subtotal: Option<MoneyView>,
    item_count: i64,
    order_id: Option<Uuid>,
    merged_into: Option<Uuid>,
    version: usize,
}

/// Renders the aggregate with today's prices, read from the product
/// aggregates (the cart was just written; the read model may lag).
async fn view(
    state: &AppState,
    id: Uuid,
    cart: &Cart,
    version: usize,
    cart_token: Option<String>,
) -> Result<CartWritten, ApiError> {
    let products = try_join_all(
        cart.lines()
            .iter()
            .map(|line| state.aggregates.products.load_id(line.product_id)),
    )
    .await?;
    let lines: Vec<CartLineView> = cart
        .lines()
        .iter()
        .zip(&products)
        .map(|(line, product)| {
            let product = &product.aggregate;
            let quantity = i64::from(line.quantity);
            let unit_price = product.price().map(|p| MoneyView {
                amount: p.amount,
                currency: p.currency.to_string(),
            });
            CartLineView {
                product_id: line.product_id,
                sku: product.sku().map(|s| s.to_string()),
                name: product.name().map(|n| n.to_string()),
                quantity,
                line_total: unit_price.as_ref().and_then(|p| {
                    p.amount.checked_mul(quantity).map(|amount| MoneyView {
                        amount,
                        currency: p.currency.clone(),
                    })
                }),
                unit_price,
                available: if product.is_active() {
                    product.available()
                } else {
                    0
                },
            }
        })
        .collect();
    let subtotal = lines.first().and_then(|first| {
        let currency = first.line_total.as_ref()?.currency.clone();
        let mut amount: i64 = 0;
        for line in &lines {
            let total = line.line_total.as_ref()?;
            if total.currency != currency {
                return None;
            }
            amount = amount.checked_add(total.amount)?;
        }
        Some(MoneyView { amount, currency })
    });
    Ok(CartWritten {
        id,
        cart_token,
        user_id: cart.user_id(),
        status: cart.status(),
        item_count: lines.iter().map(|l| l.quantity).sum(),
        lines,
        subtotal,
        order_id: cart.order_id(),
        merged_into: cart.merged_into(),
        version,
    })
}

fn sha256_hex(token: &str) -> String {
    hex::encode(commands::identity::sha256(token.as_bytes()))
}

/// Equal without an early exit, so the time taken tells nothing of where
/// two hashes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `headers` carry the token of a cart whose token hash is `hash`.
fn holds_token(headers: &HeaderMap, hash: Option<&str>) -> bool {
    let presented = headers.get(CART_TOKEN).and_then(|v| v.to_str().ok());
    match (hash, presented) {
        (Some(hash), Some(token)) => same(sha256_hex(token.trim()).as_bytes(), hash.as_bytes()),
        _ => false,
    }
}

fn no_cart(id: Uuid) -> ApiError {
    ApiError::not_found(format!("no cart has the id {id}"))
}

/// The cart `id` if the caller may reach it: a customer's cart its
/// customer (403 for another, 401 without a token) or an admin; a guest
/// cart whoever holds its token (404 otherwise, as for no cart at all).
pub(crate) async fn reach(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    id: Uuid,
) -> Result<Arc<Loaded<Cart>>, ApiError> {
    let loaded = state.aggregates.carts.load_id(id).await?;
    let cart = &loaded.aggregate;
    if !cart.exists() {
        return Err(no_cart(id));
    }
    match cart.user_id() {
        Some(owner) => caller.require_owner(Some(owner))?,
        None => {
            if !matches!(caller, Caller::Admin(_)) && !holds_token(headers, cart.token_hash()) {
                return Err(no_cart(id));
            }
        }
    }
    Ok(loaded)
}

/// Creates a cart: the customer's with a customer's token, else a guest
/// cart with a fresh token.
///
/// Policy: open to all but `catalog` keys.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    _new: IfMatchNothing,
    Context(metadata): Context,
    MaybeJson(_body): MaybeJson<CreateCart>,
) -> Result<Response, ApiError> {
    if matches!(caller, Caller::Catalog(_)) {
        caller.restricted_to()?;
    }
    let (user_id, token) = match caller {
        Caller::Customer(user) => (Some(user), None),
        _ => {
            let (token, _) = commands::identity::random_token("")?;
            (None, Some(token))
        }
    };
    let cart_id = Uuid::now_v7();
    let id = cart_id.to_string();
    let command = CartCommand::Create {
        cart_id,
        user_id,
        token_hash: token.as_deref().map(sha256_hex),
    };
    let done = state
        .aggregates
        .carts
        .execute_new(&id, command, &metadata)
        .await?;
    let body = view(&state, cart_id, &done.aggregate, done.version, token).await?;
    let mut response = written(
        StatusCode::CREATED,
        Some(format!("/carts/{id}")),
        done.version,
        body,
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Policy: as [`reach`].
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<OneParams>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    reach(&state, &caller, &headers, id).await?;
    let ttl = state.options.cart_ttl;
    super::queries::one_cart(&state, id, params, ttl).await
}

/// Sets a line's quantity (0 removes it).
///
/// Policy: as [`reach`].
pub async fn set_line(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((id, product_id)): Path<(String, String)>,
    IfMatch(expected): IfMatch,
    Context(metadata): Context,
    JsonBody(body): JsonBody<SetCartLine>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let product_id = parse_id(&product_id)?;
    reach(&state, &caller, &headers, id).await?;
    let mut fields = Fields::default();
    let quantity = match u32::try_from(body.quantity) {
        Ok(q) if q <= domain::Quantity::MAX => Some(q),
        _ => {
            fields.fail("quantity", "must be between 0 and 1000");
            None
        }
    };
    let product = state.aggregates.products.load_id(product_id).await?;
    let price = product
        .aggregate
        .price()
        .filter(|_| product.aggregate.exists());
    if price.is_none() {
        fields.fail("product_id", "no such product");
    }
    fields.finish()?;
    let (Some(quantity), Some(price)) = (quantity, price) else {
        return Err(ApiError::validation(Vec::new()));
    };
    let command = CartCommand::SetLine {
        product_id,
        quantity,
        offer: Offer {
            active: product.aggregate.is_active(),
            currency: price.currency.clone(),
        },
    };
    run(&state, id, command, expected, &metadata).await
}

/// Policy: as [`reach`].
pub async fn remove_line(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((id, product_id)): Path<(String, String)>,
    IfMatch(expected): IfMatch,
    Context(metadata): Context,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let product_id = parse_id(&product_id)?;
    reach(&state, &caller, &headers, id).await?;
    run(
        &state,
        id,
        CartCommand::RemoveLine { product_id },
        expected,
        &metadata,
    )
    .await
}

async fn run(
    state: &AppState,
    id: Uuid,
    command: CartCommand,
    expected: Option<usize>,
    metadata: &commands::CommandMetadata,
) -> Result<Response, ApiError> {
    let done = state
        .aggregates
        .carts
        .execute(&id.to_string(), command, expected, metadata)
        .await?;
    let body = view(state, id, &done.aggregate, done.version, None).await?;
    Ok(written(StatusCode::OK, None, done.version, body))
}

/// A signed-in customer takes a guest cart (with its token): into its
/// newest open cart if it has one (quantities add, at most 1000; the guest
/// cart becomes `merged`), else the guest cart becomes its own.
///
/// The guest cart is closed first (`CartMerged`, on its own stream, so of
/// two racing claims one wins), then the customer's cart takes exactly the
/// lines the guest cart held when it closed (`Absorb`, once per guest cart,
/// retried on races like any command): no line is lost or counted twice,
/// and a retried claim finishes a merge a crash interrupted.
///
/// Policy: a customer with the guest cart's token.
pub async fn claim(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    headers: HeaderMap,
    Path(id): Path<String>,
    Context(metadata): Context,
    MaybeJson(_body): MaybeJson<ClaimCart>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let Caller::Customer(me) = caller else {
        return Err(ApiError::forbidden("only a customer claims a cart"));
    };
    let loaded = state.aggregates.carts.load_id(id).await?;
    let guest = &loaded.aggregate;
    if !guest.exists() || !holds_token(&headers, guest.token_hash()) {
        return Err(no_cart(id));
    }
    let target = match guest.merged_into() {
        Some(into) => Some(into),
        None if guest.user_id().is_some() => None,
        None => queries::open_cart_of_user(&state.pool, me)
            .await?
            .filter(|target| *target != id),
    };
    let Some(target) = target else {
        return run(
            &state,
            id,
            CartCommand::Claim { user_id: me },
            None,
            &metadata,
        )
        .await;
    };
    let merged = state
        .aggregates
        .carts
        .execute(
            &id.to_string(),
            CartCommand::MergeInto {
                into: target,
                user_id: me,
            },
            None,
            &metadata,
        )
        .await?;
    let absorb = CartCommand::Absorb {
        from: id,
        lines: merged.aggregate.lines().to_vec(),
        currency: merged.aggregate.currency().cloned(),
    };
    run(&state, target, absorb, None, &metadata).await
}

/// Places the cart's order (as `POST /orders`, at today's prices, with the
/// cart's id), then closes the cart with it. The order's id is derived from
/// the cart's ([`order_id_for`]), so a repeat or a concurrent checkout finds
/// the order placed and answers it (200): one cart, at most one order.
///
/// Policy: the customer who owns the cart (a guest cart: 401, claim it first).
pub async fn checkout(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    headers: HeaderMap,
    Path(id): Path<String>,
    Context(metadata): Context,
    JsonBody(body): JsonBody<CheckoutCart>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let loaded = reach(&state, &caller, &headers, id).await?;
    let Some(user_id) = loaded.aggregate.user_id() else {
        return Err(ApiError::unauthorized(
            "a guest cart is checked out by a customer: sign in and claim it first",
        ));
    };
    let mut fields = Fields::default();
    orders::check_payment_token(&mut fields, &body.payment_token);
    let address = orders::check_address(&mut fields, Some(body.shipping_address));
    fields.finish()?;
    let order_id = order_id_for(id);
    let existing = state.aggregates.orders.load_id(order_id).await?;
    let created = if existing.aggregate.exists() {
        false
    } else {
        let cart = &loaded.aggregate;
        match cart.status() {
            CartStatus::Open if cart.lines().is_empty() => {
                return Err(ApiError::refused(
                    RefusalKind::CartEmpty,
                    "the cart has no lines",
                ))
            }
            CartStatus::Open => {}
            closed => {
                return Err(ApiError::refused(
                    RefusalKind::CartClosed,
                    format!("the cart is {closed}"),
                ))
            }
        }
        let placement = Placement {
            order_id,
            user_id,
            requested: cart
                .lines()
                .iter()
                .map(|l| Requested {
                    product_id: l.product_id,
                    quantity: l.quantity,
                })
                .collect(),
            payment_token: body.payment_token,
            cart_id: Some(id),
            shipping_address: address,
        };
        orders::place_order(&state, placement, &metadata).await?
    };
    let closed = state
        .aggregates
        .carts
        .execute(
            &id.to_string(),
            CartCommand::CheckOut { order_id },
            None,
            &metadata,
        )
        .await;
    if let Err(err) = closed {
        let err = ApiError::from(err);
        tracing::warn!(cart_id = %id, %order_id, problem = err.slug, "cart not closed after its order was placed");
        return Err(err);
    }
    let order = state.aggregates.orders.load_id(order_id).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(orders::answer(
        status,
        order_id,
        &order.aggregate,
        order.version,
    ))
}

/// Policy: the user itself, or an admin.
pub async fn carts_of_user(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<PageParams>,
) -> Result<axum::Json<Page<queries::CartView>>, ApiError> {
    let user_id = parse_id(&id)?;
    caller.require_user(user_id)?;
    let page = params.page()?;
    Ok(axum::Json(
        queries::carts_of_user(&state.pool, user_id, &page, state.options.cart_ttl).await?,
    ))
}

/// Validation of an address (`shipping_address.*` fields).
pub(crate) fn parse_address(
    fields: &mut Fields,
    body: schemas::commands::ShippingAddressBody,
) -> Option<ShippingAddress> {
    let address = ShippingAddress {
        name: body.name,
        line1: body.line1,
        line2: body.line2,
        city: body.city,
        region: body.region,
        postal_code: body.postal_code,
        country: body.country,
    };
    match ShippingAddress::parse(address) {
        Ok(address) => Some(address),
        Err(errors) => {
            for error in errors {
                fields.fail(error.field, error.message);
            }
            None
        }
    }
}
