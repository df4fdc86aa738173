//! The order saga: a process manager that moves every placed order through
//! stock reservation and payment to `confirmed`, or to `cancelled` with what
//! it held given back; and that gives stock and money back when an order is
//! cancelled or refunded later.
//!
//! Events reach it through its intake (`intake`), a subscriber on the same
//! JetStream worker and repair as the projections, which turns them into
//! rows of the work table `saga_orders` (`store`), exactly once each. A step
//! loop claims due rows under a lease and steps each (`process`): the
//! aggregates say how far the order got, every command is idempotent, and
//! every gateway call carries an idempotency key, so a step re-run after a
//! crash changes nothing in effect. Gateway calls go through a circuit
//! breaker (`breaker`); failed ones are retried with exponential backoff and
//! jitter, scheduled in the row so they survive a restart.
//!
//! Architecture invariant: the saga changes and reads aggregates only
//! through `commands::AggregateStore`, reads read models only through
//! `projections::queries`, and its own SQL touches only `saga_orders`
//! (`sql_touches_only_saga_orders` holds it to that).

pub mod breaker;
pub mod cart_expiry;
pub mod client;
pub mod intake;
mod process;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use commands::Aggregates;
use projections::Subscriber;
use sqlx::PgPool;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use uuid::Uuid;

pub use breaker::{Breaker, CircuitState};
pub use client::GatewayClient;

/// How the saga runs. `new` gives the production defaults.
#[derive(Debug, Clone)]
pub struct SagaOptions {
    /// The deployment's NATS prefix.
    pub prefix: String,
    pub gateway_url: String,
    /// Sent as `Authorization: Bearer` on every gateway call
    /// (`AGORA_GATEWAY_TOKEN`); `None` sends none.
    pub gateway_token: Option<String>,
    /// One gateway call, at most. Longer than `tok_slow`'s 2 s.
    pub gateway_timeout: Duration,
    /// Past this since placing, an order whose payment could not go through
    /// is cancelled (`payment_unavailable`).
    pub payment_deadline: Duration,
    /// First retry delay after a failed gateway call; doubles per failure.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Consecutive gateway failures that open the circuit.
    pub breaker_threshold: u32,
    /// How long the circuit stays open before one probe is let through.
    pub breaker_cool_down: Duration,
    /// How long a claimed order is reserved for one process. Must exceed
    /// the longest step (a gateway call and a few commands), else another
    /// process may take the order over while it is still being stepped.
    pub lease: Duration,
    /// How often to look for due rows (retries, deadlines) without a wake-up.
    pub poll_interval: Duration,
    /// Orders stepped at once by this process.
    pub concurrency: usize,
    /// How often the gauges are sampled.
    pub sample_interval: Duration,
    /// How the intake finds events the broker lost.
    pub repair: projections::repair::RepairOptions,
}

