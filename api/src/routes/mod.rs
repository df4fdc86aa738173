//! One file per resource. Handlers parse, call a store, and render.
//!
//! [`table`] is the one list of routes: each line is a method, a path, its
//! handler and its description, so the router and the OpenAPI document
//! (`crate::openapi`) are built from the same lines. Add a route here, never
//! with `Router::route` elsewhere.

mod aggregates;
pub(crate) mod api_keys;
pub(crate) mod auth;
pub(crate) mod carts;
pub(crate) mod categories;
mod documents;
pub(crate) mod operations;
pub(crate) mod orders;
pub(crate) mod payments;
pub(crate) mod products;
pub mod queries;
pub mod updates;
pub(crate) mod users;
pub(crate) mod webhooks;

use axum::handler::Handler;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use domain::values::ValidationError;
use serde::Serialize;

use crate::error::{ApiError, FieldError};
use crate::openapi::{Access, Operation, Query};
use crate::state::AppState;

/// One line of the route table.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub doc: Operation,
    handler: MethodRouter<AppState>,
}

fn route<H, T>(method: Method, path: &'static str, handler: H, doc: Operation) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = match method {
        Method::GET => MethodFilter::GET,
        Method::PATCH => MethodFilter::PATCH,
        Method::PUT => MethodFilter::PUT,
        Method::DELETE => MethodFilter::DELETE,
        _ => MethodFilter::POST,
    };
    Route {
        method,
        path,
        doc,
        handler: on(filter, handler),
    }
}

