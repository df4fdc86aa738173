//! Who is calling, and what they may do.
//!
//! Authentication is a step of the edge ([`authenticate`]): it checks the
//! `Authorization: Bearer` credential and puts the [`Caller`] into the
//! request's extensions. Three kinds of credential are understood, told
//! apart before any is checked, so none can pass for another:
//! - `agk_...`: an API key ([`commands::identity::ApiKeys`]);
//! - an HS256 JWT: our own access token ([`tokens`]), checked with
//!   `AGORA_JWT_SECRET` only;
//! - an RS256 or ES256 JWT: a token of the OpenID Connect provider
//!   ([`oidc`]), checked with its published keys only.
//!
//! A user's token is also checked against the user ([`access`]): a
//! deactivated user's tokens, and those of a sign-in that ended, are
//! refused at once on every process, not only when they expire.
//!
//! A credential that is present but not valid is 401 `invalid-token` on
//! every route but the operations paths, even an open one: a client sending
//! a broken token should learn it, not be served as somebody else. No
//! credential at all is an anonymous caller.
//!
//! Authorization is next to each route: the handler takes a [`Caller`] (or
//! an [`Admin`], a [`CatalogManager`]) and asks it, after parsing its path
//! id and before touching any state. The rule for ids: a customer gets 403
//! for any id that is not its own, whether or not the resource exists, so
//! ids cannot be probed; only its owner or an admin learns that something
//! is missing (404).
//!
//! With `AGORA_AUTH=off` ([`HttpOptions::auth`](crate::HttpOptions) is
//! `None`) every caller is [`Caller::Unchecked`] and may do everything.

pub mod access;
pub mod oidc;
pub mod tokens;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use commands::identity::ApiKeyRole;
use commands::{CommandError, CommandMetadata};
use domain::user::UserCommand;
use domain::values::{EmailAddress, Name};
use jsonwebtoken::Algorithm;
use moka::sync::Cache;
use uuid::Uuid;

pub use oidc::{Oidc, OidcOptions};
pub use tokens::{JwtSecret, Verified, MAX_SUBJECT_LEN};

use crate::error::ApiError;
use crate::state::AppState;

/// Paths that are never authenticated nor rate limited: probes, metrics
/// scrapers and API documentation must work without a token.
pub fn is_operations_path(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/metrics" | "/openapi.json" | "/asyncapi.json"
    ) || path == "/docs"
        || path.starts_with("/docs/")
}

/// Paths whose requests or answers carry passwords or tokens. Their
/// `Idempotency-Key` is not honoured: a stored answer would keep a token in
/// clear, and a stored fingerprint would be a fast hash of a password.
pub fn carries_secrets(path: &str) -> bool {
    matches!(
        path,
        "/auth/login" | "/auth/refresh" | "/auth/logout" | "/api-keys" | "/carts" | "/webhooks"
    ) || (path.starts_with("/users/") && path.ends_with("/password"))
        || (path.starts_with("/webhooks/") && path.ends_with("/rotate-secret"))
}

/// A caller's role, as the `role` claim names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Customer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "customer" => Ok(Self::Customer),
            "admin" => Ok(Self::Admin),
            other => Err(format!("unknown role {other:?}: customer or admin")),
        }
    }
}

/// Why a credential was refused; `reason` labels `agora_auth_failures_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    pub reason: &'static str,
    pub detail: String,
}

