//! Search at size: 100,000 products in 500 categories (20 roots of 24
//! children each), three attributes on each, searched through the real
//! `agora serve --role api` by `agora-bench search-load` (a process of its
//! own) at 8 concurrent clients over a mix of queries: one word, two words,
//! a typo, a prefix, a category with its descendants plus a price range,
//! and a category page's facets. The baseline in the same run: the same
//! queries, through the same driver loop, as calls of the search function
//! itself (`projections::queries::products`, the SQL the API sends) on a
//! sqlx pool of 8 in this process, at 8 concurrent tasks.
//!
//! The mix repeats (48 queries, as a shop's popular searches and category
//! pages repeat), so through an API process with its search caches most
//! answers reuse a cached page's keys and facets and read only the page's
//! rows; a second API process runs with them off (`AGORA_SEARCH_CACHE_BYTES=0`)
//! and gives what every search costs in full. While the cached mix runs,
//! changes are announced as a projector would under orders (200 stock
//! changes and one price change a second, [`churn`]), so its figures
//! include what the caches lose to them.
//!
//! Seeding writes the read-model tables with SQL (`generate_series`), not
//! through commands: the figure covers the query path only.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use projections::queries::{self, Facet, PageRequest, ProductFilter};
use serde_json::json;
use testkit::{TestDatabase, TestNats};

use crate::processes::Serve;
use crate::report::{median, quantile_ms, spread, Row, Table};
use crate::Settings;

const ROOTS: i64 = 20;
const CHILDREN: i64 = 24;
const CLIENTS: usize = 8;

/// The kinds of query in the mix, in the order of the table.
pub const KINDS: [&str; 6] = [
    "one word",
    "two words",
    "typo",
    "prefix",
    "category + price",
    "facets",
];

const NOUNS: [&str; 16] = [
    "fountain", "pencil", "notebook", "lamp", "kettle", "teapot", "blanket", "cushion", "backpack",
    "wallet", "umbrella", "candle", "mirror", "basket", "bottle", "jacket",
];
const ADJECTIVES: [&str; 8] = [
    "classic", "vintage", "compact", "deluxe", "rustic", "modern", "travel", "handmade",
];
const COLOURS: [&str; 8] = [
    "black", "white", "red", "blue", "green", "yellow", "grey", "brown",
];
const MATERIALS: [&str; 6] = ["steel", "wood", "cotton", "leather", "glass", "ceramic"];

/// One query of the mix: its kind (an index of [`KINDS`]) and its
/// `GET /products` query string.
#[derive(Clone)]
pub struct Query {
    pub kind: usize,
    pub text: String,
}

/// The mix: a few of each kind, spread over the words and categories.
fn mix() -> Vec<Query> {
    let mut mix = Vec::new();
    let mut push = |kind: usize, text: String| mix.push(Query { kind, text });
    for i in 0..8 {
        let noun = NOUNS[(i * 3) % NOUNS.len()];
        let adjective = ADJECTIVES[i % ADJECTIVES.len()];
        push(0, format!("q={noun}"));
        push(1, format!("q={adjective}%20{noun}"));
        // The last letter but one dropped from a word of 7 or more
        // (`fountan`).
        let long = NOUNS
            .iter()
            .filter(|n| n.len() >= 7)
            .nth(i % 6)
            .copied()
            .unwrap_or("fountain");
        let cut = long.len() - 2;
        push(2, format!("q={}{}", &long[..cut], &long[cut + 1..]));
        push(3, format!("q={}", &noun[..4]));
        let root = (i as i64 * 7) % ROOTS;
        push(
            4,
            format!(
                "category=root-{root}&min_price={}&max_price={}&currency=EUR",
                1_000 + i * 500,
                20_000 + i * 1_000
            ),
        );
        push(
            5,
            format!("category=root-{root}&facets=category,attr.colour,attr.material"),
        );
    }
    mix
}

