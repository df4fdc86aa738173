//! `agora replay`: rebuilds read models from the events table while the live
//! ones keep serving, then swaps them in atomically.
//!
//! 1. One replay at a time: a session advisory lock (`REPLAY_LOCK`), taken
//!    with `try`, so a second run is refused at once. Whatever a previous run
//!    left (it was killed) is dropped first: the shadow schema, and its
//!    `running` rows in `replay_runs` become `interrupted`.
//! 2. Build: empty copies of the projections' tables in the schema
//!    `agora_replay` (without indexes); the events table is read in position
//!    order, page by page, as of one snapshot, and folded in memory
//!    (`fold.rs`); rows, the last sequence per aggregate and the checkpoint
//!    are written in bulk, then the live tables' indexes and constraints are
//!    created on the copies under the same names.
//! 3. Catch up: events committed since the build's snapshot are read by
//!    transaction id (every transaction not in a snapshot has an id at or
//!    above its xmin, as the relay tails) and applied to the shadow by
//!    `apply_batch`, which skips those already done by sequence.
//! 4. Swap, in one transaction: take each projection's advisory lock
//!    exclusively (live workers hold it shared for every batch, so none is
//!    half-way and none starts), catch up a last time, then drop the live
//!    tables, move the shadow ones into `public`, and replace the
//!    projections' `projection_applied` rows, checkpoints and dead letters
//!    with the replay's. A worker blocked on the lock then applies its
//!    batch to the new tables, where `projection_applied` says what is done.
//!
//! A replay killed at any point leaves the live tables as they were: they
//! change only in the swap's transaction.

mod diff;
mod fold;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use schemas::{EventEnvelope, Recorded};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::mpsc;

pub use fold::Failure;

use crate::apply::{
    begin_in, mark_skipped, quote_ident, settle, EventRow, Retryable, EVENT_COLUMNS,
};
use crate::error::ProjectionError;
use crate::projection::Projection;
use crate::subscriber::{Subscriber, LOCK_CLASS};

/// The schema a replay builds in. One replay runs at a time, so one name.
pub const SHADOW_SCHEMA: &str = "agora_replay";
/// The second key of the lock one replay holds for its whole run (class
/// [`LOCK_CLASS`], beside the subscribers' own).
const REPLAY_LOCK: i32 = 0;
/// Events read per page by default (`--batch`).
pub const DEFAULT_BATCH: usize = 10_000;
/// Catch-up rounds run before the swap while they still find this many
/// events: the last round runs with the live workers held, so it should be short.
const SMALL_CATCH_UP: u64 = 1_000;
const MAX_CATCH_UP_ROUNDS: usize = 10;

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Projections to rebuild, each once; all of them when empty.
    pub projections: Vec<Projection>,
    /// Build and compare with the live tables; do not swap.
    pub verify: bool,
    /// Events read per page.
    pub batch: usize,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            projections: Vec::new(),
            verify: false,
            batch: DEFAULT_BATCH,
        }
    }
}

/// Where a replay is; shown by the CLI (a bar on a terminal, lines otherwise).
pub trait Progress: Send {
    /// A stage starts; `total` events expected (0: unknown).
    fn stage(&mut self, name: &str, total: u64);
    /// `events` more events of the stage are done.
    fn advance(&mut self, events: u64);
    /// The stage is over.
    fn finish(&mut self);
}

/// Shows nothing.
pub struct Quiet;

impl Progress for Quiet {
    fn stage(&mut self, _: &str, _: u64) {}
    fn advance(&mut self, _: u64) {}
    fn finish(&mut self) {}
}

