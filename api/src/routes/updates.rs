//! Live updates (api.md, Live updates): `GET .../updates` as Server-Sent
//! Events, fed by the change announcements the read cache already listens
//! to (`crate::changes`), so a stream costs no NATS subscription of its own.
//!
//! Each stream subscribes to the cache's wake-ups before its first read (a
//! change landing between the two still wakes it), sends the current state,
//! then reads again on each wake-up of its resource and sends what is newer
//! than what it sent last: `id: <version>`, `event: <kind>`, `data: <the
//! GET's body>`. A slow reader's missed wake-ups (the channel lagging) cost
//! it only the versions in between; the newest is always sent. Reads go
//! through the read cache, so a thousand streams on one order cost one
//! database read per change, not a thousand.
//!
//! A cart's message is sent when the cart itself changes (its version): its
//! lines' live prices are read fresh then, but a price change alone moves no
//! cart version and sends nothing (`GET /carts/{id}` shows it at once).

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::Stream;
use projections::queries::{self, QueryError};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use super::queries::{NoParams, QueryParams};
use crate::auth::{Caller, SignedIn};
use crate::cache::{self, Wake};
use crate::error::ApiError;
use crate::extract::parse_id;
use crate::state::AppState;

/// A comment line this often keeps proxies from closing an idle stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Notifications sent at most when a stream starts after a `Last-Event-ID`.
const NOTIFICATIONS_BACKLOG: i64 = 200;

/// The open streams of this process, against their cap, and the signal
/// that ends them all on shutdown.
pub struct Streams {
    open: Arc<AtomicUsize>,
    max: usize,
    closing: watch::Sender<bool>,
}

/// One open stream; dropping it (the client went away, or the stream
/// ended) gives its place back.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
        metrics::gauge!("agora_sse_streams_open").decrement(1.0);
    }
}

impl Streams {
    pub fn new(max: usize) -> Self {
        Self {
            open: Arc::new(AtomicUsize::new(0)),
            max,
            closing: watch::channel(false).0,
        }
    }

    /// How many streams are open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    fn take(&self) -> Option<Slot> {
        let taken = self
            .open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        taken.then(|| {
            metrics::gauge!("agora_sse_streams_open").increment(1.0);
            Slot(Arc::clone(&self.open))
        })
    }

    /// Ends every stream (SIGTERM), so their connections can close.
    pub fn close_all(&self) {
        self.closing.send_replace(true);
    }
}

/// What a stream follows.
#[derive(Clone, Copy)]
enum Followed {
    Order(Uuid),
    Product(Uuid),
    Cart(Uuid),
    Notifications(Uuid),
}

impl Followed {
    /// The read model that announces its changes, and the row's id.
    fn key(self) -> (&'static str, Uuid) {
        match self {
            Self::Order(id) => ("orders", id),
            Self::Product(id) => ("products", id),
            Self::Cart(id) => ("carts", id),
            Self::Notifications(id) => ("notifications", id),
        }
    }
}

/// `Last-Event-ID`: a version; absent, the stream starts with the current state.
fn last_event_id(headers: &HeaderMap) -> Result<i64, ApiError> {
    match headers.get("last-event-id") {
        None => Ok(0),
        Some(value) => value
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 18 && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be a version (digits)")),
    }
}

/// Policy: the order's user, or an admin (as `GET /orders/{id}`).
pub async fn order(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    Path(id): Path<String>,
    headers: HeaderMap,
    QueryParams(_): QueryParams<NoParams>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let after = last_event_id(&headers)?;
    let slot = slot(&state)?;
    super::orders::authorize_order(&state, &caller, id).await?;
    if state.aggregates.orders.load_id(id).await?.version == 0 {
        return Err(ApiError::not_found(format!("no order has the id {id}")));
    }
    Ok(stream(state, Followed::Order(id), after, slot))
}

/// Policy: open to all (as `GET /products/{id}`).
pub async fn product(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    QueryParams(_): QueryParams<NoParams>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let after = last_event_id(&headers)?;
    let slot = slot(&state)?;
    if state.aggregates.products.load_id(id).await?.version == 0 {
        return Err(ApiError::not_found(format!("no product has the id {id}")));
    }
    Ok(stream(state, Followed::Product(id), after, slot))
}

/// Policy: as `GET /carts/{id}` (a guest cart with its `X-Cart-Token`).
pub async fn cart(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    QueryParams(_): QueryParams<NoParams>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let after = last_event_id(&headers)?;
    let slot = slot(&state)?;
    super::carts::reach(&state, &caller, &headers, id).await?;
    Ok(stream(state, Followed::Cart(id), after, slot))
}

/// Policy: the user itself, or an admin (as `GET /users/{id}/notifications`).
/// Each message is one notification; its id is its ordinal among the
/// user's notifications, oldest first. The first message is the newest
/// notification (or, after `Last-Event-ID: N`, every one after the N-th).
pub async fn notifications(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    Path(id): Path<String>,
    headers: HeaderMap,
    QueryParams(_): QueryParams<NoParams>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    caller.require_user(id)?;
    let after = last_event_id(&headers)?;
    let slot = slot(&state)?;
    if state.aggregates.users.load_id(id).await?.version == 0 {
        return Err(ApiError::not_found(format!("no user has the id {id}")));
    }
    Ok(stream(state, Followed::Notifications(id), after, slot))
}