/// Writes the catalogue straight into the read-model tables.
async fn seed(pool: &sqlx::PgPool, products: i64) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO rm_categories (id, slug, name, parent_id, position, path, tree_path, depth, \
         direct_count, product_count, version, created_at, updated_at) \
         SELECT md5('root' || r)::uuid, 'root-' || r, 'Root ' || r, NULL, r, '[]'::jsonb, \
                '/' || md5('root' || r)::uuid || '/', 1, 0, 0, 1, now(), now() \
           FROM generate_series(0, $1 - 1) r",
    )
    .bind(ROOTS)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO rm_categories (id, slug, name, parent_id, position, path, tree_path, depth, \
         direct_count, product_count, version, created_at, updated_at) \
         SELECT md5('child' || r || '-' || c)::uuid, 'cat-' || r || '-' || c, 'Category ' || r || '.' || c, \
                md5('root' || r)::uuid, c, jsonb_build_array(md5('root' || r)::uuid::text), \
                '/' || md5('root' || r)::uuid || '/' || md5('child' || r || '-' || c)::uuid || '/', \
                2, 0, 0, 1, now(), now() \
           FROM generate_series(0, $1 - 1) r, generate_series(0, $2 - 1) c",
    )
    .bind(ROOTS)
    .bind(CHILDREN)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO rm_products (id, sku, name, description, price_amount, price_currency, \
         available, reserved, status, category_ids, attributes, version, created_at, updated_at) \
         SELECT md5('product' || n)::uuid, 'SKU-' || n, \
                ($2::text[])[1 + n % 8] || ' ' || ($3::text[])[1 + (n / 8) % 16] || ' ' || n, \
                'A ' || ($4::text[])[1 + n % 6] || ' ' || ($3::text[])[1 + (n / 8) % 16] || ' for every day', \
                100 + (n * 7919) % 50000, 'EUR', n % 7, 0, \
                CASE WHEN n % 20 = 0 THEN 'discontinued' ELSE 'active' END, \
                jsonb_build_array(md5('child' || (n % $5) || '-' || ((n / $5) % $6))::uuid::text), \
                jsonb_build_object('colour', ($7::text[])[1 + n % 8], \
                                   'material', ($4::text[])[1 + (n / 3) % 6], \
                                   'size', (ARRAY['S', 'M', 'L', 'XL'])[1 + n % 4]), \
                1, now() - n * interval '1 second', now() \
           FROM generate_series(1, $1) n",
    )
    .bind(products)
    .bind(ADJECTIVES.to_vec())
    .bind(NOUNS.to_vec())
    .bind(MATERIALS.to_vec())
    .bind(ROOTS)
    .bind(CHILDREN)
    .bind(COLOURS.to_vec())
    .execute(pool)
    .await?;
    sqlx::query("ANALYZE rm_products").execute(pool).await?;
    sqlx::query("ANALYZE rm_categories").execute(pool).await?;
    Ok(())
}

/// Per kind of query (and all together): how many answered, and each one's
/// time.
#[derive(Default)]
struct Timings {
    ok: Vec<Vec<Duration>>,
    failed: u64,
}

/// Runs `clients` concurrent loops over `queries` for `seconds`, each
/// starting at another place in the mix; `send` answers one query.
async fn drive<F, Fut>(clients: usize, seconds: f64, queries: Arc<Vec<Query>>, send: F) -> Timings
where
    F: Fn(Query) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let period = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|n| {
            let (queries, send) = (Arc::clone(&queries), send.clone());
            tokio::spawn(async move {
                let mut timings = Timings {
                    ok: vec![Vec::new(); KINDS.len()],
                    failed: 0,
                };
                let mut at = n * queries.len() / clients.max(1);
                while started.elapsed() < period {
                    let query = queries[at % queries.len()].clone();
                    at += 1;
                    let kind = query.kind;
                    let sent = Instant::now();
                    if send(query).await {
                        timings.ok[kind].push(sent.elapsed());
                    } else {
                        timings.failed += 1;
                    }
                }
                timings
            })
        })
        .collect();
    let mut all = Timings {
        ok: vec![Vec::new(); KINDS.len()],
        failed: 0,
    };
    for task in tasks {
        if let Ok(mine) = task.await {
            for (kind, times) in mine.ok.into_iter().enumerate() {
                all.ok[kind].extend(times);
            }
            all.failed += mine.failed;
        } else {
            all.failed += 1;
        }
    }
    all
}