#[derive(Debug, Clone, Default)]
pub struct ReplayReport {
    /// Events read from the store by the build.
    pub events: u64,
    /// Events read by the catch-up rounds (some of them already applied).
    pub caught_up: u64,
    /// The highest position the rebuilt models reflect.
    pub position: i64,
    /// Per projection, events applied.
    pub applied: BTreeMap<&'static str, u64>,
    /// Events that could not be applied; they become the projections' dead
    /// letters when the replay swaps.
    pub failures: Vec<Failure>,
    /// `--verify`: rows that differ between the rebuild and the live tables.
    pub drift: Vec<String>,
    /// The rebuilt tables are live now.
    pub swapped: bool,
    /// Of the build, the time spent waiting for the next page from the
    /// store, and folding pages (where its time went).
    pub build_waited: std::time::Duration,
    pub build_folded: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("another replay is running ({0}); wait for it to finish, or stop it, then try again")]
    Busy(String),
    #[error("replay failed: {0}")]
    Database(#[from] sqlx::Error),
    #[error("replay failed: {0}")]
    Apply(#[from] ProjectionError),
}

/// The last finished replay run of a projection, for `agora projections`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastRun {
    pub projection: String,
    pub mode: String,
    pub outcome: String,
    pub events: i64,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The latest run of every projection that has one (a running one included).
pub async fn last_runs(pool: &PgPool) -> Result<BTreeMap<String, LastRun>, sqlx::Error> {
    type Row = (String, String, String, i64, Option<DateTime<Utc>>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT DISTINCT ON (projection) projection, mode, outcome, events, finished_at
           FROM replay_runs ORDER BY projection, id DESC",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(projection, mode, outcome, events, finished_at)| {
            (
                projection.clone(),
                LastRun {
                    projection,
                    mode,
                    outcome,
                    events,
                    finished_at,
                },
            )
        })
        .collect())
}

/// Rebuilds `options.projections` (all when empty) and swaps them in, or with
/// `verify` compares them with the live tables. See the module docs.
pub async fn replay(
    pool: &PgPool,
    options: &ReplayOptions,
    progress: &mut dyn Progress,
) -> Result<ReplayReport, ReplayError> {
    let mut projections = if options.projections.is_empty() {
        Projection::ALL.to_vec()
    } else {
        options.projections.clone()
    };
    projections.sort();
    projections.dedup();

    // Its own connection, closed (not returned to the pool) when the run
    // ends or is dropped, so the session lock can never outlive the run.
    let mut session = pool.acquire().await?.detach();
    if !try_lock(&mut session).await? {
        let holder = busy_holder(pool).await.unwrap_or_default();
        let _ = session.close().await;
        return Err(ReplayError::Busy(holder));
    }
    let result = run_locked(pool, &mut session, &projections, options, progress).await;
    let _ = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
        .bind(LOCK_CLASS)
        .bind(REPLAY_LOCK)
        .execute(&mut session)
        .await;
    let _ = session.close().await;
    result
}

/// What differs between the live read models and a rebuild of all of them
/// from the events table, as `agora replay --verify` prints it; empty when
/// they are equal. Tests use it as their oracle: it is the same fold.
pub async fn verify(pool: &PgPool) -> Result<Vec<String>, ReplayError> {
    let options = ReplayOptions {
        verify: true,
        ..ReplayOptions::default()
    };
    Ok(replay(pool, &options, &mut Quiet).await?.drift)
}

/// Cleans up after a run that was stopped (Ctrl-C): drops the shadow schema
/// and marks its runs interrupted. Does nothing if a replay holds the lock.
pub async fn abandon(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut session = pool.acquire().await?.detach();
    if try_lock(&mut session).await? {
        clean_up(&mut session).await?;
    }
    session.close().await
}

async fn try_lock(session: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(LOCK_CLASS)
        .bind(REPLAY_LOCK)
        .fetch_one(session)
        .await
}

/// Who holds the replay lock, as far as the database can tell.
async fn busy_holder(pool: &PgPool) -> Result<String, sqlx::Error> {
    let holder: Option<(i32, Option<DateTime<Utc>>, Option<String>)> = sqlx::query_as(
        "SELECT a.pid, a.backend_start, a.client_addr::text
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE l.locktype = 'advisory' AND l.classid::bigint = $1 AND l.objid::bigint = $2
            AND l.granted
          LIMIT 1",
    )
    .bind(i64::from(LOCK_CLASS))
    .bind(i64::from(REPLAY_LOCK))
    .fetch_optional(pool)
    .await?;
    let running: Option<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT string_agg(projection, ', ' ORDER BY projection), min(started_at)
           FROM replay_runs WHERE outcome = 'running' HAVING count(*) > 0",
    )
    .fetch_optional(pool)
    .await?;
    let mut parts = Vec::new();
    if let Some((projections, started)) = running {
        parts.push(format!(
            "rebuilding {projections} since {}",
            started.to_rfc3339()
        ));
    }
    if let Some((pid, since, addr)) = holder {
        let since = since.map_or(String::new(), |t| {
            format!(", connected since {}", t.to_rfc3339())
        });
        let addr = addr.map_or(String::new(), |a| format!(" from {a}"));
        parts.push(format!("Postgres backend {pid}{addr}{since}"));
    }
    Ok(parts.join("; "))
}

