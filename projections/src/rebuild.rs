//! Rebuilding read models from the event store into a separate schema, and
//! comparing them with the live ones: proof that a read model is exactly
//! what its events say, and the way to recover one that is not.

use schemas::EventEnvelope;
use sqlx::PgPool;

use crate::apply::{apply_batch_in, mark_skipped, quote_ident, set_search_path, EventRow, Outcome};
use crate::error::ProjectionError;
use crate::projection::Projection;

/// The read-model tables, compared by `diff`.
pub const READ_MODEL_TABLES: [&str; 7] = [
    "rm_users",
    "rm_products",
    "rm_orders",
    "rm_payments",
    "rm_notifications",
    "rm_notification_orders",
    "rm_notification_payments",
];

/// Everything a rebuild writes, copied into its schema: the read models and
/// the projections' bookkeeping (so the live checkpoints stay untouched).
pub const REBUILD_TABLES: [&str; 9] = [
    "rm_users",
    "rm_products",
    "rm_orders",
    "rm_payments",
    "rm_notifications",
    "rm_notification_orders",
    "rm_notification_payments",
    "projection_applied",
    "projection_checkpoints",
];

/// Events read (and applied) per transaction.
pub const PAGE_SIZE: i64 = 5000;

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("{0:?} cannot be a rebuild schema: use lower-case letters, digits and '_', not public or pg_*")]
    InvalidSchema(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Apply(#[from] ProjectionError),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildReport {
    /// Events read from the store.
    pub events: u64,
    /// Events applied, summed over the projections.
    pub applied: u64,
    /// Events that could not be applied (a live worker would have
    /// dead-lettered them); they are skipped, as the worker does.
    pub failures: Vec<String>,
}

/// Rebuilds all five projections into `schema`. See
/// [`rebuild_projections_into_schema`].
pub async fn rebuild_into_schema(
    pool: &PgPool,
    schema: &str,
) -> Result<RebuildReport, RebuildError> {
    rebuild_projections_into_schema(pool, schema, &Projection::ALL).await
}

/// Drops and recreates `schema` with empty copies of `REBUILD_TABLES`
/// (`LIKE public.X INCLUDING ALL`), then applies every event of the store,
/// in position order and as of one snapshot, to `projections` there. The
/// live tables are not touched. Tables of projections not named stay empty.
pub async fn rebuild_projections_into_schema(
    pool: &PgPool,
    schema: &str,
    projections: &[Projection],
) -> Result<RebuildReport, RebuildError> {
    check_schema(schema)?;
    let quoted = quote_ident(schema);
    {
        let mut tx = pool.begin().await?;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {quoted} CASCADE"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("CREATE SCHEMA {quoted}"))
            .execute(&mut *tx)
            .await?;
        for table in REBUILD_TABLES {
            sqlx::query(&format!(
                "CREATE TABLE {quoted}.{table} (LIKE public.{table} INCLUDING ALL)"
            ))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
    }

    let mut report = RebuildReport::default();
    // One snapshot for the whole read, so the rebuild is of one moment of the
    // store even while writes go on.
    let mut reader = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *reader)
        .await?;
    let mut after = 0i64;
    loop {
        let page: Vec<EventEnvelope> = sqlx::query_as::<_, EventRow>(
            "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload,
                    metadata, position, recorded_at
             FROM events WHERE position > $1 ORDER BY position LIMIT $2",
        )
        .bind(after)
        .bind(PAGE_SIZE)
        .fetch_all(&mut *reader)
        .await?
        .into_iter()
        .map(EventRow::into_envelope)
        .collect();
        let Some(last) = page.last() else { break };
        after = last.position;
        report.events += page.len() as u64;
        for &projection in projections {
            let events: Vec<EventEnvelope> = page
                .iter()
                .filter(|e| {
                    projection
                        .aggregate_types()
                        .contains(&e.aggregate_type.as_str())
                })
                .cloned()
                .collect();
            apply_page(pool, projection, events, schema, &mut report).await?;
        }
    }
    reader.rollback().await?;
    Ok(report)
}

/// Applies one page as the live worker would end up doing: a failed event
/// is skipped (the worker dead-letters it), and events that waited behind it
/// are applied after.
async fn apply_page(
    pool: &PgPool,
    projection: Projection,
    mut pending: Vec<EventEnvelope>,
    schema: &str,
    report: &mut RebuildReport,
) -> Result<(), RebuildError> {
    while !pending.is_empty() {
        let outcomes = apply_batch_in(pool, projection, &pending, Some(schema)).await?;
        let mut skipped = Vec::new();
        let mut waiting = Vec::new();
        for (event, outcome) in pending.into_iter().zip(outcomes) {
            match outcome {
                Outcome::Applied(_) => report.applied += 1,
                Outcome::Duplicate | Outcome::Skipped => {}
                Outcome::Gap { .. } => waiting.push(event),
                Outcome::Failed(error) => {
                    report.failures.push(format!(
                        "{}: {} {} sequence {} ({}): {error}",
                        projection.name(),
                        event.aggregate_type,
                        event.aggregate_id,
                        event.sequence,
                        event.event_type
                    ));
                    skipped.push((event.aggregate_type, event.aggregate_id, event.sequence));
                }
            }
        }
        if skipped.is_empty() {
            // Nothing was skipped, so nothing the waiting events wait for
            // will come: the store has a hole.
            for event in &waiting {
                report.failures.push(format!(
                    "{}: {} {} sequence {} ({}): an earlier event is missing",
                    projection.name(),
                    event.aggregate_type,
                    event.aggregate_id,
                    event.sequence,
                    event.event_type
                ));
            }
            skipped.extend(
                waiting
                    .drain(..)
                    .map(|e| (e.aggregate_type, e.aggregate_id, e.sequence)),
            );
        }
        if !skipped.is_empty() {
            let mut tx = pool.begin().await?;
            set_search_path(&mut tx, schema).await?;
            mark_skipped(&mut tx, projection, &skipped).await?;
            tx.commit().await?;
        }
        pending = waiting;
    }
    Ok(())
}

/// Rows that differ between the live read models and those rebuilt in
/// `schema`, compared on every column but `updated_at`, as readable lines;
/// empty when they are equal. At most 100 lines per table.
pub async fn diff(pool: &PgPool, schema: &str) -> Result<Vec<String>, RebuildError> {
    check_schema(schema)?;
    let mut conn = pool.acquire().await?;
    Ok(diff_tables(&mut conn, schema, &READ_MODEL_TABLES).await?)
}

/// [`diff`] of `tables` only, on the caller's connection (a replay compares
/// while it holds the projections' locks).
pub(crate) async fn diff_tables(
    conn: &mut sqlx::PgConnection,
    schema: &str,
    tables: &[&str],
) -> Result<Vec<String>, sqlx::Error> {
    let quoted = quote_ident(schema);
    let mut lines = Vec::new();
    for &table in tables {
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name = $1 AND column_name <> 'updated_at'
             ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await?;
        let columns = columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let rows: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT side, row FROM (
                 SELECT 'live' AS side, row_to_json(x)::text AS row FROM (
                     SELECT {columns} FROM public.{table} EXCEPT SELECT {columns} FROM {quoted}.{table}) x
                 UNION ALL
                 SELECT 'rebuilt' AS side, row_to_json(y)::text AS row FROM (
                     SELECT {columns} FROM {quoted}.{table} EXCEPT SELECT {columns} FROM public.{table}) y
             ) d ORDER BY row, side LIMIT 101"
        ))
        .fetch_all(&mut *conn)
        .await?;
        let more = rows.len() > 100;
        for (side, row) in rows.into_iter().take(100) {
            lines.push(match side.as_str() {
                "live" => format!("{table}: live row not in the rebuild: {row}"),
                _ => format!("{table}: rebuilt row not in the live table: {row}"),
            });
        }
        if more {
            lines.push(format!("{table}: ... and more differing rows"));
        }
    }
    Ok(lines)
}

fn check_schema(schema: &str) -> Result<(), RebuildError> {
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && schema != "public"
        && schema != "information_schema"
        && !schema.starts_with("pg_");
    if valid {
        Ok(())
    } else {
        Err(RebuildError::InvalidSchema(schema.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked() {
        assert!(check_schema("rebuild_1").is_ok());
        assert!(check_schema("_r").is_ok());
        for bad in ["", "public", "pg_temp", "Rebuild", "a-b", "a;drop", "1a"] {
            assert!(check_schema(bad).is_err(), "{bad}");
        }
    }
}
