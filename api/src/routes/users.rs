use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use domain::user::{User, UserCommand};
use domain::values::{EmailAddress, Name};
use schemars::JsonSchema;
use schemas::commands::{RegisterUser, UpdateUser};
use serde::Serialize;
use uuid::Uuid;

use super::{written, Fields};
use crate::auth::SignedIn;
use crate::error::ApiError;
use crate::extract::{parse_id, Context, IfMatch, IfMatchNothing, JsonBody};
use crate::state::AppState;

/// The answer to a write on a user: the aggregate as it now is.
#[derive(Serialize, JsonSchema)]
pub(crate) struct UserView<'a> {
    id: String,
    email: Option<&'a str>,
    name: Option<&'a str>,
    status: domain::user::UserStatus,
    version: usize,
}

fn view<'a>(id: &str, user: &'a User, version: usize) -> UserView<'a> {
    UserView {
        id: id.to_owned(),
        email: user.email().map(|e| e.as_str()),
        name: user.name().map(|n| n.as_str()),
        status: user.status(),
        version,
    }
}

/// Policy: open to all, so anyone can sign up.
pub async fn register(
    State(state): State<AppState>,
    _new: IfMatchNothing,
    Context(metadata): Context,
    JsonBody(body): JsonBody<RegisterUser>,
) -> Result<Response, ApiError> {
    let mut fields = Fields::default();
    let email = fields.check("email", EmailAddress::parse(&body.email));
    let name = fields.check("name", Name::parse(&body.name));
    fields.finish()?;
    let (Some(email), Some(name)) = (email, name) else {
        return Err(ApiError::validation(Vec::new()));
    };
    let user_id = Uuid::now_v7();
    let id = user_id.to_string();
    let done = state
        .aggregates
        .users
        .execute_new(
            &id,
            UserCommand::Register {
                user_id,
                email,
                name,
            },
            &metadata,
        )
        .await?;
    Ok(written(
        StatusCode::CREATED,
        Some(format!("/users/{id}")),
        done.version,
        view(&id, &done.aggregate, done.version),
    ))
}

/// Policy: the user itself, or an admin.
pub async fn update(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    Path(id): Path<String>,
    IfMatch(expected): IfMatch,
    Context(metadata): Context,
    JsonBody(body): JsonBody<UpdateUser>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    caller.require_user(id)?;
    let id = id.to_string();
    let mut fields = Fields::default();
    let name = body
        .name
        .and_then(|n| fields.check("name", Name::parse(&n)));
    let email = body
        .email
        .and_then(|e| fields.check("email", EmailAddress::parse(&e)));
    fields.finish()?;
    let done = state
        .aggregates
        .users
        .execute(
            &id,
            UserCommand::UpdateProfile { name, email },
            expected,
            &metadata,
        )
        .await?;
    Ok(written(
        StatusCode::OK,
        None,
        done.version,
        view(&id, &done.aggregate, done.version),
    ))
}

/// Policy: the user itself, or an admin.
pub async fn deactivate(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    Path(id): Path<String>,
    IfMatch(expected): IfMatch,
    Context(metadata): Context,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    caller.require_user(id)?;
    let id = id.to_string();
    let done = state
        .aggregates
        .users
        .execute(&id, UserCommand::Deactivate, expected, &metadata)
        .await?;
    Ok(written(
        StatusCode::OK,
        None,
        done.version,
        view(&id, &done.aggregate, done.version),
    ))
}
