use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use commands::identity::{Admission, RevokeReason};
use domain::user::{User, UserCommand};
use domain::values::{EmailAddress, Name, Password};
use schemars::JsonSchema;
use schemas::commands::{ChangePassword, RegisterUser, UpdateUser};
use serde::Serialize;
use uuid::Uuid;

use super::{written, Fields};
use crate::auth::{Caller, SignIn, SignedIn};
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

/// Policy: open to all, so anyone can sign up. With a password, its hash
/// is stored before the user is registered (a refused registration takes it
/// back), so a registered user can sign in at once.
pub async fn register(
    State(state): State<AppState>,
    _new: IfMatchNothing,
    Context(metadata): Context,
    JsonBody(body): JsonBody<RegisterUser>,
) -> Result<Response, ApiError> {
    let mut fields = Fields::default();
    let email = fields.check("email", EmailAddress::parse(&body.email));
    let name = fields.check("name", Name::parse(&body.name));
    let password = body
        .password
        .and_then(|p| fields.check("password", Password::parse(p)));
    fields.finish()?;
    let (Some(email), Some(name)) = (email, name) else {
        return Err(ApiError::validation(Vec::new()));
    };
    let user_id = Uuid::now_v7();
    let id = user_id.to_string();
    if let Some(password) = &password {
        let hash = state.identity.passwords.hash(password).await?;
        state.identity.set_password_hash(user_id, &hash).await?;
    }
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
        .await;
    let done = match done {
        Ok(done) => done,
        Err(err) => {
            if password.is_some() {
                if let Err(cleanup) = state.identity.forget_password(user_id).await {
                    // Harmless: no email leads to a user id that was never registered.
                    tracing::warn!(error = %cleanup, "could not delete the password of a refused registration");
                }
            }
            return Err(err.into());
        }
    };
    Ok(written(
        StatusCode::CREATED,
        Some(format!("/users/{id}")),
        done.version,
        view(&id, &done.aggregate, done.version),
    ))
}

