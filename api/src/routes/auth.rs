//! Sign-in: `POST /auth/login`, `/auth/refresh` and `/auth/logout`, and
//! what every route that revokes something shares ([`announce_revocation`]).
//!
//! Answers that carry tokens are `Cache-Control: no-store` (RFC 6749,
//! section 5.1), and their `Idempotency-Key` is not honoured
//! ([`crate::auth::carries_secrets`]).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use commands::identity::{Admission, RevokeReason, Rotation};
use domain::values::EmailAddress;
use schemars::JsonSchema;
use schemas::commands::{Login, Logout, Refresh};
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

use crate::auth::{invalid_token, JwtSecret, SignIn, SignedIn};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::state::AppState;

/// The answer of a login or a refresh.
#[derive(Serialize, JsonSchema)]
pub(crate) struct TokenPair {
    /// A bearer token for `Authorization: Bearer`, valid `expires_in` seconds.
    access_token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    expires_in: u64,
    /// Single use: `POST /auth/refresh` exchanges it for a new pair.
    refresh_token: String,
    user_id: Uuid,
}

/// The key our access tokens are signed with. With authentication off
/// (development) tokens are still issued, under a fixed key, and nobody
/// checks them.
fn signer(state: &AppState) -> JwtSecret {
    state
        .options
        .auth
        .clone()
        .unwrap_or_else(|| JwtSecret::new(b"agora development signing key (AGORA_AUTH=off)"))
}

fn pair(
    state: &AppState,
    user_id: Uuid,
    sign_in: Uuid,
    refresh_token: String,
) -> Result<Response, ApiError> {
    let ttl = state.options.identity.access_ttl;
    let access_token = signer(state)
        .issue_for_sign_in(user_id, sign_in, ttl)
        .map_err(|err| ApiError::internal(&std::io::Error::other(err.detail)))?;
    let mut response = Json(TokenPair {
        access_token,
        token_type: "Bearer",
        expires_in: ttl.as_secs(),
        refresh_token,
        user_id,
    })
    .into_response();
    no_store(&mut response);
    Ok(response)
}

pub(crate) fn no_store(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

fn invalid_credentials(status: StatusCode) -> ApiError {
    ApiError::new(
        status,
        "invalid-credentials",
        "the email or the password is not right",
    )
}

/// Policy: open to all. Unknown email, wrong password and a user without a
/// password answer alike, after the same work (one password verification,
/// against a dummy hash when there is nothing to compare with).
pub async fn login(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<Login>,
) -> Result<Response, ApiError> {
    let identity = &state.identity;
    let email = EmailAddress::parse(body.email.as_str()).ok();
    // Throttled per email, existing or not, so a 429 reveals nothing either.
    let normalized = email.as_ref().map_or_else(
        || domain::normalize_email(&body.email),
        EmailAddress::normalized,
    );
    let attempt = match identity
        .throttle
        .admit(&identity.email_key(&normalized))
        .await?
    {
        Admission::Allowed(attempt) => attempt,
        Admission::Throttled { retry_after } => {
            metrics::counter!("agora_logins_total", "outcome" => "throttled").increment(1);
            return Err(ApiError {
                retry_after: Some(retry_after),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "login-throttled",
                    "too many failed logins for this email; try again later",
                )
            });
        }
    };
    let record = match email {
        Some(_) => {
            identity
                .login_record(&state.aggregates.vault.email_claim(&normalized))
                .await?
        }
        None => None,
    };
    let hash = record.as_ref().and_then(|r| r.password_hash.as_deref());
    let matched = identity.passwords.verify(&body.password, hash).await?;
    let Some(record) = record.filter(|_| matched) else {
        metrics::counter!("agora_logins_total", "outcome" => "invalid_credentials").increment(1);
        return Err(invalid_credentials(StatusCode::UNAUTHORIZED));
    };
    identity.throttle.succeeded(attempt).await?;
    let user_id = record.user_id;
    let window = state.options.identity.access_window();
    if identity.sign_ins.access(user_id, window).await?.disabled {
        metrics::counter!("agora_logins_total", "outcome" => "deactivated").increment(1);
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "user-deactivated",
            "this user is deactivated",
        ));
    }
    let issued = identity
        .sign_ins
        .start(user_id, state.options.identity.refresh_ttl, window)
        .await?;
    metrics::counter!("agora_logins_total", "outcome" => "ok").increment(1);
    tracing::info!(%user_id, sign_in = %issued.sign_in, "signed in");
    pair(&state, user_id, issued.sign_in, issued.token)
}

