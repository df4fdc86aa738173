//! `rm_products`: one product, and the catalogue searched by name or sku.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::{MoneyView, Page, PageRequest, QueryError};

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

/// `q` matches a substring of the name or the sku, case-insensitive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductFilter {
    pub q: Option<String>,
    pub status: Option<ProductStatus>,
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
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
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
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

const COLUMNS: &str = "id, sku, name, description, price_amount, price_currency, available, \
                       reserved, status, version, created_at, updated_at";

pub async fn product(pool: &PgPool, id: Uuid) -> Result<Option<ProductView>, QueryError> {
    let sql = format!("SELECT {COLUMNS} FROM rm_products WHERE id = $1");
    let row = sqlx::query_as::<_, Row>(&sql)
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(ProductView::from))
}

/// Products in id order, filtered.
pub async fn products(
    pool: &PgPool,
    filter: &ProductFilter,
    page: &PageRequest,
) -> Result<Page<ProductView>, QueryError> {
    let after = page.id_cursor()?;
    let pattern = filter.q.as_deref().map(|q| format!("%{}%", escape_like(q)));
    let sql = format!(
        "SELECT {COLUMNS} FROM rm_products \
         WHERE ($1::text IS NULL OR name ILIKE $1 ESCAPE '\\' OR sku ILIKE $1 ESCAPE '\\') \
           AND ($2::text IS NULL OR status = $2) \
           AND ($3::uuid IS NULL OR id > $3) \
         ORDER BY id LIMIT $4"
    );
    let rows = sqlx::query_as::<_, Row>(&sql)
        .bind(pattern)
        .bind(filter.status.map(ProductStatus::as_str))
        .bind(after)
        .bind(page.fetch())
        .fetch_all(pool)
        .await?;
    page.page(rows, |r| r.id.to_string(), |r| Ok(r.into()))
}

/// `text` as a LIKE pattern matching itself: `\`, `%` and `_` are escaped.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_metacharacters_are_escaped() {
        assert_eq!(escape_like("50%_off\\"), "50\\%\\_off\\\\");
        assert_eq!(escape_like("plain"), "plain");
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
