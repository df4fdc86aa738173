//! Tokens of an OpenID Connect provider (`AGORA_OIDC_ISSUER`): RS256 or
//! ES256, checked against the provider's JWKS, found through
//! `<issuer>/.well-known/openid-configuration`.
//!
//! The keys are fetched on first use and kept. A token naming a key we do
//! not have makes us fetch them again, at most once every
//! [`REFETCH_INTERVAL`], so a flood of tokens with made-up `kid`s cannot
//! turn into a flood of requests to the provider; the keys are also fetched
//! again once they are [`MAX_KEY_AGE`] old, so a key the provider dropped
//! stops being accepted.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::Deserialize;
use serde_json::Value;

use super::TokenError;

/// api.md: a refetch for an unknown `kid` at most once every 10 s.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// Keys older than this are fetched again on the next token.
pub const MAX_KEY_AGE: Duration = Duration::from_secs(15 * 60);

/// Clock skew allowed between the provider and us.
const LEEWAY_SECS: u64 = 30;

/// Discovery and JWKS documents larger than this are refused.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// `AGORA_OIDC_*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcOptions {
    pub issuer: String,
    pub audience: String,
    /// The claim that lists the caller's roles (`roles`); a dotted path
    /// reaches into objects (`realm_access.roles`).
    pub roles_claim: String,
    /// The role that makes the caller an admin (`agora-admin`).
    pub admin_role: String,
    /// How soon after one fetch of the keys an unknown `kid` may cause
    /// another: [`REFETCH_INTERVAL`] (tests shorten it).
    pub refetch_interval: Duration,
}

impl OidcOptions {
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            roles_claim: "roles".to_owned(),
            admin_role: "agora-admin".to_owned(),
            refetch_interval: REFETCH_INTERVAL,
        }
    }
}

/// What a provider's token says of its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcClaims {
    /// As the token has it; the caller parses and normalizes it.
    pub email: String,
    pub name: Option<String>,
    pub admin: bool,
}

