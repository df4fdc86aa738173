//! The gateway's ledger in Postgres. Keys are the callers' idempotency keys,
//! so the database itself refuses a second charge or refund under one key.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};
use uuid::Uuid;

// Two gateways starting at once would race on CREATE ... IF NOT EXISTS (it is
// not atomic in Postgres): a transaction-scoped advisory lock serializes them.
const CREATE: [&str; 5] = [
    "SELECT pg_advisory_xact_lock(7470311)",
    "CREATE SCHEMA IF NOT EXISTS gateway",
    "CREATE TABLE IF NOT EXISTS gateway.charges (
        idempotency_key text PRIMARY KEY,
        id              uuid        NOT NULL,
        token           text        NOT NULL,
        amount          bigint      NOT NULL,
        currency        text        NOT NULL,
        -- approved | declined | voided (refunded before any charge came)
        status          text        NOT NULL,
        reason          text,
        created_at      timestamptz NOT NULL DEFAULT now()
    )",
    "CREATE TABLE IF NOT EXISTS gateway.refunds (
        idempotency_key text PRIMARY KEY,
        charge_key      text        NOT NULL UNIQUE,
        id              uuid        NOT NULL,
        -- The charge given back (or the void that stands in for it).
        charge_id       uuid        NOT NULL,
        -- refunded | voided (there was no approved charge to give back)
        status          text        NOT NULL,
        amount          bigint      NOT NULL,
        created_at      timestamptz NOT NULL DEFAULT now()
    )",
    "CREATE TABLE IF NOT EXISTS gateway.attempts (
        idempotency_key text PRIMARY KEY,
        tries           integer NOT NULL
    )",
];

pub(crate) async fn create(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for statement in CREATE {
        sqlx::query(statement).execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// A charge as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ChargeRecord {
    pub idempotency_key: String,
    pub id: Uuid,
    pub token: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A refund as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct RefundRecord {
    pub idempotency_key: String,
    pub charge_key: String,
    pub id: Uuid,
    pub charge_id: Uuid,
    pub status: String,
    pub amount: i64,
    pub created_at: DateTime<Utc>,
}

const CHARGE_COLUMNS: &str =
    "idempotency_key, id, token, amount, currency, status, reason, created_at";
const REFUND_COLUMNS: &str =
    "idempotency_key, charge_key, id, charge_id, status, amount, created_at";

fn charge(row: &sqlx::postgres::PgRow) -> Result<ChargeRecord, sqlx::Error> {
    Ok(ChargeRecord {
        idempotency_key: row.try_get("idempotency_key")?,
        id: row.try_get("id")?,
        token: row.try_get("token")?,
        amount: row.try_get("amount")?,
        currency: row.try_get("currency")?,
        status: row.try_get("status")?,
        reason: row.try_get("reason")?,
        created_at: row.try_get("created_at")?,
    })
}

fn refund(row: &sqlx::postgres::PgRow) -> Result<RefundRecord, sqlx::Error> {
    Ok(RefundRecord {
        idempotency_key: row.try_get("idempotency_key")?,
        charge_key: row.try_get("charge_key")?,
        id: row.try_get("id")?,
        charge_id: row.try_get("charge_id")?,
        status: row.try_get("status")?,
        amount: row.try_get("amount")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(crate) async fn find_charge(
    pool: &PgPool,
    key: &str,
) -> Result<Option<ChargeRecord>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {CHARGE_COLUMNS} FROM gateway.charges WHERE idempotency_key = $1"
    ))
    .bind(key)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(charge).transpose()
}

/// Counts one more try of `key` and returns the count.
pub(crate) async fn count_try(pool: &PgPool, key: &str) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO gateway.attempts (idempotency_key, tries) VALUES ($1, 1)
         ON CONFLICT (idempotency_key) DO UPDATE SET tries = gateway.attempts.tries + 1
         RETURNING tries",
    )
    .bind(key)
    .fetch_one(pool)
    .await
}

/// Records a charge under its key unless one is there, and returns the one
/// that is: a concurrent repeat of the key gets the first writer's answer.
pub(crate) async fn record_charge(
    pool: &PgPool,
    new: ChargeRecord,
) -> Result<ChargeRecord, sqlx::Error> {
    sqlx::query(
        "INSERT INTO gateway.charges (idempotency_key, id, token, amount, currency, status, reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(&new.idempotency_key)
    .bind(new.id)
    .bind(&new.token)
    .bind(new.amount)
    .bind(&new.currency)
    .bind(&new.status)
    .bind(&new.reason)
    .execute(pool)
    .await?;
    find_charge(pool, &new.idempotency_key)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

/// Refunds the charge under `charge_key` once, whatever the refund key. A
/// charge that never came is voided, so it is declined should it come late;
/// a declined one has nothing to give back. Either way the refund is
/// recorded as `voided`.
pub(crate) async fn refund_charge(
    pool: &PgPool,
    key: &str,
    charge_key: &str,
) -> Result<RefundRecord, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO gateway.charges (idempotency_key, id, token, amount, currency, status, reason)
         VALUES ($1, $2, '', 0, '', 'voided', 'refunded before any charge')
         ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(charge_key)
    .bind(Uuid::now_v7())
    .execute(&mut *tx)
    .await?;
    // The lock makes a concurrent refund of this charge wait for this one.
    let row = sqlx::query(
        "SELECT id, status, amount FROM gateway.charges WHERE idempotency_key = $1 FOR UPDATE",
    )
    .bind(charge_key)
    .fetch_one(&mut *tx)
    .await?;
    let charge_id: Uuid = row.try_get("id")?;
    let status: String = row.try_get("status")?;
    let amount: i64 = row.try_get("amount")?;
    let (status, amount) = if status == "approved" {
        ("refunded", amount)
    } else {
        ("voided", 0)
    };
    sqlx::query(
        "INSERT INTO gateway.refunds (idempotency_key, charge_key, id, charge_id, status, amount)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(key)
    .bind(charge_key)
    .bind(Uuid::now_v7())
    .bind(charge_id)
    .bind(status)
    .bind(amount)
    .execute(&mut *tx)
    .await?;
    let row = sqlx::query(&format!(
        "SELECT {REFUND_COLUMNS} FROM gateway.refunds WHERE charge_key = $1"
    ))
    .bind(charge_key)
    .fetch_one(&mut *tx)
    .await?;
    let record = refund(&row)?;
    tx.commit().await?;
    Ok(record)
}

pub(crate) async fn find_refund(
    pool: &PgPool,
    key: &str,
) -> Result<Option<RefundRecord>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {REFUND_COLUMNS} FROM gateway.refunds WHERE idempotency_key = $1"
    ))
    .bind(key)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(refund).transpose()
}

pub(crate) async fn charges(pool: &PgPool) -> Result<Vec<ChargeRecord>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {CHARGE_COLUMNS} FROM gateway.charges ORDER BY created_at, idempotency_key"
    ))
    .fetch_all(pool)
    .await?;
    rows.iter().map(charge).collect()
}

pub(crate) async fn refunds(pool: &PgPool) -> Result<Vec<RefundRecord>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {REFUND_COLUMNS} FROM gateway.refunds ORDER BY created_at, idempotency_key"
    ))
    .fetch_all(pool)
    .await?;
    rows.iter().map(refund).collect()
}
