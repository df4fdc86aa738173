//! `agora serve`: start the roles this process runs and stop them cleanly.
//!
//! Every role shares one pool and one NATS connection. On SIGTERM or Ctrl-C:
//! `/readyz` turns 503 while requests are still served for the grace period
//! (`AGORA_SHUTDOWN_GRACE_MS`), so load balancers stop sending; then the
//! listener closes and requests in flight finish (each is bounded by the
//! request timeout); then the relay and the workers stop, each after
//! finishing its batch and storing its checkpoint, the saga finishes the
//! steps in flight; then the pool closes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use api::auth::{IdentityOptions, JwtSecret, OidcOptions};
use api::rate_limit::RateLimitOptions;
use api::{AppState, HttpOptions};
use bytes::Bytes;
use commands::relay::{self, RelayOptions};
use commands::{Aggregates, AppendHook, StoreOptions};
use projections::Projection;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Notify};

use crate::cli::Role;
use crate::config::Config;

pub async fn run(config: Config, role: Role) -> anyhow::Result<()> {
    // The contract: no secret, no start, unless authentication is off on purpose.
    if config.auth.enabled && config.auth.jwt_secret.is_none() {
        anyhow::bail!("AGORA_JWT_SECRET is not set: set it, or set AGORA_AUTH=off to run without authentication");
    }
    // The recorder first: a role that records before it exists (the relay
    // taking leadership) would be lost to the no-op recorder.
    api::metrics::install();
    let runs = |r: Role| role == r || role == Role::All;
    let pool = crate::migrate::connect(&config, config.database.pool_size).await?;
    if !commands::migrate::is_current(&pool).await? {
        tracing::warn!("the database schema is behind this build: run `agora migrate`; /readyz answers 503 until then");
    }
    let nats = connect_nats(&config).await?;
    let prefix = config.nats.prefix.clone();
    let (stop, stopped) = watch::channel(false);
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let mut tasks = Vec::new();

    // Commits in this process wake a relay in this process at once, and
    // relays elsewhere through a core NATS hint. Neither is needed for
    // correctness: the relay also looks on its own every second.
    let wake = Arc::new(Notify::new());
    let hook = {
        let wake = Arc::clone(&wake);
        let nats = nats.clone();
        let subject = relay::appended_subject(&prefix);
        AppendHook(Arc::new(move || {
            wake.notify_one();
            let nats = nats.clone();
            let subject = subject.clone();
            tokio::spawn(async move {
                let _ = nats.publish(subject, Bytes::new()).await;
            });
        }))
    };
    let aggregates = Aggregates::new(
        pool.clone(),
        StoreOptions {
            on_append: Some(hook),
            ..StoreOptions::default()
        },
    );

    if runs(Role::Relay) {
        tasks.push(tokio::spawn(relay::run(
            pool.clone(),
            nats.clone(),
            RelayOptions::new(prefix.clone()),
            Arc::clone(&wake),
            until_stopped(),
        )));
    }
    if runs(Role::Projector) {
        let jetstream = async_nats::jetstream::new(nats.clone());
        for projection in Projection::ALL {
            let (pool, jetstream, nats, prefix, stopped) = (
                pool.clone(),
                jetstream.clone(),
                nats.clone(),
                prefix.clone(),
                until_stopped(),
            );
            tasks.push(tokio::spawn(async move {
                projections::worker::run(projection, pool, jetstream, nats, &prefix, stopped).await;
            }));
        }
    }
    if runs(Role::Saga) {
        let gateway = &config.gateway;
        let options = saga::SagaOptions {
            payment_deadline: gateway.payment_deadline,
            gateway_timeout: gateway.timeout,
            retry_base: gateway.retry_base,
            retry_max: gateway.retry_max,
            breaker_threshold: gateway.circuit_threshold,
            breaker_cool_down: gateway.circuit_cool_down,
            lease: gateway.saga_lease,
            concurrency: gateway.saga_concurrency,
            ..saga::SagaOptions::new(prefix.clone(), gateway.url.clone())
        };
        let saga = saga::Saga::new(
            pool.clone(),
            async_nats::jetstream::new(nats.clone()),
            aggregates.clone(),
            options,
        )
        .context("starting the saga")?;
        tasks.push(tokio::spawn(saga.run(until_stopped())));
    }

    if runs(Role::Relay) || runs(Role::Projector) {
        tasks.push(tokio::spawn(crate::sampler::run(
            pool.clone(),
            prefix.clone(),
            runs(Role::Relay),
            runs(Role::Projector),
            crate::sampler::EVERY,
            until_stopped(),
        )));
    }

    let options = HttpOptions {
        body_limit: config.http.body_limit,
        request_timeout: config.http.request_timeout,
        consistency_wait: config.consistency_wait,
        nats_prefix: prefix.clone(),
        auth: match (&config.auth.jwt_secret, config.auth.enabled) {
            (Some(secret), true) => Some(JwtSecret::new(secret.expose().as_bytes())),
            _ => None,
        },
        rate_limit: RateLimitOptions {
            per_second: config.http.rate_limit_per_second,
            burst: config.http.rate_limit_burst,
        },
        identity: IdentityOptions {
            access_ttl: config.auth.access_token_ttl,
            refresh_ttl: config.auth.refresh_token_ttl,
            oidc: config.auth.oidc.as_ref().map(|oidc| OidcOptions {
                roles_claim: oidc.roles_claim.clone(),
                admin_role: oidc.admin_role.clone(),
                ..OidcOptions::new(oidc.issuer.clone(), oidc.audience.clone())
            }),
        },
        ..HttpOptions::default()
    };
    let state = AppState::new(pool.clone(), aggregates, Some(nats.clone()), options);
    let app = if runs(Role::Api) {
        tokio::spawn(api::changes::listen(
            nats.clone(),
            prefix.clone(),
            state.clone(),
        ));
        api::router(state.clone())
    } else {
        api::operations_router(state.clone())
    };
    let listener = TcpListener::bind(config.http.addr)
        .await
        .with_context(|| format!("binding AGORA_HTTP_ADDR={}", config.http.addr))?;
    tracing::info!(addr = %config.http.addr, role = ?role, prefix = %prefix, auth = config.auth.enabled, "serving");
    let (close, closed) = oneshot::channel::<()>();
    let mut server = tokio::spawn(api::serve(listener, app, async move {
        let _ = closed.await;
    }));
    tokio::select! {
        () = shutdown_signal() => {}
        ended = &mut server => {
            // The server never ends on its own: only an error stops it.
            ended.context("the HTTP server panicked")?.context("serving HTTP")?;
            anyhow::bail!("the HTTP server stopped on its own");
        }
    }
    let grace = config.http.shutdown_grace;
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "shutting down: /readyz answers 503; still serving during the grace period"
    );
    state.start_draining();
    tokio::time::sleep(grace).await;
    tracing::info!("closing the listener; finishing requests in flight");
    let _ = close.send(());
    // Every request ends within the request timeout (it answers 503 then),
    // so this bound is only a guard against a stuck connection.
    let drain_limit = config.http.request_timeout + Duration::from_secs(1);
    match tokio::time::timeout(drain_limit, &mut server).await {
        Ok(ended) => ended
            .context("the HTTP server panicked")?
            .context("serving HTTP")?,
        Err(_) => tracing::warn!("connections still open past the request timeout; closing them"),
    }
    let _ = stop.send(true);
    for task in tasks {
        let _ = task.await;
    }
    let _ = nats.flush().await;
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

pub(crate) async fn shutdown_signal() {
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
