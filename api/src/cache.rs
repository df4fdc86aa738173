//! The in-process cache of single-resource reads, and the wake-ups of
//! requests waiting for a version (`?min_version=`).
//!
//! An entry is the serialized answer with its version, keyed `<model>/<id>`
//! (`products/0190...`). The change listener ([`crate::changes`]) drops an
//! entry as soon as its read-model row changes and wakes every waiter; a
//! time-to-live bounds how stale an entry can get should a notice be lost.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use bytes::Bytes;
use moka::sync::Cache;
use tokio::sync::broadcast;

/// A cached answer: the JSON body, the row version it shows and that
/// version as an `ETag`, made once rather than on every hit.
#[derive(Debug)]
pub struct CachedView {
    pub version: i64,
    pub body: Bytes,
    pub etag: HeaderValue,
}

impl CachedView {
    pub fn new(version: i64, body: Bytes) -> Self {
        // Digits and quotes only: always a valid header value.
        let etag = HeaderValue::from_str(&format!("\"{version}\""))
            .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
        Self {
            version,
            body,
            etag,
        }
    }
}

/// What woke the waiters: one row changed, or anything may have (the
/// listener lost its connection and notices may be missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    Changed {
        model: String,
        id: String,
        version: i64,
    },
    All,
}

impl Wake {
    /// Whether a waiter for `key` (`<model>/<id>`) should read again.
    pub fn concerns(&self, model: &str, id: &str) -> bool {
        match self {
            Self::Changed {
                model: m, id: i, ..
            } => m == model && i == id,
            Self::All => true,
        }
    }
}

/// Cheap to clone: clones share the cache.
#[derive(Clone)]
pub struct ReadCache {
    entries: Cache<String, Arc<CachedView>>,
    /// Hits and misses per model, registered once: a read answered from
    /// the cache should not also pay a metrics registry lookup.
    counters: Arc<[ModelCounters]>,
    /// The highest version announced per key, so that a read that raced with
    /// a change cannot leave its older answer in the cache.
    announced: Cache<String, i64>,
    wakes: broadcast::Sender<Wake>,
}

/// Size and lifetime of the cache.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// Bytes of cached bodies (keys included) kept at most.
    pub capacity_bytes: u64,
    /// An entry is dropped this long after it was filled, whatever happens.
    pub time_to_live: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            capacity_bytes: 64 * 1024 * 1024,
            time_to_live: Duration::from_secs(60),
        }
    }
}

/// The models whose single-resource reads are cached, as in the keys.
pub const MODELS: [&str; 4] = ["users", "products", "orders", "payments"];

struct ModelCounters {
    model: &'static str,
    hits: metrics::Counter,
    misses: metrics::Counter,
}

pub fn key(model: &str, id: &str) -> String {
    format!("{model}/{id}")
}

impl ReadCache {
    pub fn new(options: &CacheOptions) -> Self {
        let entries = Cache::builder()
            .max_capacity(options.capacity_bytes)
            .weigher(|key: &String, value: &Arc<CachedView>| {
                u32::try_from(key.len() + value.body.len() + 64).unwrap_or(u32::MAX)
            })
            .time_to_live(options.time_to_live)
            .build();
        let announced = Cache::builder()
            .max_capacity(100_000)
            .time_to_live(options.time_to_live)
            .build();
        let (wakes, _) = broadcast::channel(4096);
        let counters = MODELS
            .iter()
            .map(|&model| ModelCounters {
                model,
                hits: metrics::counter!("agora_read_cache_hits_total", "model" => model),
                misses: metrics::counter!("agora_read_cache_misses_total", "model" => model),
            })
            .collect();
        Self {
            entries,
            counters,
            announced,
            wakes,
        }
    }

    /// The cached answer for `key` (`<model>/<id>`), counted as a hit or a
    /// miss of `model`.
    pub fn get(&self, model: &str, key: &str) -> Option<Arc<CachedView>> {
        let found = self.entries.get(key);
        if let Some(counters) = self.counters.iter().find(|c| c.model == model) {
            let counter = if found.is_some() {
                &counters.hits
            } else {
                &counters.misses
            };
            counter.increment(1);
        }
        found
    }

    /// Keeps an answer just read from the database. Inserted first and then
    /// checked against the versions announced, while the listener records the
    /// announcement first and then drops the entry: whichever order they run
    /// in, an answer older than an announced change does not stay.
    pub fn fill(&self, key: String, version: i64, body: Bytes) -> Arc<CachedView> {
        let view = Arc::new(CachedView::new(version, body));
        self.entries.insert(key.clone(), Arc::clone(&view));
        if self.announced.get(&key).is_some_and(|seen| seen > version) {
            self.entries.invalidate(&key);
        }
        view
    }

    /// A row changed: drop its entry and wake whoever waits for it.
    pub fn changed(&self, model: &str, id: &str, version: i64) {
        let key = key(model, id);
        if self.announced.get(&key).is_none_or(|seen| seen < version) {
            self.announced.insert(key.clone(), version);
        }
        self.entries.invalidate(&key);
        let _ = self.wakes.send(Wake::Changed {
            model: model.to_owned(),
            id: id.to_owned(),
            version,
        });
    }

    /// Drops every entry, waking no one (notices are not arriving).
    pub fn clear(&self) {
        self.entries.invalidate_all();
    }

    /// Notices may have been lost: drop everything and wake every waiter.
    pub fn invalidate_all(&self) {
        self.entries.invalidate_all();
        let _ = self.wakes.send(Wake::All);
    }

    /// How many requests are subscribed to wake-ups (waiting for a version).
    pub fn waiting(&self) -> usize {
        self.wakes.receiver_count()
    }

    /// Wake-ups from now on. Subscribe before reading, so a change that
    /// lands between the read and the wait is not missed.
    pub fn subscribe(&self) -> broadcast::Receiver<Wake> {
        self.wakes.subscribe()
    }
}
