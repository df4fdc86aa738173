//! `saga_orders`: the saga's durable work list (see migrations/0003_saga.sql).
//!
//! A row is due when it is not done and its `next_attempt_at` has come. A
//! step loop takes due rows with a lease (`lease_owner`, `lease_until`), so
//! several saga processes never step one order at once, and rows held by a
//! process that died come back when their lease runs out.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// A claimed row: what a step needs to know beyond the aggregates.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub order_id: Uuid,
    pub placed_at: DateTime<Utc>,
    /// When the first charge attempt was made (see [`charging`]): the
    /// payment deadline runs from here.
    pub charging_since: Option<DateTime<Utc>>,
    pub correlation_id: Option<String>,
    pub traceparent: Option<String>,
    pub payment_id: Option<Uuid>,
    pub generation: i64,
    pub charge_attempts: i32,
    pub failures: i32,
    pub refund_sent: bool,
    /// Whether the stock of this (cancelled) order has been given back:
    /// done once, so that a step repeated later (a refund the gateway keeps
    /// refusing) does not ask products that have long forgotten the order.
    pub stock_given_back: bool,
}

/// Why a row woke up, from an event the consumer saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Wake {
    Placed {
        order_id: Uuid,
        at: DateTime<Utc>,
        correlation_id: Option<String>,
        traceparent: Option<String>,
    },
    /// A cancellation or a refund: the saga must compensate.
    Compensate {
        order_id: Uuid,
        at: DateTime<Utc>,
    },
    Refunded {
        payment_id: Uuid,
    },
}

/// A placement's time, correlation id and trace, as a wake-up records them.
type Placement<'a> = (DateTime<Utc>, Option<&'a str>, Option<&'a str>);

/// Records the wake-ups in the caller's transaction (the intake's batch,
/// which records the events as applied in it too): one statement per kind
/// of wake-up, not per event. The batch's transaction holds the rows it
/// wakes locked until it commits, and the steps of those very orders wait
/// on them: a statement per event kept a flash sale's steps waiting for
/// batches of a thousand round trips.
pub async fn wake(tx: &mut sqlx::PgConnection, wakes: &[Wake]) -> Result<(), sqlx::Error> {
    // One row per order per statement (an upsert touches a row at most once
    // per statement): a redelivered placement keeps its earliest time and
    // its latest correlation.
    let mut placed: std::collections::BTreeMap<Uuid, Placement<'_>> =
        std::collections::BTreeMap::new();
    let mut compensate: std::collections::BTreeMap<Uuid, DateTime<Utc>> =
        std::collections::BTreeMap::new();
    let mut refunded = Vec::new();
    for wake in wakes {
        match wake {
            Wake::Placed {
                order_id,
                at,
                correlation_id,
                traceparent,
            } => {
                let entry = placed.entry(*order_id).or_insert((*at, None, None));
                entry.0 = entry.0.min(*at);
                entry.1 = correlation_id.as_deref();
                entry.2 = traceparent.as_deref();
            }
            Wake::Compensate { order_id, at } => {
                let entry = compensate.entry(*order_id).or_insert(*at);
                *entry = (*entry).min(*at);
            }
            Wake::Refunded { payment_id } => refunded.push(*payment_id),
        }
    }
    // In event order: an order's placement comes before its cancellation.
    if !placed.is_empty() {
        let ids: Vec<Uuid> = placed.keys().copied().collect();
        let ats: Vec<DateTime<Utc>> = placed.values().map(|v| v.0).collect();
        let correlations: Vec<Option<&str>> = placed.values().map(|v| v.1).collect();
        let traces: Vec<Option<&str>> = placed.values().map(|v| v.2).collect();
        sqlx::query(
            "INSERT INTO saga_orders (order_id, placed_at, correlation_id, traceparent)
             SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[])
             ON CONFLICT (order_id) DO UPDATE
                SET placed_at = least(saga_orders.placed_at, EXCLUDED.placed_at),
                    correlation_id = EXCLUDED.correlation_id,
                    traceparent = EXCLUDED.traceparent",
        )
        .bind(ids)
        .bind(ats)
        .bind(correlations)
        .bind(traces)
        .execute(&mut *tx)
        .await?;
    }
    // A cancellation wakes its row, unless the row is done and its stock
    // given back: that is recorded only once the order is cancelled, and
    // the row is marked done only after the compensation that follows, so
    // this cancellation (an order is cancelled once) has been seen to: the
    // saga cancelled it itself.
    if !compensate.is_empty() {
        let ids: Vec<Uuid> = compensate.keys().copied().collect();
        let ats: Vec<DateTime<Utc>> = compensate.values().copied().collect();
        sqlx::query(
            "INSERT INTO saga_orders (order_id, placed_at)
             SELECT * FROM unnest($1::uuid[], $2::timestamptz[])
             ON CONFLICT (order_id) DO UPDATE
                SET done = false, generation = saga_orders.generation + 1,
                    next_attempt_at = now(), failures = 0, updated_at = now()
              WHERE NOT (saga_orders.done AND saga_orders.stock_given_back)",
        )
        .bind(ids)
        .bind(ats)
        .execute(&mut *tx)
        .await?;
    }
    if !refunded.is_empty() {
        sqlx::query(
            "UPDATE saga_orders
                SET done = false, generation = generation + 1,
                    next_attempt_at = now(), failures = 0, updated_at = now()
              WHERE payment_id = ANY($1)",
        )
        .bind(refunded)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

const CLAIM: &str = "
UPDATE saga_orders s
   SET lease_owner = $1, lease_until = now() + $2 * interval '1 millisecond', updated_at = now()
 WHERE s.order_id IN (
        SELECT order_id FROM saga_orders
         WHERE NOT done AND next_attempt_at <= now()
           AND (lease_until IS NULL OR lease_until < now())
         ORDER BY next_attempt_at
         LIMIT $3
           FOR UPDATE SKIP LOCKED)
RETURNING s.order_id, s.placed_at, s.charging_since, s.correlation_id, s.traceparent, s.payment_id, s.generation, s.charge_attempts,
          s.failures, s.refund_sent, s.stock_given_back";

/// Leases up to `limit` due rows to `owner` for `lease`.
pub async fn claim(
    pool: &PgPool,
    owner: Uuid,
    lease: Duration,
    limit: i64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let rows = sqlx::query(CLAIM)
        .bind(owner)
        .bind(lease.as_millis() as i64)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(Claimed {
                order_id: row.try_get("order_id")?,
                placed_at: row.try_get("placed_at")?,
                charging_since: row.try_get("charging_since")?,
                correlation_id: row.try_get("correlation_id")?,
                traceparent: row.try_get("traceparent")?,
                payment_id: row.try_get("payment_id")?,
                generation: row.try_get("generation")?,
                charge_attempts: row.try_get("charge_attempts")?,
                failures: row.try_get("failures")?,
                refund_sent: row.try_get("refund_sent")?,
                stock_given_back: row.try_get("stock_given_back")?,
            })
        })
        .collect()
}