/// What a killed run left behind.
async fn clean_up(session: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {SHADOW_SCHEMA} CASCADE"))
        .execute(&mut *session)
        .await?;
    sqlx::query(
        "UPDATE replay_runs SET outcome = 'interrupted', finished_at = now(),
             detail = coalesce(detail, 'stopped before it finished')
         WHERE outcome = 'running'",
    )
    .execute(&mut *session)
    .await?;
    Ok(())
}

async fn run_locked(
    pool: &PgPool,
    session: &mut PgConnection,
    projections: &[Projection],
    options: &ReplayOptions,
    progress: &mut dyn Progress,
) -> Result<ReplayReport, ReplayError> {
    clean_up(session).await?;
    let names: Vec<&str> = projections.iter().map(Projection::name).collect();
    let mode = if options.verify { "verify" } else { "replay" };
    sqlx::query(
        "INSERT INTO replay_runs (projection, mode) SELECT p, $2 FROM unnest($1::text[]) AS p",
    )
    .bind(&names)
    .bind(mode)
    .execute(&mut *session)
    .await?;
    let result = build_and_swap(pool, session, projections, options, progress).await;
    let shadow_dropped = sqlx::query(&format!("DROP SCHEMA IF EXISTS {SHADOW_SCHEMA} CASCADE"))
        .execute(&mut *session)
        .await;
    match &result {
        // A swap records its own end, in its transaction.
        Ok(report) if report.swapped => {}
        Ok(report) => {
            let outcome = if report.drift.is_empty() {
                "verified"
            } else {
                "drifted"
            };
            sqlx::query(
                "UPDATE replay_runs SET outcome = $2, events = $3, failures = $4, position = $5,
                     detail = $6, finished_at = now()
                 WHERE outcome = 'running' AND projection = ANY($1)",
            )
            .bind(&names)
            .bind(outcome)
            .bind(report.events as i64)
            .bind(report.failures.len() as i64)
            .bind(report.position)
            .bind(format!("{} rows differ", report.drift.len()))
            .execute(&mut *session)
            .await?;
        }
        Err(error) => {
            let _ = sqlx::query(
                "UPDATE replay_runs SET outcome = 'failed', detail = $2, finished_at = now()
                 WHERE outcome = 'running' AND projection = ANY($1)",
            )
            .bind(&names)
            .bind(error.to_string())
            .execute(&mut *session)
            .await;
        }
    }
    shadow_dropped?;
    result
}