/// Every route of the API, with what the OpenAPI document says of it.
pub fn table() -> Vec<Route> {
    use Access::{Admin, Open, Operations};
    let op = Operation::new;
    vec![
        route(
            Method::POST,
            "/users",
            users::register,
            op("registerUser", "users", "Register a user")
                .access(Open)
                .body("RegisterUser")
                .unique()
                .create(
                    "UserWritten",
                    &[
                        "getUser",
                        "updateUser",
                        "deactivateUser",
                        "listOrdersOfUser",
                        "listNotificationsOfUser",
                    ],
                ),
        ),
        route(
            Method::GET,
            "/users",
            queries::users,
            op("listUsers", "users", "List users, or find one by email")
                .access(Admin)
                .query(Query::Users)
                .answers(200, "UserPage", false),
        ),
        route(
            Method::GET,
            "/users/{id}",
            queries::user,
            op("getUser", "users", "Read a user")
                .query(Query::One)
                .answers(200, "User", true),
        ),
        route(
            Method::PATCH,
            "/users/{id}",
            users::update,
            op("updateUser", "users", "Change a user's name or email")
                .body("UpdateUser")
                .unique()
                .write("UserWritten"),
        ),
        route(
            Method::DELETE,
            "/users/{id}",
            users::erase,
            op(
                "eraseUser",
                "users",
                "Erase a user: its data key is destroyed, so none of its personal data can be read again",
            )
            .write("UserErasure"),
        ),
        route(
            Method::POST,
            "/users/{id}/deactivate",
            users::deactivate,
            op("deactivateUser", "users", "Deactivate a user").write("UserWritten"),
        ),
        route(
            Method::POST,
            "/users/{id}/password",
            users::change_password,
            op(
                "changePassword",
                "auth",
                "Change a user's password; its other sign-ins end",
            )
            .body("ChangePassword")
            .write("UserWritten")
            .problems(&[(
                429,
                "`login-throttled` after 5 wrong current passwords for the user within 15 minutes, or over the rate limit.",
            )]),
        ),
        route(
            Method::POST,
            "/auth/login",
            auth::login,
            op("login", "auth", "Sign in with an email and a password")
                .access(Open)
                .body("Login")
                .answers(200, "TokenPair", false)
                .problems(&[
                    (401, "`invalid-credentials`: unknown email, wrong password or no password, alike."),
                    (403, "`user-deactivated`: the user is deactivated."),
                    (429, "`login-throttled` after 5 failed logins for the email within 15 minutes, or over the rate limit."),
                ]),
        ),
        route(
            Method::POST,
            "/auth/refresh",
            auth::refresh,
            op("refresh", "auth", "Exchange a refresh token for a new pair")
                .access(Open)
                .body("Refresh")
                .answers(200, "TokenPair", false)
                .problems(&[(
                    401,
                    "`invalid-token`: unknown, expired or revoked; one used before revokes its whole sign-in.",
                )]),
        ),
        route(
            Method::POST,
            "/auth/logout",
            auth::logout,
            op("logout", "auth", "End a sign-in")
                .body("Logout")
                .optional_body()
                .no_content(),
        ),
        route(
            Method::POST,
            "/api-keys",
            api_keys::create,
            op("createApiKey", "auth", "Create an API key")
                .access(Admin)
                .body("CreateApiKey")
                .answers(201, "ApiKeyCreated", false),
        ),
        route(
            Method::GET,
            "/api-keys",
            api_keys::list,
            op("listApiKeys", "auth", "List the live API keys")
                .access(Admin)
                .query(Query::Page)
                .answers(200, "ApiKeyPage", false),
        ),
        route(
            Method::DELETE,
            "/api-keys/{id}",
            api_keys::delete,
            op("deleteApiKey", "auth", "Revoke an API key")
                .access(Admin)
                .no_content(),
        ),
        route(
            Method::GET,
            "/users/{id}/orders",
            queries::orders_of_user,
            op(
                "listOrdersOfUser",
                "orders",
                "List a user's orders, newest first",
            )
            .query(Query::Page)
            .answers(200, "OrderPage", false),
        ),
        route(
            Method::GET,
            "/users/{id}/notifications",
            queries::notifications_of_user,
            op(
                "listNotificationsOfUser",
                "users",
                "List a user's notifications, newest first",
            )
            .query(Query::Page)
            .answers(200, "NotificationPage", false),
        ),
        route(
            Method::POST,
            "/products",
            products::create,
            op("createProduct", "products", "Create a product")
                .access(Admin)
                .body("CreateProduct")
                .unique()
                .create(
                    "ProductWritten",
                    &[
                        "getProduct",
                        "updateProduct",
                        "changePrice",
                        "adjustStock",
                        "discontinueProduct",
                    ],
                ),
        ),
        route(
            Method::GET,
            "/products",
            queries::products,
            op("listProducts", "products", "List or search products")
                .access(Open)
                .query(Query::Products)
                .answers(200, "ProductPage", false),
        ),
        route(
            Method::GET,
            "/products/{id}",
            queries::product,
            op("getProduct", "products", "Read a product")
                .access(Open)
                .query(Query::One)
                .answers(200, "Product", true),
        ),
        route(
            Method::PATCH,
            "/products/{id}",
            products::update,
            op(
                "updateProduct",
                "products",
                "Change a product's name, description or attributes",
            )
            .access(Admin)
            .body("UpdateProduct")
            .write("ProductWritten"),
        ),
        route(
            Method::POST,
            "/products/{id}/price",
            products::change_price,
            op("changePrice", "products", "Change a product's price")
                .access(Admin)
                .body("ChangePrice")
                .write("ProductWritten"),
        ),
        route(
            Method::POST,
            "/products/{id}/stock",
            products::adjust_stock,
            op("adjustStock", "products", "Adjust a product's stock")
                .access(Admin)
                .body("AdjustStock")
                .write("ProductWritten"),
        ),
        route(
            Method::POST,
            "/products/{id}/discontinue",
            products::discontinue,
            op("discontinueProduct", "products", "Discontinue a product")
                .access(Admin)
                .write("ProductWritten"),
        ),
        route(
            Method::PUT,
            "/products/{id}/categories",
            products::set_categories,
            op(
                "setProductCategories",
                "products",
                "Set the categories a product is listed in",
            )
            .access(Admin)
            .body("SetProductCategories")
            .write("ProductWritten"),
        ),
        route(
            Method::POST,
            "/categories",
            categories::create,
            op("createCategory", "categories", "Create a category")
                .access(Admin)
                .body("CreateCategory")
                .unique()
                .create(
                    "CategoryWritten",
                    &[
                        "getCategory",
                        "updateCategory",
                        "moveCategory",
                        "deleteCategory",
                    ],
                ),
        ),
        route(
            Method::GET,
            "/categories",
            queries::categories,
            op("listCategories", "categories", "The category tree")
                .access(Open)
                .answers(200, "CategoryTree", false),
        ),
        route(
            Method::GET,
            "/categories/{id}",
            queries::category,
            op(
                "getCategory",
                "categories",
                "Read a category (by id or slug) with its path",
            )
            .access(Open)
            .query(Query::One)
            .answers(200, "Category", true),
        ),
        route(
            Method::PATCH,
            "/categories/{id}",
            categories::update,
            op(
                "updateCategory",
                "categories",
                "Change a category's slug, name or position",
            )
            .access(Admin)
            .body("UpdateCategory")
            .unique()
            .write("CategoryWritten"),
        ),
        route(
            Method::POST,
            "/categories/{id}/move",
            categories::move_category,
            op("moveCategory", "categories", "Move a category under another")
                .access(Admin)
                .body("MoveCategory")
                .write("CategoryWritten")
                .problems(&[(
                    422,
                    "`category-cycle` under itself or a descendant; `validation` past 8 levels \
                     or for a missing parent.",
                )]),
        ),
        route(
            Method::DELETE,
            "/categories/{id}",
            categories::delete,
            op("deleteCategory", "categories", "Delete an empty category")
                .access(Admin)
                .guarded()
                .no_content()
                .problems(&[
                    (409, "The category kept changing under the request."),
                    (422, "`category-not-empty`: it has children or products."),
                ]),
        ),
        route(
            Method::POST,
            "/orders",
            orders::place,
            op("placeOrder", "orders", "Place an order")
                .body("PlaceOrder")
                .create("OrderWritten", &["getOrder", "cancelOrder", "shipOrder"]),
        ),
        route(
            Method::GET,
            "/orders/{id}",
            queries::order,
            op("getOrder", "orders", "Read an order")
                .query(Query::One)
                .answers(200, "Order", true),
        ),
        route(
            Method::POST,
            "/orders/{id}/cancel",
            orders::cancel,
            op("cancelOrder", "orders", "Cancel an order not yet shipped")
                .body("CancelOrder")
                .write("OrderWritten"),
        ),
        route(
            Method::POST,
            "/orders/{id}/ship",
            orders::ship,
            op("shipOrder", "orders", "Ship a confirmed order")
                .access(Admin)
                .write("OrderWritten"),
        ),
        route(
            Method::POST,
            "/carts",
            carts::create,
            op(
                "createCart",
                "carts",
                "Create a cart: the customer's with its token, else a guest cart with a cart_token",
            )
            .access(Open)
            .body("CreateCart")
            .optional_body()
            .create(
                "CartWritten",
                &["getCart", "setCartLine", "removeCartLine", "claimCart", "checkoutCart"],
            ),
        ),
        route(
            Method::GET,
            "/carts/{id}",
            carts::get,
            op(
                "getCart",
                "carts",
                "Read a cart, with its products' current prices and stock",
            )
            .access(Open)
            .query(Query::One)
            .answers(200, "Cart", true),
        ),
        route(
            Method::PUT,
            "/carts/{id}/lines/{product_id}",
            carts::set_line,
            op("setCartLine", "carts", "Set a line's quantity; 0 removes it")
                .access(Open)
                .body("SetCartLine")
                .write("CartWritten"),
        ),
        route(
            Method::DELETE,
            "/carts/{id}/lines/{product_id}",
            carts::remove_line,
            op("removeCartLine", "carts", "Remove a line")
                .access(Open)
                .write("CartWritten"),
        ),
        route(
            Method::POST,
            "/carts/{id}/claim",
            carts::claim,
            op(
                "claimCart",
                "carts",
                "A signed-in customer takes a guest cart (with its X-Cart-Token), merging it into its open cart",
            )
            .body("ClaimCart")
            .optional_body()
            .answers(200, "CartWritten", true),
        ),
        route(
            Method::POST,
            "/carts/{id}/checkout",
            carts::checkout,
            op(
                "checkoutCart",
                "carts",
                "Place the cart's order (201); a repeat answers the same order (200)",
            )
            .body("CheckoutCart")
            .answers(201, "OrderWritten", true)
            .also(200)
            .problems(&[(
                401,
                "No valid bearer token, or a guest cart: sign in and claim it first.",
            )]),
        ),
        route(
            Method::GET,
            "/users/{id}/carts",
            carts::carts_of_user,
            op("listCartsOfUser", "carts", "List a customer's carts, newest first")
                .query(Query::Page)
                .answers(200, "CartPage", false),
        ),
        route(
            Method::GET,
            "/payments/{id}",
            queries::payment,
            op("getPayment", "payments", "Read a payment")
                .query(Query::One)
                .answers(200, "Payment", true),
        ),
        route(
            Method::POST,
            "/payments/{id}/refund",
            payments::refund,
            op("refundPayment", "payments", "Refund a captured payment")
                .access(Admin)
                .write("PaymentWritten"),
        ),
        route(
            Method::POST,
            "/webhooks",
            webhooks::create,
            op("createWebhook", "webhooks", "Register a webhook endpoint")
                .access(Admin)
                .body("CreateWebhook")
                .answers(201, "WebhookCreated", false),
        ),
        route(
            Method::GET,
            "/webhooks",
            webhooks::list,
            op("listWebhooks", "webhooks", "List the webhook endpoints")
                .access(Admin)
                .query(Query::Page)
                .answers(200, "WebhookPage", false),
        ),
        route(
            Method::GET,
            "/webhooks/{id}",
            webhooks::get,
            op("getWebhook", "webhooks", "Read a webhook endpoint")
                .access(Admin)
                .answers(200, "Webhook", false),
        ),
        route(
            Method::PATCH,
            "/webhooks/{id}",
            webhooks::update,
            op("updateWebhook", "webhooks", "Change a webhook endpoint, or enable or disable it")
                .access(Admin)
                .body("UpdateWebhook")
                .answers(200, "Webhook", false),
        ),
        route(
            Method::DELETE,
            "/webhooks/{id}",
            webhooks::delete,
            op("deleteWebhook", "webhooks", "Delete a webhook endpoint and its deliveries")
                .access(Admin)
                .no_content(),
        ),
        route(
            Method::POST,
            "/webhooks/{id}/rotate-secret",
            webhooks::rotate_secret,
            op(
                "rotateWebhookSecret",
                "webhooks",
                "A new signing secret; the old one also signs for 24 h",
            )
            .access(Admin)
            .answers(200, "WebhookSecret", false),
        ),
        route(
            Method::GET,
            "/webhooks/{id}/deliveries",
            webhooks::deliveries,
            op("listWebhookDeliveries", "webhooks", "List an endpoint's deliveries, newest first")
                .access(Admin)
                .query(Query::Deliveries)
                .answers(200, "WebhookDeliveryPage", false),
        ),
        route(
            Method::POST,
            "/webhooks/{id}/deliveries/{delivery_id}/retry",
            webhooks::retry,
            op("retryWebhookDelivery", "webhooks", "Try a delivery again now")
                .access(Admin)
                .answers(202, "WebhookDelivery", false),
        ),
        route(
            Method::GET,
            "/orders/{id}/updates",
            updates::order,
            op("orderUpdates", "orders", "An order's changes as Server-Sent Events")
                .event_stream("order", "Order"),
        ),
        route(
            Method::GET,
            "/products/{id}/updates",
            updates::product,
            op("productUpdates", "products", "A product's changes as Server-Sent Events")
                .access(Open)
                .event_stream("product", "Product"),
        ),
        route(
            Method::GET,
            "/carts/{id}/updates",
            updates::cart,
            op("cartUpdates", "carts", "A cart's changes as Server-Sent Events")
                .access(Open)
                .event_stream("cart", "Cart"),
        ),
        route(
            Method::GET,
            "/users/{id}/notifications/updates",
            updates::notifications,
            op(
                "notificationUpdates",
                "users",
                "A user's new notifications as Server-Sent Events",
            )
            .event_stream("notification", "Notification"),
        ),
        route(
            Method::GET,
            "/aggregates/{type}/{id}/events",
            aggregates::events,
            op(
                "getEvents",
                "events",
                "Read an aggregate's stream as stored",
            )
            .access(Admin)
            .answers(200, "EventStream", false),
        ),
        route(
            Method::GET,
            "/healthz",
            operations::healthz,
            op("healthz", "operations", "Liveness")
                .access(Operations)
                .answers(200, "Health", false),
        ),
        route(
            Method::GET,
            "/readyz",
            operations::readyz,
            op("readyz", "operations", "Readiness")
                .access(Operations)
                .answers(200, "Readiness", false)
                .readiness(),
        ),
        route(
            Method::GET,
            "/metrics",
            crate::metrics::render,
            op(
                "metrics",
                "operations",
                "Metrics in the Prometheus text format",
            )
            .access(Operations)
            .text(),
        ),
        route(
            Method::GET,
            "/openapi.json",
            documents::openapi_json,
            op("openapi", "documentation", "This OpenAPI document")
                .access(Operations)
                .answers(200, "OpenApiDocument", false),
        ),
        route(
            Method::GET,
            "/asyncapi.json",
            documents::asyncapi_json,
            op(
                "asyncapi",
                "documentation",
                "The AsyncAPI 3.0 document of the event stream, change announcements and webhooks",
            )
            .access(Operations)
            .answers(200, "AsyncApiDocument", false),
        ),
        route(
            Method::GET,
            "/docs",
            documents::docs,
            op(
                "docs",
                "documentation",
                "Interactive documentation of this API",
            )
            .access(Operations)
            .html(),
        ),
        route(
            Method::GET,
            "/docs/scalar.js",
            documents::scalar_js,
            op(
                "docsScript",
                "documentation",
                "The API reference's script (Scalar, vendored), served by this server",
            )
            .access(Operations)
            .script(),
        ),
        route(
            Method::GET,
            "/docs/docs.js",
            documents::docs_js,
            op(
                "docsStart",
                "documentation",
                "The script that starts the API reference on this document",
            )
            .access(Operations)
            .script(),
        ),
    ]
}