impl TokenError {
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self {
            reason: "invalid",
            detail: detail.into(),
        }
    }

    fn revoked(detail: &str) -> Self {
        Self {
            reason: "revoked",
            detail: detail.to_owned(),
        }
    }

    fn from_jwt(err: &jsonwebtoken::errors::Error, accepted: &str) -> Self {
        use jsonwebtoken::errors::ErrorKind;
        match err.kind() {
            ErrorKind::ExpiredSignature => Self {
                reason: "expired",
                detail: "the token has expired".to_owned(),
            },
            ErrorKind::ImmatureSignature => Self {
                reason: "not_yet_valid",
                detail: "the token is not valid yet (nbf)".to_owned(),
            },
            ErrorKind::InvalidSignature => Self::invalid("the token's signature does not match"),
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                Self::invalid(format!("only {accepted} tokens are accepted here"))
            }
            ErrorKind::InvalidIssuer => Self {
                reason: "wrong_issuer",
                detail: "the token is of another issuer".to_owned(),
            },
            ErrorKind::InvalidAudience => Self {
                reason: "wrong_audience",
                detail: "the token is meant for another audience".to_owned(),
            },
            ErrorKind::MissingRequiredClaim(claim) => {
                Self::invalid(format!("the token has no {claim} claim"))
            }
            _ => Self::invalid("the token is malformed"),
        }
    }
}

/// 401 `invalid-token`: a credential that is present but proves nothing.
pub fn invalid_token(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid-token", detail)
}

/// Lifetimes of what sign-in hands out, and the OpenID Connect provider.
#[derive(Debug, Clone)]
pub struct IdentityOptions {
    /// `AGORA_ACCESS_TOKEN_TTL`, default 15 minutes.
    pub access_ttl: Duration,
    /// `AGORA_REFRESH_TOKEN_TTL`, default 30 days.
    pub refresh_ttl: Duration,
    /// `AGORA_OIDC_*`; `None` turns OpenID Connect off.
    pub oidc: Option<OidcOptions>,
}

impl Default for IdentityOptions {
    fn default() -> Self {
        Self {
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            oidc: None,
        }
    }
}

impl IdentityOptions {
    /// The longest an access token of a sign-in can outlive the sign-in.
    pub fn access_window(&self) -> Duration {
        self.access_ttl + Duration::from_secs(60)
    }
}

/// Who is calling, as verified by [`authenticate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Authentication is off (`AGORA_AUTH=off`): everything is allowed.
    Unchecked,
    /// No credential.
    Anonymous,
    /// A customer: the user with this id.
    Customer(Uuid),
    /// An admin: the token's subject, an OpenID Connect admin's user id, or
    /// `api-key:<id>`.
    Admin(Arc<str>),
    /// A `catalog` API key (`api-key:<id>`): products, prices and stock only.
    Catalog(Arc<str>),
}

/// The sign-in an access token names (`sid`), for `POST /auth/logout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignIn(pub Uuid);

impl Caller {
    /// Stored as the `actor` of every event this caller causes.
    pub fn actor(&self) -> String {
        match self {
            Self::Unchecked | Self::Anonymous => "anonymous".to_owned(),
            Self::Customer(id) => id.to_string(),
            Self::Admin(sub) | Self::Catalog(sub) => sub.to_string(),
        }
    }

    /// 401 unless the caller is signed in, 403 for a `catalog` key (which
    /// may reach no user's data). A customer comes back as the id its
    /// access is limited to; an admin (or auth off) as `None`: no limit.
    pub fn restricted_to(&self) -> Result<Option<Uuid>, ApiError> {
        match self {
            Self::Unchecked | Self::Admin(_) => Ok(None),
            Self::Customer(id) => Ok(Some(*id)),
            Self::Catalog(_) => Err(forbidden("a catalog key manages products only")),
            Self::Anonymous => Err(missing()),
        }
    }

    /// Only an admin: 401 without a token, 403 for a customer.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.restricted_to()? {
            None => Ok(()),
            Some(_) => Err(forbidden("only an admin may do this")),
        }
    }

    /// An admin or a `catalog` key: 401 without a token, 403 for a customer.
    pub fn require_catalog(&self) -> Result<(), ApiError> {
        match self {
            Self::Catalog(_) => Ok(()),
            other => other.require_admin(),
        }
    }

    /// The user `owner` itself, or an admin: 401 without a token, 403 for
    /// another customer.
    pub fn require_user(&self, owner: Uuid) -> Result<(), ApiError> {
        self.require_owner(Some(owner))
    }

    /// Like [`Caller::require_user`] for a resource whose owner is
    /// `owner`; `None` (no such resource) is not the customer's either.
    pub fn require_owner(&self, owner: Option<Uuid>) -> Result<(), ApiError> {
        match self.restricted_to()? {
            None => Ok(()),
            Some(me) if owner == Some(me) => Ok(()),
            Some(_) => Err(forbidden("this belongs to another user")),
        }
    }

    /// Whether this is an admin (or auth is off).
    pub fn is_admin(&self) -> bool {
        matches!(self, Self::Unchecked | Self::Admin(_))
    }
}

