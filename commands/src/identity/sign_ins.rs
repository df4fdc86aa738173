//! Sign-ins and their refresh tokens (RFC 9700, refresh token rotation).
//!
//! A login starts a sign-in and hands out its first refresh token. Each
//! refresh uses the token up and hands out the next one in the same
//! sign-in. A token presented a second time means two parties hold it (a
//! thief and the user); which one is which cannot be told, so the whole
//! sign-in is revoked: every refresh token of it, and every access token
//! naming it in `sid`.
//!
//! Tokens are 256 random bits; only their SHA-256 is stored (the bits are
//! random, so a slow hash would add nothing), and a dump of these tables
//! signs nobody in.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::{random_token, sha256, DISABLING_EVENTS};
use crate::error::StoreError;

/// Why a sign-in ended, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    Logout,
    /// A used refresh token came back.
    Reuse,
    /// The user's password changed (its other sign-ins end).
    Password,
    /// The user was deactivated.
    Deactivated,
    /// The user was erased.
    Erased,
}

impl RevokeReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::Reuse => "reuse",
            Self::Password => "password",
            Self::Deactivated => "deactivated",
            Self::Erased => "erased",
        }
    }
}

/// A refresh token just handed out. `token` is shown to the client once.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedRefresh {
    pub user_id: Uuid,
    pub sign_in: Uuid,
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for IssuedRefresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedRefresh")
            .field("user_id", &self.user_id)
            .field("sign_in", &self.sign_in)
            .field("token", &"***")
            .finish()
    }
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// It was live: it is used up, and this is the next one.
    Rotated(IssuedRefresh),
    /// It had been used already: its sign-in is now revoked.
    Reused { user_id: Uuid, sign_in: Uuid },
    /// Unknown, expired, of a revoked sign-in or of a deactivated user.
    Invalid,
}

/// What an API process needs to know to accept a user's access tokens:
/// whether the user may still sign in at all, and which of its sign-ins
/// ended recently enough that access tokens of theirs may still be unexpired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserAccess {
    pub disabled: bool,
    pub revoked_sign_ins: Vec<Uuid>,
}

#[derive(Clone)]
pub struct SignIns {
    pool: PgPool,
}

/// Rows swept with each new sign-in: expired refresh tokens, and sign-ins
/// left without any, so neither table grows with history.
const SWEEP: i64 = 100;

