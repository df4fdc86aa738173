//! `/webhooks`: endpoints that receive signed deliveries of domain events
//! (api.md, Webhooks), admin only. A secret is shown only in the answers
//! that make it (create, rotate); the delivery loop is `webhooks::deliver`.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use projections::queries::{Page, PageRequest};
use schemars::JsonSchema;
use schemas::commands::{CreateWebhook, UpdateWebhook};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use webhooks::endpoints::{Changes, Delivery};
use webhooks::{Endpoint, EndpointError};

use super::queries::QueryParams;
use super::Fields;
use crate::auth::Admin;
use crate::error::ApiError;
use crate::extract::{parse_id, JsonBody};
use crate::state::AppState;

/// An endpoint as listed: never its secret.
#[derive(Serialize, JsonSchema)]
pub(crate) struct WebhookView {
    id: Uuid,
    url: String,
    /// Event names or patterns (`order.*`, `*`).
    events: Vec<String>,
    description: Option<String>,
    /// `enabled` or `disabled`.
    #[schemars(extend("enum" = ["enabled", "disabled"]))]
    status: String,
    created_at: DateTime<Utc>,
}

impl From<Endpoint> for WebhookView {
    fn from(e: Endpoint) -> Self {
        Self {
            id: e.id,
            url: e.url,
            events: e.events,
            description: e.description,
            status: e.status,
            created_at: e.created_at,
        }
    }
}

/// The answer that registers an endpoint, the only one besides a rotation
/// that shows its secret.
#[derive(Serialize, JsonSchema)]
pub(crate) struct WebhookCreated {
    id: Uuid,
    url: String,
    events: Vec<String>,
    description: Option<String>,
    #[schemars(extend("enum" = ["enabled", "disabled"]))]
    status: String,
    /// `whsec_` + base64 of 32 random bytes: the Standard Webhooks secret
    /// that signs every delivery. Shown only here.
    secret: String,
    created_at: DateTime<Utc>,
}

/// A new secret; for 24 h deliveries carry signatures of both.
#[derive(Serialize, JsonSchema)]
pub(crate) struct WebhookSecret {
    secret: String,
}

/// One event's delivery to one endpoint.
#[derive(Serialize, JsonSchema)]
pub(crate) struct WebhookDelivery {
    /// Also the `webhook-id` of every attempt, as `msg_<id without dashes>`.
    id: Uuid,
    event_id: String,
    event_type: String,
    aggregate_id: Uuid,
    #[schemars(extend("enum" = ["pending", "delivered", "failed"]))]
    status: String,
    attempts: i32,
    last_status_code: Option<i32>,
    last_error: Option<String>,
    /// When the next attempt is due; `null` unless pending.
    next_attempt_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
}

impl From<Delivery> for WebhookDelivery {
    fn from(d: Delivery) -> Self {
        Self {
            id: d.id,
            event_id: d.event_id,
            event_type: d.event_type,
            aggregate_id: d.aggregate_id,
            status: d.status,
            attempts: d.attempts,
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            next_attempt_at: d.next_attempt_at,
            created_at: d.created_at,
            delivered_at: d.delivered_at,
        }
    }
}

impl From<EndpointError> for ApiError {
    fn from(err: EndpointError) -> Self {
        match &err {
            EndpointError::Database(
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed,
            ) => {
                tracing::warn!(error = %err, "webhook endpoints unavailable");
                Self::unavailable("the database is unavailable; try again shortly", 1)
            }
            _ => Self::internal(&err),
        }
    }
}

const MAX_DESCRIPTION: usize = 500;

/// Checks `url` (scheme, and every address its host resolves to) and the
/// event patterns, collecting every failure.
async fn check(
    state: &AppState,
    fields: &mut Fields,
    url: Option<&str>,
    events: Option<&[String]>,
    description: Option<&str>,
) {
    if let Some(url) = url {
        if url.len() > 2048 {
            fields.fail("url", "must be at most 2048 characters");
        } else if let Err(err) = state.options.webhook_addresses.check(url).await {
            fields.fail("url", err.to_string());
        }
    }
    if let Some(events) = events {
        if events.is_empty() || events.len() > 50 {
            fields.fail("events", "must list 1 to 50 event names or patterns");
        }
        for (i, pattern) in events.iter().enumerate() {
            if !webhooks::is_valid_pattern(pattern) {
                fields.fail(
                    format!("events[{i}]"),
                    "must be an event name of the contract, `<resource>.*` or `*`",
                );
            }
        }
    }
    if let Some(description) = description {
        if description.chars().count() > MAX_DESCRIPTION {
            fields.fail("description", "must be at most 500 characters");
        } else if !domain::values::is_free_text(description) {
            fields.fail("description", domain::values::FREE_TEXT_RULE);
        }
    }
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::not_found(format!("no webhook has the id {id}"))
}

