//! One file per resource. Handlers parse, call a store, and render.

mod aggregates;
mod operations;
mod orders;
mod payments;
mod products;
pub mod queries;
mod users;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use domain::values::ValidationError;
use serde::Serialize;

use crate::error::{ApiError, FieldError};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/users", post(users::register).get(queries::users))
        .route("/users/{id}", get(queries::user).patch(users::update))
        .route("/users/{id}/deactivate", post(users::deactivate))
        .route("/users/{id}/orders", get(queries::orders_of_user))
        .route(
            "/users/{id}/notifications",
            get(queries::notifications_of_user),
        )
        .route("/products", post(products::create).get(queries::products))
        .route(
            "/products/{id}",
            get(queries::product).patch(products::update),
        )
        .route("/products/{id}/price", post(products::change_price))
        .route("/products/{id}/stock", post(products::adjust_stock))
        .route("/products/{id}/discontinue", post(products::discontinue))
        .route("/orders", post(orders::place))
        .route("/orders/{id}", get(queries::order))
        .route("/orders/{id}/cancel", post(orders::cancel))
        .route("/orders/{id}/ship", post(orders::ship))
        .route("/payments/{id}", get(queries::payment))
        .route("/payments/{id}/refund", post(payments::refund))
        .route("/aggregates/{kind}/{id}/events", get(aggregates::events))
        .route("/healthz", get(operations::healthz))
        .route("/readyz", get(operations::readyz))
}

/// Only the operations paths, for processes that run no API role.
pub fn operations() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(operations::healthz))
        .route("/readyz", get(operations::readyz))
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
