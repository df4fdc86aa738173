//! Test scaffolding: a migrated database, a NATS stream of its own, and a way
//! to record events the way the write side does (a row in `events`) and
//! publish them the way the relay does (the envelope, `Nats-Msg-Id`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, stream::StorageType};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use projections::{worker, Projection};
use schemas::{subjects, EventEnvelope};
use serde_json::{json, Value};
use sqlx::PgPool;
use testkit::TestDatabase;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub fn nats_url() -> String {
    std::env::var("AGORA_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A database alone, for tests that call `apply_batch` directly.
pub async fn database() -> TestDatabase {
    TestDatabase::with_pool_size(8).await
}

/// A database, a NATS connection and a stream under a prefix of its own.
pub struct Env {
    pub db: TestDatabase,
    pub prefix: String,
    pub nats: async_nats::Client,
    pub jetstream: jetstream::Context,
    _stream: StreamGuard,
}

impl Env {
    pub async fn new() -> Env {
        let db = TestDatabase::with_pool_size(12).await;
        let prefix = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
        let nats = async_nats::connect(nats_url())
            .await
            .expect("tests need NATS with JetStream: is it running? (see README)");
        let jetstream = jetstream::new(nats.clone());
        jetstream
            .create_stream(jetstream::stream::Config {
                name: subjects::stream(&prefix),
                subjects: vec![subjects::events_wildcard(&prefix)],
                storage: StorageType::File,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .expect("create the test stream");
        Env {
            db,
            _stream: StreamGuard {
                name: subjects::stream(&prefix),
            },
            prefix,
            nats,
            jetstream,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.db.pool
    }

    /// Publishes the envelope as the relay does, deduplicated by its message id.
    pub async fn publish(&self, event: &EventEnvelope) {
        self.publish_with_id(event, &event.message_id()).await;
    }

    /// Publishes the envelope again under another message id, so JetStream
    /// delivers it a second time.
    pub async fn republish(&self, event: &EventEnvelope) {
        self.publish_with_id(
            event,
            &format!("{}:again:{}", event.message_id(), Uuid::new_v4()),
        )
        .await;
    }

    async fn publish_with_id(&self, event: &EventEnvelope, id: &str) {
        let subject = subjects::event(&self.prefix, &event.aggregate_type, &event.aggregate_id);
        let body = serde_json::to_vec(event).unwrap();
        self.publish_raw(&subject, body, id).await;
    }

    pub async fn publish_raw(&self, subject: &str, body: Vec<u8>, id: &str) {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        self.jetstream
            .publish_with_headers(subject.to_owned(), headers, body.into())
            .await
            .expect("publish")
            .await
            .expect("JetStream acknowledges the publish");
    }

    /// Starts one worker per projection given; they stop with the handle.
    pub fn start(&self, projections: &[Projection]) -> Workers {
        let mut workers = Vec::new();
        for &projection in projections {
            let (stop, stopped) = oneshot::channel::<()>();
            let pool = self.pool().clone();
            let jetstream = self.jetstream.clone();
            let nats = self.nats.clone();
            let prefix = self.prefix.clone();
            let task = tokio::spawn(async move {
                worker::run(
                    Arc::new(projection),
                    pool,
                    jetstream,
                    nats,
                    &prefix,
                    async move {
                        let _ = stopped.await;
                    },
                )
                .await;
            });
            workers.push((stop, task));
        }
        Workers(workers)
    }

    /// The consumer's view: (stream sequence delivered up to, pending, unacknowledged).
    pub async fn consumer_state(&self, projection: Projection) -> Option<(u64, u64, usize)> {
        let stream = self
            .jetstream
            .get_stream(subjects::stream(&self.prefix))
            .await
            .ok()?;
        let info = stream
            .consumer_info(subjects::consumer(&self.prefix, projection.name()))
            .await
            .ok()?;
        Some((
            info.delivered.stream_sequence,
            info.num_pending,
            info.num_ack_pending,
        ))
    }

    /// Waits until each projection's consumer has everything published so far
    /// delivered and acknowledged.
    pub async fn drained(&self, projections: &[Projection]) {
        for &projection in projections {
            eventually(
                &format!("the {projection} consumer is drained"),
                || async move { matches!(self.consumer_state(projection).await, Some((_, 0, 0))) },
            )
            .await;
        }
    }

    /// Collects every change announced on core NATS from now on.
    pub async fn listen_changes(&self) -> Changes {
        let mut subscriber = self
            .nats
            .subscribe(subjects::changes_wildcard(&self.prefix))
            .await
            .expect("subscribe to changes");
        self.nats.flush().await.expect("flush the subscription");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                let payload = String::from_utf8_lossy(&message.payload).into_owned();
                sink.lock()
                    .unwrap()
                    .push((message.subject.to_string(), payload));
            }
        });
        Changes(seen)
    }
}

/// Changes seen: (subject, payload).
#[derive(Clone)]
pub struct Changes(pub Arc<Mutex<Vec<(String, String)>>>);

impl Changes {
    pub fn contains(&self, subject: &str, payload: &str) -> bool {
        self.0
            .lock()
            .unwrap()
            .iter()
            .any(|(s, p)| s == subject && p == payload)
    }
}

pub struct Workers(Vec<(oneshot::Sender<()>, JoinHandle<()>)>);

impl Workers {
    pub async fn stop(self) {
        for (stop, task) in self.0 {
            let _ = stop.send(());
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the worker stops when told")
                .expect("the worker does not panic");
        }
    }
}

/// Deletes the test stream when dropped, even when the test panicked.
struct StreamGuard {
    name: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let name = self.name.clone();
        // The test's runtime may be the one being dropped: a short-lived
        // thread with its own runtime and connection does the cleanup.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(client) = async_nats::connect(nats_url()).await {
                    let _ = jetstream::new(client.clone()).delete_stream(&name).await;
                    let _ = client.flush().await;
                }
            });
        })
        .join();
    }
}