/// One kind's (or the whole mix's) figures of a run.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// The figures of a run: per kind, then the whole mix last.
fn summarize(mut timings: Timings, seconds: f64) -> (Vec<Figures>, u64) {
    let mut figures = Vec::new();
    let mut every = Vec::new();
    for times in &mut timings.ok {
        every.extend(times.iter().copied());
        figures.push(Figures {
            per_second: times.len() as f64 / seconds,
            p50_ms: quantile_ms(times, 0.5),
            p99_ms: quantile_ms(times, 0.99),
        });
    }
    figures.push(Figures {
        per_second: every.len() as f64 / seconds,
        p50_ms: quantile_ms(&mut every, 0.5),
        p99_ms: quantile_ms(&mut every, 0.99),
    });
    (figures, timings.failed)
}

fn to_json(figures: &[Figures], failed: u64) -> serde_json::Value {
    json!({
        "failed": failed,
        "figures": figures
            .iter()
            .map(|f| json!({"per_second": f.per_second, "p50_ms": f.p50_ms, "p99_ms": f.p99_ms}))
            .collect::<Vec<_>>(),
    })
}

fn from_json(line: &str) -> anyhow::Result<(Vec<Figures>, u64)> {
    let value: serde_json::Value = serde_json::from_str(line.trim())?;
    let figures = value["figures"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no figures in {line}"))?
        .iter()
        .map(|f| Figures {
            per_second: f["per_second"].as_f64().unwrap_or(0.0),
            p50_ms: f["p50_ms"].as_f64().unwrap_or(0.0),
            p99_ms: f["p99_ms"].as_f64().unwrap_or(0.0),
        })
        .collect();
    Ok((figures, value["failed"].as_u64().unwrap_or(0)))
}

/// `agora-bench search-load --base URL --seconds S`: the HTTP side, as a
/// process of its own; prints one JSON line of figures.
pub async fn client(mut args: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let (mut base, mut seconds) = (String::new(), 5.0);
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))?;
        match arg.as_str() {
            "--base" => base = value,
            "--seconds" => seconds = value.parse()?,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    anyhow::ensure!(!base.is_empty(), "--base is needed");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()?;
    let started = Instant::now();
    let timings = drive(CLIENTS, seconds, Arc::new(mix()), move |query| {
        let (http, url) = (http.clone(), format!("{base}/products?{}", query.text));
        async move {
            match http.get(url).send().await {
                Ok(answer) if answer.status().is_success() => answer.bytes().await.is_ok(),
                _ => false,
            }
        }
    })
    .await;
    let (figures, failed) = summarize(timings, started.elapsed().as_secs_f64());
    println!("{}", to_json(&figures, failed));
    Ok(())
}

async fn through_http(base: &str, seconds: f64) -> anyhow::Result<(Vec<Figures>, u64)> {
    let output = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "search-load",
            "--base",
            base,
            "--seconds",
            &seconds.to_string(),
        ])
        .stderr(Stdio::inherit())
        .output()
        .await?;
    anyhow::ensure!(output.status.success(), "the search load client failed");
    from_json(&String::from_utf8_lossy(&output.stdout))
}

/// Stock changes a second announced while the cached mix runs.
const STOCK_CHANGES_PER_SECOND: u64 = 200;

