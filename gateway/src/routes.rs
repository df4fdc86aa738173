//! The gateway's HTTP surface. With a token, every route answers 401
//! `{error}` to a request without `Authorization: Bearer <token>`.
//!
//! `POST /charges` `{amount, currency, token}` with `Idempotency-Key`:
//! 200 `{id, status: "approved", ...}`, 402 `{status: "declined", reason}`,
//! 502 (a flaky try), 503 (outage), 400 (no key or a bad body).
//! `POST /refunds` `{charge_key}` with `Idempotency-Key`: 200 `{status:
//! "refunded" | "voided", ...}`, 503 (outage), 400.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Request, State as Extract};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::ledger::{self, ChargeRecord};
use crate::State;

pub(crate) fn router(state: State, token: Option<Arc<str>>) -> Router {
    let router = Router::new()
        .route("/charges", post(charge).get(list_charges))
        .route("/refunds", post(refund).get(list_refunds))
        .route("/admin/outage", post(outage))
        .route("/admin/requests", get(requests))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state);
    match token {
        // Outermost, so an unknown path or a wrong method is a 401 too:
        // a caller without the token learns nothing of the gateway.
        Some(token) => router.layer(middleware::from_fn(move |req: Request, next: Next| {
            let token = Arc::clone(&token);
            async move {
                if presents(&req, &token) {
                    next.run(req).await
                } else {
                    let mut answer = (
                        StatusCode::UNAUTHORIZED,
                        Json(json!({ "error": "a valid bearer token is required" })),
                    )
                        .into_response();
                    answer.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"gateway\""),
                    );
                    answer
                }
            }
        })),
        None => router,
    }
}

/// Whether `req` carries `Authorization: Bearer <token>`. Compared in time
/// independent of where the bytes differ, so the token cannot be guessed a
/// byte at a time.
fn presents(req: &Request, token: &str) -> bool {
    let Some(sent) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (sent, token) = (sent.trim().as_bytes(), token.as_bytes());
    sent.len() == token.len()
        && sent
            .iter()
            .zip(token)
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
}

#[derive(Deserialize)]
struct ChargeRequest {
    amount: i64,
    currency: String,
    token: String,
}

#[derive(Deserialize)]
struct RefundRequest {
    charge_key: String,
}

#[derive(Deserialize)]
struct Outage {
    down: bool,
}

enum Error {
    BadRequest(String),
    Unavailable,
    Flaky,
    Ledger(sqlx::Error),
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        Self::Ledger(err)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the gateway is down".to_owned(),
            ),
            Self::Flaky => (
                StatusCode::BAD_GATEWAY,
                "the card network did not answer; try again".to_owned(),
            ),
            Self::Ledger(err) => {
                tracing::error!(error = %err, "gateway ledger failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the ledger failed".to_owned(),
                )
            }
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<String, Error> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .map(str::to_owned)
        .ok_or_else(|| Error::BadRequest("an Idempotency-Key header is required".to_owned()))
}

fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, Error> {
    body.map(|Json(b)| b)
        .map_err(|rejection| Error::BadRequest(rejection.body_text()))
}

fn answer(record: &ChargeRecord) -> Response {
    let status = if record.status == "approved" {
        StatusCode::OK
    } else {
        StatusCode::PAYMENT_REQUIRED
    };
    // A voided key is answered as a decline: the charge was given up on.
    let shown = if record.status == "approved" {
        "approved"
    } else {
        "declined"
    };
    let body = json!({
        "id": record.id,
        "status": shown,
        "reason": record.reason,
        "amount": record.amount,
        "currency": record.currency,
    });
    (status, Json(body)).into_response()
}

async fn charge(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    request: Result<Json<ChargeRequest>, JsonRejection>,
) -> Result<Response, Error> {
    state.charge_requests.fetch_add(1, Ordering::Relaxed);
    if state.down.load(Ordering::Relaxed) {
        return Err(Error::Unavailable);
    }
    let key = idempotency_key(&headers)?;
    let request = body(request)?;
    if request.amount <= 0 {
        return Err(Error::BadRequest("amount must be positive".to_owned()));
    }
    if let Some(first) = ledger::find_charge(&state.pool, &key).await? {
        return Ok(answer(&first));
    }
    if request.token == "tok_flaky" && ledger::count_try(&state.pool, &key).await? <= 2 {
        return Err(Error::Flaky);
    }
    let (status, reason) = match request.token.as_str() {
        "tok_ok" | "tok_slow" | "tok_flaky" => ("approved", None),
        "tok_decline" => ("declined", Some("card_declined")),
        _ => ("declined", Some("invalid_token")),
    };
    // Recorded before the slow answer, as a real processor commits before
    // replying: a caller that gives up waiting has still been charged.
    let record = ledger::record_charge(
        &state.pool,
        ChargeRecord {
            idempotency_key: key.clone(),
            id: Uuid::now_v7(),
            token: request.token.clone(),
            amount: request.amount,
            currency: request.currency,
            status: status.to_owned(),
            reason: reason.map(str::to_owned),
            created_at: chrono::Utc::now(),
        },
    )
    .await?;
    if request.token == "tok_slow" {
        tokio::time::sleep(state.slow_delay).await;
    }
    tracing::info!(key, status = %record.status, amount = record.amount, "charge");
    Ok(answer(&record))
}

async fn refund(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    request: Result<Json<RefundRequest>, JsonRejection>,
) -> Result<Response, Error> {
    state.refund_requests.fetch_add(1, Ordering::Relaxed);
    if state.down.load(Ordering::Relaxed) {
        return Err(Error::Unavailable);
    }
    let key = idempotency_key(&headers)?;
    let request = body(request)?;
    if request.charge_key.is_empty() {
        return Err(Error::BadRequest("charge_key must not be empty".to_owned()));
    }
    let record = match ledger::find_refund(&state.pool, &key).await? {
        Some(first) => first,
        None => ledger::refund_charge(&state.pool, &key, &request.charge_key).await?,
    };
    tracing::info!(key, status = %record.status, amount = record.amount, "refund");
    Ok(Json(record).into_response())
}

async fn list_charges(Extract(state): Extract<State>) -> Result<Response, Error> {
    Ok(Json(ledger::charges(&state.pool).await?).into_response())
}

async fn list_refunds(Extract(state): Extract<State>) -> Result<Response, Error> {
    Ok(Json(ledger::refunds(&state.pool).await?).into_response())
}

async fn outage(
    Extract(state): Extract<State>,
    request: Result<Json<Outage>, JsonRejection>,
) -> Result<Response, Error> {
    let request = body(request)?;
    state.down.store(request.down, Ordering::Relaxed);
    tracing::warn!(down = request.down, "gateway outage switched");
    Ok(Json(json!({ "down": request.down })).into_response())
}

async fn requests(Extract(state): Extract<State>) -> Json<serde_json::Value> {
    Json(json!({
        "charges": state.charge_requests.load(Ordering::Relaxed),
        "refunds": state.refund_requests.load(Ordering::Relaxed),
    }))
}