impl SignIns {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Starts a sign-in for `user_id` with its first refresh token, valid
    /// for `ttl`. `keep` is how long an ended sign-in must stay known: the
    /// longest an access token of it can live.
    pub async fn start(
        &self,
        user_id: Uuid,
        ttl: Duration,
        keep: Duration,
    ) -> Result<IssuedRefresh, StoreError> {
        let sign_in = Uuid::now_v7();
        let (token, hash) = random_token("")?;
        let expires_at: DateTime<Utc> = sqlx::query_scalar(
            "WITH started AS (
                 INSERT INTO sign_ins (id, user_id) VALUES ($1, $2)
             ), expired AS (
                 DELETE FROM refresh_tokens
                  WHERE token_hash IN (SELECT token_hash FROM refresh_tokens
                                        WHERE expires_at < now() LIMIT $6)
             ), emptied AS (
                 DELETE FROM sign_ins s
                  WHERE s.id IN (SELECT id FROM sign_ins i
                                  WHERE i.created_at < now() - make_interval(secs => $5)
                                    AND (i.revoked_at IS NULL OR i.revoked_at < now() - make_interval(secs => $5))
                                    AND NOT EXISTS (SELECT 1 FROM refresh_tokens r
                                                     WHERE r.sign_in_id = i.id AND r.expires_at >= now())
                                  LIMIT $6)
             )
             INSERT INTO refresh_tokens (token_hash, sign_in_id, user_id, expires_at)
             VALUES ($3, $1, $2, now() + make_interval(secs => $4))
             RETURNING expires_at",
        )
        .bind(sign_in)
        .bind(user_id)
        .bind(&hash[..])
        .bind(ttl.as_secs_f64())
        .bind(keep.as_secs_f64())
        .bind(SWEEP)
        .fetch_one(&self.pool)
        .await?;
        Ok(IssuedRefresh {
            user_id,
            sign_in,
            token,
            expires_at,
        })
    }

    /// Exchanges a refresh token for the next one of its sign-in, once.
    pub async fn rotate(&self, token: &str, ttl: Duration) -> Result<Rotation, StoreError> {
        let hash = sha256(token.as_bytes());
        let mut tx = self.pool.begin().await?;
        // Used up only if live, its sign-in live and its user not disabled;
        // the row lock makes a second, concurrent exchange see it used.
        let used = sqlx::query(
            "UPDATE refresh_tokens t SET used_at = now()
               FROM sign_ins s
              WHERE t.token_hash = $1 AND s.id = t.sign_in_id
                AND t.used_at IS NULL AND t.expires_at > now() AND s.revoked_at IS NULL
                AND NOT EXISTS (SELECT 1 FROM events e
                                 WHERE e.aggregate_type = 'user' AND e.aggregate_id = t.user_id::text
                                   AND e.event_type = ANY($2))
             RETURNING t.sign_in_id, t.user_id",
        )
        .bind(&hash[..])
        .bind(DISABLING_EVENTS)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = used {
            let sign_in: Uuid = row.try_get("sign_in_id")?;
            let user_id: Uuid = row.try_get("user_id")?;
            let (next, next_hash) = random_token("")?;
            let expires_at: DateTime<Utc> = sqlx::query_scalar(
                "INSERT INTO refresh_tokens (token_hash, sign_in_id, user_id, expires_at)
                 VALUES ($1, $2, $3, now() + make_interval(secs => $4))
                 RETURNING expires_at",
            )
            .bind(&next_hash[..])
            .bind(sign_in)
            .bind(user_id)
            .bind(ttl.as_secs_f64())
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(Rotation::Rotated(IssuedRefresh {
                user_id,
                sign_in,
                token: next,
                expires_at,
            }));
        }
        let known = sqlx::query(
            "SELECT sign_in_id, user_id, used_at IS NOT NULL AS used FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(&hash[..])
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = known else {
            return Ok(Rotation::Invalid);
        };
        if !row.try_get::<bool, _>("used")? {
            // Expired, or its sign-in or user ended: nothing more to revoke.
            return Ok(Rotation::Invalid);
        }
        let sign_in: Uuid = row.try_get("sign_in_id")?;
        let user_id: Uuid = row.try_get("user_id")?;
        revoke_one(&mut *tx, sign_in, RevokeReason::Reuse).await?;
        tx.commit().await?;
        Ok(Rotation::Reused { user_id, sign_in })
    }

    /// The sign-in a refresh token (used or not) belongs to, and its user.
    pub async fn of_token(&self, token: &str) -> Result<Option<(Uuid, Uuid)>, StoreError> {
        let row =
            sqlx::query("SELECT sign_in_id, user_id FROM refresh_tokens WHERE token_hash = $1")
                .bind(&sha256(token.as_bytes())[..])
                .fetch_optional(&self.pool)
                .await?;
        row.map(|row| Ok((row.try_get("sign_in_id")?, row.try_get("user_id")?)))
            .transpose()
    }

    /// Ends one sign-in; `false` if it had ended already (or never was).
    pub async fn revoke(&self, sign_in: Uuid, reason: RevokeReason) -> Result<bool, StoreError> {
        Ok(revoke_one(&self.pool, sign_in, reason).await? > 0)
    }

    /// Ends every live sign-in of `user_id` but `except`; how many ended.
    pub async fn revoke_all(
        &self,
        user_id: Uuid,
        except: Option<Uuid>,
        reason: RevokeReason,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE sign_ins SET revoked_at = now(), revoked_reason = $3
              WHERE user_id = $1 AND revoked_at IS NULL AND id IS DISTINCT FROM $2",
        )
        .bind(user_id)
        .bind(except)
        .bind(reason.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Whether `user_id`'s access tokens may be accepted, read from the
    /// write side: its stream (deactivated?) and its sign-ins that ended
    /// within `window` (the longest an access token lives).
    pub async fn access(&self, user_id: Uuid, window: Duration) -> Result<UserAccess, StoreError> {
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM events
                             WHERE aggregate_type = 'user' AND aggregate_id = $1
                               AND event_type = ANY($2)) AS disabled,
                    ARRAY(SELECT id FROM sign_ins
                           WHERE user_id = $3 AND revoked_at > now() - make_interval(secs => $4)) AS revoked",
        )
        .bind(user_id.to_string())
        .bind(DISABLING_EVENTS)
        .bind(user_id)
        .bind(window.as_secs_f64())
        .fetch_one(&self.pool)
        .await?;
        Ok(UserAccess {
            disabled: row.try_get("disabled")?,
            revoked_sign_ins: row.try_get("revoked")?,
        })
    }
}

async fn revoke_one<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    id: Uuid,
    reason: RevokeReason,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE sign_ins SET revoked_at = now(), revoked_reason = $2 WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(id)
    .bind(reason.as_str())
    .execute(executor)
    .await?;
    Ok(done.rows_affected())
}