/// Policy: admin only.
pub async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    JsonBody(body): JsonBody<CreateWebhook>,
) -> Result<Response, ApiError> {
    let mut fields = Fields::default();
    check(
        &state,
        &mut fields,
        Some(&body.url),
        Some(&body.events),
        body.description.as_deref(),
    )
    .await;
    fields.finish()?;
    let (endpoint, secret) = state
        .webhooks
        .create(&body.url, &body.events, body.description.as_deref())
        .await?;
    tracing::info!(webhook = %endpoint.id, "webhook endpoint registered");
    let id = endpoint.id;
    let mut response = (
        StatusCode::CREATED,
        Json(WebhookCreated {
            id,
            url: endpoint.url,
            events: endpoint.events,
            description: endpoint.description,
            status: endpoint.status,
            secret,
            created_at: endpoint.created_at,
        }),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/webhooks/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    super::auth::no_store(&mut response);
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    limit: Option<String>,
    cursor: Option<String>,
}

fn decode_cursor(cursor: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    match cursor.filter(|c| !c.is_empty()) {
        None => Ok(None),
        Some(cursor) => URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|bytes| Uuid::from_slice(&bytes).ok())
            .map(Some)
            .ok_or_else(|| ApiError::bad_request("cursor is not one this list gave")),
    }
}

/// One more than `limit` was read: cut it and point at the last row.
fn page<T, V: From<T>>(mut rows: Vec<T>, limit: u32, id: impl Fn(&T) -> Uuid) -> Page<V> {
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last()
            .map(|last| URL_SAFE_NO_PAD.encode(id(last).as_bytes()))
    } else {
        None
    };
    Page {
        items: rows.into_iter().map(V::from).collect(),
        next_cursor,
    }
}

/// Policy: admin only. Oldest first.
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<Json<Page<WebhookView>>, ApiError> {
    let limit = PageRequest::parse(params.limit.as_deref(), None)?.limit;
    let after = decode_cursor(params.cursor.as_deref())?;
    let rows = state.webhooks.list(after, i64::from(limit) + 1).await?;
    Ok(Json(page(rows, limit, |e: &Endpoint| e.id)))
}

/// Policy: admin only.
pub async fn get(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    let id = parse_id(&id)?;
    let endpoint = state.webhooks.get(id).await?.ok_or_else(|| not_found(id))?;
    Ok(Json(endpoint.into()))
}

/// Policy: admin only.
pub async fn update(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateWebhook>,
) -> Result<Json<WebhookView>, ApiError> {
    let id = parse_id(&id)?;
    let mut fields = Fields::default();
    check(
        &state,
        &mut fields,
        body.url.as_deref(),
        body.events.as_deref(),
        body.description.as_deref(),
    )
    .await;
    if body
        .status
        .as_deref()
        .is_some_and(|s| s != "enabled" && s != "disabled")
    {
        fields.fail("status", "must be enabled or disabled");
    }
    fields.finish()?;
    let changes = Changes {
        url: body.url,
        events: body.events,
        description: body.description,
        status: body.status,
    };
    let endpoint = state
        .webhooks
        .update(id, &changes)
        .await?
        .ok_or_else(|| not_found(id))?;
    tracing::info!(webhook = %id, status = %endpoint.status, "webhook endpoint changed");
    Ok(Json(endpoint.into()))
}

/// Policy: admin only. Its pending deliveries go with it.
pub async fn delete(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    if !state.webhooks.delete(id).await? {
        return Err(not_found(id));
    }
    tracing::info!(webhook = %id, "webhook endpoint deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Policy: admin only.
pub async fn rotate_secret(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let secret = state
        .webhooks
        .rotate(id)
        .await?
        .ok_or_else(|| not_found(id))?;
    tracing::info!(webhook = %id, "webhook secret rotated");
    let mut response = Json(WebhookSecret { secret }).into_response();
    super::auth::no_store(&mut response);
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryParams {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// Policy: admin only. Newest first.
pub async fn deliveries(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<DeliveryParams>,
) -> Result<Json<Page<WebhookDelivery>>, ApiError> {
    let id = parse_id(&id)?;
    if let Some(status) = params.status.as_deref() {
        if !matches!(status, "pending" | "delivered" | "failed") {
            return Err(ApiError::bad_request(
                "status must be pending, delivered or failed",
            ));
        }
    }
    let limit = PageRequest::parse(params.limit.as_deref(), None)?.limit;
    let before = decode_cursor(params.cursor.as_deref())?;
    if state.webhooks.get(id).await?.is_none() {
        return Err(not_found(id));
    }
    let rows = state
        .webhooks
        .deliveries(id, params.status.as_deref(), before, i64::from(limit) + 1)
        .await?;
    Ok(Json(page(rows, limit, |d: &Delivery| d.id)))
}

/// Policy: admin only. 202: the delivery is pending again and due now.
pub async fn retry(
    State(state): State<AppState>,
    _admin: Admin,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let delivery = parse_id(&delivery)?;
    if !state.webhooks.retry(id, delivery).await? {
        return Err(ApiError::not_found(format!(
            "webhook {id} has no delivery {delivery}"
        )));
    }
    let row = state
        .webhooks
        .delivery(id, delivery)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("webhook {id} has no delivery {delivery}")))?;
    tracing::info!(webhook = %id, delivery = %delivery, "webhook delivery retried");
    Ok((StatusCode::ACCEPTED, Json(WebhookDelivery::from(row))).into_response())
}