async fn build_and_swap(
    pool: &PgPool,
    session: &mut PgConnection,
    projections: &[Projection],
    options: &ReplayOptions,
    progress: &mut dyn Progress,
) -> Result<ReplayReport, ReplayError> {
    let mut report = ReplayReport::default();
    create_shadow(session, projections).await?;

    // Build.
    let (xmin, position, mut folds) =
        build(pool, projections, options.batch, progress, &mut report).await?;
    report.position = position;
    // Each projection on a connection of its own, at once: Postgres does
    // the inserting and index building, on as many cores as it has.
    progress.stage("writing", 0);
    futures::future::try_join_all(folds.iter_mut().map(|fold| async move {
        let mut conn = pool.acquire().await?;
        let mut tx = conn.begin_with(begin_in(SHADOW_SCHEMA)).await?;
        for table in fold.tables() {
            table.copy(&mut tx).await?;
        }
        fold.write_bookkeeping(&mut tx, position).await?;
        tx.commit().await?;
        for table in fold.projection.tables() {
            copy_indexes(&mut conn, table).await?;
            // A new table has no statistics until autovacuum reaches it:
            // the live queries' plans would be guesses from the swap on.
            sqlx::query(&format!("ANALYZE {SHADOW_SCHEMA}.{table}"))
                .execute(&mut *conn)
                .await?;
        }
        Ok::<(), sqlx::Error>(())
    }))
    .await?;
    copy_indexes(session, "projection_applied").await?;
    for fold in &folds {
        report.applied.insert(fold.projection.name(), fold.applied);
        report.failures.extend(fold.failures.iter().cloned());
        metrics::counter!("agora_replay_events_total", "projection" => fold.projection.name())
            .increment(fold.received);
    }
    progress.finish();

    // Catch up with the live workers held back only for the last round.
    let mut bound = xmin;
    for _ in 0..MAX_CATCH_UP_ROUNDS {
        let (read, next) = catch_up(
            pool,
            projections,
            bound,
            options.batch,
            progress,
            &mut report,
        )
        .await?;
        bound = next;
        if read < SMALL_CATCH_UP {
            break;
        }
    }

    let mut swap = session.begin().await?;
    sqlx::query("SET LOCAL lock_timeout = '10s'")
        .execute(&mut *swap)
        .await?;
    for &projection in projections {
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(LOCK_CLASS)
            .bind(projection.lock_id())
            .execute(&mut *swap)
            .await?;
    }
    catch_up(
        pool,
        projections,
        bound,
        options.batch,
        progress,
        &mut report,
    )
    .await?;

    if options.verify {
        let tables: Vec<&str> = projections
            .iter()
            .flat_map(|p| p.tables().iter().copied())
            .collect();
        report.drift = diff::diff_tables(&mut swap, SHADOW_SCHEMA, &tables).await?;
        swap.rollback().await?;
        return Ok(report);
    }

    progress.stage("swapping", 0);
    let names: Vec<&str> = projections.iter().map(Projection::name).collect();
    for projection in projections {
        for table in projection.tables() {
            sqlx::query(&format!("DROP TABLE public.{table}"))
                .execute(&mut *swap)
                .await?;
            sqlx::query(&format!(
                "ALTER TABLE {SHADOW_SCHEMA}.{table} SET SCHEMA public"
            ))
            .execute(&mut *swap)
            .await?;
        }
    }
    // Rebuilding every projection, the shadow's `projection_applied` is the
    // whole table (unless something else keeps rows in it), so it is swapped
    // like the read models rather than copied row by row.
    let whole = projections.len() == Projection::ALL.len() && {
        sqlx::query("LOCK TABLE public.projection_applied IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *swap)
            .await?;
        let foreign: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM public.projection_applied WHERE projection <> ALL($1))",
        )
        .bind(&names)
        .fetch_one(&mut *swap)
        .await?;
        !foreign
    };
    if whole {
        sqlx::query("DROP TABLE public.projection_applied")
            .execute(&mut *swap)
            .await?;
        sqlx::query(&format!(
            "ALTER TABLE {SHADOW_SCHEMA}.projection_applied SET SCHEMA public"
        ))
        .execute(&mut *swap)
        .await?;
    } else {
        sqlx::query("DELETE FROM public.projection_applied WHERE projection = ANY($1)")
            .bind(&names)
            .execute(&mut *swap)
            .await?;
        sqlx::query(&format!(
            "INSERT INTO public.projection_applied
             SELECT * FROM {SHADOW_SCHEMA}.projection_applied WHERE projection = ANY($1)"
        ))
        .bind(&names)
        .execute(&mut *swap)
        .await?;
    }
    sqlx::query(&format!(
        "INSERT INTO public.projection_checkpoints (projection, position, events_applied, updated_at)
         SELECT projection, position, events_applied, now()
           FROM {SHADOW_SCHEMA}.projection_checkpoints WHERE projection = ANY($1)
         ON CONFLICT (projection) DO UPDATE SET
             position = greatest(projection_checkpoints.position, EXCLUDED.position),
             events_applied = EXCLUDED.events_applied, updated_at = now()"
    ))
    .bind(&names)
    .execute(&mut *swap)
    .await?;
    // The dead letters were events the old code could not apply; what the
    // replay could not apply either replaces them.
    sqlx::query("DELETE FROM dead_letters WHERE projection = ANY($1)")
        .bind(&names)
        .execute(&mut *swap)
        .await?;
    record_failures(&mut swap, &report.failures).await?;
    let failures_of = |name: &str| {
        report
            .failures
            .iter()
            .filter(|f| f.projection.name() == name)
            .count() as i64
    };
    for projection in projections {
        let name = projection.name();
        sqlx::query(
            "UPDATE replay_runs SET outcome = 'swapped', events = $2, failures = $3, position = $4,
                 finished_at = now()
             WHERE outcome = 'running' AND projection = $1",
        )
        .bind(name)
        .bind(report.events as i64)
        .bind(failures_of(name))
        .bind(report.position)
        .execute(&mut *swap)
        .await?;
    }
    swap.commit().await?;
    report.swapped = true;
    progress.finish();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    for name in names {
        metrics::gauge!("agora_replay_last_success_timestamp_seconds", "projection" => name)
            .set(now);
    }
    tracing::info!(
        projections = ?projections,
        events = report.events,
        caught_up = report.caught_up,
        position = report.position,
        failures = report.failures.len(),
        "replay swapped the rebuilt read models in"
    );
    Ok(report)
}

