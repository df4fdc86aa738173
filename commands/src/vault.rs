//! The vault: per-user data keys that seal personal data in events
//! (`schemas::sealed`), and their destruction on erasure (crypto-shredding).
//!
//! Envelope encryption: each user (each payment, for its token) gets a
//! random 256-bit data key on first use, stored in `agora_keys.data_keys`
//! wrapped (AES-256-GCM) by a key derived from `AGORA_DATA_KEY`, which lives
//! only in the process's configuration. A field is sealed as
//! `pd1.<owner>.<base64(nonce || ciphertext || tag)>` with a random 96-bit
//! nonce per field and the owner's id as associated data, so a value moved
//! to another owner does not open. Unwrapped keys are cached (moka); an
//! erasure destroys the key (the row stays, keyless, as a tombstone) and is
//! announced like any change to the user, on which every process drops its
//! cached copy ([`Vault::forget`]).
//!
//! Email uniqueness claims are an HMAC-SHA256 (keyed from `AGORA_DATA_KEY`
//! too) of the normalized email, so `unique_claims` holds no email.

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use serde_json::Value;
use sha2::Sha256;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use schemas::sealed::{self, PREFIX};

/// The fixed key of development (`AGORA_AUTH=off`): nothing is protected
/// with it, and `serve` says so in its log.
const DEVELOPMENT_KEY: [u8; 32] = *b"agora development data key, open";

/// `AGORA_DATA_KEY`: 32 bytes, given as base64.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// From `AGORA_DATA_KEY`'s text: base64 (standard, padded or not) of
    /// exactly 32 bytes.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .map_err(|_| "AGORA_DATA_KEY must be base64".to_owned())?;
        let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!(
                "AGORA_DATA_KEY must be 32 bytes (base64 of 44 characters), not {}",
                b.len()
            )
        })?;
        Ok(Self(key))
    }

    /// The development key: for `AGORA_AUTH=off` and tests only.
    pub fn development() -> Self {
        Self(DEVELOPMENT_KEY)
    }

    fn derive(&self, purpose: &[u8]) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(purpose);
        mac.finalize().into_bytes().into()
    }
}

impl Default for MasterKey {
    fn default() -> Self {
        Self::development()
    }
}

/// Why the vault could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("the key store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("no randomness: {0}")]
    Random(String),
    #[error("user {0} is erased: nothing of it can be sealed")]
    Erased(Uuid),
    #[error("a data key cannot be unwrapped: AGORA_DATA_KEY is not the one it was wrapped with")]
    Unwrap,
    #[error("{0}")]
    Sealing(#[from] sealed::SealError),
}

impl VaultError {
    /// Whether the key store was unreachable (a retry may succeed).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Store(_))
    }
}

/// One user's unwrapped data key.
struct DataKey(LessSafeKey);

impl DataKey {
    fn new(bytes: &[u8]) -> Option<Self> {
        UnboundKey::new(&AES_256_GCM, bytes)
            .ok()
            .map(|key| Self(LessSafeKey::new(key)))
    }

    fn seal(&self, owner: Uuid, plaintext: &str) -> Result<String, String> {
        let nonce = random::<NONCE_LEN>()?;
        let mut sealed = plaintext.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(owner.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| "the value is too long to seal".to_owned())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{owner}.{}", STANDARD.encode(out)))
    }

    fn open(&self, owner: Uuid, body: &str) -> Option<String> {
        let bytes = STANDARD.decode(body).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buffer = rest.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(owner.as_bytes()), &mut buffer)
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }
}

fn random<const N: usize>() -> Result<[u8; N], String> {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).map_err(|err| err.to_string())?;
    Ok(bytes)
}

/// The keys of a set of owners, loaded once for a batch of values: `None`
/// for an owner whose key is destroyed (or never existed).
pub struct Keys(HashMap<Uuid, Option<Arc<DataKey>>>);

impl Keys {
    /// The JSON text sealed in `sealed`, if its owner's key is here and the
    /// value is intact.
    pub fn open(&self, sealed: &str) -> Option<String> {
        let (owner, body) = sealed::parts(sealed)?;
        self.0.get(&owner)?.as_ref()?.open(owner, body)
    }
}

/// The vault over one pool. Cheap to clone; clones share the key cache.
#[derive(Clone)]
pub struct Vault {
    pool: PgPool,
    wrap: Arc<LessSafeKey>,
    claims: Arc<[u8; 32]>,
    cache: moka::sync::Cache<Uuid, Arc<DataKey>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(..)")
    }
}