impl SagaOptions {
    pub fn new(prefix: impl Into<String>, gateway_url: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            gateway_url: gateway_url.into(),
            gateway_token: None,
            gateway_timeout: Duration::from_secs(5),
            payment_deadline: Duration::from_secs(60),
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(10),
            breaker_threshold: 5,
            breaker_cool_down: Duration::from_secs(5),
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(200),
            concurrency: 64,
            sample_interval: Duration::from_secs(5),
            repair: projections::repair::RepairOptions::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    #[error("cannot build the gateway client: {0}")]
    Client(#[from] client::ClientError),
    #[error("the lease ({lease:?}) must be longer than twice the gateway timeout ({timeout:?})")]
    LeaseTooShort { lease: Duration, timeout: Duration },
}

/// One saga process. Several may run at once, in one process or many.
pub struct Saga {
    process: Arc<process::Process>,
    nats: async_nats::Client,
    wake: Arc<Notify>,
}

impl Saga {
    pub fn new(
        pool: PgPool,
        nats: async_nats::Client,
        aggregates: Aggregates,
        options: SagaOptions,
    ) -> Result<Self, SagaError> {
        if options.lease < options.gateway_timeout * 2 {
            return Err(SagaError::LeaseTooShort {
                lease: options.lease,
                timeout: options.gateway_timeout,
            });
        }
        let client = GatewayClient::new(
            &options.gateway_url,
            options.gateway_timeout,
            options.gateway_token.as_deref(),
        )?;
        let breaker = Breaker::new(options.breaker_threshold, options.breaker_cool_down);
        Ok(Self {
            process: Arc::new(process::Process {
                pool,
                aggregates,
                client,
                breaker,
                options,
                owner: Uuid::now_v7(),
            }),
            nats,
            wake: Arc::new(Notify::new()),
        })
    }

    /// The circuit breaker in front of the gateway, to watch its state.
    pub fn breaker(&self) -> Breaker {
        self.process.breaker.clone()
    }

    /// Consumes events and steps orders until `shutdown` resolves, then lets
    /// the steps in flight finish. Everything runs inside this future, so
    /// dropping or aborting it stops all of it at once (as a crash would:
    /// the leases it held run out and other processes take over).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (stop, stopped) = watch::channel(false);
        let until = move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            }
        };
        let options = &self.process.options;
        tracing::info!(owner = %self.process.owner, prefix = %options.prefix, gateway = %options.gateway_url, "saga starting");
        let intake: Arc<dyn Subscriber> = Arc::new(intake::Intake {
            wake: Arc::clone(&self.wake),
        });
        let consumer = projections::worker::run(
            Arc::clone(&intake),
            self.process.pool.clone(),
            async_nats::jetstream::new(self.nats.clone()),
            self.nats.clone(),
            &options.prefix,
            until(),
        );
        let repair = projections::repair::run(
            self.process.pool.clone(),
            intake,
            self.nats.clone(),
            options.prefix.clone(),
            options.repair.clone(),
            until(),
        );
        let steps = self.steps(until());
        let gauges = self.sample(until());
        let signal = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        tokio::join!(consumer, repair, steps, gauges, signal);
        tracing::info!("saga stopped");
    }

    async fn steps(&self, shutdown: impl Future<Output = ()>) {
        let process = &self.process;
        let options = &process.options;
        let mut shutdown = std::pin::pin!(shutdown);
        let mut tasks = JoinSet::new();
        loop {
            let free = options.concurrency.saturating_sub(tasks.len());
            let mut full = false;
            if free > 0 {
                match store::claim(&process.pool, process.owner, options.lease, free as i64).await {
                    Ok(rows) => {
                        full = rows.len() == free;
                        for row in rows {
                            let process = Arc::clone(process);
                            tasks.spawn(async move { process.run(row).await });
                        }
                    }
                    Err(error) => tracing::warn!(%error, "saga: cannot claim orders"),
                }
            }
            if full {
                // More may be due: come back once a slot frees up.
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    _ = tasks.join_next() => {}
                }
                continue;
            }
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = self.wake.notified() => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                () = tokio::time::sleep(options.poll_interval) => {}
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn sample(&self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let process = &self.process;
        loop {
            if let Ok(active) = store::active(&process.pool).await {
                metrics::gauge!("agora_saga_active_orders").set(active as f64);
            }
            let intake = intake::Intake::new();
            if let Ok(statuses) = projections::status(&process.pool, &[&intake]).await {
                for status in &statuses {
                    metrics::gauge!("agora_saga_lag_events").set(status.lag as f64);
                }
                projections::progress::record_metrics(&statuses);
            }
            match projections::queries::orders_by_status(&process.pool).await {
                Ok(counts) => {
                    for status in ["pending", "confirmed", "shipped", "cancelled"] {
                        let n = counts
                            .iter()
                            .find(|(s, _)| s == status)
                            .map_or(0, |(_, n)| *n);
                        metrics::gauge!("agora_orders", "status" => status).set(n as f64);
                    }
                }
                Err(error) => tracing::debug!(%error, "saga: cannot count orders"),
            }
            metrics::gauge!("agora_circuit_state").set(process.breaker.state().gauge());
            // Series that only move on trouble exist from the start, so
            // dashboards and alerts see zero rather than nothing. Sampled
            // here, after `serve` installed the recorder; adding 0 resets nothing.
            for operation in ["charge", "refund"] {
                metrics::counter!("agora_gateway_retries_total", "operation" => operation)
                    .increment(0);
            }
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = tokio::time::sleep(process.options.sample_interval) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The saga's own SQL names only its work table: aggregates are read
    /// and changed through `commands`, read models through `projections`.
    #[test]
    fn sql_touches_only_saga_orders() {
        let sources = [
            include_str!("lib.rs"),
            include_str!("intake.rs"),
            include_str!("process.rs"),
            include_str!("store.rs"),
            include_str!("client.rs"),
            include_str!("breaker.rs"),
        ];
        let mut tables = std::collections::BTreeSet::new();
        for source in sources {
            // Not this test's own text.
            let code = source.split("#[cfg(test)]").next().unwrap_or(source);
            let words: Vec<&str> = code
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| !w.is_empty())
                .collect();
            for pair in words.windows(2) {
                // Table names are lower case; what follows `DO UPDATE` or
                // `FOR UPDATE` is an upper-case keyword.
                // `unnest` of the statement's arrays is a function, no table.
                let named =
                    pair[1].starts_with(|c: char| c.is_ascii_lowercase()) && pair[1] != "unnest";
                if matches!(pair[0], "FROM" | "INTO" | "UPDATE" | "JOIN") && named {
                    tables.insert(pair[1]);
                }
            }
        }
        assert_eq!(tables.into_iter().collect::<Vec<_>>(), ["saga_orders"]);
    }
}