/// Policy: open to all (the refresh token is the credential).
pub async fn refresh(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<Refresh>,
) -> Result<Response, ApiError> {
    let ttl = state.options.identity.refresh_ttl;
    match state
        .identity
        .sign_ins
        .rotate(&body.refresh_token, ttl)
        .await?
    {
        Rotation::Rotated(issued) => {
            metrics::counter!("agora_refreshes_total", "outcome" => "ok").increment(1);
            pair(&state, issued.user_id, issued.sign_in, issued.token)
        }
        Rotation::Reused { user_id, sign_in } => {
            metrics::counter!("agora_refreshes_total", "outcome" => "reused").increment(1);
            tracing::warn!(%user_id, %sign_in, "a used refresh token came back: its sign-in is revoked");
            announce_revocation(&state, user_id).await;
            Err(invalid_token(
                "this refresh token was used already; its sign-in is revoked, sign in again",
            ))
        }
        Rotation::Invalid => {
            metrics::counter!("agora_refreshes_total", "outcome" => "invalid").increment(1);
            Err(invalid_token(
                "this refresh token is unknown, expired or revoked",
            ))
        }
    }
}

/// Policy: any signed-in caller. Ends the sign-in of the refresh token in
/// the body, else the one the access token names; 204 either way.
pub async fn logout(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    sign_in: Option<Extension<SignIn>>,
    MaybeJson(body): MaybeJson<Logout>,
) -> Result<Response, ApiError> {
    let identity = &state.identity;
    if body
        .refresh_token
        .as_ref()
        .is_some_and(|token| !(1..=1024).contains(&token.len()))
    {
        let mut fields = super::Fields::default();
        fields.fail(
            "refresh_token",
            "must be 1 to 1024 characters, as handed out",
        );
        fields.finish()?;
    }
    let target = match body.refresh_token {
        Some(token) => identity.sign_ins.of_token(&token).await?,
        None => match (sign_in, &caller) {
            (Some(Extension(SignIn(sign_in))), crate::auth::Caller::Customer(user_id)) => {
                Some((sign_in, *user_id))
            }
            _ => None,
        },
    };
    if let Some((sign_in, user_id)) = target {
        // Holding a refresh token is proof enough to end its sign-in; a
        // customer ends only its own, all the same.
        caller.require_user(user_id)?;
        if identity
            .sign_ins
            .revoke(sign_in, RevokeReason::Logout)
            .await?
        {
            tracing::info!(%user_id, %sign_in, "signed out");
            announce_revocation(&state, user_id).await;
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Something `user_id` signed in with was revoked: this process forgets
/// what it knew of the user at once, and tells the others
/// (`<prefix>.changes.credentials.<id>`). A lost notice is bounded by the
/// user cache's time-to-live ([`crate::auth::access::USER_TTL`]).
pub(crate) async fn announce_revocation(state: &AppState, user_id: Uuid) {
    state.authenticator.users.forget(user_id);
    if let Some(nats) = &state.nats {
        let subject = schemas::subjects::change(
            &state.options.nats_prefix,
            crate::changes::CREDENTIALS,
            &user_id.to_string(),
        );
        if let Err(err) = nats.publish(subject, Bytes::from_static(b"0")).await {
            tracing::warn!(error = %err, "could not announce a revocation; other processes learn of it within a minute");
        }
    }
}

/// A JSON body that may be left out entirely (no `Content-Type` and no
/// bytes): then `T::default()`.
pub struct MaybeJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for MaybeJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let declared = req.headers().contains_key(header::CONTENT_TYPE);
        let empty = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_none_or(|length| length.as_bytes() == b"0");
        if !declared && empty {
            return Ok(Self(T::default()));
        }
        // An object only: serde would take `[]` for a struct of optional fields.
        let JsonBody(value) = JsonBody::<serde_json::Value>::from_request(req, state).await?;
        if !value.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        serde_json::from_value(value)
            .map(Self)
            .map_err(|err| ApiError::bad_request(format!("the body is not valid: {err}")))
    }
}