/// The shadow schema with empty copies of the projections' tables (no
/// indexes yet: they are built after the bulk load, which is faster) and of
/// the bookkeeping tables.
async fn create_shadow(
    session: &mut PgConnection,
    projections: &[Projection],
) -> Result<(), sqlx::Error> {
    let mut tx = session.begin().await?;
    sqlx::query(&format!("CREATE SCHEMA {SHADOW_SCHEMA}"))
        .execute(&mut *tx)
        .await?;
    for projection in projections {
        for table in projection.tables() {
            sqlx::query(&format!(
                "CREATE TABLE {SHADOW_SCHEMA}.{table} (LIKE public.{table}
                     INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED
                     INCLUDING IDENTITY INCLUDING STORAGE INCLUDING COMMENTS)"
            ))
            .execute(&mut *tx)
            .await?;
            copy_triggers(&mut tx, table).await?;
        }
    }
    // `projection_applied` gets its primary key after the bulk load too;
    // the checkpoints are one row per projection.
    sqlx::query(&format!(
        "CREATE TABLE {SHADOW_SCHEMA}.projection_applied (LIKE public.projection_applied INCLUDING DEFAULTS)"
    ))
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "CREATE TABLE {SHADOW_SCHEMA}.projection_checkpoints (LIKE public.projection_checkpoints INCLUDING ALL)"
    ))
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Creates on the shadow copy of `table` the live one's triggers (the
/// search vocabulary is learnt by one), before the bulk load, so that the
/// rows a replay writes run them as the projector's do and the table swapped
/// in keeps them.
async fn copy_triggers(session: &mut PgConnection, table: &str) -> Result<(), sqlx::Error> {
    let definitions: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_triggerdef(g.oid)
           FROM pg_trigger g
           JOIN pg_class t ON t.oid = g.tgrelid
           JOIN pg_namespace n ON n.oid = t.relnamespace
          WHERE n.nspname = 'public' AND t.relname = $1 AND NOT g.tgisinternal
          ORDER BY g.oid",
    )
    .bind(table)
    .fetch_all(&mut *session)
    .await?;
    for definition in definitions {
        sqlx::query(&on_shadow(&definition, table))
            .execute(&mut *session)
            .await?;
    }
    Ok(())
}

/// A definition Postgres wrote for the live `table` (`pg_get_indexdef`,
/// `pg_get_triggerdef`), aimed at its shadow copy instead.
fn on_shadow(definition: &str, table: &str) -> String {
    definition.replacen(
        &format!(" ON public.{table} "),
        &format!(" ON {SHADOW_SCHEMA}.{table} "),
        1,
    )
}

