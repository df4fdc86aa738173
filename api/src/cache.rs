//! The in-process cache of single-resource reads, and the wake-ups of
//! requests waiting for a version (`?min_version=`).
//!
//! An entry is the serialized answer with its version, keyed `<model>/<id>`
//! (`products/0190...`). The change listener ([`crate::changes`]) drops an
//! entry as soon as its read-model row changes and wakes every waiter; a
//! time-to-live bounds how stale an entry can get should a notice be lost.
//!
//! Beside it, two [`SearchCache`]s of `GET /products`: the keys of a
//! search's page (the ordered ids; the rows are read fresh) and its facet
//! counts, which repeat (every visit to a category page, every popular
//! query asks the same), dropped whole by any change of a product or a
//! category.

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
    /// The pages of searches, as the ids in order ([`page_key`]).
    pub pages: SearchCache<Vec<projections::queries::SearchKey>>,
    /// The facet counts of searches ([`facet_key`]).
    pub facets: SearchCache<FacetCounts>,
}

/// Size and lifetime of the cache.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// Bytes of cached bodies (keys included) kept at most.
    pub capacity_bytes: u64,
    /// An entry is dropped this long after it was filled, whatever happens.
    pub time_to_live: Duration,
    /// Bytes of each search cache (pages, facets) at most
    /// (`AGORA_SEARCH_CACHE_BYTES`); 0 turns both off.
    pub search_bytes: u64,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            capacity_bytes: 64 * 1024 * 1024,
            time_to_live: Duration::from_secs(60),
            search_bytes: 16 * 1024 * 1024,
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
            pages: SearchCache::new(
                options,
                metrics::counter!("agora_search_cache_hits_total"),
                metrics::counter!("agora_search_cache_misses_total"),
            ),
            facets: SearchCache::new(
                options,
                metrics::counter!("agora_facet_cache_hits_total"),
                metrics::counter!("agora_facet_cache_misses_total"),
            ),
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

    /// A row changed (with `stock_only`, only a product's stock): drop its
    /// entry and wake whoever waits for it.
    pub fn changed(&self, model: &str, id: &str, version: i64, stock_only: bool) {
        let key = key(model, id);
        if self.announced.get(&key).is_none_or(|seen| seen < version) {
            self.announced.insert(key.clone(), version);
        }
        self.entries.invalidate(&key);
        if SEARCHED.contains(&model) {
            self.pages.changed(stock_only);
            self.facets.changed(stock_only);
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
        self.searched_changed();
    }

    /// Notices may have been lost: drop everything and wake every waiter.
    pub fn invalidate_all(&self) {
        self.entries.invalidate_all();
        self.searched_changed();
        let _ = self.wakes.send(Wake::All);
    }

    /// Whether announcements are arriving (the change listener says so):
    /// only then do the search caches keep anything.
    pub fn set_search_live(&self, live: bool) {
        self.pages.set_live(live);
        self.facets.set_live(live);
    }

    fn searched_changed(&self) {
        self.pages.changed(false);
        self.facets.changed(false);
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

/// The models whose rows searches are made of: products (their text,
/// categories, attributes, prices, stock, status) and categories (slugs, and
/// the tree a category filter takes the descendants from).
pub const SEARCHED: [&str; 2] = ["products", "categories"];

/// Facets per facet name, as `SearchPage::facets` holds them.
pub type FacetCounts = BTreeMap<String, Vec<projections::queries::FacetCount>>;

/// Results of searches keyed by the normalized search ([`page_key`],
/// [`facet_key`]), as Solr's query result cache keeps its ordered ids.
///
/// Invalidation is coarse on purpose: any change of a product's catalogue
/// data (text, price, categories, attributes, status) or of a category drops
/// every entry and moves a generation counter on. Which cached searches one
/// product's change touches would take matching the old and the new row
/// against every cached filter (full text and typos included); and the
/// searches that repeat are those of category pages and popular words, which
/// a catalogue change touches anyway. A change of stock alone (every order
/// makes some) drops only the searches that filter on stock (`in_stock=`):
/// no other match, order or count depends on it, and the rows of a page are
/// read fresh. Between catalogue changes every repeat is a hit.
///
/// Entries are kept only while the change listener runs and NATS is
/// connected ([`SearchCache::set_live`]): without announcements nothing
/// would drop a stale entry.
#[derive(Clone)]
pub struct SearchCache<V> {
    /// Searches that do not filter on stock.
    entries: Cache<String, Arc<V>>,
    /// Searches that do.
    on_stock: Cache<String, Arc<V>>,
    /// Moved on by every catalogue change; a result read while it moved is
    /// not kept.
    generation: Arc<AtomicU64>,
    /// Moved on by every change, stock too: what `on_stock` is checked by.
    stock_generation: Arc<AtomicU64>,
    live: Arc<AtomicBool>,
    /// `AGORA_SEARCH_CACHE_BYTES` is not 0.
    enabled: bool,
    hits: metrics::Counter,
    misses: metrics::Counter,
}

/// A search's key in a [`SearchCache`], and whether its result depends on
/// stock (it filters on `in_stock`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    text: String,
    on_stock: bool,
}

impl<V: Send + Sync + 'static> SearchCache<V> {
    fn new(options: &CacheOptions, hits: metrics::Counter, misses: metrics::Counter) -> Self {
        // Weighed by key (a query string can be long) and a flat 1 KiB for
        // the value: a page's keys or a facet's counts.
        let cache = || {
            Cache::builder()
                .max_capacity(options.search_bytes / 2)
                .weigher(|key: &String, _: &Arc<V>| {
                    u32::try_from(key.len() + 1024).unwrap_or(u32::MAX)
                })
                .time_to_live(options.time_to_live)
                .build()
        };
        Self {
            entries: cache(),
            on_stock: cache(),
            generation: Arc::new(AtomicU64::new(0)),
            stock_generation: Arc::new(AtomicU64::new(0)),
            live: Arc::new(AtomicBool::new(false)),
            enabled: options.search_bytes > 0,
            hits,
            misses,
        }
    }

    fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::SeqCst);
        if !live {
            self.changed(false);
        }
    }

    fn keeps(&self) -> bool {
        self.enabled && self.live.load(Ordering::SeqCst)
    }

    fn part(&self, key: &CacheKey) -> (&Cache<String, Arc<V>>, &AtomicU64) {
        if key.on_stock {
            (&self.on_stock, &self.stock_generation)
        } else {
            (&self.entries, &self.generation)
        }
    }

    /// The cached result for `key`, else what `search` finds, kept unless
    /// a change came while it searched.
    pub async fn get_or_search<E, Fut>(
        &self,
        key: CacheKey,
        search: impl FnOnce() -> Fut,
    ) -> Result<Arc<V>, E>
    where
        Fut: std::future::Future<Output = Result<V, E>>,
    {
        if let Some(hit) = self.get(&key) {
            return Ok(hit);
        }
        let generation = self.generation(&key);
        let found = Arc::new(search().await?);
        self.fill(key, generation, Arc::clone(&found));
        Ok(found)
    }

    /// The generation to hand to [`SearchCache::fill`]: read it before
    /// searching.
    fn generation(&self, key: &CacheKey) -> u64 {
        self.part(key).1.load(Ordering::SeqCst)
    }

    /// The cached result for `key`, counted as a hit or a miss.
    fn get(&self, key: &CacheKey) -> Option<Arc<V>> {
        if !self.keeps() {
            return None;
        }
        let found = self.part(key).0.get(&key.text);
        if found.is_some() {
            self.hits.increment(1);
        } else {
            self.misses.increment(1);
        }
        found
    }

    /// Keeps a result read at `generation`. Inserted first and then checked
    /// against the generation, while a change moves the generation first and
    /// then drops the entries: whichever order they run in, a result read
    /// before a change does not stay.
    fn fill(&self, key: CacheKey, generation: u64, value: Arc<V>) {
        if !self.keeps() {
            return;
        }
        let (entries, current) = self.part(&key);
        entries.insert(key.text.clone(), value);
        if current.load(Ordering::SeqCst) != generation {
            entries.invalidate(&key.text);
        }
    }

    /// A product or a category changed (or notices may be lost); with
    /// `stock_only`, only a product's stock.
    fn changed(&self, stock_only: bool) {
        self.stock_generation.fetch_add(1, Ordering::SeqCst);
        self.on_stock.invalidate_all();
        if !stock_only {
            self.generation.fetch_add(1, Ordering::SeqCst);
            self.entries.invalidate_all();
        }
    }
}