/// Announces changes as a projector would, until `stopped`: 200 stock
/// changes a second (orders reserving and releasing) and one catalogue
/// change (a price) a second, so the cached figures hold under the
/// invalidation a working shop sends. The rows themselves do not change:
/// what is measured is what the caches lose.
async fn churn(
    nats: async_nats::Client,
    prefix: String,
    products: Vec<uuid::Uuid>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> (u64, u64) {
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / STOCK_CHANGES_PER_SECOND));
    let (mut stock, mut catalogue) = (0u64, 0u64);
    while !*stopped.borrow() {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.changed() => break,
        }
        let Some(&id) = products.get((stock as usize) % products.len().max(1)) else {
            break;
        };
        let every_second = stock % STOCK_CHANGES_PER_SECOND == STOCK_CHANGES_PER_SECOND - 1;
        let change = projections::changes::Change {
            model: "products".into(),
            id: id.to_string(),
            version: i64::try_from(stock).unwrap_or(i64::MAX),
            stock_only: !every_second,
        };
        projections::changes::announce(&nats, &prefix, vec![change]).await;
        if every_second {
            catalogue += 1;
        }
        stock += 1;
    }
    (stock - catalogue, catalogue)
}

/// A query string of the mix as the API reads it (the few parameters the
/// mix uses), its category slug resolved as the API resolves it.
async fn filter_of(pool: &sqlx::PgPool, text: &str) -> anyhow::Result<ProductFilter> {
    let mut filter = ProductFilter::default();
    for pair in text.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = value.replace("%20", " ");
        match name {
            "q" => filter.q = Some(value),
            "category" => {
                filter.category = Some(
                    queries::category_id(pool, &value)
                        .await?
                        .unwrap_or(uuid::Uuid::nil()),
                )
            }
            "min_price" => filter.min_price = Some(value.parse()?),
            "max_price" => filter.max_price = Some(value.parse()?),
            "currency" => filter.currency = Some(value),
            "facets" => {
                for facet in value.split(',') {
                    filter.facets.push(match facet.strip_prefix("attr.") {
                        Some(key) => Facet::Attribute(key.to_owned()),
                        None => Facet::Category,
                    });
                }
            }
            other => anyhow::bail!("the mix has a parameter the baseline does not read: {other}"),
        }
    }
    Ok(filter)
}

/// The baseline: the search function on a pool of 8, at 8 tasks. The
/// category slug is looked up on every call, as the API does.
async fn direct(pool: &sqlx::PgPool, seconds: f64) -> anyhow::Result<(Vec<Figures>, u64)> {
    let pool = pool.clone();
    let started = Instant::now();
    let timings = drive(CLIENTS, seconds, Arc::new(mix()), move |query| {
        let pool = pool.clone();
        async move {
            let Ok(filter) = filter_of(&pool, &query.text).await else {
                return false;
            };
            let Ok(page) = PageRequest::parse(None, None) else {
                return false;
            };
            // Serialized, as the API answers it.
            match queries::products(&pool, &filter, &page).await {
                Ok(found) => serde_json::to_vec(&found).is_ok(),
                Err(_) => false,
            }
        }
    })
    .await;
    Ok(summarize(timings, started.elapsed().as_secs_f64()))
}

