//! `agora migrate`: the database (created if missing) and its schema.

use std::str::FromStr;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use crate::config::Config;

pub async fn run(config: &Config) -> anyhow::Result<()> {
    let pool = connect(config, 2).await?;
    commands::migrate::run(&pool)
        .await
        .context("applying migrations")?;
    tracing::info!("database schema is current");
    // Email claims written in clear before migration 0013 become keyed
    // hashes, under the key `serve` will use (none yet with auth on: then
    // they wait for a run with AGORA_DATA_KEY set).
    if config.auth.data_key.is_some() || !config.auth.enabled {
        let vault = commands::Vault::new(pool.clone(), &config.auth.data_key_or_development());
        let rehashed = vault
            .hash_clear_email_claims()
            .await
            .context("hashing email claims")?;
        if rehashed > 0 {
            tracing::info!(claims = rehashed, "email claims now held as keyed hashes");
        }
    } else {
        tracing::warn!("AGORA_DATA_KEY is not set: email claims kept in clear by an older version are hashed by the next `agora migrate` that has it");
    }
    let nats = async_nats::ConnectOptions::new()
        .connection_timeout(std::time::Duration::from_secs(5))
        .connect(&config.nats.url)
        .await
        .with_context(|| format!("connecting to NATS_URL={}", config.nats.url))?;
    let jetstream = async_nats::jetstream::new(nats);
    commands::relay::ensure_stream(&jetstream, &config.nats.prefix)
        .await
        .context("creating the JetStream event stream")?;
    tracing::info!(stream = %schemas::subjects::stream(&config.nats.prefix), "event stream is ready");
    Ok(())
}

/// How long a pooled connection may sit idle and still be handed out
/// without a ping.
const PING_AFTER_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// A pool on the configured database, creating the database first if the
/// server lacks it.
pub async fn connect(config: &Config, size: u32) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(config.database.url.expose())
        .context("DATABASE_URL is not a valid Postgres URL")?
        .log_statements(tracing::log::LevelFilter::Trace);
    ensure_database(&options).await?;
    PgPoolOptions::new()
        .max_connections(size)
        // sqlx pings every connection it hands out, a round trip before
        // each use (and it pings again on release). Under load connections
        // come back within milliseconds, live; only one that sat idle long
        // enough for the server or a proxy to have dropped it is worth the
        // ping. A session lost anyway fails its first statement, and the
        // callers retry where nothing was committed (`lost_connection`).
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_AFTER_IDLE {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await
        .context("connecting to Postgres (DATABASE_URL)")
}

async fn ensure_database(options: &PgConnectOptions) -> anyhow::Result<()> {
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let server = options.clone().database("postgres");
    let mut conn = PgConnection::connect_with(&server)
        .await
        .context("connecting to the Postgres server (DATABASE_URL)")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&format!("CREATE DATABASE {quoted}"))
            .execute(&mut conn)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created the database"),
            // 42P04: another process created it in the meantime.
            Err(err)
                if err.as_database_error().and_then(|e| e.code()).as_deref() == Some("42P04") => {}
            Err(err) => return Err(err).context(format!("creating database {name}")),
        }
    }
    let _ = conn.close().await;
    Ok(())
}