fn missing() -> ApiError {
    metrics::counter!("agora_auth_failures_total", "reason" => "missing").increment(1);
    ApiError::unauthorized("this needs a bearer token: Authorization: Bearer <token>")
}

fn forbidden(detail: &str) -> ApiError {
    metrics::counter!("agora_auth_failures_total", "reason" => "forbidden").increment(1);
    ApiError::forbidden(detail)
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        // Without the middleware nobody vouched for the caller: anonymous.
        Ok(parts
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or(Caller::Anonymous))
    }
}

/// A handler argument that admits any signed-in caller (401 without a
/// token), checked before the body is read; the handler then checks
/// ownership with [`Caller::require_user`] or [`Caller::require_owner`].
pub struct SignedIn(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for SignedIn {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.restricted_to()?;
        Ok(Self(caller))
    }
}

/// A handler argument that admits only admins (401 without a token, 403 for
/// a customer), checked before the body is read.
pub struct Admin;

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Caller::from_request_parts(parts, state)
            .await?
            .require_admin()
            .map(|()| Admin)
    }
}

/// A handler argument that admits admins and `catalog` API keys: the
/// routes that manage products, prices and stock.
pub struct CatalogManager;

impl<S: Send + Sync> FromRequestParts<S> for CatalogManager {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Caller::from_request_parts(parts, state)
            .await?
            .require_catalog()
            .map(|()| CatalogManager)
    }
}

/// Who a request counts against, for rate limits and `Idempotency-Key`
/// scopes: the token subject when there is one, else the peer's address.
/// Built on every request, so it allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    Customer(Uuid),
    Admin(Arc<str>),
    /// No token (or auth off, or a credential that was refused): the TCP
    /// peer, when known.
    Address(Option<IpAddr>),
}

impl ClientKey {
    fn of(caller: &Caller, peer: Option<IpAddr>) -> Self {
        match caller {
            Caller::Customer(id) => Self::Customer(*id),
            Caller::Admin(sub) | Caller::Catalog(sub) => Self::Admin(Arc::clone(sub)),
            Caller::Unchecked | Caller::Anonymous => Self::Address(peer),
        }
    }

    /// The peer's key, for a request whose credential was refused.
    pub fn peer(req: &Request) -> Self {
        Self::Address(peer_of(req))
    }
}

/// The `Idempotency-Key` scope: distinct for every client.
impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Customer(id) => write!(f, "customer:{id}"),
            Self::Admin(sub) => write!(f, "admin:{sub}"),
            Self::Address(Some(ip)) => write!(f, "ip:{ip}"),
            Self::Address(None) => f.write_str("ip:unknown"),
        }
    }
}

/// What a process keeps to check credentials quickly: the OpenID Connect
/// provider's keys, and the caches of [`access`].
pub struct Authenticator {
    pub oidc: Option<Oidc>,
    pub users: access::UserAccessCache,
    pub api_keys: access::ApiKeyCache,
    /// Users registered through OpenID Connect, by normalized email.
    oidc_users: Cache<String, Uuid>,
}

impl Authenticator {
    pub fn new(options: &IdentityOptions) -> Self {
        Self {
            oidc: options.oidc.clone().map(Oidc::new),
            users: access::UserAccessCache::default(),
            api_keys: access::ApiKeyCache::default(),
            oidc_users: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
        }
    }
}

