//! Our own access tokens: HS256 under `AGORA_JWT_SECRET`, claims `sub`,
//! `role`, `exp`, `iat`, and `sid` (the sign-in) when `POST /auth/login`
//! issued them. `nbf` is honoured when present.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Role, TokenError};

/// Longest `sub` an admin token may carry: a name, not a document. A
/// customer's is its user id (a UUID).
pub const MAX_SUBJECT_LEN: usize = 128;

/// Clock skew allowed between the issuer and us; short, since a stolen
/// token lives that much longer.
const LEEWAY_SECS: u64 = 5;

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<Uuid>,
}

/// What one of our tokens proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// A customer: the user, and the sign-in that issued the token (none
    /// for a token of `agora token`).
    Customer {
        user_id: Uuid,
        sign_in: Option<Uuid>,
    },
    Admin {
        sub: Arc<str>,
    },
}

/// The shared HS256 secret (`AGORA_JWT_SECRET`), as keys to sign and to
/// verify with. Never printed.
#[derive(Clone)]
pub struct JwtSecret(Arc<Keys>);

struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Keys the hashes by which emails are looked up without being stored;
    /// derived from the secret, so every process has the same one.
    lookup: [u8; 32],
}

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtSecret(***)")
    }
}

impl JwtSecret {
    pub fn new(secret: &[u8]) -> Self {
        // One algorithm only, so a token cannot choose how it is checked
        // (`alg: none`, or an asymmetric algorithm keyed with our secret).
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        use sha2::{Digest, Sha256};
        let lookup = Sha256::new()
            .chain_update(b"agora lookup key\0")
            .chain_update(secret)
            .finalize()
            .into();
        Self(Arc::new(Keys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            lookup,
        }))
    }

    /// The key of lookup hashes (see [`commands::identity::Identity::new`]).
    pub fn lookup_key(&self) -> &[u8] {
        &self.0.lookup
    }

    /// A token for `sub` in `role`, valid for `ttl` from now.
    pub fn issue(&self, sub: &str, role: Role, ttl: Duration) -> Result<String, TokenError> {
        check_subject(sub, role)?;
        self.sign(sub, role, ttl, None)
    }

    /// The access token of a sign-in: a customer's, naming the sign-in.
    pub fn issue_for_sign_in(
        &self,
        user_id: Uuid,
        sign_in: Uuid,
        ttl: Duration,
    ) -> Result<String, TokenError> {
        self.sign(&user_id.to_string(), Role::Customer, ttl, Some(sign_in))
    }

    fn sign(
        &self,
        sub: &str,
        role: Role,
        ttl: Duration,
        sid: Option<Uuid>,
    ) -> Result<String, TokenError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let claims = Claims {
            sub: sub.to_owned(),
            role: role.as_str().to_owned(),
            exp: (now + ttl).as_secs(),
            iat: Some(now.as_secs()),
            nbf: None,
            sid,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.0.encoding)
            .map_err(|err| TokenError::invalid(err.to_string()))
    }

    /// The identity a token proves, or why it proves none.
    pub fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.0.decoding, &self.0.validation)
            .map_err(|err| TokenError::from_jwt(&err, "HS256"))?;
        let claims = data.claims;
        let role = claims.role.parse::<Role>().map_err(TokenError::invalid)?;
        check_subject(&claims.sub, role)?;
        Ok(match role {
            Role::Customer => Verified::Customer {
                user_id: Uuid::parse_str(&claims.sub)
                    .map_err(|_| TokenError::invalid("a customer's sub must be its user id"))?,
                sign_in: claims.sid,
            },
            Role::Admin => Verified::Admin {
                sub: Arc::from(claims.sub),
            },
        })
    }
}

fn check_subject(sub: &str, role: Role) -> Result<(), TokenError> {
    if sub.is_empty() {
        return Err(TokenError::invalid("the token's sub is empty"));
    }
    match role {
        Role::Customer if Uuid::parse_str(sub).is_err() => Err(TokenError::invalid(
            "a customer's sub must be its user id, a UUID",
        )),
        Role::Admin if sub.len() > MAX_SUBJECT_LEN || sub.chars().any(char::is_control) => {
            Err(TokenError::invalid(format!(
                "an admin's sub is at most {MAX_SUBJECT_LEN} bytes, without control characters"
            )))
        }
        _ => Ok(()),
    }
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
        assert_eq!(
            secret.verify(&token),
            Ok(Verified::Customer {
                user_id: id,
                sign_in: None
            })
        );
        let sign_in = Uuid::now_v7();
        let token = secret
            .issue_for_sign_in(id, sign_in, Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            secret.verify(&token),
            Ok(Verified::Customer {
                user_id: id,
                sign_in: Some(sign_in)
            })
        );
        let token = secret
            .issue("ops", Role::Admin, Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            secret.verify(&token),
            Ok(Verified::Admin {
                sub: Arc::from("ops")
            })
        );
    }

    #[test]
    fn another_secret_a_customer_without_a_user_id_or_a_long_sub_is_refused() {
        let token = JwtSecret::new(b"one")
            .issue("ops", Role::Admin, Duration::from_secs(60))
            .unwrap();
        let err = JwtSecret::new(b"two").verify(&token).unwrap_err();
        assert_eq!(err.reason, "invalid");
        assert!(JwtSecret::new(b"one")
            .issue("not-a-uuid", Role::Customer, Duration::from_secs(60))
            .is_err());
        assert!(JwtSecret::new(b"one")
            .issue(&"a".repeat(9000), Role::Admin, Duration::from_secs(60))
            .is_err());
    }

    #[test]
    fn a_token_not_valid_before_an_hour_from_now_is_refused() {
        let secret = b"s3cret";
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "ops", "role": "admin", "exp": now + 7200, "nbf": now + 3600}),
            &EncodingKey::from_secret(secret),
        )
        .unwrap();
        let err = JwtSecret::new(secret).verify(&token).unwrap_err();
        assert_eq!(err.reason, "not_yet_valid");
    }
}