pub async fn run(settings: &Settings, table: &mut Table) -> anyhow::Result<()> {
    let (products, seconds, warm) = if settings.quick {
        (2_000, 1.0, 0.3)
    } else {
        (100_000, 10.0, 2.0)
    };
    let categories = ROOTS + ROOTS * CHILDREN;
    println!(
        "search: {products} products in {categories} categories (seeded with SQL), {CLIENTS} clients through `agora serve --role api` beside the search function called directly"
    );
    let db = TestDatabase::with_pool_size(CLIENTS as u32).await;
    let nats = TestNats::new().await;
    let seeding = Instant::now();
    seed(&db.pool, products).await?;
    println!("  seeded in {:.1} s", seeding.elapsed().as_secs_f64());
    // Every result of the mix finds something: a mix of empty answers
    // would measure nothing.
    for query in mix() {
        let filter = filter_of(&db.pool, &query.text).await?;
        let found = queries::products(&db.pool, &filter, &PageRequest::parse(None, None)?).await?;
        anyhow::ensure!(
            !found.items.is_empty(),
            "the mix's {:?} finds nothing",
            query.text
        );
    }
    let unlimited = [
        ("AGORA_RATE_LIMIT_PER_SECOND", "1000000"),
        ("AGORA_RATE_LIMIT_BURST", "1000000"),
    ];
    let uncached = [
        unlimited[0],
        unlimited[1],
        ("AGORA_SEARCH_CACHE_BYTES", "0"),
    ];
    // Two API processes side by side, one with its search caches and one
    // without, so the table tells what the caches give from what a search
    // costs.
    let server = Serve::start(&db, &nats.prefix, "api", &unlimited)?;
    let bare = Serve::start(&db, &nats.prefix, "api", &uncached)?;
    server.ready(&reqwest::Client::new()).await?;
    bare.ready(&reqwest::Client::new()).await?;
    through_http(&server.base, warm).await?;
    through_http(&bare.base, warm).await?;
    direct(&db.pool, warm).await?;
    let (mut http_runs, mut bare_runs, mut direct_runs) = (Vec::new(), Vec::new(), Vec::new());
    let churned: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM rm_products LIMIT 500")
        .fetch_all(&db.pool)
        .await?;
    for _ in 0..settings.reps {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let churning = tokio::spawn(churn(
            nats.client.clone(),
            nats.prefix.clone(),
            churned.clone(),
            stopped,
        ));
        http_runs.push(through_http(&server.base, seconds).await?);
        let _ = stop.send(true);
        let (stock, catalogue) = churning.await?;
        println!("  announced {stock} stock changes and {catalogue} catalogue changes");
        bare_runs.push(through_http(&bare.base, seconds).await?);
        direct_runs.push(direct(&db.pool, seconds).await?);
    }
    drop(server);
    drop(bare);
    let failed: u64 = http_runs
        .iter()
        .chain(&bare_runs)
        .chain(&direct_runs)
        .map(|r| r.1)
        .sum();
    let pick = |runs: &[(Vec<Figures>, u64)], index: usize| -> (Vec<f64>, Figures) {
        let rates: Vec<f64> = runs.iter().map(|r| r.0[index].per_second).collect();
        let rate = median(&rates);
        // The run whose rate is the median gives the latencies.
        let middle = runs
            .iter()
            .map(|r| r.0[index])
            .min_by(|a, b| {
                (a.per_second - rate)
                    .abs()
                    .total_cmp(&(b.per_second - rate).abs())
            })
            .unwrap_or_default();
        (rates, middle)
    };
    let servers = [
        (
            &http_runs,
            "search caches on, 200 stock changes and 1 price change a second",
        ),
        (&bare_runs, "search caches off"),
    ];
    let kinds = KINDS.iter().chain(["whole mix"].iter()).enumerate();
    for (runs, caches) in servers {
        for (index, label) in kinds.clone() {
            let (http_rates, http) = pick(runs, index);
            let (direct_rates, base) = pick(&direct_runs, index);
            let whole = index == KINDS.len();
            table.push(Row {
                workload: format!(
                    "Search, {products} products in {categories} categories: {label}, {CLIENTS} clients, {caches}"
                ),
                figure: format!(
                    "{:.0} q/s (p50 {:.2} ms, p99 {:.2} ms) through HTTP",
                    http.per_second, http.p50_ms, http.p99_ms
                ),
                baseline: format!(
                    "{:.0} q/s (p50 {:.2} ms, p99 {:.2} ms) search function direct",
                    base.per_second, base.p50_ms, base.p99_ms
                ),
                ratio: Some(http.per_second / base.per_second.max(1e-9)),
                goal: "p99 ≤ 30 ms, ≥ 0.7".to_owned(),
                spread: format!("{} vs {}", spread(&http_rates), spread(&direct_rates)),
                notes: if whole {
                    format!(
                        "seeded with SQL, not commands: the query path only; `agora serve --role api` ({caches}), load from `agora-bench search-load`; the direct calls use no cache; {failed} failed"
                    )
                } else {
                    String::new()
                },
            });
        }
    }
    Ok(())
}
