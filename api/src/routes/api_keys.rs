//! `POST/GET/DELETE /api-keys`: keys for other systems, admin only. A key
//! is shown once, in the answer that creates it; only its hash is kept.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use commands::identity::{ApiKey, ApiKeyRole};
use domain::values::Name;
use projections::queries::{Page, PageRequest};
use schemars::JsonSchema;
use schemas::commands::CreateApiKey;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::queries::QueryParams;
use super::Fields;
use crate::auth::{Admin, Caller};
use crate::error::ApiError;
use crate::extract::{parse_id, JsonBody};
use crate::state::AppState;

/// A key as listed: never the key itself.
#[derive(Serialize, JsonSchema)]
pub(crate) struct ApiKeyView {
    id: Uuid,
    name: String,
    /// `admin` or `catalog`.
    role: &'static str,
    created_at: DateTime<Utc>,
    /// When it was last used, to the minute; `null` if never.
    last_used_at: Option<DateTime<Utc>>,
}

impl From<&ApiKey> for ApiKeyView {
    fn from(key: &ApiKey) -> Self {
        Self {
            id: key.id,
            name: key.name.clone(),
            role: key.role.as_str(),
            created_at: key.created_at,
            last_used_at: key.last_used_at,
        }
    }
}

/// The answer that creates a key, the only one that shows it.
#[derive(Serialize, JsonSchema)]
pub(crate) struct ApiKeyCreated {
    id: Uuid,
    name: String,
    role: &'static str,
    /// `agk_...`: send it as `Authorization: Bearer <key>`. Shown only here.
    key: String,
    created_at: DateTime<Utc>,
}

/// Policy: admin only.
pub async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    caller: Caller,
    JsonBody(body): JsonBody<CreateApiKey>,
) -> Result<Response, ApiError> {
    let mut fields = Fields::default();
    let name = fields.check("name", Name::parse(body.name));
    let role = ApiKeyRole::parse(&body.role);
    if role.is_none() {
        fields.fail("role", "must be admin or catalog");
    }
    fields.finish()?;
    let (Some(name), Some(role)) = (name, role) else {
        return Err(ApiError::validation(Vec::new()));
    };
    let (record, key) = state
        .identity
        .api_keys
        .create(name.as_str(), role, &caller.actor())
        .await?;
    tracing::info!(api_key = %record.id, role = role.as_str(), "API key created");
    let mut response = (
        StatusCode::CREATED,
        Json(ApiKeyCreated {
            id: record.id,
            name: record.name,
            role: role.as_str(),
            key,
            created_at: record.created_at,
        }),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api-keys/{}", record.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    super::auth::no_store(&mut response);
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyParams {
    limit: Option<String>,
    cursor: Option<String>,
}

/// Policy: admin only. Live keys, oldest first.
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    QueryParams(params): QueryParams<ApiKeyParams>,
) -> Result<Json<Page<ApiKeyView>>, ApiError> {
    let limit = PageRequest::parse(params.limit.as_deref(), None)?.limit;
    let after = match params.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(cursor) => Some(
            URL_SAFE_NO_PAD
                .decode(cursor)
                .ok()
                .and_then(|bytes| Uuid::from_slice(&bytes).ok())
                .ok_or_else(|| ApiError::bad_request("cursor is not one this list gave"))?,
        ),
    };
    let mut keys = state
        .identity
        .api_keys
        .list(after, i64::from(limit) + 1)
        .await?;
    let next_cursor = if keys.len() > limit as usize {
        keys.truncate(limit as usize);
        keys.last()
            .map(|last| URL_SAFE_NO_PAD.encode(last.id.as_bytes()))
    } else {
        None
    };
    Ok(Json(Page {
        items: keys.iter().map(ApiKeyView::from).collect(),
        next_cursor,
    }))
}

/// Policy: admin only. From the answer on, this process refuses the key;
/// every other within [`crate::auth::access::API_KEY_TTL`].
pub async fn delete(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    if !state.identity.api_keys.revoke(id).await? {
        return Err(ApiError::not_found("no live API key has this id"));
    }
    state.authenticator.api_keys.clear();
    tracing::info!(api_key = %id, "API key revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}
