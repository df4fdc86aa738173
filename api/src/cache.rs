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
    /// How long after it was filled a stale search is still answered while
    /// it is refreshed ([`SearchCache`]).
    pub search_stale_for: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            capacity_bytes: 64 * 1024 * 1024,
            time_to_live: Duration::from_secs(60),
            search_bytes: 16 * 1024 * 1024,
            search_stale_for: Duration::from_secs(2),
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
                SearchCounters {
                    hits: metrics::counter!("agora_search_cache_hits_total"),
                    stale: metrics::counter!("agora_search_cache_stale_total"),
                    misses: metrics::counter!("agora_search_cache_misses_total"),
                },
            ),
            facets: SearchCache::new(
                options,
                SearchCounters {
                    hits: metrics::counter!("agora_facet_cache_hits_total"),
                    stale: metrics::counter!("agora_facet_cache_stale_total"),
                    misses: metrics::counter!("agora_facet_cache_misses_total"),
                },
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
        self.searched_dropped();
    }

    /// Notices may have been lost: drop everything and wake every waiter.
    pub fn invalidate_all(&self) {
        self.entries.invalidate_all();
        self.searched_dropped();
        let _ = self.wakes.send(Wake::All);
    }

    /// Whether announcements are arriving (the change listener says so):
    /// only then do the search caches keep anything.
    pub fn set_search_live(&self, live: bool) {
        self.pages.set_live(live);
        self.facets.set_live(live);
    }

    fn searched_dropped(&self) {
        self.pages.drop_all();
        self.facets.drop_all();
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
/// data (text, price, categories, attributes, status) or of a category
/// makes every entry stale by moving a generation counter on. Which cached
/// searches one product's change touches would take matching the old and
/// the new row against every cached filter (full text and typos included);
/// and the searches that repeat are those of category pages and popular
/// words, which a catalogue change touches anyway. A change of stock alone
/// (every order makes some) makes stale only the searches that filter on
/// stock (`in_stock=`): no other match, order or count depends on it, and
/// the rows of a page are read fresh.
///
/// A stale entry is still answered for a while after it was filled
/// ([`CacheOptions::search_stale_for`], 2 s) while one background search
/// refreshes it (stale-while-revalidate): so a catalogue change costs no
/// client the full search, where dropping every
/// entry made the next request of each popular search pay it at once (at
/// one price change a second the mix's p99 went from 9 ms to 161 ms). A
/// change is so seen by a search at most that long late, and usually one
/// search's time late; an entry older than that is searched afresh.
///
/// Entries are kept only while the change listener runs and NATS is
/// connected ([`SearchCache::set_live`]): without announcements nothing
/// would mark an entry stale.
pub struct SearchCache<V> {
    /// Searches that do not filter on stock.
    entries: Cache<String, Arc<Entry<V>>>,
    /// Searches that do.
    on_stock: Cache<String, Arc<Entry<V>>>,
    /// Moved on by every catalogue change.
    generation: Arc<AtomicU64>,
    /// Moved on by every change, stock too: what `on_stock` is checked by.
    stock_generation: Arc<AtomicU64>,
    live: Arc<AtomicBool>,
    /// `AGORA_SEARCH_CACHE_BYTES` is not 0.
    enabled: bool,
    stale_for: Duration,
    hits: metrics::Counter,
    stale: metrics::Counter,
    misses: metrics::Counter,
}

// By hand: a derived Clone would ask `V: Clone`, and clones share the
// entries anyway.
impl<V> Clone for SearchCache<V> {
    fn clone(&self) -> Self {
        Self {
            entries: self.entries.clone(),
            on_stock: self.on_stock.clone(),
            generation: Arc::clone(&self.generation),
            stock_generation: Arc::clone(&self.stock_generation),
            live: Arc::clone(&self.live),
            enabled: self.enabled,
            stale_for: self.stale_for,
            hits: self.hits.clone(),
            stale: self.stale.clone(),
            misses: self.misses.clone(),
        }
    }
}

/// A cached result and the generation it was read at.
struct Entry<V> {
    value: Arc<V>,
    generation: u64,
    filled: std::time::Instant,
    /// One background search is refreshing it.
    refreshing: AtomicBool,
}

/// A search's key in a [`SearchCache`], and whether its result depends on
/// stock (it filters on `in_stock`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    text: String,
    on_stock: bool,
}

/// Hits, stale answers and misses of one search cache.
struct SearchCounters {
    hits: metrics::Counter,
    stale: metrics::Counter,
    misses: metrics::Counter,
}