/// Puts the [`Caller`] and its [`ClientKey`] into the request, or answers
/// 401 `invalid-token` for a credential that is present but not valid (503
/// if the store that would tell cannot be reached). The peer address is the
/// TCP peer's: `X-Forwarded-For` is anyone's to write, so it is not trusted.
/// A step of [`crate::edge::edge`].
pub async fn authenticate(state: &AppState, req: &mut Request) -> Result<(), ApiError> {
    if is_operations_path(req.uri().path()) {
        return Ok(());
    }
    let (caller, sign_in) = match &state.options.auth {
        None => (Caller::Unchecked, None),
        Some(secret) => identify(state, secret, req.headers()).await?,
    };
    let key = ClientKey::of(&caller, peer_of(req));
    if let Some(sign_in) = sign_in {
        req.extensions_mut().insert(SignIn(sign_in));
    }
    req.extensions_mut().insert(caller);
    req.extensions_mut().insert(key);
    Ok(())
}

fn peer_of(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
}

async fn identify(
    state: &AppState,
    secret: &JwtSecret,
    headers: &HeaderMap,
) -> Result<(Caller, Option<Uuid>), ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok((Caller::Anonymous, None));
    };
    let refused = |err: TokenError| {
        metrics::counter!("agora_auth_failures_total", "reason" => err.reason).increment(1);
        tracing::debug!(reason = err.reason, detail = %err.detail, "credential refused");
        invalid_token(err.detail)
    };
    let text = value.to_str().unwrap_or_default();
    let token = match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => {
            return Err(refused(TokenError::invalid(
                "Authorization must be \"Bearer <token>\"",
            )))
        }
    };
    if token.starts_with(commands::identity::API_KEY_PREFIX) {
        let found = state
            .authenticator
            .api_keys
            .find(&state.identity, token)
            .await?;
        let key = found.ok_or_else(|| {
            refused(TokenError {
                reason: "unknown_key",
                detail: "no live API key is this one".to_owned(),
            })
        })?;
        let actor: Arc<str> = Arc::from(format!("api-key:{}", key.id));
        let caller = match key.role {
            ApiKeyRole::Admin => Caller::Admin(actor),
            ApiKeyRole::Catalog => Caller::Catalog(actor),
        };
        return Ok((caller, None));
    }
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| refused(TokenError::invalid("the token is malformed")))?;
    match header.alg {
        Algorithm::HS256 => match secret.verify(token).map_err(refused)? {
            Verified::Admin { sub } => Ok((Caller::Admin(sub), None)),
            Verified::Customer { user_id, sign_in } => {
                check_user(state, user_id, sign_in).await.map_err(|err| match err {
                    Checked::Refused(err) => refused(err),
                    Checked::Failed(err) => err,
                })?;
                Ok((Caller::Customer(user_id), sign_in))
            }
        },
        Algorithm::RS256 | Algorithm::ES256 => {
            let Some(oidc) = &state.authenticator.oidc else {
                return Err(refused(TokenError::invalid(
                    "no OpenID Connect provider is configured: only HS256 tokens are accepted",
                )));
            };
            let claims = oidc.verify(token, &header).await.map_err(refused)?;
            let user_id = oidc_user(state, &claims).await.map_err(|err| match err {
                Checked::Refused(err) => refused(err),
                Checked::Failed(err) => err,
            })?;
            check_user(state, user_id, None)
                .await
                .map_err(|err| match err {
                    Checked::Refused(err) => refused(err),
                    Checked::Failed(err) => err,
                })?;
            let caller = if claims.admin {
                Caller::Admin(Arc::from(user_id.to_string()))
            } else {
                Caller::Customer(user_id)
            };
            Ok((caller, None))
        }
        other => Err(refused(TokenError::invalid(format!(
            "{other:?} tokens are not accepted: HS256 of ours, RS256 or ES256 of the OpenID Connect provider"
        )))),
    }
}

enum Checked {
    Refused(TokenError),
    Failed(ApiError),
}

impl From<commands::StoreError> for Checked {
    fn from(err: commands::StoreError) -> Self {
        Self::Failed(err.into())
    }
}

