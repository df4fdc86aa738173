//! The database schema, applied by `agora migrate` and by every test database.

use sqlx::migrate::Migrator;
use sqlx::PgPool;

/// The migrations under `migrations/` at the repository root, embedded in the
/// binary. sqlx takes a Postgres advisory lock while applying them, so two
/// processes migrating at once serialize, and applied versions are skipped.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

pub async fn run(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// True when every embedded migration has been applied to this database.
pub async fn is_current(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await
            .or_else(|err| match err.as_database_error().and_then(|e| e.code()) {
                // 42P01: the bookkeeping table does not exist yet, so nothing is applied.
                Some(code) if code == "42P01" => Ok(None),
                _ => Err(err),
            })?;
    Ok(applied.unwrap_or(0) >= latest)
}