const SELECT_KEY: &str = "SELECT wrapped_key FROM agora_keys.data_keys WHERE user_id = $1";
const INSERT_KEY: &str = "INSERT INTO agora_keys.data_keys (user_id, wrapped_key) VALUES ($1, $2) ON CONFLICT (user_id) DO NOTHING";
const DESTROY_KEY: &str = "INSERT INTO agora_keys.data_keys (user_id, wrapped_key, erased_at) VALUES ($1, NULL, now()) \
     ON CONFLICT (user_id) DO UPDATE SET wrapped_key = NULL, erased_at = coalesce(agora_keys.data_keys.erased_at, now())";

impl Vault {
    pub fn new(pool: PgPool, master: &MasterKey) -> Self {
        let wrap = master.derive(b"agora data-key wrapping v1");
        Self {
            pool,
            wrap: Arc::new(LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, &wrap).expect("a 32-byte key"),
            )),
            claims: Arc::new(master.derive(b"agora email claims v1")),
            cache: moka::sync::Cache::builder().max_capacity(100_000).build(),
        }
    }

    /// The uniqueness claim of a normalized email: hex HMAC-SHA256.
    pub fn email_claim(&self, normalized_email: &str) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.claims[..]).expect("any key length");
        mac.update(normalized_email.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The owner's key: from the cache, else unwrapped from the store, else
    /// (with `create`) a new one. `None`: destroyed, or (without `create`)
    /// never made.
    async fn key(&self, owner: Uuid, create: bool) -> Result<Option<Arc<DataKey>>, VaultError> {
        if let Some(key) = self.cache.get(&owner) {
            return Ok(Some(key));
        }
        for _ in 0..2 {
            let row = sqlx::query(SELECT_KEY)
                .bind(owner)
                .fetch_optional(&self.pool)
                .await?;
            match row {
                Some(row) => {
                    let wrapped: Option<Vec<u8>> = row.try_get("wrapped_key")?;
                    let Some(wrapped) = wrapped else {
                        return if create {
                            Err(VaultError::Erased(owner))
                        } else {
                            Ok(None)
                        };
                    };
                    let key = Arc::new(self.unwrap(owner, &wrapped)?);
                    self.cache.insert(owner, Arc::clone(&key));
                    return Ok(Some(key));
                }
                None if !create => return Ok(None),
                None => {
                    let bytes = random::<32>().map_err(VaultError::Random)?;
                    let wrapped = self.wrap_key(owner, &bytes)?;
                    // A concurrent first use may win: then read its key.
                    sqlx::query(INSERT_KEY)
                        .bind(owner)
                        .bind(wrapped)
                        .execute(&self.pool)
                        .await?;
                }
            }
        }
        Err(VaultError::Unwrap)
    }

    fn wrap_key(&self, owner: Uuid, key: &[u8; 32]) -> Result<Vec<u8>, VaultError> {
        let nonce = random::<NONCE_LEN>().map_err(VaultError::Random)?;
        let mut sealed = key.to_vec();
        self.wrap
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(owner.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| VaultError::Unwrap)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn unwrap(&self, owner: Uuid, wrapped: &[u8]) -> Result<DataKey, VaultError> {
        if wrapped.len() < NONCE_LEN {
            return Err(VaultError::Unwrap);
        }
        let (nonce, rest) = wrapped.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| VaultError::Unwrap)?;
        let mut buffer = rest.to_vec();
        let plain = self
            .wrap
            .open_in_place(nonce, Aad::from(owner.as_bytes()), &mut buffer)
            .map_err(|_| VaultError::Unwrap)?;
        DataKey::new(plain).ok_or(VaultError::Unwrap)
    }

    /// Seals `plaintext` under `owner`'s key (made on first use). Refused
    /// for an erased owner.
    pub async fn seal(&self, owner: Uuid, plaintext: &str) -> Result<String, VaultError> {
        let key = self
            .key(owner, true)
            .await?
            .ok_or(VaultError::Erased(owner))?;
        key.seal(owner, plaintext).map_err(VaultError::Random)
    }

    /// The plaintext of a sealed value; `None` once its owner's key is
    /// destroyed, or when the value was tampered with.
    pub async fn open(&self, sealed: &str) -> Result<Option<String>, VaultError> {
        Ok(self.keys_of([sealed]).await?.open(sealed))
    }

    /// The keys of the owners of `sealed` values, in one go.
    pub async fn keys_of<'a>(
        &self,
        sealed: impl IntoIterator<Item = &'a str>,
    ) -> Result<Keys, VaultError> {
        let mut keys = HashMap::new();
        for value in sealed {
            if let Some((owner, _)) = sealed::parts(value) {
                if let std::collections::hash_map::Entry::Vacant(slot) = keys.entry(owner) {
                    slot.insert(self.key(owner, false).await?);
                }
            }
        }
        Ok(Keys(keys))
    }

    /// Seals the personal fields of a stored event payload (an event
    /// without any is left alone).
    pub async fn seal_event(
        &self,
        event_type: &str,
        event_version: &str,
        aggregate_id: &str,
        payload: &mut Value,
    ) -> Result<(), VaultError> {
        let Some(fields) = sealed::fields_of(event_type, event_version) else {
            return Ok(());
        };
        let owner = sealed::owner_of(fields, aggregate_id, payload)?;
        let key = self
            .key(owner, true)
            .await?
            .ok_or(VaultError::Erased(owner))?;
        sealed::seal_payload(fields, owner, payload, |owner, _field, text| {
            key.seal(owner, text)
        })?;
        Ok(())
    }

    /// Opens the sealed fields of a stored payload at its current version,
    /// for the aggregate that reads it; what cannot be opened stays as the
    /// table says (`schemas::sealed::Unopened`).
    pub async fn open_event(
        &self,
        event_type: &str,
        event_version: &str,
        payload: &mut Value,
    ) -> Result<(), VaultError> {
        let Some(fields) = sealed::fields_of(event_type, event_version) else {
            return Ok(());
        };
        let mut found = Vec::new();
        collect_sealed(payload, &mut found);
        let keys = self.keys_of(found.iter().map(String::as_str)).await?;
        sealed::open_payload(fields, payload, |_, sealed| keys.open(sealed));
        Ok(())
    }

    /// Opens every sealed string in an answer or a message body; one whose
    /// key is destroyed becomes `null`.
    pub async fn open_all(&self, value: &mut Value) -> Result<(), VaultError> {
        let mut found = Vec::new();
        collect_sealed(value, &mut found);
        if found.is_empty() {
            return Ok(());
        }
        let keys = self.keys_of(found.iter().map(String::as_str)).await?;
        sealed::open_all(value, &mut |sealed| keys.open(sealed));
        Ok(())
    }

    /// Destroys `owner`'s key for good (erasure): every value sealed under it
    /// is unreadable from now on, and no new key is made for it.
    pub async fn destroy(&self, owner: Uuid) -> Result<(), VaultError> {
        sqlx::query(DESTROY_KEY)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        self.cache.invalidate(&owner);
        Ok(())
    }

    /// Drops the cached key of `owner` (another process may have destroyed it).
    pub fn forget(&self, owner: Uuid) {
        self.cache.invalidate(&owner);
    }

    /// Drops every cached key.
    pub fn forget_all(&self) {
        self.cache.invalidate_all();
    }

    /// Rewrites email claims stored in clear (before migration 0013) as
    /// their keyed hashes. Idempotent: a hash has no `@`.
    pub async fn hash_clear_email_claims(&self) -> Result<u64, VaultError> {
        let rows = sqlx::query(
            "SELECT value FROM unique_claims WHERE kind = 'email' AND strpos(value, '@') > 0",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut done = 0;
        for row in rows {
            let value: String = row.try_get("value")?;
            let claim = self.email_claim(&domain::normalize_email(&value));
            done += sqlx::query(
                "UPDATE unique_claims SET value = $2 WHERE kind = 'email' AND value = $1",
            )
            .bind(&value)
            .bind(claim)
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        Ok(done)
    }
}

/// Every sealed string in `value`.
fn collect_sealed(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::String(s) if sealed::is_sealed(s) => found.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|item| collect_sealed(item, found)),
        Value::Object(map) => map.values().for_each(|item| collect_sealed(item, found)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_master_key_is_32_bytes_of_base64() {
        let text = STANDARD.encode([7u8; 32]);
        assert!(MasterKey::parse(&text).is_ok());
        assert!(MasterKey::parse(&STANDARD.encode([7u8; 16])).is_err());
        assert!(MasterKey::parse("not base64!").is_err());
        assert_eq!(
            format!("{:?}", MasterKey::parse(&text).unwrap()),
            "MasterKey(..)"
        );
    }

    #[test]
    fn a_sealed_value_opens_only_intact_and_under_its_owner() {
        let key = DataKey::new(&[1u8; 32]).unwrap();
        let owner = Uuid::now_v7();
        let sealed = key.seal(owner, "\"ada@example.com\"").unwrap();
        assert!(sealed.starts_with(&format!("pd1.{owner}.")));
        assert!(!sealed.contains("ada"));
        let (_, body) = sealed::parts(&sealed).unwrap();
        assert_eq!(
            key.open(owner, body).as_deref(),
            Some("\"ada@example.com\"")
        );
        // Another owner (the associated data), another key, a flipped byte.
        assert_eq!(key.open(Uuid::now_v7(), body), None);
        assert_eq!(DataKey::new(&[2u8; 32]).unwrap().open(owner, body), None);
        let mut bytes = STANDARD.decode(body).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(key.open(owner, &STANDARD.encode(&bytes)), None);
        // A random nonce per value: the same text seals differently.
        assert_ne!(key.seal(owner, "x").unwrap(), key.seal(owner, "x").unwrap());
    }
}