/// Refuses the tokens of a deactivated user and of a sign-in that ended.
async fn check_user(state: &AppState, user_id: Uuid, sign_in: Option<Uuid>) -> Result<(), Checked> {
    let window = state.options.identity.access_window();
    let access = state
        .authenticator
        .users
        .get(&state.identity, user_id, window)
        .await?;
    if access.disabled {
        return Err(Checked::Refused(TokenError::revoked(
            "the token's user is deactivated",
        )));
    }
    if sign_in.is_some_and(|sign_in| access.revoked_sign_ins.contains(&sign_in)) {
        return Err(Checked::Refused(TokenError::revoked(
            "the token's sign-in has ended",
        )));
    }
    Ok(())
}

/// The user an OpenID Connect token's verified email names, registered on
/// first sight with the token's name.
async fn oidc_user(state: &AppState, claims: &oidc::OidcClaims) -> Result<Uuid, Checked> {
    let email = EmailAddress::parse(claims.email.as_str()).map_err(|_| {
        Checked::Refused(TokenError::invalid(
            "the token's email is not an email address",
        ))
    })?;
    let normalized = email.normalized();
    if let Some(id) = state.authenticator.oidc_users.get(&normalized) {
        return Ok(id);
    }
    // Two racing first requests: one registers, the other finds its user.
    for _ in 0..2 {
        let claim = state.aggregates.vault.email_claim(&normalized);
        if let Some(id) = state.identity.user_of_email(&claim).await? {
            state.authenticator.oidc_users.insert(normalized, id);
            return Ok(id);
        }
        let name = claims
            .name
            .as_deref()
            .and_then(|name| Name::parse(name).ok())
            .or_else(|| Name::parse(email.as_str().split('@').next().unwrap_or("user")).ok())
            .ok_or_else(|| Checked::Refused(TokenError::invalid("the token names nobody")))?;
        let user_id = Uuid::now_v7();
        let metadata = CommandMetadata {
            actor: "oidc".to_owned(),
            ..CommandMetadata::system()
        };
        let registered = state
            .aggregates
            .users
            .execute_new(
                &user_id.to_string(),
                UserCommand::Register {
                    user_id,
                    email: email.clone(),
                    name,
                },
                &metadata,
            )
            .await;
        match registered {
            Ok(_) => {
                tracing::info!(%user_id, "registered a user on first sight of its OpenID Connect token");
                metrics::counter!("agora_oidc_users_registered_total").increment(1);
                state.authenticator.oidc_users.insert(normalized, user_id);
                return Ok(user_id);
            }
            Err(CommandError::Duplicate { .. }) => continue,
            Err(err) => return Err(Checked::Failed(err.into())),
        }
    }
    Err(Checked::Failed(ApiError::conflict(
        "the token's user was being registered concurrently; try again",
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_paths_are_exactly_these() {
        for path in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/asyncapi.json",
            "/docs",
            "/docs/x",
        ] {
            assert!(is_operations_path(path), "{path}");
        }
        for path in ["/users", "/healthz/x", "/docsx", "/products"] {
            assert!(!is_operations_path(path), "{path}");
        }
    }

    #[test]
    fn paths_with_secrets_are_these() {
        for path in [
            "/auth/login",
            "/auth/refresh",
            "/auth/logout",
            "/api-keys",
            "/carts",
            "/users/0190/password",
        ] {
            assert!(carries_secrets(path), "{path}");
        }
        for path in [
            "/users",
            "/users/0190",
            "/api-keys/x",
            "/orders",
            "/carts/0190/claim",
        ] {
            assert!(!carries_secrets(path), "{path}");
        }
    }

    #[test]
    fn a_catalog_key_manages_products_and_nothing_else() {
        let key = Caller::Catalog(Arc::from("api-key:x"));
        assert!(key.require_catalog().is_ok());
        assert_eq!(key.require_admin().unwrap_err().status, 403);
        assert_eq!(key.require_user(Uuid::now_v7()).unwrap_err().status, 403);
        assert_eq!(
            Caller::Customer(Uuid::now_v7())
                .require_catalog()
                .unwrap_err()
                .status,
            403
        );
        assert!(Caller::Admin(Arc::from("ops")).require_catalog().is_ok());
    }
}
