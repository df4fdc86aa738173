//! The login throttle: after [`MAX_FAILURES`] failed logins for one email
//! within [`WINDOW`], that email is refused until the oldest of them leaves
//! the window, even with the right password. Kept in Postgres, so every API
//! process counts the same failures: N replicas do not allow N times the
//! guesses.
//!
//! An attempt is counted before its password is checked (a pending row,
//! taken under a per-email advisory lock) and forgotten if it succeeds, so
//! concurrent guesses on several processes cannot all slip in under the
//! limit while each is still being verified. Throttled attempts are not
//! counted: an attacker cannot extend the lock-out past the window by
//! knocking.

use std::time::Duration;

use sqlx::PgPool;

use crate::error::StoreError;

/// api.md: 5 failed logins within 15 minutes.
pub const MAX_FAILURES: i64 = 5;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);

/// The first key of the throttle's advisory locks (the second is taken from
/// the email key), so they never collide with another component's locks.
const LOCK_CLASS: i32 = 0x6c6f_676e; // "logn"

/// Expired failures deleted with each new one, so the table stays as large
/// as one window's failures without a sweeper of its own.
const SWEEP: i64 = 100;

/// A login attempt that may go ahead, counted as a failure until it is
/// [`LoginThrottle::succeeded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt(i64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed(Attempt),
    /// Too many failures: try again in this many seconds (at least 1).
    Throttled {
        retry_after: u64,
    },
}

#[derive(Clone)]
pub struct LoginThrottle {
    pool: PgPool,
}

impl LoginThrottle {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Counts an attempt for `email_key`, or refuses it past the limit.
    pub async fn admit(&self, email_key: &[u8; 32]) -> Result<Admission, StoreError> {
        let mut tx = self.pool.begin().await?;
        let lock = i32::from_be_bytes([email_key[0], email_key[1], email_key[2], email_key[3]]);
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(LOCK_CLASS)
            .bind(lock)
            .execute(&mut *tx)
            .await?;
        let window = WINDOW.as_secs_f64();
        // The (MAX_FAILURES)th most recent failure in the window, if there
        // are that many: the attempt is refused until it leaves the window.
        let blocking: Option<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM (failed_at + make_interval(secs => $2) - now()))::float8
               FROM login_failures
              WHERE email_key = $1 AND failed_at > now() - make_interval(secs => $2)
              ORDER BY failed_at DESC
             OFFSET $3 LIMIT 1",
        )
        .bind(&email_key[..])
        .bind(window)
        .bind(MAX_FAILURES - 1)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(seconds) = blocking {
            tx.rollback().await?;
            return Ok(Admission::Throttled {
                retry_after: seconds.ceil().max(1.0) as u64,
            });
        }
        let id: i64 = sqlx::query_scalar(
            "WITH swept AS (
                 DELETE FROM login_failures
                  WHERE id IN (SELECT id FROM login_failures
                                WHERE failed_at < now() - make_interval(secs => $2)
                                LIMIT $3)
             )
             INSERT INTO login_failures (email_key) VALUES ($1) RETURNING id",
        )
        .bind(&email_key[..])
        .bind(window)
        .bind(SWEEP)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Admission::Allowed(Attempt(id)))
    }

    /// The attempt signed in: it is not a failure.
    pub async fn succeeded(&self, attempt: Attempt) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE id = $1")
            .bind(attempt.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
