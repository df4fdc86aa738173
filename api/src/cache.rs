//! The in-process cache of single-resource reads, and the wake-ups of
//! requests waiting for a version (`?min_version=`).
//!
//! An entry is the serialized answer with its version, keyed `<model>/<id>`
//! (`products/0190...`). The change listener ([`crate::changes`]) drops an
//! entry as soon as its read-model row changes and wakes every waiter; a
//! time-to-live bounds how stale an entry can get should a notice be lost.
//!
//! Beside it, [`FacetCache`]: the facet counts of `GET /products`, which
//! repeat (every visit to a category page asks the same), dropped whole by
//! any change of a product or a category.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// The facet counts of searches, dropped by product and category changes.
    pub facets: FacetCache,
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
            facets: FacetCache::new(options),
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
        if FACETED.contains(&model) {
            self.facets.changed();
        }
        let _ = self.wakes.send(Wake::Changed {
            model: model.to_owned(),
            id: id.to_owned(),
            version,
        });
    }

    /// Drops every entry, waking no one (notices are not arriving).
    pub fn clear(&self) {
        self.entries.invalidate_all();
        self.facets.changed();
    }

    /// Notices may have been lost: drop everything and wake every waiter.
    pub fn invalidate_all(&self) {
        self.entries.invalidate_all();
        self.facets.changed();
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

/// The models whose rows facet counts are made of: products (their
/// categories, attributes, prices, stock, status) and categories (slugs, and
/// the tree a category filter takes the descendants from).
pub const FACETED: [&str; 2] = ["products", "categories"];

/// Facets per facet name, as `SearchPage::facets` holds them.
pub type FacetCounts = BTreeMap<String, Vec<projections::queries::FacetCount>>;

/// Facet counts keyed by the normalized search they count over
/// ([`facet_key`]).
///
/// Invalidation is coarse on purpose: any change of any product or category
/// drops every entry and moves a generation counter on. Which cached
/// searches one product's change touches would take matching the old and the
/// new row against every cached filter (full text and typos included); and
/// the counts that repeat are those of category pages, which a catalogue
/// change touches anyway. Between changes (reads far outnumber writes in a
/// shop) every repeat is a hit.
///
/// Facets are cached only while the change listener runs and NATS is
/// connected ([`FacetCache::set_live`]): without announcements nothing
/// would drop a stale count.
#[derive(Clone)]
pub struct FacetCache {
    entries: Cache<String, Arc<FacetCounts>>,
    /// Moved on by every change; a count read while it moved is not kept.
    generation: Arc<AtomicU64>,
    live: Arc<AtomicBool>,
    hits: metrics::Counter,
    misses: metrics::Counter,
}

impl FacetCache {
    fn new(options: &CacheOptions) -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(options.time_to_live)
                .build(),
            generation: Arc::new(AtomicU64::new(0)),
            live: Arc::new(AtomicBool::new(false)),
            hits: metrics::counter!("agora_facet_cache_hits_total"),
            misses: metrics::counter!("agora_facet_cache_misses_total"),
        }
    }

    /// Whether announcements are arriving (the listener says so); off, the
    /// cache holds nothing and every search counts its facets afresh.
    pub fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::SeqCst);
        if !live {
            self.changed();
        }
    }

    /// The generation to hand to [`FacetCache::fill`]: read it before
    /// counting.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The cached counts for `key`, counted as a hit or a miss.
    pub fn get(&self, key: &str) -> Option<Arc<FacetCounts>> {
        if !self.live.load(Ordering::SeqCst) {
            return None;
        }
        let found = self.entries.get(key);
        if found.is_some() {
            self.hits.increment(1);
        } else {
            self.misses.increment(1);
        }
        found
    }

    /// Keeps counts made at `generation`. Inserted first and then checked
    /// against the generation, while a change moves the generation first and
    /// then drops every entry: whichever order they run in, counts read
    /// before a change do not stay.
    pub fn fill(&self, key: String, generation: u64, counts: Arc<FacetCounts>) {
        if !self.live.load(Ordering::SeqCst) {
            return;
        }
        self.entries.insert(key.clone(), counts);
        if self.generation() != generation {
            self.entries.invalidate(&key);
        }
    }

    /// A product or a category changed (or notices may be lost).
    pub fn changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.invalidate_all();
    }
}

/// The part of a search its facets depend on, in one canonical text: not
/// the sort, the page or the cursor, and the facets and attribute filters
/// in order, so that the same category page asked in any spelling is one
/// entry.
pub fn facet_key(filter: &projections::queries::ProductFilter) -> String {
    let mut attributes = filter.attributes.clone();
    attributes.sort();
    let mut facets: Vec<String> = filter
        .facets
        .iter()
        .map(|f| match f {
            projections::queries::Facet::Category => "category".to_owned(),
            projections::queries::Facet::Attribute(key) => format!("attr.{key}"),
        })
        .collect();
    facets.sort();
    facets.dedup();
    format!(
        "{:?}",
        (
            filter.q.as_deref().map(str::trim),
            filter.status.map(|s| s.as_str()),
            filter.category,
            &filter.currency,
            filter.min_price,
            filter.max_price,
            filter.in_stock,
            attributes,
            facets,
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use projections::queries::{Facet, FacetCount, ProductFilter, Sort};

    fn counts(n: i64) -> Arc<FacetCounts> {
        Arc::new(BTreeMap::from([(
            "attr.colour".to_owned(),
            vec![FacetCount::Value {
                value: "blue".into(),
                count: n,
            }],
        )]))
    }

    #[test]
    fn the_key_ignores_sort_and_order_of_facets_and_attributes() {
        let a = ProductFilter {
            q: Some(" pen ".into()),
            attributes: vec![("a".into(), "1".into()), ("b".into(), "2".into())],
            facets: vec![Facet::Category, Facet::Attribute("colour".into())],
            ..Default::default()
        };
        let b = ProductFilter {
            q: Some("pen".into()),
            attributes: vec![("b".into(), "2".into()), ("a".into(), "1".into())],
            facets: vec![Facet::Attribute("colour".into()), Facet::Category],
            sort: Some(Sort::Name),
            ..Default::default()
        };
        assert_eq!(facet_key(&a), facet_key(&b));
        let c = ProductFilter {
            min_price: Some(1),
            ..b.clone()
        };
        assert_ne!(facet_key(&b), facet_key(&c));
    }

    #[test]
    fn a_change_drops_counts_even_those_read_before_it_and_filled_after() {
        let cache = ReadCache::new(&CacheOptions::default());
        let facets = &cache.facets;
        // Not live: nothing is kept.
        facets.fill("k".into(), facets.generation(), counts(1));
        assert!(facets.get("k").is_none());
        facets.set_live(true);
        facets.fill("k".into(), facets.generation(), counts(1));
        assert_eq!(facets.get("k").as_deref(), Some(&*counts(1)));
        // A product changes: gone.
        cache.changed("products", "x", 2);
        assert!(facets.get("k").is_none());
        // Counted before a change, filled after it: not kept.
        let before = facets.generation();
        cache.changed("categories", "y", 2);
        facets.fill("k".into(), before, counts(1));
        assert!(facets.get("k").is_none());
        // Other models leave facets alone.
        facets.fill("k".into(), facets.generation(), counts(3));
        cache.changed("orders", "z", 2);
        assert_eq!(facets.get("k").as_deref(), Some(&*counts(3)));
        facets.set_live(false);
        assert!(facets.get("k").is_none());
    }
}
