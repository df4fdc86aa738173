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
use api::cache::CacheOptions;
use api::rate_limit::RateLimitOptions;
use api::{AppState, HttpOptions};
use bytes::Bytes;
use commands::relay::{self, RelayOptions};
use commands::{Aggregates, AppendHook, StoreOptions};
use projections::Subscriber;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Notify};

use crate::cli::Role;
use crate::config::Config;

pub async fn run(config: Config, role: Role) -> anyhow::Result<()> {
    // The contract: no secret, no start, unless authentication is off on purpose.
    if config.auth.enabled && config.auth.jwt_secret.is_none() {
        anyhow::bail!("AGORA_JWT_SECRET is not set: set it, or set AGORA_AUTH=off to run without authentication");
    }
    if config.auth.enabled && config.auth.data_key.is_none() {
        anyhow::bail!("AGORA_DATA_KEY is not set: set it to 32 random bytes in base64 (`openssl rand -base64 32`), or set AGORA_AUTH=off to run with a fixed development key");
    }
    if config.auth.data_key.is_none() {
        tracing::warn!("AGORA_DATA_KEY is not set: personal data is sealed under a fixed development key, which protects nothing");
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
    // correctness: the relay also looks on its own every second. The hint
    // goes out from one task, which a burst of commits wakes once: nothing
    // is published from the request path.
    let wake = Arc::new(Notify::new());
    let hint = Arc::new(Notify::new());
    let hook = {
        let (wake, hint) = (Arc::clone(&wake), Arc::clone(&hint));
        AppendHook(Arc::new(move || {
            wake.notify_one();
            hint.notify_one();
        }))
    };
    tasks.push(tokio::spawn(publish_hints(
        nats.clone(),
        relay::appended_subject(&prefix),
        hint,
        until_stopped(),
    )));
    let aggregates = Aggregates::new(
        pool.clone(),
        StoreOptions {
            on_append: Some(hook),
            data_key: config.auth.data_key_or_development(),
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
        for &projection in &config.projections {
            let subscriber: Arc<dyn Subscriber> = Arc::new(projection);
            let (worker, pool_, jetstream, nats_, prefix_, stopped) = (
                Arc::clone(&subscriber),
                pool.clone(),
                jetstream.clone(),
                nats.clone(),
                prefix.clone(),
                until_stopped(),
            );
            tasks.push(tokio::spawn(async move {
                projections::worker::run(worker, pool_, jetstream, nats_, &prefix_, stopped).await;
            }));
            tasks.push(tokio::spawn(projections::repair::run(
                pool.clone(),
                subscriber,
                nats.clone(),
                prefix.clone(),
                config.repair.clone(),
                until_stopped(),
            )));
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
            repair: config.repair.clone(),
            gateway_token: gateway.token.as_ref().map(|t| t.expose().to_owned()),
            ..saga::SagaOptions::new(prefix.clone(), gateway.url.clone())
        };
        let saga = saga::Saga::new(pool.clone(), nats.clone(), aggregates.clone(), options)
            .context("starting the saga")?;
        tasks.push(tokio::spawn(saga.run(until_stopped())));
        // Every saga process runs the timer; they share the due carts.
        tasks.push(tokio::spawn(saga::cart_expiry::run(
            pool.clone(),
            aggregates.clone(),
            config.carts.clone(),
            until_stopped(),
        )));
    }

    let webhook_wake = if runs(Role::Webhooks) {
        let intake = webhooks::intake::Intake::default();
        let wake = std::sync::Arc::clone(&intake.wake);
        let subscriber: Arc<dyn Subscriber> = Arc::new(intake);
        let (worker, pool_, jetstream, nats_, prefix_, stopped) = (
            Arc::clone(&subscriber),
            pool.clone(),
            async_nats::jetstream::new(nats.clone()),
            nats.clone(),
            prefix.clone(),
            until_stopped(),
        );
        tasks.push(tokio::spawn(async move {
            projections::worker::run(worker, pool_, jetstream, nats_, &prefix_, stopped).await;
        }));
        tasks.push(tokio::spawn(projections::repair::run(
            pool.clone(),
            subscriber,
            nats.clone(),
            prefix.clone(),
            config.repair.clone(),
            until_stopped(),
        )));
        Some(wake)
    } else {
        None
    };

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
        body_read_timeout: config.http.body_read_timeout,
        body_min_rate: config.http.body_min_rate,
        request_timeout: config.http.request_timeout,
        connections: config.http.connections.clone(),
        consistency_wait: config.consistency_wait,
        cart_ttl: config.carts.ttl,
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
        sse_max_streams: config.sse_max_streams,
        cache: CacheOptions {
            search_bytes: config.search_cache_bytes,
            ..CacheOptions::default()
        },
        webhook_addresses: webhooks::AddressPolicy {
            allow_loopback: config.webhooks.allow_loopback,
        },
    };
    let state = AppState::new(pool.clone(), aggregates, Some(nats.clone()), options);
    if let Some(wake) = webhook_wake {
        // A body waits for the read model to reach its event: every change
        // the projector announces may be the one a delivery waits for.
        tasks.push(tokio::spawn(wake_on_changes(
            nats.clone(),
            prefix.clone(),
            Arc::clone(&wake),
        )));
        // The endpoints of the state: their secrets open with the same key.
        tasks.push(tokio::spawn(webhooks::deliver::run(
            pool.clone(),
            state.webhooks.clone(),
            webhooks::deliver::DeliveryOptions {
                retry_scale: config.webhooks.retry_scale,
                policy: state.options.webhook_addresses,
                data_key: config.auth.data_key_or_development(),
                ..webhooks::deliver::DeliveryOptions::default()
            },
            wake,
            until_stopped(),
        )));
    }
    let app = if runs(Role::Api) {
        tokio::spawn(api::changes::listen(
            nats.clone(),
            prefix.clone(),
            state.clone(),
        ));
        // Every API process sweeps; concurrent sweeps skip each other's rows.
        tasks.push(tokio::spawn(commands::idempotency::sweep(
            state.idempotency.clone(),
            config.http.idempotency_sweep.clone(),
            until_stopped(),
        )));
        api::router(state.clone())
    } else {
        api::operations_router(state.clone())
    };
    let listener = TcpListener::bind(config.http.addr)
        .await
        .with_context(|| format!("binding AGORA_HTTP_ADDR={}", config.http.addr))?;
    tracing::info!(addr = %config.http.addr, role = ?role, prefix = %prefix, auth = config.auth.enabled, "serving");
    let (close, closed) = oneshot::channel::<()>();
    let mut server = tokio::spawn(api::serve(
        listener,
        app,
        config.http.connections.clone(),
        async move {
            let _ = closed.await;
        },
    ));
    tokio::select! {
        () = shutdown_signal() => {}
        ended = &mut server => {
            // The server never ends on its own: only an error stops it.
            ended.context("the HTTP server panicked")?.context("serving HTTP")?;
            anyhow::bail!("the HTTP server stopped on its own");
        }
    }
    // However Postgres and NATS behave, the process ends by this deadline;
    // and a second signal ends it at once.
    let grace = config.http.shutdown_grace;
    let deadline = tokio::time::Instant::now() + grace + SHUTDOWN_SLACK;
    tokio::spawn(async {
        shutdown_signal().await;
        tracing::warn!("a second signal: stopping now");
        std::process::exit(1);
    });
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "shutting down: /readyz answers 503; still serving during the grace period"
    );
    state.start_draining();
    tokio::time::sleep(grace).await;
    tracing::info!("closing the listener; finishing requests in flight");
    let _ = close.send(());
    // Every request ends within the request timeout (it answers 503 then),
    // so this bound is only a guard against a stuck connection. Two seconds
    // of what is left are kept for the roles to store their checkpoints.
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let drain_limit = (config.http.request_timeout + Duration::from_secs(1))
        .min(left.saturating_sub(Duration::from_secs(2)));
    match tokio::time::timeout(drain_limit, &mut server).await {
        Ok(ended) => ended
            .context("the HTTP server panicked")?
            .context("serving HTTP")?,
        Err(_) => tracing::warn!("connections still open past the request timeout; closing them"),
    }
    let _ = stop.send(true);
    for task in tasks {
        let abort = task.abort_handle();
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            abort.abort();
            tracing::warn!("a role did not stop in time (is Postgres or NATS down?); stopping it");
        }
    }
    // Both wait for a server that may be gone: bounded.
    let _ = tokio::time::timeout(Duration::from_millis(500), nats.flush()).await;
    let _ = tokio::time::timeout(Duration::from_millis(500), pool.close()).await;
    tracing::info!("stopped");
    Ok(())
}

/// What shutdown may take beyond the grace period, at most: draining the
/// listener, then the roles storing their checkpoints (then a second at most
/// to flush NATS and close the pool): within the grace period plus 10 s.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(8);

/// Publishes a relay hint each time `hint` is notified; notifications that
/// arrive while one is being published make one more, not one each.
async fn publish_hints(
    nats: async_nats::Client,
    subject: String,
    hint: Arc<Notify>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => return,
            () = hint.notified() => {}
        }
        let _ = nats.publish(subject.clone(), Bytes::new()).await;
    }
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

/// Wakes the webhook delivery loop on each read-model change announcement
/// (core NATS, fire and forget: a lost one costs only the loop's poll).
async fn wake_on_changes(nats: async_nats::Client, prefix: String, wake: Arc<tokio::sync::Notify>) {
    let mut changes = match nats
        .subscribe(schemas::subjects::changes_wildcard(&prefix))
        .await
    {
        Ok(changes) => changes,
        Err(err) => {
            tracing::warn!(error = %err, "cannot follow change announcements; webhook bodies wait for the poll");
            return;
        }
    };
    while futures::StreamExt::next(&mut changes).await.is_some() {
        wake.notify_one();
    }
}
