use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use commands::idempotency::IdempotencyStore;
use commands::Aggregates;
use sqlx::PgPool;

use crate::auth::{Authenticator, IdentityOptions, JwtSecret};
use crate::cache::{CacheOptions, ReadCache};
use crate::rate_limit::{RateLimitOptions, RateLimiter};

/// Limits of the HTTP edge.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The largest body read (`AGORA_BODY_LIMIT_BYTES`): 413 past it.
    pub body_limit: usize,
    /// How long a body may take to arrive, plus a second per
    /// `body_min_rate` bytes received (`AGORA_BODY_READ_TIMEOUT_MS`): 408
    /// past it. Zero waits for ever.
    pub body_read_timeout: Duration,
    /// `AGORA_BODY_MIN_RATE` bytes per second; 0 gives no extra time.
    pub body_min_rate: u32,
    /// Handling one request, once it is read (`AGORA_REQUEST_TIMEOUT_MS`): 503 past it.
    pub request_timeout: Duration,
    /// Connections and request heads.
    pub connections: crate::ConnectionLimits,
    /// How long a read with `?min_version=` waits for the read model
    /// (`AGORA_CONSISTENCY_WAIT_MS`) before answering 503.
    pub consistency_wait: Duration,
    /// The deployment's NATS prefix (`AGORA_NATS_PREFIX`), under which
    /// read-model changes are announced.
    pub nats_prefix: String,
    /// The cache of single-resource reads.
    pub cache: CacheOptions,
    /// The secret bearer tokens are checked with; `None` is `AGORA_AUTH=off`:
    /// every caller may do everything. The default, so a library user opts in.
    pub auth: Option<JwtSecret>,
    /// Per-client request rate; off by default here (`agora serve` turns it
    /// on with its configured defaults).
    pub rate_limit: RateLimitOptions,
    /// Token lifetimes and the OpenID Connect provider.
    pub identity: IdentityOptions,
    /// How long a cart may stay unchanged before it expires (`AGORA_CART_TTL`).
    pub cart_ttl: Duration,
    /// Open live-update streams at most (`AGORA_SSE_MAX_STREAMS`): 503 past it.
    pub sse_max_streams: usize,
    /// Which webhook URLs are accepted (`AGORA_WEBHOOKS_ALLOW_LOOPBACK`).
    pub webhook_addresses: webhooks::AddressPolicy,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            body_limit: 64 * 1024,
            body_read_timeout: Duration::from_secs(20),
            body_min_rate: 500,
            request_timeout: crate::DEFAULT_REQUEST_TIMEOUT,
            connections: crate::ConnectionLimits::default(),
            consistency_wait: crate::DEFAULT_CONSISTENCY_WAIT,
            nats_prefix: "agora".to_owned(),
            cache: CacheOptions::default(),
            auth: None,
            rate_limit: RateLimitOptions::OFF,
            identity: IdentityOptions::default(),
            cart_ttl: crate::DEFAULT_CART_TTL,
            sse_max_streams: 10_000,
            webhook_addresses: webhooks::AddressPolicy::default(),
        }
    }
}

/// The key that seals webhook secrets: derived from the JWT secret, or a
/// fixed development key when authentication is off.
pub fn webhook_secrets(options: &HttpOptions) -> webhooks::SecretBox {
    webhooks::SecretBox::new(options.auth.as_ref().map(JwtSecret::lookup_key))
}

/// What every handler can reach. Every request clones it (the middleware and
/// the handler each take one), so it is one `Arc`: a clone is one atomic
/// increment, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub pool: PgPool,
    pub aggregates: Aggregates,
    pub idempotency: IdempotencyStore,
    pub nats: Option<async_nats::Client>,
    pub options: HttpOptions,
    /// Cached single-resource reads and the wake-ups of `?min_version=`
    /// waiters, fed by [`crate::changes::listen`].
    pub reads: ReadCache,
    /// `None` when rate limits are off.
    pub limiter: Option<RateLimiter>,
    /// Password hashes, sign-ins, the login throttle and API keys.
    pub identity: commands::identity::Identity,
    /// The caches and keys that check credentials.
    pub authenticator: Authenticator,
    /// Webhook endpoints, their secrets sealed under a key derived from the
    /// JWT secret (the delivery loop opens them with the same key).
    pub webhooks: webhooks::Endpoints,
    /// Open live-update streams (`.../updates`), against `AGORA_SSE_MAX_STREAMS`.
    pub streams: crate::routes::updates::Streams,
    draining: AtomicBool,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(
        pool: PgPool,
        aggregates: Aggregates,
        nats: Option<async_nats::Client>,
        options: HttpOptions,
    ) -> Self {
        // Every router is built on a state, so this is where the process's
        // recorder is installed: before the read cache takes its counters
        // from it.
        crate::metrics::install();
        // Without a secret (auth off, development only) lookups are keyed
        // by a fixed key: nothing is protected then anyway.
        let lookup_key = options
            .auth
            .as_ref()
            .map_or(&b"agora development lookup key"[..], JwtSecret::lookup_key);
        Self(Arc::new(Shared {
            identity: commands::identity::Identity::new(pool.clone(), lookup_key),
            authenticator: Authenticator::new(&options.identity),
            idempotency: IdempotencyStore::new(pool.clone()),
            webhooks: webhooks::Endpoints::new(pool.clone(), webhook_secrets(&options)),
            streams: crate::routes::updates::Streams::new(options.sse_max_streams),
            pool,
            aggregates,
            nats,
            reads: ReadCache::new(&options.cache),
            limiter: RateLimiter::new(options.rate_limit),
            options,
            draining: AtomicBool::new(false),
        }))
    }

    /// Marks the process as shutting down: `/readyz` answers 503 from now
    /// on, so load balancers stop sending before connections close; and
    /// live-update streams end, so their connections can close.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.streams.close_all();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