impl<V: Send + Sync + 'static> SearchCache<V> {
    fn new(options: &CacheOptions, counters: SearchCounters) -> Self {
        // Weighed by key (a query string can be long) and a flat 1 KiB for
        // the value: a page's keys or a facet's counts.
        let cache = || {
            Cache::builder()
                .max_capacity(options.search_bytes / 2)
                .weigher(|key: &String, _: &Arc<Entry<V>>| {
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
            stale_for: options.search_stale_for,
            hits: counters.hits,
            stale: counters.stale,
            misses: counters.misses,
        }
    }

    fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::SeqCst);
        if !live {
            self.drop_all();
        }
    }

    fn keeps(&self) -> bool {
        self.enabled && self.live.load(Ordering::SeqCst)
    }

    fn part(&self, key: &CacheKey) -> (&Cache<String, Arc<Entry<V>>>, &AtomicU64) {
        if key.on_stock {
            (&self.on_stock, &self.stock_generation)
        } else {
            (&self.entries, &self.generation)
        }
    }

    /// The cached result for `key` when it is current; a stale one filled
    /// within `stale_for`, refreshed by `search` in the background; else
    /// what `search` finds now, kept.
    pub async fn get_or_search<E, Fut>(
        &self,
        key: CacheKey,
        search: impl FnOnce() -> Fut + Send + 'static,
    ) -> Result<Arc<V>, E>
    where
        Fut: std::future::Future<Output = Result<V, E>> + Send + 'static,
        E: Send + 'static,
    {
        if !self.keeps() {
            return search().await.map(Arc::new);
        }
        let (entries, generation) = self.part(&key);
        let current = generation.load(Ordering::SeqCst);
        if let Some(entry) = entries.get(&key.text) {
            if entry.generation == current {
                self.hits.increment(1);
                return Ok(Arc::clone(&entry.value));
            }
            if entry.filled.elapsed() < self.stale_for {
                self.stale.increment(1);
                if !entry.refreshing.swap(true, Ordering::SeqCst) {
                    let cache = self.clone();
                    let stale = Arc::clone(&entry);
                    tokio::spawn(async move {
                        match search().await {
                            Ok(found) => cache.fill(key, current, Arc::new(found)),
                            // The next request tries again.
                            Err(_) => stale.refreshing.store(false, Ordering::SeqCst),
                        }
                    });
                }
                return Ok(Arc::clone(&entry.value));
            }
        }
        self.misses.increment(1);
        let found = Arc::new(search().await?);
        self.fill(key, current, Arc::clone(&found));
        Ok(found)
    }

    /// Keeps a result read at `generation` (read before searching: a change
    /// that came while it searched leaves it stale, not current).
    fn fill(&self, key: CacheKey, generation: u64, value: Arc<V>) {
        if !self.keeps() {
            return;
        }
        let entry = Entry {
            value,
            generation,
            filled: std::time::Instant::now(),
            refreshing: AtomicBool::new(false),
        };
        self.part(&key).0.insert(key.text, Arc::new(entry));
    }

    /// A product or a category changed; with `stock_only`, only a product's
    /// stock: the entries it may touch become stale.
    fn changed(&self, stock_only: bool) {
        self.stock_generation.fetch_add(1, Ordering::SeqCst);
        if !stock_only {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Notices may be lost, or a replay swapped a whole model: nothing
    /// cached is answered, stale or not.
    fn drop_all(&self) {
        self.changed(false);
        self.entries.invalidate_all();
        self.on_stock.invalidate_all();
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
    let mut facets: Vec<String> = filter.facets.iter().map(|f| f.name()).collect();
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

    /// Asks `cache` for `key`; a search answers `counts(n)`, `n` counting
    /// the searches run so far.
    async fn ask(
        cache: &SearchCache<FacetCounts>,
        key: &CacheKey,
        searches: &Arc<AtomicU64>,
    ) -> i64 {
        let searches = Arc::clone(searches);
        let found = cache
            .get_or_search(key.clone(), move || async move {
                let n = searches.fetch_add(1, Ordering::SeqCst) + 1;
                Ok::<_, ()>((*counts(n as i64)).clone())
            })
            .await
            .unwrap();
        match found["attr.colour"].first() {
            Some(FacetCount::Value { count, .. }) => *count,
            other => panic!("{other:?}"),
        }
    }

    /// Waits (bounded) for a background refresh to have run `n` searches.
    async fn until_searched(searches: &AtomicU64, n: u64) {
        testkit::eventually_within("the refresh runs", Duration::from_secs(2), || async {
            searches.load(Ordering::SeqCst) >= n
        })
        .await;
    }

    fn live(options: CacheOptions) -> ReadCache {
        let cache = ReadCache::new(&options);
        cache.set_search_live(true);
        cache
    }

    /// Live, and answering nothing stale.
    fn strict() -> ReadCache {
        live(CacheOptions {
            search_stale_for: Duration::ZERO,
            ..CacheOptions::default()
        })
    }

    #[tokio::test]
    async fn search_caches_of_no_bytes_or_not_live_keep_nothing() {
        let searches = Arc::new(AtomicU64::new(0));
        let off = live(CacheOptions {
            search_bytes: 0,
            ..CacheOptions::default()
        });
        assert_eq!(ask(&off.facets, &key("k", false), &searches).await, 1);
        assert_eq!(ask(&off.facets, &key("k", false), &searches).await, 2);
        let cache = live(CacheOptions::default());
        assert_eq!(ask(&cache.facets, &key("k", false), &searches).await, 3);
        assert_eq!(ask(&cache.facets, &key("k", false), &searches).await, 3);
        cache.set_search_live(false);
        assert_eq!(ask(&cache.facets, &key("k", false), &searches).await, 4);
        assert_eq!(ask(&cache.facets, &key("k", false), &searches).await, 5);
        // Live again: nothing from before it is answered.
        cache.set_search_live(true);
        assert_eq!(ask(&cache.facets, &key("k", false), &searches).await, 6);
    }

    #[tokio::test]
    async fn a_search_is_answered_until_a_catalogue_change_then_refreshed_behind_one_stale_answer()
    {
        let cache = live(CacheOptions::default());
        let searches = Arc::new(AtomicU64::new(0));
        let k = key("k", false);
        assert_eq!(ask(&cache.facets, &k, &searches).await, 1);
        assert_eq!(ask(&cache.facets, &k, &searches).await, 1);
        // Another model's change, a stock change: still current.
        cache.changed("orders", "o", 2, false);
        cache.changed("products", "p", 2, true);
        assert_eq!(ask(&cache.facets, &k, &searches).await, 1);
        assert_eq!(searches.load(Ordering::SeqCst), 1);
        // A product's catalogue change: the stale answer once more, and one
        // refresh behind it however many ask meanwhile.
        cache.changed("products", "p", 3, false);
        assert_eq!(ask(&cache.facets, &k, &searches).await, 1);
        until_searched(&searches, 2).await;
        // The refresh is kept once its search returns.
        testkit::eventually_within("the refresh is kept", Duration::from_secs(2), || async {
            ask(&cache.facets, &k, &searches).await == 2
        })
        .await;
        assert_eq!(searches.load(Ordering::SeqCst), 2);
        // A category's change too.
        cache.changed("categories", "c", 2, false);
        assert_eq!(ask(&cache.facets, &k, &searches).await, 2);
        until_searched(&searches, 3).await;
        // A failed search is not kept.
        let failed = cache
            .pages
            .get_or_search(key("other", false), || async { Err::<Vec<_>, _>("down") })
            .await;
        assert_eq!(failed.unwrap_err(), "down");
    }

    #[tokio::test]
    async fn past_its_staleness_window_or_after_a_lost_connection_a_search_runs_afresh() {
        let searches = Arc::new(AtomicU64::new(0));
        let strict = strict();
        let k = key("k", false);
        assert_eq!(ask(&strict.facets, &k, &searches).await, 1);
        strict.changed("products", "p", 2, false);
        assert_eq!(ask(&strict.facets, &k, &searches).await, 2);
        // Notices may have been lost: nothing stale is answered.
        let cache = live(CacheOptions::default());
        assert_eq!(ask(&cache.facets, &k, &searches).await, 3);
        cache.invalidate_all();
        assert_eq!(ask(&cache.facets, &k, &searches).await, 4);
    }

    #[tokio::test]
    async fn a_change_of_stock_makes_stale_only_the_searches_that_filter_on_stock() {
        let cache = strict();
        let searches = Arc::new(AtomicU64::new(0));
        let (plain, stocked) = (key("q=pen", false), key("q=pen in_stock", true));
        assert_eq!(ask(&cache.facets, &plain, &searches).await, 1);
        assert_eq!(ask(&cache.facets, &stocked, &searches).await, 2);
        cache.changed("products", "p", 3, true);
        assert_eq!(ask(&cache.facets, &plain, &searches).await, 1);
        assert_eq!(ask(&cache.facets, &stocked, &searches).await, 3);
        // A catalogue change reaches both.
        cache.changed("products", "p", 4, false);
        assert_eq!(ask(&cache.facets, &plain, &searches).await, 4);
        assert_eq!(ask(&cache.facets, &stocked, &searches).await, 5);
    }

    #[tokio::test]
    async fn a_result_read_across_a_change_is_not_current() {
        let cache = strict();
        let k = key("k", false);
        // The change lands while the search runs.
        let during = cache.clone();
        cache
            .facets
            .get_or_search(k.clone(), move || async move {
                during.changed("products", "p", 2, false);
                Ok::<_, ()>((*counts(1)).clone())
            })
            .await
            .unwrap();
        let searches = Arc::new(AtomicU64::new(10));
        assert_eq!(ask(&cache.facets, &k, &searches).await, 11);
    }
}