pub use testkit::eventually;

/// Records events in the `events` table as the command side does, numbering
/// each aggregate's sequence, and returns their envelopes.
pub struct Recorder {
    pool: PgPool,
    next: HashMap<(String, String), i64>,
    /// One correlation id for everything recorded, like one request's events.
    pub correlation_id: String,
    /// The `time` of the next event; each event is one second later.
    clock: DateTime<Utc>,
}

impl Recorder {
    pub fn new(pool: &PgPool) -> Recorder {
        let now = Utc::now();
        // Whole microseconds: what the metadata's RFC 3339 text carries.
        let clock = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap()
            - chrono::Duration::hours(1);
        Recorder {
            pool: pool.clone(),
            next: HashMap::new(),
            correlation_id: Uuid::new_v4().to_string(),
            clock,
        }
    }

    /// Records `{event_type: data}` as the next event of the aggregate.
    pub async fn record(
        &mut self,
        aggregate_type: &str,
        id: Uuid,
        event_type: &str,
        data: Value,
    ) -> EventEnvelope {
        let key = (aggregate_type.to_owned(), id.to_string());
        let sequence = *self.next.entry(key.clone()).or_insert(1);
        self.next.insert(key, sequence + 1);
        self.record_at(aggregate_type, id, sequence, event_type, data)
            .await
    }

    /// Records an event with an explicit sequence.
    pub async fn record_at(
        &mut self,
        aggregate_type: &str,
        id: Uuid,
        sequence: i64,
        event_type: &str,
        data: Value,
    ) -> EventEnvelope {
        self.clock += chrono::Duration::seconds(1);
        let payload = json!({ event_type: data });
        let metadata = json!({
            "correlation_id": self.correlation_id,
            "causation_id": self.correlation_id,
            "actor": "test",
            "time": self.clock.to_rfc3339_opts(SecondsFormat::Micros, true),
        });
        let (position, recorded_at): (i64, DateTime<Utc>) = sqlx::query_as(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             VALUES ($1, $2, $3, $4, '1.0', $5, $6) RETURNING position, recorded_at",
        )
        .bind(aggregate_type)
        .bind(id.to_string())
        .bind(sequence)
        .bind(event_type)
        .bind(&payload)
        .bind(&metadata)
        .fetch_one(&self.pool)
        .await
        .expect("record the event");
        EventEnvelope {
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: id.to_string(),
            sequence,
            event_type: event_type.to_owned(),
            event_version: "1.0".to_owned(),
            payload,
            metadata,
            position,
            recorded_at,
        }
    }
}

/// The time an envelope says it happened.
pub fn time_of(event: &EventEnvelope) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(event.metadata["time"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

pub fn eur(amount: i64) -> Value {
    json!({"amount": amount, "currency": "EUR"})
}

/// The outcomes of `apply_batch`, all of which must be `Applied`.
pub fn assert_all_applied(outcomes: &[projections::Outcome]) {
    for (i, outcome) in outcomes.iter().enumerate() {
        assert!(
            matches!(outcome, projections::Outcome::Applied(_)),
            "event {i}: {outcome:?}"
        );
    }
}

/// The live path from scratch: empties the read models and their
/// bookkeeping, applies every stored event through `apply_batch` (the
/// workers' path) `page` events at a time, then returns what a replay's
/// fold of the same events builds differently (nothing, when the two paths
/// agree).
pub async fn live_from_scratch(pool: &PgPool, page: usize) -> Vec<String> {
    let mut tables: Vec<&str> = Projection::ALL
        .iter()
        .flat_map(|p| p.tables().iter().copied())
        .collect();
    tables.extend([
        "projection_applied",
        "projection_checkpoints",
        "dead_letters",
    ]);
    sqlx::query(&format!("TRUNCATE {}", tables.join(", ")))
        .execute(pool)
        .await
        .expect("empty the read models");
    let events = stored(pool).await;
    for chunk in events.chunks(page.max(1)) {
        for projection in Projection::ALL {
            projections::apply_batch(pool, &projection, chunk)
                .await
                .expect("the database answers");
        }
    }
    projections::replay::verify(pool).await.expect("verify")
}

/// Every stored event, in position order.
pub async fn stored(pool: &PgPool) -> Vec<EventEnvelope> {
    type Row = (
        String,
        String,
        i64,
        String,
        String,
        Value,
        Value,
        i64,
        DateTime<Utc>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
                position, recorded_at FROM events ORDER BY position",
    )
    .fetch_all(pool)
    .await
    .expect("read the events");
    rows.into_iter()
        .map(|r| EventEnvelope {
            aggregate_type: r.0,
            aggregate_id: r.1,
            sequence: r.2,
            event_type: r.3,
            event_version: r.4,
            payload: r.5,
            metadata: r.6,
            position: r.7,
            recorded_at: r.8,
        })
        .collect()
}
