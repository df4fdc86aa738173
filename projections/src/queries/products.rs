//! `rm_products`: one product, and the catalogue's search (full text,
//! typos, filters, sorts with keyset cursors, facets), all in Postgres.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use super::{bad_cursor, MoneyView, PageRequest, QueryError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProductView {
    pub id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: Option<String>,
    pub price: MoneyView,
    pub stock: StockView,
    /// `active` or `discontinued`.
    #[schemars(extend("enum" = ["active", "discontinued"]))]
    pub status: String,
    /// The categories it is listed in, in the order given.
    pub categories: Vec<Uuid>,
    /// Its `{key: value}` strings.
    pub attributes: std::collections::BTreeMap<String, String>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockView {
    pub available: i64,
    pub reserved: i64,
}

/// The statuses a product list can be filtered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductStatus {
    Active,
    Discontinued,
}

impl ProductStatus {
    pub fn parse(raw: &str) -> Result<Self, QueryError> {
        match raw {
            "active" => Ok(Self::Active),
            "discontinued" => Ok(Self::Discontinued),
            other => Err(QueryError::BadRequest(format!(
                "status must be active or discontinued, not {other:?}"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Discontinued => "discontinued",
        }
    }
}

/// How a search is ordered. Every order ends with the id, so ties are
/// broken the same way on every page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sort {
    Relevance,
    #[default]
    Newest,
    PriceAsc,
    PriceDesc,
    Name,
}

impl Sort {
    pub fn parse(raw: &str) -> Result<Self, QueryError> {
        Ok(match raw {
            "relevance" => Self::Relevance,
            "newest" => Self::Newest,
            "price_asc" => Self::PriceAsc,
            "price_desc" => Self::PriceDesc,
            "name" => Self::Name,
            other => {
                return Err(QueryError::BadRequest(format!(
                    "sort must be relevance, newest, price_asc, price_desc or name, not {other:?}"
                )))
            }
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Relevance => "relevance",
            Self::Newest => "newest",
            Self::PriceAsc => "price_asc",
            Self::PriceDesc => "price_desc",
            Self::Name => "name",
        }
    }
}

/// A facet to count over every match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Facet {
    Category,
    Attribute(String),
}

impl Facet {
    /// As `facets=` names it, and as `SearchPage::facets` is keyed.
    pub fn name(&self) -> String {
        match self {
            Self::Category => "category".to_owned(),
            Self::Attribute(key) => format!("attr.{key}"),
        }
    }
}

/// What `GET /products` searches for; every part is optional and they are
/// combined with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductFilter {
    /// Full text over name, sku, description and attribute values.
    pub q: Option<String>,
    pub status: Option<ProductStatus>,
    /// A category's id: products listed in it or in any descendant.
    pub category: Option<Uuid>,
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    pub currency: Option<String>,
    /// `Some(true)`: available > 0; `Some(false)`: none available.
    pub in_stock: Option<bool>,
    /// `attr.<key>=<value>`, all of them.
    pub attributes: Vec<(String, String)>,
    /// `None`: relevance with `q`, else newest.
    pub sort: Option<Sort>,
    pub facets: Vec<Facet>,
}

impl ProductFilter {
    /// The order asked for, else relevance with `q` and newest without.
    pub fn sort(&self) -> Sort {
        self.sort.unwrap_or(if self.words().is_empty() {
            Sort::Newest
        } else {
            Sort::Relevance
        })
    }

    /// The words of `q`, lower-cased: runs of letters and digits.
    fn words(&self) -> Vec<String> {
        self.q
            .as_deref()
            .unwrap_or("")
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .take(16)
            .map(str::to_lowercase)
            .collect()
    }
}

/// A count of one facet value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum FacetCount {
    Category { id: Uuid, slug: String, count: i64 },
    Value { value: String, count: i64 },
}

