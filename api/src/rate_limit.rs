//! Per-client rate limits: one GCRA bucket per [`ClientKey`] (the token
//! subject, else the peer address), refilled at `per_second` and holding at
//! most `burst` requests. Past it: 429 `rate-limited` with `Retry-After`.
//! The operations paths are never limited, so probes and scrapes keep
//! working under any load.
//!
//! The buckets live in this process: with N API replicas a client gets up
//! to N times the quota. That is the price of needing no shared store; the
//! limit is there to stop one client from crowding out the others, not to
//! meter usage.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::Request;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::auth::{is_operations_path, ClientKey};
use crate::error::ApiError;
use crate::state::AppState;

/// `AGORA_RATE_LIMIT_PER_SECOND` and `AGORA_RATE_LIMIT_BURST`; either 0 turns
/// limits off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitOptions {
    pub per_second: u32,
    pub burst: u32,
}

impl RateLimitOptions {
    pub const OFF: Self = Self {
        per_second: 0,
        burst: 0,
    };

    fn quota(self) -> Option<Quota> {
        let per_second = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst)?;
        Some(Quota::per_second(per_second).allow_burst(burst))
    }
}

/// How many checks pass between two sweeps of idle buckets: often enough
/// that a scan of many addresses cannot grow the map without bound, rarely
/// enough that the sweep costs nothing per request.
const SWEEP_EVERY: u64 = 4096;

pub struct RateLimiter {
    buckets: DefaultKeyedRateLimiter<ClientKey>,
    checks: AtomicU64,
}

impl RateLimiter {
    /// `None` when the options turn limits off.
    pub fn new(options: RateLimitOptions) -> Option<Self> {
        options.quota().map(|quota| Self {
            buckets: DefaultKeyedRateLimiter::dashmap(quota),
            checks: AtomicU64::new(0),
        })
    }

    /// `Err(seconds)` when `key` must wait that long (rounded up, ≥ 1).
    pub fn check(&self, key: &ClientKey) -> Result<(), u64> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.buckets.retain_recent();
            self.buckets.shrink_to_fit();
        }
        self.buckets.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.buckets.clock().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

/// Answers 429 when the request's client is over its quota. A step of
/// [`crate::edge::edge`], after [`crate::auth::authenticate`] named the client.
pub fn admit(state: &AppState, req: &Request) -> Result<(), ApiError> {
    if is_operations_path(req.uri().path()) {
        return Ok(());
    }
    let anonymous = ClientKey::Address(None);
    admit_key(
        state,
        req.extensions().get::<ClientKey>().unwrap_or(&anonymous),
    )
}

/// Counts one request against `key`'s quota: 429 past it.
pub fn admit_key(state: &AppState, key: &ClientKey) -> Result<(), ApiError> {
    let Some(limiter) = &state.limiter else {
        return Ok(());
    };
    limiter.check(key).map_err(|retry_after| {
        metrics::counter!("agora_rate_limited_total").increment(1);
        tracing::debug!(client = %key, retry_after, "rate limited");
        ApiError::rate_limited(retry_after)
    })
}