/// Policy: the user itself (with its current password), or an admin (who
/// may leave it out). The user's other sign-ins end; the one that asked
/// goes on.
pub async fn change_password(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    Path(id): Path<String>,
    IfMatch(expected): IfMatch,
    Context(metadata): Context,
    sign_in: Option<Extension<SignIn>>,
    JsonBody(body): JsonBody<ChangePassword>,
) -> Result<Response, ApiError> {
    let user_id = parse_id(&id)?;
    caller.require_user(user_id)?;
    let mut fields = Fields::default();
    let new_password = fields.check("new_password", Password::parse(body.new_password));
    if body.current_password.is_none() && !caller.is_admin() {
        fields.fail(
            "current_password",
            "is required to change one's own password",
        );
    }
    fields.finish()?;
    let Some(new_password) = new_password else {
        return Err(ApiError::validation(Vec::new()));
    };
    let identity = &state.identity;
    if let Some(current) = &body.current_password {
        // Guesses of the current password (with a stolen access token, say)
        // are throttled as logins are, per user.
        let key = identity.keyed_hash(format!("password-change:{user_id}").as_bytes());
        let attempt = match identity.throttle.admit(&key).await? {
            Admission::Allowed(attempt) => attempt,
            Admission::Throttled { retry_after } => {
                return Err(ApiError {
                    retry_after: Some(retry_after),
                    ..ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "login-throttled",
                        "too many wrong current passwords for this user; try again later",
                    )
                })
            }
        };
        let hash = identity.password_hash(user_id).await?;
        if !identity.passwords.verify(current, hash.as_deref()).await? {
            return Err(ApiError::rule(
                "invalid-credentials",
                "current_password is not the user's password",
            ));
        }
        identity.throttle.succeeded(attempt).await?;
    }
    let hash = identity.passwords.hash(&new_password).await?;
    let id = user_id.to_string();
    // The event first: a refusal (unknown or deactivated user) changes
    // nothing, and the hash follows the recorded decision.
    let done = state
        .aggregates
        .users
        .execute(&id, UserCommand::ChangePassword, expected, &metadata)
        .await?;
    identity.set_password_hash(user_id, &hash).await?;
    let keep = match (&caller, sign_in) {
        (Caller::Customer(me), Some(Extension(SignIn(sign_in)))) if *me == user_id => Some(sign_in),
        _ => None,
    };
    let ended = identity
        .sign_ins
        .revoke_all(user_id, keep, RevokeReason::Password)
        .await?;
    tracing::info!(%user_id, sign_ins_ended = ended, "password changed");
    super::auth::announce_revocation(&state, user_id).await;
    Ok(written(
        StatusCode::OK,
        None,
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

/// The answer to an erasure.
#[derive(Serialize, JsonSchema)]
pub(crate) struct Erasure {
    id: String,
    /// Always `erased`.
    #[schemars(extend("enum" = ["erased"]))]
    status: &'static str,
    version: usize,
}

/// Policy: the user itself, or an admin. Records `UserErased`, then
/// destroys the user's data key (and those of its payments' tokens), so no
/// copy of its personal data can be opened again; its sign-ins and password
/// go, its tokens are refused at once on every process. A repeat (an admin's:
/// the user's own tokens are refused by then) answers the same, 200; the key
/// is destroyed again, so a repeat finishes an erasure interrupted after its
/// event was recorded.
pub async fn erase(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    Path(id): Path<String>,
    IfMatch(expected): IfMatch,
    Context(metadata): Context,
) -> Result<Response, ApiError> {
    let user_id = parse_id(&id)?;
    caller.require_user(user_id)?;
    let id = user_id.to_string();
    let done = state
        .aggregates
        .users
        .execute(&id, UserCommand::Erase, expected, &metadata)
        .await?;
    // Its payments' tokens are sealed under each payment's own key.
    let payments: Vec<Uuid> = sqlx::query_scalar(
        "SELECT payment_id FROM rm_orders WHERE user_id = $1 AND payment_id IS NOT NULL",
    )
    .bind(user_id)
    .fetch_all(&state.pool)
    .await
    .map_err(commands::StoreError::from)?;
    let vault = &state.aggregates.vault;
    for owner in std::iter::once(user_id).chain(payments) {
        vault
            .destroy(owner)
            .await
            .map_err(commands::StoreError::from)?;
    }
    // This process's loaded orders and payments may hold its data opened.
    state.aggregates.users.forget(&id);
    state.aggregates.orders.forget_all();
    state.aggregates.payments.forget_all();
    if let Err(err) = state
        .identity
        .sign_ins
        .revoke_all(user_id, None, RevokeReason::Erased)
        .await
    {
        tracing::warn!(error = %err, "could not end an erased user's sign-ins");
    }
    state.identity.remove_password(user_id).await?;
    super::auth::announce_revocation(&state, user_id).await;
    tracing::info!(%user_id, version = done.version, "user erased");
    Ok(written(
        StatusCode::OK,
        None,
        done.version,
        Erasure {
            id,
            status: "erased",
            version: done.version,
        },
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
    let user_id = parse_id(&id)?;
    caller.require_user(user_id)?;
    let id = user_id.to_string();
    let done = state
        .aggregates
        .users
        .execute(&id, UserCommand::Deactivate, expected, &metadata)
        .await?;
    // Its tokens are refused from now on whatever happens here (every
    // check reads the stream); ending its sign-ins tidies up after it.
    if let Err(err) = state
        .identity
        .sign_ins
        .revoke_all(user_id, None, RevokeReason::Deactivated)
        .await
    {
        tracing::warn!(error = %err, "could not end a deactivated user's sign-ins");
    }
    super::auth::announce_revocation(&state, user_id).await;
    Ok(written(
        StatusCode::OK,
        None,
        done.version,
        view(&id, &done.aggregate, done.version),
    ))
}
