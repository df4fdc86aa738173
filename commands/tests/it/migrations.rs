//! The embedded migrations: safe to run concurrently and repeatedly.

use commands::migrate::{is_current, run, MIGRATOR};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use testkit::TestDatabase;

async fn applied(pool: &PgPool) -> Vec<(i64, bool)> {
    sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn table_exists(pool: &PgPool, table: &str) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
        .bind(table)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_concurrently_and_repeatedly() {
    let db = TestDatabase::with_pool_size(2).await;
    let expected: Vec<(i64, bool)> = MIGRATOR.iter().map(|m| (m.version, true)).collect();
    assert!(!expected.is_empty());

    // Wipe the schema so both runners start from nothing.
    sqlx::query("DROP SCHEMA public CASCADE")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("CREATE SCHEMA public")
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(!is_current(&db.pool).await.unwrap());
    assert!(!table_exists(&db.pool, "events").await);

    // Two "processes", each with its own pool.
    let connect = || {
        PgPoolOptions::new()
            .max_connections(2)
            .connect_with(db.options.clone())
    };
    let (one, two) = (connect().await.unwrap(), connect().await.unwrap());
    let (first, second) = tokio::join!(run(&one), run(&two));
    first.unwrap();
    second.unwrap();
    assert!(is_current(&db.pool).await.unwrap());
    assert_eq!(applied(&db.pool).await, expected);
    for table in [
        "events",
        "snapshots",
        "aggregate_snapshots",
        "unique_claims",
        "idempotency_keys",
    ] {
        assert!(table_exists(&db.pool, table).await, "{table} missing");
    }

    // A third run changes nothing.
    run(&one).await.unwrap();
    assert_eq!(applied(&db.pool).await, expected);
    assert!(is_current(&two).await.unwrap());
    one.close().await;
    two.close().await;

    // And on a database TestDatabase already migrated.
    let fresh = TestDatabase::with_pool_size(2).await;
    assert!(is_current(&fresh.pool).await.unwrap());
    run(&fresh.pool).await.unwrap();
    assert!(is_current(&fresh.pool).await.unwrap());
    assert_eq!(applied(&fresh.pool).await, expected);
}
