use axum::extract::{Path, State};
use axum::Json;
use commands::stream::{read_stream, StoredEvent};

use crate::auth::Admin;
use crate::error::ApiError;
use crate::extract::parse_id;
use crate::routes::queries::{NoParams, QueryParams};
use crate::state::AppState;

/// The stream of one aggregate, straight from the event store.
///
/// Policy: admin only (metadata names other users).
pub async fn events(
    State(state): State<AppState>,
    _admin: Admin,
    Path((kind, id)): Path<(String, String)>,
    _no_params: QueryParams<NoParams>,
) -> Result<Json<Vec<StoredEvent>>, ApiError> {
    if !matches!(
        kind.as_str(),
        "user" | "product" | "order" | "payment" | "cart"
    ) {
        return Err(ApiError::not_found(format!(
            "no aggregate type {kind:?}; it is one of user, product, order, payment, cart"
        )));
    }
    let id = parse_id(&id)?;
    let events = read_stream(&state.pool, &kind, &id.to_string()).await?;
    if events.is_empty() {
        return Err(ApiError::not_found(format!("no {kind} has the id {id}")));
    }
    Ok(Json(events))
}