pub struct Oidc {
    options: OidcOptions,
    http: reqwest::Client,
    keys: RwLock<Keys>,
    /// One fetch at a time; others use the keys they have meanwhile.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, Arc<(DecodingKey, Algorithm)>>,
    /// The key to use for a token without `kid`, when the set has one key.
    only: Option<Arc<(DecodingKey, Algorithm)>>,
    fetched_at: Option<Instant>,
    attempted_at: Option<Instant>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl Oidc {
    pub fn new(options: OidcOptions) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .unwrap_or_default();
        Self {
            options,
            http,
            keys: RwLock::new(Keys::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.options.issuer
    }

    /// Checks a token whose header names RS256 or ES256.
    pub async fn verify(&self, token: &str, header: &Header) -> Result<OidcClaims, TokenError> {
        let algorithm = header.alg;
        let key = match self.key(header.kid.as_deref()) {
            Some(key) if !self.stale() => key,
            known => {
                let unknown = known.is_none();
                self.refresh(unknown).await;
                self.key(header.kid.as_deref()).ok_or_else(|| TokenError {
                    reason: "unknown_key",
                    detail: "the token names a key its issuer does not publish".to_owned(),
                })?
            }
        };
        let (decoding, key_algorithm) = &*key;
        if *key_algorithm != algorithm {
            return Err(TokenError::invalid(format!(
                "the token says {algorithm:?}, but its key is for {key_algorithm:?}"
            )));
        }
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&[&self.options.issuer]);
        validation.set_audience(&[&self.options.audience]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let data = jsonwebtoken::decode::<Value>(token, decoding, &validation)
            .map_err(|err| TokenError::from_jwt(&err, "RS256 or ES256"))?;
        self.claims(&data.claims)
    }

    fn claims(&self, claims: &Value) -> Result<OidcClaims, TokenError> {
        let email = claims
            .get("email")
            .and_then(Value::as_str)
            .ok_or_else(|| TokenError::invalid("the token has no email claim"))?;
        // Some providers send the flag as a string.
        let verified = match claims.get("email_verified") {
            Some(Value::Bool(flag)) => *flag,
            Some(Value::String(text)) => text == "true",
            _ => false,
        };
        if !verified {
            return Err(TokenError {
                reason: "email_unverified",
                detail: "the token's email is not verified (email_verified is not true)".to_owned(),
            });
        }
        let name = ["name", "preferred_username"]
            .iter()
            .find_map(|claim| claims.get(*claim).and_then(Value::as_str))
            .map(str::to_owned);
        let roles = self
            .options
            .roles_claim
            .split('.')
            .try_fold(claims, |value, part| value.get(part));
        let admin = match roles {
            Some(Value::Array(roles)) => roles
                .iter()
                .any(|role| role.as_str() == Some(self.options.admin_role.as_str())),
            Some(Value::String(roles)) => roles
                .split_whitespace()
                .any(|role| role == self.options.admin_role),
            _ => false,
        };
        Ok(OidcClaims {
            email: email.to_owned(),
            name,
            admin,
        })
    }

    fn key(&self, kid: Option<&str>) -> Option<Arc<(DecodingKey, Algorithm)>> {
        let keys = self
            .keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match kid {
            Some(kid) => keys.by_kid.get(kid).cloned(),
            None => keys.only.clone(),
        }
    }

    fn stale(&self) -> bool {
        let keys = self
            .keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.fetched_at.is_none_or(|at| at.elapsed() > MAX_KEY_AGE)
    }

    /// Fetches the keys again: for an unknown key only if the last attempt
    /// is `refetch_interval` old; for stale keys, by one caller while the
    /// others go on with the keys they have.
    async fn refresh(&self, unknown_key: bool) {
        let _fetching = if unknown_key {
            self.fetching.lock().await
        } else {
            match self.fetching.try_lock() {
                Ok(guard) => guard,
                Err(_) => return,
            }
        };
        {
            let keys = self
                .keys
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let recently = keys
                .attempted_at
                .is_some_and(|at| at.elapsed() < self.options.refetch_interval);
            if recently {
                return;
            }
        }
        self.keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .attempted_at = Some(Instant::now());
        match self.fetch().await {
            Ok(set) => {
                let (by_kid, only) = decoding_keys(&set);
                tracing::info!(issuer = %self.options.issuer, keys = by_kid.len(), "fetched the OpenID Connect provider's keys");
                metrics::counter!("agora_oidc_key_fetches_total", "outcome" => "ok").increment(1);
                let mut keys = self
                    .keys
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                keys.by_kid = by_kid;
                keys.only = only;
                keys.fetched_at = Some(Instant::now());
            }
            Err(err) => {
                metrics::counter!("agora_oidc_key_fetches_total", "outcome" => "error")
                    .increment(1);
                tracing::warn!(issuer = %self.options.issuer, error = %err, "cannot fetch the OpenID Connect provider's keys");
            }
        }
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        let issuer = self.options.issuer.trim_end_matches('/');
        let discovery: Discovery = self
            .get_json(&format!("{issuer}/.well-known/openid-configuration"))
            .await?;
        // OpenID Connect Discovery 1.0, section 4.3: the document must name
        // exactly the issuer it was fetched for.
        if discovery.issuer != self.options.issuer {
            return Err(format!(
                "the discovery document names issuer {:?}, not {:?}",
                discovery.issuer, self.options.issuer
            ));
        }
        self.get_json(&discovery.jwks_uri).await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let mut response = self
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|err| format!("GET {url}: {err}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|err| format!("GET {url}: {err}"))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("GET {url}: larger than {MAX_DOCUMENT_BYTES} bytes"));
            }
        }
        serde_json::from_slice(&body).map_err(|err| format!("GET {url}: {err}"))
    }
}

type KeyMap = HashMap<String, Arc<(DecodingKey, Algorithm)>>;

/// The signing keys of a set that we accept, by `kid`: RSA keys for RS256
/// and P-256 keys for ES256, each only for its one algorithm.
fn decoding_keys(set: &JwkSet) -> (KeyMap, Option<Arc<(DecodingKey, Algorithm)>>) {
    let mut by_kid = HashMap::new();
    let mut usable = Vec::new();
    for jwk in &set.keys {
        let Some(algorithm) = algorithm_of(jwk) else {
            continue;
        };
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        let key = Arc::new((key, algorithm));
        if let Some(kid) = &jwk.common.key_id {
            by_kid.insert(kid.clone(), Arc::clone(&key));
        }
        usable.push(key);
    }
    let only = if usable.len() == 1 {
        usable.pop()
    } else {
        None
    };
    (by_kid, only)
}

fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        _ => return None,
    };
    // A key that names its algorithm is used for that one only.
    match jwk.common.key_algorithm {
        None => Some(algorithm),
        Some(KeyAlgorithm::RS256) if algorithm == Algorithm::RS256 => Some(algorithm),
        Some(KeyAlgorithm::ES256) if algorithm == Algorithm::ES256 => Some(algorithm),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn oidc(roles_claim: &str) -> Oidc {
        Oidc::new(OidcOptions {
            roles_claim: roles_claim.to_owned(),
            ..OidcOptions::new("https://id.example", "agora")
        })
    }

    #[test]
    fn roles_come_from_the_configured_claim_a_list_a_string_or_a_path() {
        let claims = |roles: Value| json!({"email": "a@b.example", "email_verified": true, "name": "A", "realm_access": {"roles": roles.clone()}, "roles": roles});
        let flat = oidc("roles");
        let nested = oidc("realm_access.roles");
        for (roles, admin) in [
            (json!(["agora-admin"]), true),
            (json!("reader agora-admin"), true),
            (json!(["reader"]), false),
            (json!("agora-administrator"), false),
            (json!(null), false),
        ] {
            assert_eq!(
                flat.claims(&claims(roles.clone())).unwrap().admin,
                admin,
                "{roles}"
            );
            assert_eq!(
                nested.claims(&claims(roles.clone())).unwrap().admin,
                admin,
                "{roles}"
            );
        }
    }

    #[test]
    fn the_email_must_be_there_and_verified() {
        let oidc = oidc("roles");
        let verified = oidc
            .claims(&json!({"email": "a@b.example", "email_verified": "true"}))
            .unwrap();
        assert_eq!(verified.email, "a@b.example");
        assert_eq!(verified.name, None);
        for claims in [
            json!({"email": "a@b.example"}),
            json!({"email": "a@b.example", "email_verified": false}),
            json!({"email": "a@b.example", "email_verified": "yes"}),
            json!({"email_verified": true}),
        ] {
            assert!(oidc.claims(&claims).is_err(), "{claims}");
        }
    }
}
