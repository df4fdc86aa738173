//! `agora serve`: start the roles this process runs and stop them cleanly.

use anyhow::Context;
use api::{AppState, HttpOptions};
use commands::{Aggregates, StoreOptions};
use tokio::net::TcpListener;

use crate::cli::Role;
use crate::config::Config;

pub async fn run(config: Config, role: Role) -> anyhow::Result<()> {
    match role {
        Role::Api | Role::All => {}
        other => {
            anyhow::bail!("role {other:?} is not available in this build; run --role api (or all)")
        }
    }
    let pool = crate::migrate::connect(&config, config.database.pool_size).await?;
    if !commands::migrate::is_current(&pool).await? {
        tracing::warn!("the database schema is behind this build: run `agora migrate`; /readyz answers 503 until then");
    }
    let nats = connect_nats(&config).await?;
    let aggregates = Aggregates::new(pool.clone(), StoreOptions::default());
    let options = HttpOptions {
        body_limit: config.http.body_limit,
        request_timeout: config.http.request_timeout,
    };
    let state = AppState::new(pool.clone(), aggregates, Some(nats), options);
    let listener = TcpListener::bind(config.http.addr)
        .await
        .with_context(|| format!("binding AGORA_HTTP_ADDR={}", config.http.addr))?;
    tracing::info!(addr = %config.http.addr, role = ?role, "serving");
    let draining = state.clone();
    let drain_delay = config.http.drain_delay;
    api::run(listener, state, async move {
        shutdown_signal().await;
        tracing::info!("shutting down: readiness off, draining requests in flight");
        draining.start_draining();
        tokio::time::sleep(drain_delay).await;
    })
    .await
    .context("serving HTTP")?;
    pool.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// A client that keeps reconnecting in the background, so a NATS outage at
/// start-up only shows in `/readyz` instead of stopping the process.
async fn connect_nats(config: &Config) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connection_timeout(std::time::Duration::from_secs(2))
        .connect(&config.nats.url)
        .await
        .with_context(|| format!("connecting to NATS_URL={}", config.nats.url))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