fn build(routes: Vec<Route>) -> Router<AppState> {
    routes
        .into_iter()
        .fold(Router::new(), |router, r| router.route(r.path, r.handler))
}

pub fn routes() -> Router<AppState> {
    build(table())
}

/// Only the operations paths, for processes that run no API role.
pub fn operations() -> Router<AppState> {
    build(
        table()
            .into_iter()
            .filter(|r| r.doc.tag == "operations")
            .collect(),
    )
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such path")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "this path does not take that method",
    )
}

/// The answer to a write: the resource as it now is, with its version in the
/// body and as `ETag`, and `Location` when it was just created.
pub(crate) fn written<T: Serialize>(
    status: StatusCode,
    location: Option<String>,
    version: usize,
    body: T,
) -> Response {
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{version}\"")) {
        headers.insert(header::ETAG, etag);
    }
    if let Some(location) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LOCATION, location);
    }
    response
}

/// Collects validation failures so one answer lists every bad field.
#[derive(Default)]
pub(crate) struct Fields(Vec<FieldError>);

impl Fields {
    pub fn check<T>(&mut self, field: &str, parsed: Result<T, ValidationError>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(err) => {
                self.0.push(FieldError::new(field, err.message));
                None
            }
        }
    }

    pub fn fail(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Auth and the rate limit skip exactly the routes the table calls
    /// operations paths: a documented exemption the edge does not grant (or
    /// the reverse) would make the document lie.
    #[test]
    fn the_edge_exempts_exactly_the_operations_routes() {
        for route in table() {
            assert_eq!(
                crate::auth::is_operations_path(route.path),
                route.doc.access == Access::Operations,
                "{} {}",
                route.method,
                route.path
            );
        }
    }
}
