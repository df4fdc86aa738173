//! The delivery loop: works through `webhook_deliveries`.
//!
//! Each round claims due rows with `FOR UPDATE SKIP LOCKED` and leases them
//! (so any number of processes share the work and a killed one's rows come
//! back when the lease ends), then runs each attempt on its own task: one
//! endpoint's slow answers hold only its own rows, at most
//! [`PER_ENDPOINT`] of them per process, never another endpoint's. A row
//! is due only when no earlier row (by sequence) of its endpoint and
//! aggregate is pending, so one endpoint sees one aggregate's events in
//! order.
//!
//! An attempt: the body (built once per event, from the read model at or
//! past the event's version, then kept), signed with the endpoint's keys,
//! POSTed with a 10 s timeout and no redirects, to an address checked again
//! now (DNS rebinding). A 2xx delivers it; anything else reschedules it on
//! the specification's schedule times `AGORA_WEBHOOK_RETRY_SCALE`, with
//! jitter, until [`ATTEMPTS`] are used and it is `failed`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use projections::queries;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::address::{AddressPolicy, GuardedResolver};
use crate::endpoints::Endpoints;
use crate::signing;

/// The Standard Webhooks schedule: after the first attempt fails, wait 5 s,
/// then 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
pub const SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// Attempts in all: the first, then one after each step of the schedule.
pub const ATTEMPTS: usize = SCHEDULE.len() + 1;

/// An attempt that takes longer is a failure.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// How long a claimed row is held: longer than any attempt takes.
const LEASE: Duration = Duration::from_secs(30);

/// Attempts in flight per endpoint in one process.
pub const PER_ENDPOINT: usize = 4;

/// Rows claimed per round.
const CLAIM: i64 = 64;

/// While the read model is behind the event, the attempt waits this long.
const NOT_READY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// `AGORA_WEBHOOK_RETRY_SCALE`: the schedule's steps are multiplied by it.
    pub retry_scale: f64,
    pub policy: AddressPolicy,
    /// How often the loop looks for due rows without being woken.
    pub poll: Duration,
    /// `AGORA_DATA_KEY`: bodies are kept with personal data sealed, as the
    /// read models hold it, and opened at each attempt.
    pub data_key: commands::MasterKey,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        Self {
            retry_scale: 1.0,
            policy: AddressPolicy::default(),
            poll: Duration::from_millis(500),
            data_key: commands::MasterKey::development(),
        }
    }
}

/// The wait after the `attempts`-th failed attempt, jittered by ±20 %.
pub fn backoff(attempts: usize, scale: f64, jitter: f64) -> Duration {
    let step = SCHEDULE[attempts.clamp(1, SCHEDULE.len()) - 1];
    step.mul_f64((scale * (0.8 + 0.4 * jitter.clamp(0.0, 1.0))).max(0.0))
}

fn jitter() -> f64 {
    let mut bytes = [0u8; 4];
    let _ = getrandom::getrandom(&mut bytes);
    f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX)
}

/// One claimed row.
#[derive(Debug, sqlx::FromRow)]
struct Claimed {
    id: Uuid,
    endpoint_id: Uuid,
    event_id: String,
    attempts: i32,
}

/// Runs until `shutdown`, then lets the attempts in flight finish (each is
/// bounded by [`TIMEOUT`]).
pub async fn run(
    pool: PgPool,
    endpoints: Endpoints,
    options: DeliveryOptions,
    wake: Arc<Notify>,
    shutdown: impl Future<Output = ()>,
) {
    let client = match reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(GuardedResolver::shared(options.policy))
        .user_agent(concat!("agora-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "cannot build the webhook client; no deliveries");
            return;
        }
    };
    let worker = Arc::new(Worker {
        vault: commands::Vault::new(pool.clone(), &options.data_key),
        pool,
        endpoints,
        client,
        options,
    });
    tokio::pin!(shutdown);
    let mut in_flight: HashMap<Uuid, usize> = HashMap::new();
    let mut attempts: JoinSet<Uuid> = JoinSet::new();
    tracing::info!("delivering webhooks");
    loop {
        if let Err(err) = worker.freeze_new().await {
            tracing::warn!(error = %err, "cannot build webhook bodies");
        }
        let busy: Vec<Uuid> = in_flight
            .iter()
            .filter(|(_, n)| **n >= PER_ENDPOINT)
            .map(|(id, _)| *id)
            .collect();
        let claimed = match claim(&worker.pool, &busy).await {
            Ok(claimed) => claimed,
            Err(err) => {
                tracing::warn!(error = %err, "cannot claim webhook deliveries");
                Vec::new()
            }
        };
        let full = claimed.len() as i64 == CLAIM;
        for row in claimed {
            *in_flight.entry(row.endpoint_id).or_default() += 1;
            let worker = Arc::clone(&worker);
            attempts.spawn(async move {
                let endpoint = row.endpoint_id;
                worker.attempt(row).await;
                endpoint
            });
        }
        if full {
            continue;
        }
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(done) = attempts.join_next() => {
                if let Ok(endpoint) = done {
                    release(&mut in_flight, endpoint);
                }
                // Finished attempts free their endpoint and may make the
                // next event of an aggregate due: look again at once.
                while let Some(done) = attempts.try_join_next() {
                    if let Ok(endpoint) = done {
                        release(&mut in_flight, endpoint);
                    }
                }
            }
            () = wake.notified() => {}
            () = tokio::time::sleep(worker.options.poll) => {}
        }
    }
    while attempts.join_next().await.is_some() {}
    tracing::info!("webhook deliveries stopped");
}