/// A page of search results, with the facets asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SearchPage {
    pub items: Vec<ProductView>,
    pub next_cursor: Option<String>,
    /// Only with `facets=`: per facet (`category`, `attr.<key>`), its values
    /// and how many of all matches (not only this page) have each.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facets: Option<std::collections::BTreeMap<String, Vec<FacetCount>>>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    sku: String,
    name: String,
    description: Option<String>,
    price_amount: i64,
    price_currency: String,
    available: i64,
    reserved: i64,
    status: String,
    category_ids: sqlx::types::Json<Vec<Uuid>>,
    attributes: sqlx::types::Json<std::collections::BTreeMap<String, String>>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

struct Ranked {
    row: Row,
    exact: i32,
    rank: f64,
}

impl From<Row> for ProductView {
    fn from(r: Row) -> Self {
        Self {
            id: r.id,
            sku: r.sku,
            name: r.name,
            description: r.description,
            price: MoneyView {
                amount: r.price_amount,
                currency: r.price_currency,
            },
            stock: StockView {
                available: r.available,
                reserved: r.reserved,
            },
            status: r.status,
            categories: r.category_ids.0,
            attributes: r.attributes.0,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

const COLUMNS: &str = "id, sku, name, description, price_amount, price_currency, available, \
                       reserved, status, category_ids, attributes, version, created_at, updated_at";

pub async fn product(pool: &PgPool, id: Uuid) -> Result<Option<ProductView>, QueryError> {
    let sql = format!("SELECT {COLUMNS} FROM rm_products WHERE id = $1");
    let row = sqlx::query_as::<_, Row>(&sql)
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(ProductView::from))
}

/// The last row of a page, in the sort it was read in: where the next starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cursor {
    sort: String,
    id: Uuid,
    #[serde(default)]
    exact: Option<i32>,
    #[serde(default)]
    rank: Option<f64>,
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    price: Option<i64>,
    #[serde(default)]
    name: Option<String>,
}

/// Words of `q` up to here must all match; a word matches by a word form
/// or an unaccented spelling (`simple` and `english` configurations), the
/// last one also as a prefix, and a word of 5 letters or more also by its
/// neighbours within one typo in the vocabulary of product words (all in
/// `agora_word_query`, migration 0016, so the tsvector index answers it).
fn push_filters(sql: &mut QueryBuilder<'_, Postgres>, filter: &ProductFilter) {
    sql.push(" WHERE TRUE");
    let words = filter.words();
    let last = words.len().saturating_sub(1);
    if !words.is_empty() {
        // The exact sku matches whatever its words tokenize to (`PEN-2`
        // holds the number `-2`).
        let q = filter.q.clone().unwrap_or_default().trim().to_owned();
        sql.push(" AND (lower(sku) = lower(")
            .push_bind(q)
            .push(") OR (TRUE");
    }
    // Each word's query in a subquery of its own: evaluated once, where a
    // call of the (STABLE) function in the condition was evaluated again
    // for every candidate row the bitmap scan rechecks (five times the
    // cost of the match itself at 100,000 products).
    for (i, word) in words.iter().enumerate() {
        sql.push(" AND search @@ (SELECT public.agora_word_query(")
            .push_bind(word.clone())
            .push(if i == last { ", TRUE))" } else { ", FALSE))" });
    }
    if !words.is_empty() {
        sql.push("))");
    }
    if let Some(status) = filter.status {
        sql.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(category) = filter.category {
        sql.push(
            " AND category_ids ?| ARRAY(SELECT d.id::text FROM rm_categories c \
               JOIN rm_categories d ON d.tree_path LIKE c.tree_path || '%' WHERE c.id = ",
        )
        .push_bind(category)
        .push(")");
    }
    if let Some(currency) = &filter.currency {
        sql.push(" AND price_currency = ")
            .push_bind(currency.clone());
    }
    if let Some(min) = filter.min_price {
        sql.push(" AND price_amount >= ").push_bind(min);
    }
    if let Some(max) = filter.max_price {
        sql.push(" AND price_amount <= ").push_bind(max);
    }
    match filter.in_stock {
        Some(true) => {
            sql.push(" AND available > 0");
        }
        Some(false) => {
            sql.push(" AND available <= 0");
        }
        None => {}
    }
    for (key, value) in &filter.attributes {
        let wanted = serde_json::json!({ key: value }).to_string();
        sql.push(" AND attributes @> ")
            .push_bind(wanted)
            .push("::jsonb");
    }
}

/// The ranking columns and the table they read: 2 for the exact sku, 1 for
/// the exact name, else 0; then how well the text matches (`ts_rank`).
///
/// Under a generic plan (a prepared statement; `products` sends searches
/// unprepared, but the ranking does not rely on it) the query's values are
/// parameters, and an expression of them in the ranking would be computed
/// again for every match (to_tsquery, unaccent: four times the cost of
/// finding the matches); computed once in a subquery the planner may not
/// fold in (`OFFSET 0`), they are read as constants.
fn push_ranked_source(sql: &mut QueryBuilder<'_, Postgres>, filter: &ProductFilter) {
    let words = filter.words();
    if words.is_empty() {
        sql.push(", 0 AS exact, 0::float8 AS rank FROM rm_products");
        return;
    }
    let q = filter.q.clone().unwrap_or_default().trim().to_owned();
    sql.push(
        ", CASE WHEN lower(sku) = k.q_sku THEN 2 WHEN name_key = k.q_name THEN 1 ELSE 0 END AS exact, \
         ts_rank(search, k.q_rank)::float8 AS rank FROM (SELECT lower(",
    )
    .push_bind(q.clone())
    .push(") AS q_sku, lower(public.agora_unaccent(")
    .push_bind(q)
    .push(")) AS q_name, to_tsquery('simple', ")
    .push_bind(words.join(" | "))
    .push(") AS q_rank OFFSET 0) k, rm_products");
}

/// One row of a search's page as the search ordered it: its id and its
/// ranking. What a search costs is finding and ordering these; they are
/// what a cache of searches keeps (the API's, `cache.rs`), while the rows
/// themselves are read fresh by id ([`search_page`]).
#[derive(Debug, Clone, Copy, PartialEq, sqlx::FromRow)]
pub struct SearchKey {
    pub id: Uuid,
    pub exact: i32,
    pub rank: f64,
}

/// The search: one page in the asked order, and the facets over every match.
pub async fn products(
    pool: &PgPool,
    filter: &ProductFilter,
    page: &PageRequest,
) -> Result<SearchPage, QueryError> {
    let keys = search_keys(pool, filter, page).await?;
    let mut found = search_page(pool, filter, page, &keys).await?;
    if !filter.facets.is_empty() {
        found.facets = Some(facets(pool, filter).await?);
    }
    Ok(found)
}

/// The keys of a page of matches, in order: `page.limit` and one more, to
/// know whether another page follows.
pub async fn search_keys(
    pool: &PgPool,
    filter: &ProductFilter,
    page: &PageRequest,
) -> Result<Vec<SearchKey>, QueryError> {
    let sort = filter.sort();
    let after = match page.cursor_text()? {
        None => None,
        Some(text) => {
            let cursor: Cursor = serde_json::from_str(&text).map_err(|_| bad_cursor())?;
            if cursor.sort != sort.as_str() {
                return Err(bad_cursor());
            }
            Some(cursor)
        }
    };
    // The matches are ordered by their keys alone: carrying every column of
    // each match (6,000 for one word at 100,000 products) through the
    // ordering cost a third of the query.
    let mut sql = QueryBuilder::<Postgres>::new(
        "SELECT m.id, m.exact, m.rank FROM (SELECT id, created_at, price_amount, name",
    );
    push_ranked_source(&mut sql, filter);
    push_filters(&mut sql, filter);
    sql.push(") m WHERE TRUE");
    if let Some(c) = &after {
        let missing = bad_cursor;
        match sort {
            Sort::Relevance => {
                let exact = c.exact.ok_or_else(missing)?;
                let rank = c.rank.ok_or_else(missing)?;
                sql.push(" AND (exact < ")
                    .push_bind(exact)
                    .push(" OR (exact = ")
                    .push_bind(exact)
                    .push(" AND rank < ")
                    .push_bind(rank)
                    .push(") OR (exact = ")
                    .push_bind(exact)
                    .push(" AND rank = ")
                    .push_bind(rank)
                    .push(" AND id > ")
                    .push_bind(c.id)
                    .push("))");
            }
            Sort::Newest => {
                sql.push(" AND (created_at, id) < (")
                    .push_bind(c.created_at.ok_or_else(missing)?)
                    .push(", ")
                    .push_bind(c.id)
                    .push(")");
            }
            Sort::PriceAsc | Sort::PriceDesc => {
                let op = if sort == Sort::PriceAsc { ">" } else { "<" };
                sql.push(format!(" AND (price_amount, id) {op} ("))
                    .push_bind(c.price.ok_or_else(missing)?)
                    .push(", ")
                    .push_bind(c.id)
                    .push(")");
            }
            Sort::Name => {
                sql.push(" AND (name, id) > (")
                    .push_bind(c.name.clone().ok_or_else(missing)?)
                    .push(", ")
                    .push_bind(c.id)
                    .push(")");
            }
        }
    }
    let order = match sort {
        Sort::Relevance => " ORDER BY m.exact DESC, m.rank DESC, m.id",
        Sort::Newest => " ORDER BY m.created_at DESC, m.id DESC",
        Sort::PriceAsc => " ORDER BY m.price_amount, m.id",
        Sort::PriceDesc => " ORDER BY m.price_amount DESC, m.id DESC",
        Sort::Name => " ORDER BY m.name, m.id",
    };
    sql.push(order);
    sql.push(" LIMIT ").push_bind(page.fetch());
    // Not a prepared statement: planned each time for its own values. A
    // cached generic plan cannot know how many products a category or a
    // price range holds, and at 100,000 products it sorted a category's
    // matches where the newest-first index would stop after a page (7 ms
    // against 1.3 ms in psql); and the filters make too many shapes of
    // query for a per-connection statement cache.
    Ok(sql
        .build_query_as()
        .persistent(false)
        .fetch_all(pool)
        .await?)
}

/// The page of `keys` (from [`search_keys`], or a cache of them): their rows
/// as they are now, in the keys' order, and the cursor of the last. A row
/// gone since the keys were read is left out.
pub async fn search_page(
    pool: &PgPool,
    filter: &ProductFilter,
    page: &PageRequest,
    keys: &[SearchKey],
) -> Result<SearchPage, QueryError> {
    if keys.is_empty() {
        return Ok(SearchPage {
            items: Vec::new(),
            next_cursor: None,
            facets: None,
        });
    }
    let sort = filter.sort();
    let ids: Vec<Uuid> = keys.iter().map(|k| k.id).collect();
    let sql = format!("SELECT {COLUMNS} FROM rm_products WHERE id = ANY($1)");
    let mut rows: std::collections::HashMap<Uuid, Row> = sqlx::query_as::<_, Row>(&sql)
        .bind(&ids)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|row| (row.id, row))
        .collect();
    let ranked: Vec<Ranked> = keys
        .iter()
        .filter_map(|key| {
            rows.remove(&key.id).map(|row| Ranked {
                row,
                exact: key.exact,
                rank: key.rank,
            })
        })
        .collect();
    let cursor_of = |r: &Ranked| {
        let mut cursor = Cursor {
            sort: sort.as_str().to_owned(),
            id: r.row.id,
            exact: None,
            rank: None,
            created_at: None,
            price: None,
            name: None,
        };
        match sort {
            Sort::Relevance => {
                cursor.exact = Some(r.exact);
                cursor.rank = Some(r.rank);
            }
            Sort::Newest => cursor.created_at = Some(r.row.created_at),
            Sort::PriceAsc | Sort::PriceDesc => cursor.price = Some(r.row.price_amount),
            Sort::Name => cursor.name = Some(r.row.name.clone()),
        }
        serde_json::to_string(&cursor).unwrap_or_default()
    };
    let found = page.page(ranked, cursor_of, |r| Ok(r.row.into()))?;
    Ok(SearchPage {
        items: found.items,
        next_cursor: found.next_cursor,
        facets: None,
    })
}

/// Each facet of `filter.facets` counted over every match of the filter
/// (what [`products`] adds to its page; the API caches it), in one
/// statement: the matches are found once and every facet counts them, where
/// a statement per facet found them again for each (three facets of a root
/// category read its 5,000 rows three times over).
pub async fn facets(
    pool: &PgPool,
    filter: &ProductFilter,
) -> Result<std::collections::BTreeMap<String, Vec<FacetCount>>, QueryError> {
    let mut wanted: Vec<&Facet> = Vec::new();
    for facet in &filter.facets {
        if !wanted.contains(&facet) {
            wanted.push(facet);
        }
    }
    if wanted.is_empty() {
        return Ok(std::collections::BTreeMap::new());
    }
    let mut sql = QueryBuilder::<Postgres>::new(
        "WITH m AS MATERIALIZED (SELECT category_ids, attributes FROM rm_products",
    );
    push_filters(&mut sql, filter);
    sql.push(") ");
    for (index, facet) in wanted.iter().enumerate() {
        if index > 0 {
            sql.push(" UNION ALL ");
        }
        let index = index as i32;
        match facet {
            Facet::Category => {
                sql.push("SELECT ").push_bind(index).push(
                    " AS facet, c.id AS category, c.slug AS label, count(*) AS count \
                         FROM m CROSS JOIN LATERAL jsonb_array_elements_text(m.category_ids) e(id) \
                         JOIN rm_categories c ON c.id::text = e.id GROUP BY c.id, c.slug",
                );
            }
            Facet::Attribute(key) => {
                sql.push("SELECT ")
                    .push_bind(index)
                    .push(" AS facet, NULL::uuid AS category, m.attributes ->> ")
                    .push_bind(key.clone())
                    .push(" AS label, count(*) AS count FROM m WHERE m.attributes ? ")
                    .push_bind(key.clone())
                    .push(" GROUP BY 3");
            }
        }
    }
    // Among equal counts, a category by its slug, an attribute by its value.
    sql.push(" ORDER BY facet, count DESC, label");
    let rows: Vec<(i32, Option<Uuid>, String, i64)> = sql
        .build_query_as()
        .persistent(false)
        .fetch_all(pool)
        .await?;
    let mut counts: Vec<Vec<FacetCount>> = vec![Vec::new(); wanted.len()];
    for (index, category, label, count) in rows {
        let Some(index) = usize::try_from(index).ok().filter(|i| *i < wanted.len()) else {
            continue;
        };
        let entry = match (wanted[index], category) {
            (Facet::Category, Some(id)) => FacetCount::Category {
                id,
                slug: label,
                count,
            },
            (Facet::Attribute(_), _) => FacetCount::Value {
                value: label,
                count,
            },
            (Facet::Category, None) => continue,
        };
        counts[index].push(entry);
    }
    Ok(wanted.iter().map(|f| f.name()).zip(counts).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_on_anything_but_letters_and_digits() {
        let filter = ProductFilter {
            q: Some("  Café, fountain-PEN  ".into()),
            ..Default::default()
        };
        assert_eq!(filter.words(), ["café", "fountain", "pen"]);
        assert_eq!(filter.sort(), Sort::Relevance);
        assert_eq!(ProductFilter::default().sort(), Sort::Newest);
        assert!(Sort::parse("cheapest").is_err());
    }

    #[test]
    fn status_filter() {
        assert_eq!(
            ProductStatus::parse("active").unwrap(),
            ProductStatus::Active
        );
        assert!(ProductStatus::parse("Active").is_err());
        assert!(ProductStatus::parse("").is_err());
    }
}
