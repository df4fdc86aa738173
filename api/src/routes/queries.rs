//! The query routes: reads of the read models (`projections::queries`).
//!
//! A single resource is answered from the cache when it holds a version
//! recent enough, else from Postgres (and then cached). `?min_version=N`
//! waits, without polling, for change notices of that row until it reaches
//! N or the consistency wait runs out (503 with `Retry-After`). Lists are
//! read from Postgres every time; only `GET /products` keeps what repeats,
//! its pages' keys and its facet counts (`cache::SearchCache`).
//!
//! Read models (and so the cache) keep personal data sealed; every answer
//! passes through [`opened`] on its way out, so an erased user's data is
//! unreadable in every answer from the moment its key is destroyed.

use std::future::Future;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use projections::queries::{
    self, CategoryTree, CategoryView, Facet, NotificationView, OrderView, Page, PageRequest,
    PaymentView, ProductFilter, ProductStatus, ProductView, QueryError, SearchPage, Sort, UserView,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use uuid::Uuid;

use crate::auth::{Admin, SignedIn};
use crate::cache::{self, Wake};
use crate::error::ApiError;
use crate::extract::parse_id;
use crate::state::AppState;

/// Query parameters: anything that does not deserialize into `T` (unknown
/// parameters included, with `deny_unknown_fields`) is a 400 problem.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        // Postgres text cannot hold NUL: refuse it here rather than fail the query.
        if parts.uri.query().is_some_and(|q| q.contains("%00")) {
            return Err(ApiError::bad_request(
                "query parameters must not contain NUL characters",
            ));
        }
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(params)| Self(params))
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}

impl From<QueryError> for ApiError {
    fn from(err: QueryError) -> Self {
        match err {
            QueryError::BadRequest(detail) => Self::bad_request(detail),
            err if err.is_unavailable() => {
                tracing::warn!(error = %err, "read models unavailable");
                Self::unavailable("the read models are unavailable; try again shortly", 1)
            }
            err => Self::internal(&err),
        }
    }
}

/// No query parameters at all: any is a 400, as on every route.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// `?min_version=` of a single resource.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneParams {
    min_version: Option<String>,
}

impl OneParams {
    fn min_version(&self) -> Result<Option<i64>, ApiError> {
        self.min_version
            .as_deref()
            .map(|raw| {
                raw.parse::<u64>()
                    .ok()
                    .and_then(|v| i64::try_from(v).ok())
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "min_version must be a non-negative integer, not {raw:?}"
                        ))
                    })
            })
            .transpose()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    limit: Option<String>,
    cursor: Option<String>,
}

