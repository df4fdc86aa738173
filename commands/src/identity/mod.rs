//! Identity on the write side: password hashes, sign-ins and their refresh
//! tokens, the login throttle and API keys (migration `0007_identity`).
//!
//! None of it is an event: hashes and tokens must never reach the event
//! stream, JetStream, a read model or a replay. What the stream records is
//! that something happened (`UserPasswordChanged`, `UserDeactivated`); the
//! secrets stay here. Every row is keyed by a user id or an API key id and
//! holds no personal data, so erasing a user can delete its rows by id.

mod api_keys;
pub mod passwords;
mod sign_ins;
pub mod throttle;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use uuid::Uuid;

pub use api_keys::{ApiKey, ApiKeyRole, ApiKeys, PREFIX as API_KEY_PREFIX};
pub use passwords::Passwords;
pub use sign_ins::{IssuedRefresh, RevokeReason, Rotation, SignIns, UserAccess};
pub use throttle::{Admission, Attempt, LoginThrottle};

use crate::error::StoreError;

/// The user events after which a user's tokens are refused and it can sign
/// in no more. Erasure will join them.
pub const DISABLING_EVENTS: &[&str] = &["UserDeactivated", "UserErased"];

/// Everything identity keeps, over one pool. Cheap to clone.
#[derive(Clone)]
pub struct Identity {
    pool: PgPool,
    pub passwords: Passwords,
    pub sign_ins: SignIns,
    pub throttle: LoginThrottle,
    pub api_keys: ApiKeys,
    lookup_key: LookupKey,
}

/// The user an email names, and its password hash if it has one.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginRecord {
    pub user_id: Uuid,
    pub password_hash: Option<String>,
}

impl Identity {
    /// `lookup_secret` keys the hashes by which emails are looked up without
    /// being stored (the throttle's); it must be the same on every process.
    pub fn new(pool: PgPool, lookup_secret: &[u8]) -> Self {
        Self {
            passwords: Passwords::new(),
            sign_ins: SignIns::new(pool.clone()),
            throttle: LoginThrottle::new(pool.clone()),
            api_keys: ApiKeys::new(pool.clone()),
            lookup_key: LookupKey(lookup_secret.to_vec()),
            pool,
        }
    }

    /// The keyed hash under which an email (normalized) is throttled.
    pub fn email_key(&self, normalized_email: &str) -> [u8; 32] {
        self.lookup_key.of(normalized_email.as_bytes())
    }

    /// A keyed hash of `bytes` (for fingerprints that must not be
    /// reversible by a reader of the database, such as one of a body with a
    /// password in it).
    pub fn keyed_hash(&self, bytes: &[u8]) -> [u8; 32] {
        self.lookup_key.of(bytes)
    }

    /// The user registered with this email claim (the keyed hash of the
    /// normalized email, `Vault::email_claim`) and its password hash, in one
    /// round trip whether or not there is one, so an unknown email costs
    /// what a known one does.
    pub async fn login_record(&self, email_claim: &str) -> Result<Option<LoginRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT c.aggregate_id, p.password_hash
               FROM unique_claims c
               LEFT JOIN credentials p ON p.user_id = c.aggregate_id::uuid
              WHERE c.kind = 'email' AND c.value = $1 AND c.aggregate_type = 'user'",
        )
        .bind(email_claim)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let id: String = row.try_get("aggregate_id")?;
        let user_id = Uuid::parse_str(&id)
            .map_err(|_| StoreError::Corrupt(format!("user id {id:?} is not a UUID")))?;
        Ok(Some(LoginRecord {
            user_id,
            password_hash: row.try_get("password_hash")?,
        }))
    }

    /// The user an email claim (`Vault::email_claim`) names, if any.
    pub async fn user_of_email(&self, email_claim: &str) -> Result<Option<Uuid>, StoreError> {
        Ok(self
            .login_record(email_claim)
            .await?
            .map(|record| record.user_id))
    }

    /// The password hash of `user_id`, if it has a password.
    pub async fn password_hash(&self, user_id: Uuid) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT password_hash FROM credentials WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Removes the password of `user_id` (an erasure), if it has one.
    pub async fn remove_password(&self, user_id: Uuid) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM credentials WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sets (or replaces) the password hash of `user_id`.
    pub async fn set_password_hash(&self, user_id: Uuid, hash: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO credentials (user_id, password_hash) VALUES ($1, $2)
             ON CONFLICT (user_id) DO UPDATE SET password_hash = EXCLUDED.password_hash, changed_at = now()",
        )
        .bind(user_id)
        .bind(hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes everything identity keeps of `user_id`: its password hash,
    /// its sign-ins and their refresh tokens, and returns how many rows
    /// went. Erasure calls it; the user's tokens are refused from then on
    /// (a refresh finds nothing, an access token's user is disabled).
    pub async fn forget_user(&self, user_id: Uuid) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut gone = 0;
        for statement in [
            "DELETE FROM refresh_tokens WHERE user_id = $1",
            "DELETE FROM sign_ins WHERE user_id = $1",
            "DELETE FROM credentials WHERE user_id = $1",
        ] {
            gone += sqlx::query(statement)
                .bind(user_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(gone)
    }

    /// Forgets the password of a user that was never registered (its
    /// registration was refused after the hash was stored).
    pub async fn forget_password(&self, user_id: Uuid) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM credentials WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// HMAC-SHA256 under a secret of the deployment's.
#[derive(Clone)]
struct LookupKey(Vec<u8>);

impl LookupKey {
    fn of(&self, bytes: &[u8]) -> [u8; 32] {
        // HMAC takes a key of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new_from_slice(&[0]).expect("a key"));
        mac.update(bytes);
        mac.finalize().into_bytes().into()
    }
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// `prefix` and 256 random bits as base64url, with the SHA-256 of the whole.
pub fn random_token(prefix: &str) -> Result<(String, [u8; 32]), StoreError> {
    let mut bits = [0u8; 32];
    getrandom::getrandom(&mut bits)
        .map_err(|err| StoreError::Corrupt(format!("no randomness from the system: {err}")))?;
    let token = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bits));
    let hash = sha256(token.as_bytes());
    Ok((token, hash))
}