/// Creates on the shadow copy of `table` every index of the live one, under
/// the same names (index names are per schema), and turns the primary key
/// and unique ones back into constraints, so once swapped in the table is
/// indistinguishable from what the migrations made.
async fn copy_indexes(session: &mut PgConnection, table: &str) -> Result<(), sqlx::Error> {
    let indexes: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT i.relname::text, pg_get_indexdef(i.oid), c.conname::text, c.contype::text
           FROM pg_index x
           JOIN pg_class i ON i.oid = x.indexrelid
           JOIN pg_class t ON t.oid = x.indrelid
           JOIN pg_namespace n ON n.oid = t.relnamespace
           LEFT JOIN pg_constraint c ON c.conindid = i.oid AND c.conrelid = t.oid
          WHERE n.nspname = 'public' AND t.relname = $1
          ORDER BY i.oid",
    )
    .bind(table)
    .fetch_all(&mut *session)
    .await?;
    for (index, definition, constraint, kind) in indexes {
        sqlx::query(&on_shadow(&definition, table))
            .execute(&mut *session)
            .await?;
        let kind = match kind.as_deref() {
            Some("p") => "PRIMARY KEY",
            Some("u") => "UNIQUE",
            _ => continue,
        };
        let Some(constraint) = constraint else {
            continue;
        };
        sqlx::query(&format!(
            "ALTER TABLE {SHADOW_SCHEMA}.{table} ADD CONSTRAINT {} {kind} USING INDEX {}",
            quote_ident(&constraint),
            quote_ident(&index)
        ))
        .execute(&mut *session)
        .await?;
    }
    Ok(())
}

/// Reads every event visible in one snapshot, in position order, a page at
/// a time (a reader task fetches the next page while this one folds), and
/// folds them. Returns the snapshot's xmin, the highest position read and
/// the folds.
async fn build(
    pool: &PgPool,
    projections: &[Projection],
    batch: usize,
    progress: &mut dyn Progress,
    report: &mut ReplayReport,
) -> Result<(i64, i64, Vec<fold::Fold>), ReplayError> {
    let mut reader = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *reader)
        .await?;
    let (xmin, high, low): (i64, Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::int8,
                (SELECT max(position) FROM events), (SELECT min(position) FROM events)",
    )
    .fetch_one(&mut *reader)
    .await?;
    let total = match (high, low) {
        (Some(high), Some(low)) => (high - low + 1).max(0) as u64,
        _ => 0,
    };
    progress.stage("building", total);

    let (pages, mut received) = mpsc::channel::<Result<Vec<EventEnvelope>, sqlx::Error>>(2);
    let limit = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
    let fetcher = tokio::spawn(async move {
        let mut after = 0i64;
        loop {
            // Of the metadata, the models read only the time; the
            // correlation id names a failure.
            let page = sqlx::query_as::<_, EventRow>(
                "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload,
                        jsonb_build_object('time', metadata->'time',
                                           'correlation_id', metadata->'correlation_id') AS metadata,
                        position, recorded_at
                   FROM events WHERE position > $1 ORDER BY position LIMIT $2",
            )
            .bind(after)
            .bind(limit)
            .fetch_all(&mut *reader)
            .await
            .map(|rows| rows.into_iter().map(EventRow::into_envelope).collect::<Vec<_>>());
            let done = match &page {
                Ok(page) => match page.last() {
                    Some(last) => {
                        after = last.position;
                        false
                    }
                    None => true,
                },
                Err(_) => true,
            };
            if pages.send(page).await.is_err() || done {
                break;
            }
        }
        let _ = reader.rollback().await;
    });

    let mut folds: Vec<fold::Fold> = projections.iter().map(|&p| fold::Fold::new(p)).collect();
    let mut position = 0i64;
    loop {
        let waiting = std::time::Instant::now();
        let Some(page) = received.recv().await else {
            break;
        };
        report.build_waited += waiting.elapsed();
        let page = page?;
        let Some(last) = page.last() else { break };
        position = last.position;
        let folding = std::time::Instant::now();
        for envelope in &page {
            // Decoded once for every projection being rebuilt.
            let event = Recorded::decode(envelope);
            for fold in &mut folds {
                fold.apply(envelope, &event);
            }
        }
        report.build_folded += folding.elapsed();
        report.events += page.len() as u64;
        progress.advance(page.len() as u64);
        // Freeing a page of parsed JSON takes a while: not on this task.
        tokio::task::spawn_blocking(move || drop(page));
    }
    let _ = fetcher.await;
    progress.finish();
    Ok((xmin, position, folds))
}