impl PageParams {
    pub(crate) fn page(&self) -> Result<PageRequest, ApiError> {
        Ok(PageRequest::parse(
            self.limit.as_deref(),
            self.cursor.as_deref(),
        )?)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersParams {
    email: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /products`'s parameters, read as pairs: `attr.<key>` names are
/// open-ended, so a struct cannot list them.
/// The category is given back as given (an id or a slug), for the caller to
/// resolve.
fn search_params(
    pairs: Vec<(String, String)>,
) -> Result<(ProductFilter, PageRequest, Option<String>), ApiError> {
    let mut filter = ProductFilter::default();
    let (mut limit, mut cursor) = (None, None);
    let mut seen = std::collections::HashSet::new();
    let int = |name: &str, raw: &str| {
        raw.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::bad_request(format!(
                "{name} must be a non-negative integer, not {raw:?}"
            ))
        })
    };
    let mut category = None;
    for (name, value) in pairs {
        if !name.starts_with("attr.") && !seen.insert(name.clone()) {
            return Err(ApiError::bad_request(format!(
                "{name} is given more than once"
            )));
        }
        match name.as_str() {
            "q" => filter.q = Some(value),
            "status" => filter.status = Some(ProductStatus::parse(&value)?),
            "category" => category = Some(value),
            "min_price" => filter.min_price = Some(int("min_price", &value)?),
            "max_price" => filter.max_price = Some(int("max_price", &value)?),
            "currency" => {
                if value.len() != 3 || !value.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(ApiError::bad_request(format!(
                        "currency must be an ISO 4217 code such as EUR, not {value:?}"
                    )));
                }
                filter.currency = Some(value);
            }
            "in_stock" => {
                filter.in_stock = Some(match value.as_str() {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "in_stock must be true or false, not {other:?}"
                        )))
                    }
                })
            }
            "sort" => filter.sort = Some(Sort::parse(&value)?),
            "facets" => {
                for facet in value.split(',') {
                    filter.facets.push(match facet {
                        "category" => Facet::Category,
                        other => match other.strip_prefix("attr.") {
                            Some(key) if (1..=64).contains(&key.chars().count()) => {
                                Facet::Attribute(key.to_owned())
                            }
                            _ => {
                                return Err(ApiError::bad_request(format!(
                                    "facets lists category and attr.<key>, not {other:?}"
                                )))
                            }
                        },
                    });
                }
            }
            "limit" => limit = Some(value),
            "cursor" => cursor = Some(value),
            other => match other.strip_prefix("attr.") {
                Some(key) if (1..=64).contains(&key.chars().count()) => {
                    filter.attributes.push((key.to_owned(), value))
                }
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "unknown parameter {other:?}"
                    )))
                }
            },
        }
    }
    if (filter.min_price.is_some() || filter.max_price.is_some()) && filter.currency.is_none() {
        return Err(ApiError::bad_request(
            "min_price and max_price need currency",
        ));
    }
    if let Some(raw) = &category {
        if Uuid::parse_str(raw).is_err() && domain::Slug::parse(raw.as_str()).is_err() {
            return Err(ApiError::bad_request(
                "category must be a category id or slug",
            ));
        }
    }
    let page = PageRequest::parse(limit.as_deref(), cursor.as_deref())?;
    Ok((filter, page, category))
}

/// A view that knows the version of its row.
trait Versioned: Serialize {
    fn version(&self) -> i64;
}

macro_rules! versioned {
    ($($view:ty),*) => {$(
        impl Versioned for $view {
            fn version(&self) -> i64 {
                self.version
            }
        }
    )*};
}
versioned!(
    UserView,
    ProductView,
    OrderView,
    PaymentView,
    CategoryView,
    queries::CartView
);

/// Policy: the user itself, or an admin.
pub async fn user(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<OneParams>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    caller.require_user(id)?;
    let min_version = params.min_version()?;
    one(&state, "users", id, min_version, || {
        queries::user(&state.pool, id)
    })
    .await
}

/// Policy: open to all.
pub async fn product(
    State(state): State<AppState>,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<OneParams>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let min_version = params.min_version()?;
    one(&state, "products", id, min_version, || {
        queries::product(&state.pool, id)
    })
    .await
}

/// Policy: the order's user, or an admin.
pub async fn order(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<OneParams>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    super::orders::authorize_order(&state, &caller, id).await?;
    let min_version = params.min_version()?;
    one(&state, "orders", id, min_version, || {
        queries::order(&state.pool, id)
    })
    .await
}

/// Policy: the user of the payment's order, or an admin.
pub async fn payment(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<OneParams>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    super::payments::authorize_payment(&state, &caller, id).await?;
    let min_version = params.min_version()?;
    one(&state, "payments", id, min_version, || {
        queries::payment(&state.pool, id)
    })
    .await
}

/// Policy: admin only (it finds users by email).
pub async fn users(
    State(state): State<AppState>,
    _admin: Admin,
    QueryParams(params): QueryParams<UsersParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let page = PageRequest::parse(params.limit.as_deref(), params.cursor.as_deref())?;
    // Emails are sealed in the read model: found by their claim's keyed hash.
    let claim = params.email.as_deref().map(|email| {
        state
            .aggregates
            .vault
            .email_claim(&domain::normalize_email(email))
    });
    let found: Page<UserView> = queries::users(&state.pool, claim.as_deref(), &page).await?;
    opened_json(&state, &found).await
}

/// The JSON text of an answer with every sealed value in it opened
/// (`schemas::sealed`); a value whose owner was erased becomes `null`.
pub(crate) async fn opened(state: &AppState, body: Bytes) -> Result<Bytes, ApiError> {
    const MARK: &[u8] = b"\"pd1.";
    if !body.windows(MARK.len()).any(|w| w == MARK) {
        return Ok(body);
    }
    let mut value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|err| ApiError::internal(&err))?;
    open_value(state, &mut value).await?;
    Ok(Bytes::from(
        serde_json::to_vec(&value).map_err(|err| ApiError::internal(&err))?,
    ))
}

/// Opens every sealed value of `value` in place.
pub(crate) async fn open_value(
    state: &AppState,
    value: &mut serde_json::Value,
) -> Result<(), ApiError> {
    state.aggregates.vault.open_all(value).await.map_err(|err| {
        if err.is_unavailable() {
            tracing::warn!(error = %err, "the key store is unavailable");
            ApiError::unavailable("the key store is unavailable; try again shortly", 1)
        } else {
            ApiError::internal(&err)
        }
    })
}

/// A list answer, opened.
pub(crate) async fn opened_json<T: Serialize>(
    state: &AppState,
    view: &T,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut value = serde_json::to_value(view).map_err(|err| ApiError::internal(&err))?;
    open_value(state, &mut value).await?;
    Ok(Json(value))
}

/// Policy: open to all.
pub async fn products(
    State(state): State<AppState>,
    QueryParams(pairs): QueryParams<Vec<(String, String)>>,
) -> Result<Json<SearchPage>, ApiError> {
    let (mut filter, page, category) = search_params(pairs)?;
    if let Some(raw) = category {
        // A slug no category has matches no product.
        filter.category = Some(
            queries::category_id(&state.pool, &raw)
                .await?
                .unwrap_or(Uuid::nil()),
        );
    }
    // What repeats (the keys of a popular search's page, a category page's
    // facets) comes from the search caches when they have it; the page's
    // rows are read fresh every time, so stock and prices are current.
    let wanted = std::mem::take(&mut filter.facets);
    // A stale entry is refreshed in the background: the search owns what
    // it reads.
    let (pool, searched, asked) = (state.pool.clone(), filter.clone(), page.clone());
    let keys = state
        .reads
        .pages
        .get_or_search(cache::page_key(&filter, &page), move || async move {
            queries::search_keys(&pool, &searched, &asked).await
        })
        .await?;
    let mut found = queries::search_page(&state.pool, &filter, &page, &keys).await?;
    if !wanted.is_empty() {
        filter.facets = wanted;
        let (pool, counted) = (state.pool.clone(), filter.clone());
        let counts = state
            .reads
            .facets
            .get_or_search(cache::facet_key(&filter), move || async move {
                queries::facets(&pool, &counted).await
            })
            .await?;
        found.facets = Some((*counts).clone());
    }
    Ok(Json(found))
}

/// Policy: open to all.
pub async fn categories(
    State(state): State<AppState>,
    QueryParams(_): QueryParams<NoParams>,
) -> Result<Json<CategoryTree>, ApiError> {
    Ok(Json(queries::category_tree(&state.pool).await?))
}

/// Policy: open to all. `{id}` is a category's id or its slug.
pub async fn category(
    State(state): State<AppState>,
    Path(id_or_slug): Path<String>,
    QueryParams(params): QueryParams<OneParams>,
) -> Result<Response, ApiError> {
    let min_version = params.min_version()?;
    let Some(id) = queries::category_id(&state.pool, &id_or_slug).await? else {
        return Err(ApiError::not_found(format!(
            "no category has the id or slug {id_or_slug:?}"
        )));
    };
    one(&state, "categories", id, min_version, || {
        queries::category(&state.pool, id)
    })
    .await
}

/// Policy: the user itself, or an admin.
pub async fn orders_of_user(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<PageParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require_user(parse_id(&id)?)?;
    let user_id = known_user(&state, &id).await?;
    let page = params.page()?;
    let found: Page<OrderView> = queries::orders_of_user(&state.pool, user_id, &page).await?;
    opened_json(&state, &found).await
}

/// Policy: the user itself, or an admin.
pub async fn notifications_of_user(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<PageParams>,
) -> Result<Json<Page<NotificationView>>, ApiError> {
    caller.require_user(parse_id(&id)?)?;
    let user_id = known_user(&state, &id).await?;
    let page = params.page()?;
    Ok(Json(
        queries::notifications_of_user(&state.pool, user_id, &page).await?,
    ))
}

/// A cart from the read model, after the caller was let in
/// (`carts::get`); `ttl` gives open carts their `expires_at`.
pub(crate) async fn one_cart(
    state: &AppState,
    id: Uuid,
    params: OneParams,
    ttl: std::time::Duration,
) -> Result<Response, ApiError> {
    let min_version = params.min_version()?;
    one_of(state, "carts", id, min_version, false, || async move {
        Ok(queries::cart(&state.pool, id, ttl)
            .await?
            .map(|found| found.view))
    })
    .await
}

/// The id of a user the read model knows, else 404.
async fn known_user(state: &AppState, raw: &str) -> Result<Uuid, ApiError> {
    let id = parse_id(raw)?;
    if queries::user_exists(&state.pool, id).await? {
        Ok(id)
    } else {
        Err(ApiError::not_found(format!("no user has the id {id}")))
    }
}

/// One resource of `model`, at `min_version` or later when asked.
async fn one<T, F, Fut>(
    state: &AppState,
    model: &'static str,
    id: Uuid,
    min_version: Option<i64>,
    read: F,
) -> Result<Response, ApiError>
where
    T: Versioned,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Option<T>, QueryError>>,
{
    one_of(state, model, id, min_version, true, read).await
}

/// [`one`], through the cache only when `cached`: a view that joins other
/// models' rows (a cart's live prices) changes without its own version
/// moving, so no announcement of its row would drop a stale copy.
async fn one_of<T, F, Fut>(
    state: &AppState,
    model: &'static str,
    id: Uuid,
    min_version: Option<i64>,
    cached: bool,
    read: F,
) -> Result<Response, ApiError>
where
    T: Versioned,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Option<T>, QueryError>>,
{
    // Every row is at version 0 or later: nothing to wait for.
    let min_version = min_version.filter(|v| *v > 0);
    let id_text = id.to_string();
    let key = cache::key(model, &id_text);
    if let Some(hit) = state.reads.get(model, &key).filter(|_| cached) {
        if hit.version >= min_version.unwrap_or(0) {
            return Ok(answer(
                opened(state, hit.body.clone()).await?,
                hit.etag.clone(),
            ));
        }
    }
    let Some(wanted) = min_version else {
        return match read().await? {
            Some(view) => fresh(state, cached, key, &view).await,
            None => Err(ApiError::not_found(format!(
                "no {} has the id {id}",
                singular(model)
            ))),
        };
    };

    // Subscribed before the first read, so a change landing between that
    // read and the wait still wakes us.
    let mut wakes = state.reads.subscribe();
    let deadline = Instant::now() + state.options.consistency_wait;
    loop {
        if let Some(view) = read().await? {
            if view.version() >= wanted {
                return fresh(state, cached, key, &view).await;
            }
        }
        loop {
            match tokio::time::timeout_at(deadline, wakes.recv()).await {
                Err(_elapsed) => return Err(behind(model, id, wanted)),
                Ok(Ok(Wake::Changed { version, .. })) if version > 0 && version < wanted => {
                    continue
                }
                Ok(Ok(wake)) if wake.concerns(model, &id_text) => break,
                Ok(Ok(_)) => continue,
                // Notices were dropped: ours may be among them.
                Ok(Err(RecvError::Lagged(_))) => break,
                Ok(Err(RecvError::Closed)) => {
                    tokio::time::sleep_until(deadline).await;
                    return Err(behind(model, id, wanted));
                }
            }
        }
    }
}

/// Serializes a row just read, caches it (sealed), and answers it opened.
async fn fresh<T: Versioned>(
    state: &AppState,
    cache: bool,
    key: String,
    view: &T,
) -> Result<Response, ApiError> {
    let body = Bytes::from(serde_json::to_vec(view).map_err(|err| ApiError::internal(&err))?);
    if !cache {
        let etag = HeaderValue::from_str(&format!("\"{}\"", view.version()))
            .map_err(|err| ApiError::internal(&err))?;
        return Ok(answer(opened(state, body).await?, etag));
    }
    let cached = state.reads.fill(key, view.version(), body);
    Ok(answer(
        opened(state, cached.body.clone()).await?,
        cached.etag.clone(),
    ))
}

fn answer(body: Bytes, etag: HeaderValue) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::ETAG, etag);
    response
}

fn behind(model: &str, id: Uuid, wanted: i64) -> ApiError {
    ApiError::unavailable(
        format!(
            "{} {id} has not reached version {wanted} yet; try again shortly",
            singular(model)
        ),
        1,
    )
}

fn singular(model: &str) -> &str {
    match model {
        "categories" => "category",
        _ => model.strip_suffix('s').unwrap_or(model),
    }
}