fn release(in_flight: &mut HashMap<Uuid, usize>, endpoint: Uuid) {
    if let Some(n) = in_flight.get_mut(&endpoint) {
        *n -= 1;
        if *n == 0 {
            in_flight.remove(&endpoint);
        }
    }
}

/// Leases due rows: pending, not leased, of an enabled endpoint not at its
/// limit here, with no earlier pending row of the same endpoint and
/// aggregate. The attempt is counted now, so a process killed mid-attempt
/// still used it.
async fn claim(pool: &PgPool, busy: &[Uuid]) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as::<_, Claimed>(
        "WITH due AS ( \
            SELECT d.id FROM webhook_deliveries d \
            JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.status = 'enabled' \
            WHERE d.status = 'pending' AND d.next_attempt_at <= now() \
              AND (d.leased_until IS NULL OR d.leased_until < now()) \
              AND NOT (d.endpoint_id = ANY($1)) \
              AND NOT EXISTS ( \
                SELECT 1 FROM webhook_deliveries p \
                WHERE p.endpoint_id = d.endpoint_id AND p.aggregate_id = d.aggregate_id \
                  AND p.status = 'pending' AND p.sequence < d.sequence) \
            ORDER BY d.next_attempt_at LIMIT $2 \
            FOR UPDATE OF d SKIP LOCKED) \
         UPDATE webhook_deliveries d SET leased_until = now() + $3::interval, attempts = d.attempts + 1 \
         FROM due WHERE d.id = due.id \
         RETURNING d.id, d.endpoint_id, d.event_id, d.attempts",
    )
    .bind(busy)
    .bind(CLAIM)
    .bind(format!("{} milliseconds", LEASE.as_millis()))
    .fetch_all(pool)
    .await
}

struct Worker {
    pool: PgPool,
    vault: commands::Vault,
    endpoints: Endpoints,
    client: reqwest::Client,
    options: DeliveryOptions,
}

/// A delivery's URL and its event: body (once built), aggregate type, id,
/// sequence and time.
type Target = (String, Option<Vec<u8>>, String, Uuid, i64, DateTime<Utc>);

/// What one attempt came to.
enum Outcome {
    Delivered(u16),
    /// Not sent: the read model has not reached the event yet.
    NotReady,
    Failed {
        status: Option<u16>,
        error: String,
    },
}

impl Worker {
    async fn attempt(&self, row: Claimed) {
        let outcome = match self.send(&row).await {
            Ok(outcome) => outcome,
            Err(err) => Outcome::Failed {
                status: None,
                error: err,
            },
        };
        if let Err(err) = self.record(&row, &outcome).await {
            // The lease runs out and the row is tried again.
            tracing::warn!(delivery = %row.id, error = %err, "cannot record a webhook attempt");
        }
    }

