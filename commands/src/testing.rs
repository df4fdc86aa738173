//! A throwaway database per test, so tests run in parallel against the real
//! Postgres and leave nothing behind.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

/// The server tests create their databases on: `AGORA_TEST_DATABASE_URL`,
/// else the local default.
pub fn admin_url() -> String {
    std::env::var("AGORA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A freshly created and migrated database, dropped when this is dropped.
pub struct TestDatabase {
    pub pool: PgPool,
    pub name: String,
    pub options: PgConnectOptions,
}

impl TestDatabase {
    pub async fn new() -> Self {
        Self::with_pool_size(4).await
    }

    pub async fn with_pool_size(size: u32) -> Self {
        let admin = PgConnectOptions::from_str(&admin_url())
            .expect("AGORA_TEST_DATABASE_URL is not a valid URL");
        let name = format!("agora_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect_with(&admin)
            .await
            .expect("tests need Postgres: is it running? (see README)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let _ = conn.close().await;
        let options = admin.clone().database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(size)
            .connect_with(options.clone())
            .await
            .expect("connect to the test database");
        crate::migrate::run(&pool)
            .await
            .expect("migrate the test database");
        Self {
            pool,
            name,
            options,
        }
    }

    /// The URL of this database, for a child process. Assumes the admin URL
    /// names a database, as the default does.
    pub fn url(&self) -> String {
        let admin = admin_url();
        let (base, query) = admin.split_once('?').unwrap_or((admin.as_str(), ""));
        let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("{server}/{}{query}", self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let pool = self.pool.clone();
        // Drop runs outside async; a short-lived thread with its own runtime
        // closes the pool and drops the database (FORCE ends stray sessions).
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                pool.close().await;
                let Ok(admin) = PgConnectOptions::from_str(&admin_url()) else {
                    return;
                };
                if let Ok(mut conn) = PgConnection::connect_with(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}