/// What a search matches, in one canonical text: the attribute filters in
/// order, so that the same category page asked in any spelling is one key.
fn search_key(filter: &projections::queries::ProductFilter) -> String {
    let mut attributes = filter.attributes.clone();
    attributes.sort();
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
        )
    )
}

/// The key of a search's page: what it matches, its order, its size and
/// where it starts.
pub fn page_key(
    filter: &projections::queries::ProductFilter,
    page: &projections::queries::PageRequest,
) -> CacheKey {
    CacheKey {
        text: format!(
            "{} {:?} {} {:?}",
            search_key(filter),
            filter.sort(),
            page.limit,
            page.cursor()
        ),
        on_stock: filter.in_stock.is_some(),
    }
}

/// The part of a search its facets depend on, in one canonical text: not
/// the sort, the page or the cursor, and the facets and attribute filters
/// in order, so that the same category page asked in any spelling is one
/// entry.
pub fn facet_key(filter: &projections::queries::ProductFilter) -> CacheKey {
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
    CacheKey {
        text: format!("{} {facets:?}", search_key(filter)),
        on_stock: filter.in_stock.is_some(),
    }
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
    fn a_page_key_tells_order_size_and_start_apart_but_not_spelling() {
        let page = |limit: &str, cursor: Option<&str>| {
            projections::queries::PageRequest::parse(Some(limit), cursor).unwrap()
        };
        let pen = ProductFilter {
            q: Some(" pen ".into()),
            attributes: vec![("a".into(), "1".into()), ("b".into(), "2".into())],
            ..Default::default()
        };
        let respelled = ProductFilter {
            q: Some("pen".into()),
            attributes: vec![("b".into(), "2".into()), ("a".into(), "1".into())],
            // Facets are keyed apart; a page does not depend on them.
            facets: vec![Facet::Category],
            ..Default::default()
        };
        assert_eq!(
            page_key(&pen, &page("20", None)),
            page_key(&respelled, &page("20", Some("")))
        );
        // Relevance is the default with q: the same page either way.
        let by_relevance = ProductFilter {
            sort: Some(Sort::Relevance),
            ..pen.clone()
        };
        assert_eq!(
            page_key(&pen, &page("20", None)),
            page_key(&by_relevance, &page("20", None))
        );
        let by_name = ProductFilter {
            sort: Some(Sort::Name),
            ..pen.clone()
        };
        let keys = [
            page_key(&pen, &page("20", None)),
            page_key(&by_name, &page("20", None)),
            page_key(&pen, &page("21", None)),
            page_key(&pen, &page("20", Some("eyJ9"))),
            page_key(
                &ProductFilter {
                    in_stock: Some(true),
                    ..pen.clone()
                },
                &page("20", None),
            ),
        ];
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:#?}");
        // Only a search on stock is dropped by a change of stock.
        let on_stock: Vec<bool> = keys.iter().map(|k| k.on_stock).collect();
        assert_eq!(on_stock, [false, false, false, false, true]);
    }

    fn key(text: &str, on_stock: bool) -> CacheKey {
        CacheKey {
            text: text.to_owned(),
            on_stock,
        }
    }

    #[test]
    fn search_caches_of_no_bytes_keep_nothing() {
        let cache = ReadCache::new(&CacheOptions {
            search_bytes: 0,
            ..CacheOptions::default()
        });
        cache.set_search_live(true);
        cache.facets.fill(key("k", false), 0, counts(1));
        assert!(cache.facets.get(&key("k", false)).is_none());
        cache.pages.fill(key("k", false), 0, Arc::new(Vec::new()));
        assert!(cache.pages.get(&key("k", false)).is_none());
    }

    #[tokio::test]
    async fn a_search_is_kept_until_a_product_or_category_changes() {
        let cache = ReadCache::new(&CacheOptions::default());
        cache.set_search_live(true);
        let searches = std::sync::atomic::AtomicU32::new(0);
        let search = || async {
            searches.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>(Vec::new())
        };
        let k = || key("k", false);
        cache.pages.get_or_search(k(), search).await.unwrap();
        cache.pages.get_or_search(k(), search).await.unwrap();
        assert_eq!(searches.load(Ordering::SeqCst), 1);
        cache.changed("orders", "o", 2, false);
        cache.pages.get_or_search(k(), search).await.unwrap();
        assert_eq!(searches.load(Ordering::SeqCst), 1);
        cache.changed("products", "p", 2, false);
        cache.pages.get_or_search(k(), search).await.unwrap();
        assert_eq!(searches.load(Ordering::SeqCst), 2);
        // A failed search is not kept.
        let failed = cache
            .pages
            .get_or_search(key("other", false), || async { Err::<Vec<_>, _>("down") })
            .await;
        assert_eq!(failed.unwrap_err(), "down");
        assert!(cache.pages.get(&key("other", false)).is_none());
    }

    #[test]
    fn a_change_of_stock_drops_only_the_searches_that_filter_on_stock() {
        let cache = ReadCache::new(&CacheOptions::default());
        cache.set_search_live(true);
        let (plain, stocked) = (key("q=pen", false), key("q=pen in_stock", true));
        for k in [&plain, &stocked] {
            let generation = cache.facets.generation(k);
            cache.facets.fill(k.clone(), generation, counts(1));
        }
        // Read before a stock change, filled after it: a search on stock
        // is not kept, the other is.
        let (before_plain, before_stocked) = (
            cache.facets.generation(&plain),
            cache.facets.generation(&stocked),
        );
        cache.changed("products", "p", 3, true);
        assert_eq!(cache.facets.get(&plain).as_deref(), Some(&*counts(1)));
        assert!(cache.facets.get(&stocked).is_none());
        cache.facets.fill(plain.clone(), before_plain, counts(2));
        cache
            .facets
            .fill(stocked.clone(), before_stocked, counts(2));
        assert_eq!(cache.facets.get(&plain).as_deref(), Some(&*counts(2)));
        assert!(cache.facets.get(&stocked).is_none());
        // A catalogue change drops both.
        let generation = cache.facets.generation(&stocked);
        cache.facets.fill(stocked.clone(), generation, counts(1));
        cache.changed("products", "p", 4, false);
        assert!(cache.facets.get(&plain).is_none());
        assert!(cache.facets.get(&stocked).is_none());
    }

    #[test]
    fn a_change_drops_counts_even_those_read_before_it_and_filled_after() {
        let cache = ReadCache::new(&CacheOptions::default());
        let facets = &cache.facets;
        let k = || key("k", false);
        // Not live: nothing is kept.
        facets.fill(k(), facets.generation(&k()), counts(1));
        assert!(facets.get(&k()).is_none());
        facets.set_live(true);
        facets.fill(k(), facets.generation(&k()), counts(1));
        assert_eq!(facets.get(&k()).as_deref(), Some(&*counts(1)));
        // A product changes: gone.
        cache.changed("products", "x", 2, false);
        assert!(facets.get(&k()).is_none());
        // Counted before a change, filled after it: not kept.
        let before = facets.generation(&k());
        cache.changed("categories", "y", 2, false);
        facets.fill(k(), before, counts(1));
        assert!(facets.get(&k()).is_none());
        // Other models leave facets alone.
        facets.fill(k(), facets.generation(&k()), counts(3));
        cache.changed("orders", "z", 2, false);
        assert_eq!(facets.get(&k()).as_deref(), Some(&*counts(3)));
        facets.set_live(false);
        assert!(facets.get(&k()).is_none());
    }
}
