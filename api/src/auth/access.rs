//! What this process remembers to accept tokens without a round trip per
//! request, and how each memory is kept true.
//!
//! - [`UserAccessCache`]: per user, whether it is deactivated and which of
//!   its sign-ins ended lately. Read from the write side on a miss; dropped
//!   when a change of the user is announced (`<prefix>.changes.users.<id>`,
//!   sent once the users read model applied the event) or when a revocation
//!   is announced (`<prefix>.changes.credentials.<id>`, sent by the process
//!   that revoked); emptied while NATS is away; and never older than
//!   [`USER_TTL`] should a notice be lost.
//! - [`ApiKeyCache`]: per key, the live key it is, for at most
//!   [`API_KEY_TTL`]: a deleted key is refused by every process within a
//!   second without any notice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use commands::identity::{ApiKey, Identity, UserAccess};
use commands::StoreError;
use moka::sync::Cache;
use uuid::Uuid;

/// As the read cache's time-to-live: the bound on a lost notice.
pub const USER_TTL: Duration = Duration::from_secs(60);

/// api.md: a deleted key is refused everywhere within 1 s; the rest of the
/// second covers the lookup itself.
pub const API_KEY_TTL: Duration = Duration::from_millis(500);

/// A key's `last_used_at` is written at most this often.
pub const TOUCH_EVERY: Duration = Duration::from_secs(60);

pub struct UserAccessCache {
    entries: Cache<Uuid, Arc<UserAccess>>,
    /// Bumped by every invalidation, so a lookup that raced with one does
    /// not put back what the invalidation dropped.
    generation: AtomicU64,
}

impl Default for UserAccessCache {
    fn default() -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(200_000)
                .time_to_live(USER_TTL)
                .build(),
            generation: AtomicU64::new(0),
        }
    }
}

impl UserAccessCache {
    /// `user_id`'s access, from memory or from the write side; `window` is
    /// the longest an access token lives.
    pub async fn get(
        &self,
        identity: &Identity,
        user_id: Uuid,
        window: Duration,
    ) -> Result<Arc<UserAccess>, StoreError> {
        if let Some(found) = self.entries.get(&user_id) {
            return Ok(found);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let access = Arc::new(identity.sign_ins.access(user_id, window).await?);
        if self.generation.load(Ordering::Acquire) == generation {
            self.entries.insert(user_id, Arc::clone(&access));
        }
        Ok(access)
    }

    /// Something about `user_id` changed: read it afresh next time.
    pub fn forget(&self, user_id: Uuid) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate(&user_id);
    }

    /// Notices may be missing: read everyone afresh.
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate_all();
    }
}

pub struct ApiKeyCache {
    /// By the key's SHA-256; `None` remembers a key that is not (or no
    /// longer) live, so a flood of one bad key costs one lookup a period.
    entries: Cache<[u8; 32], Option<Arc<ApiKey>>>,
    touched: Cache<Uuid, ()>,
    generation: AtomicU64,
}

impl Default for ApiKeyCache {
    fn default() -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(API_KEY_TTL)
                .build(),
            touched: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(TOUCH_EVERY)
                .build(),
            generation: AtomicU64::new(0),
        }
    }
}

impl ApiKeyCache {
    /// The live key `key` is, if any. Records its use at most once a
    /// minute per process, in the background.
    pub async fn find(
        &self,
        identity: &Identity,
        key: &str,
    ) -> Result<Option<Arc<ApiKey>>, StoreError> {
        use sha2::{Digest, Sha256};
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let found = match self.entries.get(&digest) {
            Some(found) => found,
            None => {
                let generation = self.generation.load(Ordering::Acquire);
                let found = identity.api_keys.find(key).await?.map(Arc::new);
                if self.generation.load(Ordering::Acquire) == generation {
                    self.entries.insert(digest, found.clone());
                }
                found
            }
        };
        if let Some(record) = &found {
            if self.touched.get(&record.id).is_none() {
                self.touched.insert(record.id, ());
                let (keys, id) = (identity.api_keys.clone(), record.id);
                tokio::spawn(async move {
                    if let Err(err) = keys.touch(id).await {
                        tracing::debug!(error = %err, "could not record an API key's use");
                    }
                });
            }
        }
        Ok(found)
    }

    /// A key was revoked here: forget every key at once (there are few).
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate_all();
    }
}
