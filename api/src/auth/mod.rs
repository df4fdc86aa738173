//! Who is calling, and what they may do.
//!
//! Authentication is one middleware ([`authenticate`]): it verifies the
//! `Authorization: Bearer` token (HS256 only, `exp` required, `role` one of
//! `customer` or `admin`, a customer's `sub` a user id) and puts the
//! [`Caller`] into the request's extensions. A token that is present but not
//! valid is a 401 on every route but the operations paths, even an open one:
//! a client sending a broken token should learn it, not be served as
//! somebody else. No token at all is an anonymous caller.
//!
//! Authorization is next to each route: the handler takes a [`Caller`] (or
//! an [`Admin`]) and asks it, after parsing its path id and before touching
//! any state. The rule for ids: a customer gets 403 for any id that is not
//! its own, whether or not the resource exists, so ids cannot be probed;
//! only its owner or an admin learns that something is missing (404).
//!
//! With `AGORA_AUTH=off` ([`HttpOptions::auth`](crate::HttpOptions) is
//! `None`) every caller is [`Caller::Unchecked`] and may do everything.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// Paths that are never authenticated nor rate limited: probes, metrics
/// scrapers and API documentation must work without a token.
pub fn is_operations_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics" | "/openapi.json")
        || path == "/docs"
        || path.starts_with("/docs/")
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

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: String,
    exp: u64,
}

/// The shared HS256 secret (`AGORA_JWT_SECRET`), as keys to sign and to
/// verify with. Never printed.
#[derive(Clone)]
pub struct JwtSecret(Arc<Keys>);

struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtSecret(***)")
    }
}

/// Why a token was refused; `reason` labels `agora_auth_failures_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    pub reason: &'static str,
    pub detail: String,
}

impl TokenError {
    fn invalid(detail: impl Into<String>) -> Self {
        Self {
            reason: "invalid",
            detail: detail.into(),
        }
    }
}

impl JwtSecret {
    pub fn new(secret: &[u8]) -> Self {
        // One algorithm only, so a token cannot choose how it is checked
        // (`alg: none`, or an asymmetric algorithm keyed with our secret).
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_exp = true;
        // Clock skew between the issuer and us; short, since a stolen
        // token lives that much longer.
        validation.leeway = 5;
        Self(Arc::new(Keys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }))
    }

    /// A token for `sub` in `role`, valid for `ttl` from now.
    pub fn issue(&self, sub: &str, role: Role, ttl: Duration) -> Result<String, TokenError> {
        if role == Role::Customer && Uuid::parse_str(sub).is_err() {
            return Err(TokenError::invalid(
                "a customer's sub must be its user id, a UUID",
            ));
        }
        if sub.is_empty() {
            return Err(TokenError::invalid("sub must not be empty"));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let claims = Claims {
            sub: sub.to_owned(),
            role: role.as_str().to_owned(),
            exp: (now + ttl).as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.0.encoding)
            .map_err(|err| TokenError::invalid(err.to_string()))
    }

    /// The identity a token proves, or why it proves none.
    pub fn verify(&self, token: &str) -> Result<Caller, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.0.decoding, &self.0.validation)
            .map_err(|err| {
                use jsonwebtoken::errors::ErrorKind;
                match err.kind() {
                    ErrorKind::ExpiredSignature => TokenError {
                        reason: "expired",
                        detail: "the token has expired".to_owned(),
                    },
                    ErrorKind::InvalidSignature => {
                        TokenError::invalid("the token's signature does not match")
                    }
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                        TokenError::invalid("only HS256 tokens are accepted")
                    }
                    ErrorKind::MissingRequiredClaim(claim) => {
                        TokenError::invalid(format!("the token has no {claim} claim"))
                    }
                    _ => TokenError::invalid("the token is malformed"),
                }
            })?;
        let claims = data.claims;
        match claims.role.parse::<Role>() {
            Ok(Role::Admin) if !claims.sub.is_empty() => Ok(Caller::Admin(Arc::from(claims.sub))),
            Ok(Role::Customer) => Uuid::parse_str(&claims.sub)
                .map(Caller::Customer)
                .map_err(|_| TokenError::invalid("a customer's sub must be its user id")),
            Ok(Role::Admin) => Err(TokenError::invalid("the token's sub is empty")),
            Err(detail) => Err(TokenError::invalid(detail)),
        }
    }

    /// The caller named by `Authorization`: anonymous without the header.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, TokenError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(Caller::Anonymous);
        };
        let text = value.to_str().unwrap_or_default();
        let token = match text.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => {
                return Err(TokenError::invalid(
                    "Authorization must be \"Bearer <token>\"",
                ))
            }
        };
        self.verify(token)
    }
}

