//! Argon2id password hashes, with OWASP's parameters (19 MiB of memory, two
//! passes, one lane).
//!
//! Hashing takes tens of milliseconds of CPU and 19 MiB of memory on
//! purpose, so it runs on the blocking pool and at most [`CONCURRENT`] at a
//! time: a flood of logins waits its turn instead of taking every core and
//! gigabytes of memory.
//!
//! [`Passwords::verify`] always does the work of one verification, also
//! when there is nothing to compare with (an unknown email, a user without
//! a password): it then verifies against a dummy hash of the same
//! parameters, so the answer takes as long as a wrong password's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use domain::values::Password;
use tokio::sync::{OnceCell, Semaphore};

use crate::error::StoreError;

/// Hashes computed at once per process; more wait.
pub const CONCURRENT: usize = 4;

/// OWASP Password Storage Cheat Sheet: Argon2id, m = 19456 KiB, t = 2, p = 1.
pub const MEMORY_KIB: u32 = 19 * 1024;
pub const PASSES: u32 = 2;
pub const LANES: u32 = 1;

/// Hashes and verifies passwords. Cheap to clone.
#[derive(Clone)]
pub struct Passwords(Arc<Inner>);

struct Inner {
    argon: Argon2<'static>,
    permits: Semaphore,
    dummy: OnceCell<String>,
    verifications: AtomicU64,
}

impl Default for Passwords {
    fn default() -> Self {
        Self::new()
    }
}

impl Passwords {
    pub fn new() -> Self {
        let params = Params::new(MEMORY_KIB, PASSES, LANES, None)
            .expect("OWASP's Argon2 parameters are within the algorithm's bounds");
        Self(Arc::new(Inner {
            argon: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
            permits: Semaphore::new(CONCURRENT),
            dummy: OnceCell::new(),
            verifications: AtomicU64::new(0),
        }))
    }

    /// The PHC string of `password` under a fresh random salt.
    pub async fn hash(&self, password: &Password) -> Result<String, StoreError> {
        let password = password.expose().to_owned();
        self.blocking(move |argon| {
            let salt = SaltString::generate(&mut OsRng);
            argon
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|err| StoreError::Corrupt(format!("hashing a password: {err}")))
        })
        .await?
    }

    /// Whether `password` matches `hash`. With no hash (or an unreadable
    /// one) it verifies against the dummy hash and answers `false`, after
    /// the same work.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, StoreError> {
        let dummy = self.dummy().await?;
        let (hash, real) = match hash {
            Some(hash) if PasswordHash::new(hash).is_ok() => (hash.to_owned(), true),
            Some(_) => {
                tracing::error!("a stored password hash is not a PHC string; refusing the login");
                (dummy, false)
            }
            None => (dummy, false),
        };
        let password = password.to_owned();
        let matched = self
            .blocking(move |argon| {
                let parsed = PasswordHash::new(&hash).ok()?;
                Some(argon.verify_password(password.as_bytes(), &parsed).is_ok())
            })
            .await?
            .unwrap_or(false);
        self.0.verifications.fetch_add(1, Ordering::Relaxed);
        Ok(real && matched)
    }

    /// How many verifications this process has done (every login that got
    /// as far as a password does exactly one, dummy or not).
    pub fn verifications(&self) -> u64 {
        self.0.verifications.load(Ordering::Relaxed)
    }

    async fn dummy(&self) -> Result<String, StoreError> {
        self.0
            .dummy
            .get_or_try_init(|| async {
                let mut random = [0u8; 32];
                getrandom::getrandom(&mut random)
                    .map_err(|err| StoreError::Corrupt(format!("no randomness: {err}")))?;
                let password = Password::parse(hex::encode(random))
                    .map_err(|err| StoreError::Corrupt(err.to_string()))?;
                self.hash(&password).await
            })
            .await
            .cloned()
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Argon2<'static>) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let _permit = self
            .0
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Corrupt("the password hasher is closed".to_owned()))?;
        let argon = self.0.argon.clone();
        tokio::task::spawn_blocking(move || work(&argon))
            .await
            .map_err(|err| StoreError::Corrupt(format!("the password hasher failed: {err}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only_and_names_owasps_parameters() {
        let passwords = Passwords::new();
        let password = Password::parse("correct horse battery").unwrap();
        let hash = passwords.hash(&password).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(!hash.contains("correct horse"));
        assert!(passwords
            .verify("correct horse battery", Some(&hash))
            .await
            .unwrap());
        assert!(!passwords
            .verify("correct horse battery!", Some(&hash))
            .await
            .unwrap());
        // Two hashes of one password differ by their salt.
        assert_ne!(passwords.hash(&password).await.unwrap(), hash);
    }

    #[tokio::test]
    async fn nothing_to_compare_with_still_costs_one_verification() {
        let passwords = Passwords::new();
        let before = passwords.verifications();
        assert!(!passwords.verify("anything at all", None).await.unwrap());
        assert!(!passwords
            .verify("anything at all", Some("not a phc string"))
            .await
            .unwrap());
        assert_eq!(passwords.verifications(), before + 2);
    }
}