/// What a step decided for its row.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// The order reached an end: nothing more until an event wakes it.
    Done,
    /// Look again at this time (a retry, the circuit's cool-down, a deadline).
    At(DateTime<Utc>),
}

/// Ends the lease with the step's decision. A row woken (its generation
/// bumped) while the step ran is never marked done: it is due at once, so
/// the wake-up is not lost. False if the lease was lost meanwhile.
pub async fn finish(
    pool: &PgPool,
    owner: Uuid,
    row: &Claimed,
    next: &Next,
    failures: i32,
    error: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let (done, at) = match next {
        Next::Done => (true, None),
        Next::At(at) => (false, Some(*at)),
    };
    let result = sqlx::query(
        "UPDATE saga_orders
            SET lease_owner = NULL, lease_until = NULL,
                done = (generation = $3 AND $4),
                next_attempt_at = CASE WHEN generation = $3 THEN coalesce($5, now()) ELSE now() END,
                failures = $6, last_error = $7, updated_at = now()
          WHERE order_id = $1 AND lease_owner = $2",
    )
    .bind(row.order_id)
    .bind(owner)
    .bind(row.generation)
    .bind(done)
    .bind(at)
    .bind(failures)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Stores the payment id the order will use, unless one is stored already,
/// and returns the stored one: written before the Payment is created, so a
/// re-run after a crash creates and charges the same payment.
pub async fn choose_payment_id(
    pool: &PgPool,
    order_id: Uuid,
    owner: Uuid,
    candidate: Uuid,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE saga_orders SET payment_id = coalesce(payment_id, $3)
          WHERE order_id = $1 AND lease_owner = $2 RETURNING payment_id",
    )
    .bind(order_id)
    .bind(owner)
    .bind(candidate)
    .fetch_optional(pool)
    .await
    .map(Option::flatten)
}

/// Records that the order has started waiting on the gateway (its first
/// charge attempt, sent or refused by the open circuit) unless it had, and
/// returns since when. None if the lease was lost.
pub async fn charging(
    pool: &PgPool,
    order_id: Uuid,
    owner: Uuid,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE saga_orders SET charging_since = coalesce(charging_since, now())
          WHERE order_id = $1 AND lease_owner = $2 RETURNING charging_since",
    )
    .bind(order_id)
    .bind(owner)
    .fetch_optional(pool)
    .await
    .map(Option::flatten)
}

/// Counts a charge call about to go out (before it goes, so a crash during
/// the call still leaves the trace that money may have moved), marks the
/// order as waiting on the gateway since now if it was not, and renews the
/// lease for the call. Returns since when it waits; None if the lease was
/// lost.
pub async fn start_charge(
    pool: &PgPool,
    order_id: Uuid,
    owner: Uuid,
    lease: Duration,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE saga_orders
            SET charge_attempts = charge_attempts + 1,
                charging_since = coalesce(charging_since, now()),
                lease_until = now() + $3 * interval '1 millisecond'
          WHERE order_id = $1 AND lease_owner = $2
      RETURNING charging_since",
    )
    .bind(order_id)
    .bind(owner)
    .bind(lease.as_millis() as i64)
    .fetch_optional(pool)
    .await
    .map(Option::flatten)
}

/// Records that the gateway answered the refund.
pub async fn refund_sent(pool: &PgPool, order_id: Uuid, owner: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE saga_orders SET refund_sent = true WHERE order_id = $1 AND lease_owner = $2",
    )
    .bind(order_id)
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records that the cancelled order's stock went back; false if the lease
/// was lost.
pub async fn stock_given_back(
    pool: &PgPool,
    order_id: Uuid,
    owner: Uuid,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE saga_orders SET stock_given_back = true WHERE order_id = $1 AND lease_owner = $2",
    )
    .bind(order_id)
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Orders the saga has not finished.
pub async fn active(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM saga_orders WHERE NOT done")
        .fetch_one(pool)
        .await
}
