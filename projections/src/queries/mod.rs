//! Reads of the read models, for the query API.
//!
//! Every view has exactly the fields of the HTTP contract (`docs/api.md`), so
//! the API serializes it as is. Lists are keyset-paged: the cursor is the
//! base64url text of the last row's sort key, so a page is one index range
//! scan however deep it is, and rows written meanwhile never shift a page.

mod carts;
mod categories;
mod notifications;
mod orders;
mod payments;
mod products;
mod users;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use carts::{
    cart, carts_of_user, due_carts, open_cart_of_user, CartLineView, CartView, FoundCart,
};
pub use categories::{
    category, category_id, category_tree, subtree, CategoryCrumb, CategoryNode, CategoryTree,
    CategoryView, Subtree,
};
pub use notifications::{notifications_after, notifications_of_user, NotificationView};
pub use orders::{
    order, orders_by_status, orders_of_user, OrderLineView, OrderView, ShippingAddressView,
};
pub use payments::{payment, PaymentView};
pub use products::{
    facets, product, products, search_keys, search_page, Facet, FacetCount, ProductFilter,
    ProductStatus, ProductView, SearchKey, SearchPage, Sort, StockView,
};
pub use users::{user, user_exists, users, UserView};

/// Page sizes: `limit` is 1..=MAX_LIMIT, DEFAULT_LIMIT when absent.
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The request itself is wrong (limit, cursor, filter): the client's fault.
    #[error("{0}")]
    BadRequest(String),
    /// A stored row could not be turned into its view.
    #[error("read model row of {model} {id} is malformed: {reason}")]
    Malformed {
        model: &'static str,
        id: Uuid,
        reason: String,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl QueryError {
    /// The database could not be reached (as opposed to a fault of ours).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Database(
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            )
        )
    }
}

/// Money as on the wire: integer minor units and an ISO 4217 code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MoneyView {
    pub amount: i64,
    pub currency: String,
}

/// One page of a list: `next_cursor` is `null` on the last page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Which page to read: its size and where the previous one stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    cursor: Option<String>,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            limit: DEFAULT_LIMIT,
            cursor: None,
        }
    }
}

impl PageRequest {
    /// From the raw query parameters: `limit` must be an integer in
    /// 1..=200 (default 50); the cursor is checked by the list that reads it.
    pub fn parse(limit: Option<&str>, cursor: Option<&str>) -> Result<Self, QueryError> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(raw) => match raw.trim().parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(QueryError::BadRequest(format!(
                        "limit must be an integer from 1 to {MAX_LIMIT}, not {raw:?}"
                    )))
                }
            },
        };
        Ok(Self {
            limit,
            // `cursor=` is the first page, as no cursor is.
            cursor: cursor.filter(|c| !c.is_empty()).map(str::to_owned),
        })
    }

    /// The cursor as given (base64), for a cache to key a page by.
    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    /// Rows to fetch: one more than the page, to know whether another follows.
    fn fetch(&self) -> i64 {
        i64::from(self.limit) + 1
    }

    /// The decoded cursor text, if one was given.
    fn cursor_text(&self) -> Result<Option<String>, QueryError> {
        let Some(raw) = &self.cursor else {
            return Ok(None);
        };
        URL_SAFE_NO_PAD
            .decode(raw.trim_end_matches('=').as_bytes())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .map(Some)
            .ok_or_else(bad_cursor)
    }

    /// A cursor that is the id of the last row seen.
    fn id_cursor(&self) -> Result<Option<Uuid>, QueryError> {
        match self.cursor_text()? {
            None => Ok(None),
            Some(text) => Uuid::parse_str(&text).map(Some).map_err(|_| bad_cursor()),
        }
    }

    /// Cuts the `limit + 1` rows read into a page, with the cursor of its
    /// last row when more rows follow.
    fn page<R, T>(
        &self,
        mut rows: Vec<R>,
        key: impl Fn(&R) -> String,
        view: impl Fn(R) -> Result<T, QueryError>,
    ) -> Result<Page<T>, QueryError> {
        let limit = self.limit as usize;
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|r| URL_SAFE_NO_PAD.encode(key(r)))
        } else {
            None
        };
        let items = rows.into_iter().map(view).collect::<Result<_, _>>()?;
        Ok(Page { items, next_cursor })
    }
}

fn bad_cursor() -> QueryError {
    QueryError::BadRequest(
        "cursor is not one this list handed out; pass next_cursor back unchanged".to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_bounds() {
        assert_eq!(PageRequest::parse(None, None).unwrap().limit, 50);
        assert_eq!(PageRequest::parse(Some("1"), None).unwrap().limit, 1);
        assert_eq!(PageRequest::parse(Some("200"), None).unwrap().limit, 200);
        for bad in ["0", "201", "-1", "x", "", "1.5"] {
            assert!(
                matches!(
                    PageRequest::parse(Some(bad), None),
                    Err(QueryError::BadRequest(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let id = Uuid::now_v7();
        let page = PageRequest::parse(Some("1"), None).unwrap();
        let cut = page
            .page(vec![id, Uuid::now_v7()], |r| r.to_string(), Ok)
            .unwrap();
        let next = PageRequest::parse(None, cut.next_cursor.as_deref()).unwrap();
        assert_eq!(next.id_cursor().unwrap(), Some(id));
        for garbage in ["!!!", "bm90LWEtdXVpZA", "%%"] {
            let request = PageRequest::parse(None, Some(garbage)).unwrap();
            assert!(request.id_cursor().is_err(), "{garbage}");
        }
    }
}