/// Who is calling, as verified by [`authenticate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Authentication is off (`AGORA_AUTH=off`): everything is allowed.
    Unchecked,
    /// No token.
    Anonymous,
    /// A customer: the user with this id.
    Customer(Uuid),
    /// An admin, with the token's subject.
    Admin(Arc<str>),
}

impl Caller {
    /// Stored as the `actor` of every event this caller causes.
    pub fn actor(&self) -> String {
        match self {
            Self::Unchecked | Self::Anonymous => "anonymous".to_owned(),
            Self::Customer(id) => id.to_string(),
            Self::Admin(sub) => sub.to_string(),
        }
    }

    /// 401 unless the caller is signed in. A customer comes back as the id
    /// its access is limited to; an admin (or auth off) as `None`: no limit.
    pub fn restricted_to(&self) -> Result<Option<Uuid>, ApiError> {
        match self {
            Self::Unchecked | Self::Admin(_) => Ok(None),
            Self::Customer(id) => Ok(Some(*id)),
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

/// Who a request counts against, for rate limits and `Idempotency-Key`
/// scopes: the token subject when there is one, else the peer's address.
/// Built on every request, so it allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    Customer(Uuid),
    Admin(Arc<str>),
    /// No token (or auth off): the TCP peer, when known.
    Address(Option<IpAddr>),
}

impl ClientKey {
    fn of(caller: &Caller, peer: Option<IpAddr>) -> Self {
        match caller {
            Caller::Customer(id) => Self::Customer(*id),
            Caller::Admin(sub) => Self::Admin(Arc::clone(sub)),
            Caller::Unchecked | Caller::Anonymous => Self::Address(peer),
        }
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

/// Puts the [`Caller`] and its [`ClientKey`] into the request, or answers
/// 401 for a token that is present but not valid. The peer address is the
/// TCP peer's: `X-Forwarded-For` is anyone's to write, so it is not trusted.
/// A step of [`crate::edge::edge`].
pub fn authenticate(state: &AppState, req: &mut Request) -> Result<(), ApiError> {
    if is_operations_path(req.uri().path()) {
        return Ok(());
    }
    let caller = match &state.options.auth {
        None => Caller::Unchecked,
        Some(secret) => match secret.authenticate(req.headers()) {
            Ok(caller) => caller,
            Err(err) => {
                metrics::counter!("agora_auth_failures_total", "reason" => err.reason).increment(1);
                tracing::debug!(reason = err.reason, detail = %err.detail, "token refused");
                return Err(ApiError::unauthorized(err.detail));
            }
        },
    };
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let key = ClientKey::of(&caller, peer);
    req.extensions_mut().insert(caller);
    req.extensions_mut().insert(key);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_it_issues_verifies_and_names_its_caller() {
        let secret = JwtSecret::new(b"s3cret");
        let id = Uuid::now_v7();
        let token = secret
            .issue(&id.to_string(), Role::Customer, Duration::from_secs(60))
            .unwrap();
        assert_eq!(secret.verify(&token), Ok(Caller::Customer(id)));
        let token = secret
            .issue("ops", Role::Admin, Duration::from_secs(60))
            .unwrap();
        assert_eq!(secret.verify(&token), Ok(Caller::Admin(Arc::from("ops"))));
    }

    #[test]
    fn another_secret_or_a_customer_without_a_user_id_is_refused() {
        let token = JwtSecret::new(b"one")
            .issue("ops", Role::Admin, Duration::from_secs(60))
            .unwrap();
        let err = JwtSecret::new(b"two").verify(&token).unwrap_err();
        assert_eq!(err.reason, "invalid");
        assert!(JwtSecret::new(b"one")
            .issue("not-a-uuid", Role::Customer, Duration::from_secs(60))
            .is_err());
    }

    #[test]
    fn operations_paths_are_exactly_these() {
        for path in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/docs",
            "/docs/x",
        ] {
            assert!(is_operations_path(path), "{path}");
        }
        for path in ["/users", "/healthz/x", "/docsx", "/products"] {
            assert!(!is_operations_path(path), "{path}");
        }
    }
}