    async fn send(&self, row: &Claimed) -> Result<Outcome, String> {
        let target: Option<Target> = sqlx::query_as(
            "SELECT ep.url, e.body, e.aggregate_type, e.aggregate_id, e.sequence, e.occurred_at \
                 FROM webhook_events e, webhook_endpoints ep \
                 WHERE e.event_id = $1 AND ep.id = $2",
        )
        .bind(&row.event_id)
        .bind(row.endpoint_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|err| format!("reading the delivery: {err}"))?;
        let Some((url, body, aggregate_type, aggregate_id, sequence, occurred_at)) = target else {
            return Err("the endpoint or the event is gone".to_owned());
        };
        let body = match body {
            Some(body) => body,
            None => {
                let Some(data) = resource(&self.pool, &aggregate_type, aggregate_id, sequence)
                    .await
                    .map_err(|err| format!("reading the resource: {err}"))?
                else {
                    return Ok(Outcome::NotReady);
                };
                self.freeze(&row.event_id, occurred_at, data).await?
            }
        };
        let body = self.opened(body).await?;
        // The URL was checked when it was registered; the network may have
        // changed since (and the resolver checks each address connected to).
        let url = self
            .options
            .policy
            .check(&url)
            .await
            .map_err(|err| format!("refused: the URL {err}"))?;
        let keys = self
            .endpoints
            .signing_keys(row.endpoint_id)
            .await
            .map_err(|err| format!("reading the endpoint's keys: {err}"))?;
        let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let id = webhook_id(row.id);
        let timestamp = Utc::now().timestamp();
        let signature = signing::signature_header(&keys, &id, timestamp, &body);
        let answer = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(schemas::webhooks::ID_HEADER, &id)
            .header(schemas::webhooks::TIMESTAMP_HEADER, timestamp.to_string())
            .header(schemas::webhooks::SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await;
        Ok(match answer {
            Ok(answer) if answer.status().is_success() => {
                Outcome::Delivered(answer.status().as_u16())
            }
            Ok(answer) => Outcome::Failed {
                status: Some(answer.status().as_u16()),
                error: format!("answered {}", answer.status()),
            },
            Err(err) if err.is_timeout() => Outcome::Failed {
                status: None,
                error: format!("no answer within {} s", TIMEOUT.as_secs()),
            },
            Err(err) => Outcome::Failed {
                status: None,
                error: describe(&err),
            },
        })
    }

    /// The body with its sealed values opened (`null` for an erased
    /// user's); the kept bytes as they are when nothing in them is sealed.
    async fn opened(&self, body: Vec<u8>) -> Result<Vec<u8>, String> {
        const MARK: &[u8] = b"\"pd1.";
        if !body.windows(MARK.len()).any(|w| w == MARK) {
            return Ok(body);
        }
        let mut value: Value =
            serde_json::from_slice(&body).map_err(|err| format!("a kept body: {err}"))?;
        self.vault
            .open_all(&mut value)
            .await
            .map_err(|err| format!("opening the body: {err}"))?;
        serde_json::to_vec(&value).map_err(|err| err.to_string())
    }

    /// Builds the bodies of events enqueued since the last round, whatever
    /// their deliveries wait for (an earlier event, a backoff): the body is
    /// taken as close to its event as the read model allows, so it shows
    /// the resource at that event's version unless the read model had
    /// already applied later ones.
    async fn freeze_new(&self) -> Result<(), String> {
        let new: Vec<(String, String, Uuid, i64, DateTime<Utc>)> = sqlx::query_as(
            "SELECT event_id, aggregate_type, aggregate_id, sequence, occurred_at \
             FROM webhook_events WHERE body IS NULL ORDER BY aggregate_id, sequence LIMIT 256",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|err| err.to_string())?;
        let mut frozen = Vec::new();
        for (event_id, aggregate_type, aggregate_id, sequence, occurred_at) in new {
            let data = resource(&self.pool, &aggregate_type, aggregate_id, sequence)
                .await
                .map_err(|err| err.to_string())?;
            if let Some(data) = data {
                self.freeze(&event_id, occurred_at, data).await?;
                frozen.push(event_id);
            }
        }
        // Deliveries put off only because their body was not ready (never
        // failed) are due now that it is, not when the put-off ends.
        if !frozen.is_empty() {
            sqlx::query(
                "UPDATE webhook_deliveries SET next_attempt_at = now()                  WHERE event_id = ANY($1) AND status = 'pending' AND last_error IS NULL                    AND next_attempt_at > now()",
            )
            .bind(&frozen)
            .execute(&self.pool)
            .await
            .map_err(|err| format!("making deliveries due: {err}"))?;
        }
        Ok(())
    }

    /// Keeps the event's body, or takes the one another attempt kept first:
    /// every endpoint and every retry sends the same bytes.
    async fn freeze(
        &self,
        event_id: &str,
        occurred_at: DateTime<Utc>,
        data: Value,
    ) -> Result<Vec<u8>, String> {
        let event_type: String =
            sqlx::query_scalar("SELECT event_type FROM webhook_events WHERE event_id = $1")
                .bind(event_id)
                .fetch_one(&self.pool)
                .await
                .map_err(|err| format!("reading the event: {err}"))?;
        let body = json!({
            "type": event_type,
            "timestamp": occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            "data": data,
        });
        let bytes = serde_json::to_vec(&body).map_err(|err| err.to_string())?;
        sqlx::query_scalar(
            "UPDATE webhook_events SET body = coalesce(body, $2) WHERE event_id = $1 RETURNING body",
        )
        .bind(event_id)
        .bind(bytes)
        .fetch_one(&self.pool)
        .await
        .map_err(|err| format!("keeping the body: {err}"))
    }

    async fn record(&self, row: &Claimed, outcome: &Outcome) -> Result<(), sqlx::Error> {
        let query = match outcome {
            Outcome::Delivered(status) => sqlx::query(
                "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(), \
                    last_status_code = $2, last_error = NULL, leased_until = NULL WHERE id = $1",
            )
            .bind(row.id)
            .bind(i32::from(*status)),
            Outcome::NotReady => sqlx::query(
                "UPDATE webhook_deliveries SET attempts = attempts - 1, leased_until = NULL, \
                    next_attempt_at = now() + $2::interval WHERE id = $1",
            )
            .bind(row.id)
            .bind(format!("{} milliseconds", NOT_READY.as_millis())),
            Outcome::Failed { status, error } => {
                let attempts = usize::try_from(row.attempts).unwrap_or(ATTEMPTS);
                let (status_text, wait) = if attempts >= ATTEMPTS {
                    ("failed", Duration::ZERO)
                } else {
                    (
                        "pending",
                        backoff(attempts, self.options.retry_scale, jitter()),
                    )
                };
                tracing::info!(delivery = %row.id, attempts, status = ?status, error = %error, "webhook attempt failed");
                sqlx::query(
                    "UPDATE webhook_deliveries SET status = $2, last_status_code = $3, last_error = $4, \
                        leased_until = NULL, next_attempt_at = now() + $5::interval WHERE id = $1",
                )
                .bind(row.id)
                .bind(status_text)
                .bind(status.map(i32::from))
                .bind(error.chars().take(500).collect::<String>())
                .bind(format!("{} milliseconds", wait.as_millis()))
            }
        };
        query.execute(&self.pool).await?;
        Ok(())
    }
}

/// The `webhook-id` of every attempt of a delivery: one per event and
/// endpoint (the delivery row is unique per pair).
pub fn webhook_id(delivery: Uuid) -> String {
    format!("msg_{}", delivery.simple())
}

/// The error and its causes, e.g. a refusal of the guarded resolver.
fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The resource as its read model holds it (personal data sealed: the
/// body kept in `webhook_events` holds no cleartext, and each attempt opens
/// it, so an erased user's data is never sent), once its read model reached
/// `sequence`; `None` while it has not.
async fn resource(
    pool: &PgPool,
    aggregate_type: &str,
    id: Uuid,
    sequence: i64,
) -> Result<Option<Value>, queries::QueryError> {
    fn at<T: serde::Serialize>(
        view: Option<T>,
        version: impl Fn(&T) -> i64,
        sequence: i64,
    ) -> Option<Value> {
        view.filter(|v| version(v) >= sequence)
            .and_then(|v| serde_json::to_value(v).ok())
    }
    Ok(match aggregate_type {
        "user" => at(queries::user(pool, id).await?, |v| v.version, sequence),
        "product" => at(queries::product(pool, id).await?, |v| v.version, sequence),
        "order" => at(queries::order(pool, id).await?, |v| v.version, sequence),
        "payment" => at(queries::payment(pool, id).await?, |v| v.version, sequence),
        // Only a checkout is delivered, and a checked-out cart has no
        // expiry, so the TTL (which dates open carts) does not show.
        "cart" => at(
            queries::cart(pool, id, Duration::ZERO)
                .await?
                .map(|found| found.view),
            |v| v.version,
            sequence,
        ),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_the_schedule() {
        assert_eq!(backoff(1, 1.0, 0.5), Duration::from_secs(5));
        assert_eq!(backoff(2, 1.0, 0.5), Duration::from_secs(300));
        assert_eq!(backoff(7, 1.0, 0.5), Duration::from_secs(36000));
        assert_eq!(backoff(1, 0.01, 0.5), Duration::from_millis(50));
        assert!(backoff(3, 1.0, 0.0) >= Duration::from_secs(1440));
        assert!(backoff(3, 1.0, 1.0) <= Duration::from_secs(2160));
        assert_eq!(ATTEMPTS, 8);
    }
}