/// Applies to the shadow the events of transactions at or above `bound`
/// (the xmin of the last snapshot read), as of a new snapshot; those already
/// applied are skipped by sequence. Returns how many events it read and the
/// new snapshot's xmin, the bound of the next round.
async fn catch_up(
    pool: &PgPool,
    projections: &[Projection],
    bound: i64,
    batch: usize,
    progress: &mut dyn Progress,
    report: &mut ReplayReport,
) -> Result<(u64, i64), ReplayError> {
    let mut reader = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *reader)
        .await?;
    let next: i64 =
        sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::int8")
            .fetch_one(&mut *reader)
            .await?;
    let events: Vec<EventEnvelope> = sqlx::query_as::<_, EventRow>(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE transaction_id >= $1::text::xid8 ORDER BY position"
    ))
    .bind(bound.to_string())
    .fetch_all(&mut *reader)
    .await?
    .into_iter()
    .map(EventRow::into_envelope)
    .collect();
    reader.rollback().await?;
    progress.stage("catching up", events.len() as u64);
    for page in events.chunks(batch.clamp(1, 1000)) {
        for &projection in projections {
            let mut mine = Vec::new();
            for envelope in page
                .iter()
                .filter(|e| projection.follows(&e.aggregate_type))
            {
                match Recorded::decode(envelope) {
                    Ok(event) => mine.push(event),
                    Err(error) => {
                        let mut tx = pool.begin_with(begin_in(SHADOW_SCHEMA)).await?;
                        // Rounds overlap: done (and reported) already?
                        let done: Option<i64> = sqlx::query_scalar(
                            "SELECT sequence FROM projection_applied
                              WHERE projection = $1 AND aggregate_type = $2 AND aggregate_id = $3",
                        )
                        .bind(projection.name())
                        .bind(&envelope.aggregate_type)
                        .bind(&envelope.aggregate_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                        if done.unwrap_or(0) >= envelope.sequence {
                            continue;
                        }
                        let skipped = [(
                            envelope.aggregate_type.clone(),
                            envelope.aggregate_id.clone(),
                            envelope.sequence,
                        )];
                        mark_skipped(&mut tx, &projection, &skipped).await?;
                        tx.commit().await?;
                        report.failures.push(Failure {
                            projection,
                            event: envelope.clone(),
                            error: format!("poison: {error}"),
                        });
                    }
                }
            }
            let settled = settle(
                pool,
                &projection,
                mine,
                Retryable::GiveUp,
                Some(SHADOW_SCHEMA),
            )
            .await?;
            metrics::counter!("agora_replay_events_total", "projection" => projection.name())
                .increment(settled.applied);
            *report.applied.entry(projection.name()).or_default() += settled.applied;
            for (event, error) in settled.failed {
                let envelope = page
                    .iter()
                    .find(|e| e.position == event.position)
                    .cloned()
                    .expect("a failed event is one of the page's");
                report.failures.push(Failure {
                    projection,
                    event: envelope,
                    error,
                });
            }
        }
        progress.advance(page.len() as u64);
    }
    if let Some(last) = events.last() {
        report.position = report.position.max(last.position);
    }
    report.caught_up += events.len() as u64;
    progress.finish();
    Ok((events.len() as u64, next))
}

/// The events a replay could not apply, as dead letters of their
/// projections: `subject` is `replay` and `stream_sequence` the event's
/// position negated (they never came from the stream).
async fn record_failures(conn: &mut PgConnection, failures: &[Failure]) -> Result<(), sqlx::Error> {
    for failure in failures {
        let event = &failure.event;
        sqlx::query(
            "INSERT INTO dead_letters (projection, subject, stream_sequence, aggregate_type,
                 aggregate_id, sequence, message, error, deliveries)
             VALUES ($1, 'replay', $2, $3, $4, $5, $6, $7, 0)
             ON CONFLICT (projection, stream_sequence) DO UPDATE SET error = EXCLUDED.error,
                 failed_at = now()",
        )
        .bind(failure.projection.name())
        .bind(-event.position)
        .bind(&event.aggregate_type)
        .bind(&event.aggregate_id)
        .bind(event.sequence)
        .bind(
            serde_json::to_string(event)
                .unwrap_or_default()
                .replace('\0', "\u{FFFD}"),
        )
        .bind(failure.error.replace('\0', "\u{FFFD}"))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