/// A place among the open streams, or 503 with `Retry-After`.
fn slot(state: &AppState) -> Result<Slot, ApiError> {
    if state.is_draining() {
        return Err(ApiError::unavailable("the server is shutting down", 1));
    }
    state.streams.take().ok_or_else(|| {
        metrics::counter!("agora_sse_refused_total").increment(1);
        ApiError::unavailable(
            format!(
                "this server has {} live-update streams open, its limit; try again shortly",
                state.streams.max
            ),
            5,
        )
    })
}

struct Follower {
    state: AppState,
    followed: Followed,
    /// The last version (or notification ordinal) sent.
    sent: i64,
    wakes: broadcast::Receiver<Wake>,
    closing: watch::Receiver<bool>,
    ready: std::collections::VecDeque<Event>,
    started: bool,
    _slot: Slot,
}

fn stream(state: AppState, followed: Followed, after: i64, slot: Slot) -> Response {
    let follower = Follower {
        wakes: state.reads.subscribe(),
        closing: state.streams.closing.subscribe(),
        state,
        followed,
        sent: after,
        ready: Default::default(),
        started: false,
        _slot: slot,
    };
    let mut response = Sse::new(events(follower))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies that buffer (nginx) would hold the messages back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn events(follower: Follower) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(follower, |mut f| async move {
        loop {
            if let Some(event) = f.ready.pop_front() {
                return Some((Ok(event), f));
            }
            if !f.started {
                f.started = true;
                f.read().await;
                continue;
            }
            let (model, id) = f.followed.key();
            let id = id.to_string();
            let wake = tokio::select! {
                biased;
                _ = f.closing.wait_for(|closing| *closing) => return None,
                wake = f.wakes.recv() => wake,
            };
            let read = match wake {
                Ok(Wake::Changed { version, .. })
                    if version > 0 && version <= f.sent && model != "notifications" =>
                {
                    false
                }
                Ok(wake) => wake.concerns(model, &id),
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => return None,
            };
            if read {
                f.read().await;
            }
        }
    })
}

impl Follower {
    /// Reads the resource and queues what is newer than what was sent. A
    /// failed read is logged and skipped: the next change reads again.
    async fn read(&mut self) {
        if let Err(err) = self.try_read().await {
            tracing::warn!(error = %err, "a live-update stream could not read its resource");
        }
    }

    async fn try_read(&mut self) -> Result<(), QueryError> {
        let state = &self.state;
        let found = match self.followed {
            Followed::Order(id) => {
                cached(state, "orders", id, || queries::order(&state.pool, id)).await?
            }
            Followed::Product(id) => {
                cached(state, "products", id, || queries::product(&state.pool, id)).await?
            }
            // Never cached: the view joins the products' live prices.
            Followed::Cart(id) => queries::cart(&state.pool, id, state.options.cart_ttl)
                .await?
                .and_then(|found| {
                    let body = serde_json::to_vec(&found.view).ok()?;
                    Some((found.view.version, Bytes::from(body)))
                }),
            Followed::Notifications(user) => {
                let after = self.sent;
                for (n, view) in
                    queries::notifications_after(&state.pool, user, after, NOTIFICATIONS_BACKLOG)
                        .await?
                {
                    // Without Last-Event-ID only the newest is sent first.
                    if let Ok(data) = serde_json::to_string(&view) {
                        self.ready.push_back(message(n, "notification", &data));
                    }
                    self.sent = n;
                }
                if after == 0 && self.ready.len() > 1 {
                    let newest = self.ready.pop_back();
                    self.ready.clear();
                    self.ready.extend(newest);
                }
                return Ok(());
            }
        };
        if let Some((version, body)) = found {
            if version > self.sent {
                // Personal data (an order's address) is opened on the way
                // out, as in every answer; an erased customer's is null.
                let Ok(body) = super::queries::opened(state, body).await else {
                    tracing::warn!("a live-update stream could not open its resource");
                    return Ok(());
                };
                let kind = match self.followed {
                    Followed::Order(_) => "order",
                    Followed::Cart(_) => "cart",
                    _ => "product",
                };
                if let Ok(data) = std::str::from_utf8(&body) {
                    self.ready.push_back(message(version, kind, data));
                    self.sent = version;
                }
            }
        }
        Ok(())
    }
}

fn message(id: i64, kind: &str, data: &str) -> Event {
    Event::default().id(id.to_string()).event(kind).data(data)
}

/// The resource's version and GET body, from the read cache or else the
/// read model (then cached).
async fn cached<T, F, Fut>(
    state: &AppState,
    model: &'static str,
    id: Uuid,
    read: F,
) -> Result<Option<(i64, Bytes)>, QueryError>
where
    T: serde::Serialize + HasVersion,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, QueryError>>,
{
    let key = cache::key(model, &id.to_string());
    if let Some(hit) = state.reads.get(model, &key) {
        return Ok(Some((hit.version, hit.body.clone())));
    }
    let Some(view) = read().await? else {
        return Ok(None);
    };
    let Ok(body) = serde_json::to_vec(&view) else {
        return Ok(None);
    };
    let cached = state.reads.fill(key, view.version(), Bytes::from(body));
    Ok(Some((cached.version, cached.body.clone())))
}

trait HasVersion {
    fn version(&self) -> i64;
}

impl HasVersion for queries::OrderView {
    fn version(&self) -> i64 {
        self.version
    }
}

impl HasVersion for queries::ProductView {
    fn version(&self) -> i64 {
        self.version
    }
}
