//! The relay: every committed event reaches JetStream once, in order, even
//! across slow transactions, crashes, broker outages and leader changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use commands::relay::{self, RelayOptions};
use commands::{AggregateStore, StoreOptions};
use domain::product::{Product, ProductCommand};
use schemas::EventEnvelope;
use sqlx::PgPool;
use testkit::{TestDatabase, TestNats, TestNatsServer};
use tokio::sync::{oneshot, Notify};
use uuid::Uuid;

use testkit::eventually;

use crate::support::{create_product, metadata};

struct RunningRelay {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningRelay {
    fn start(pool: &PgPool, nats: &async_nats::Client, prefix: &str, wake: Arc<Notify>) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let options = RelayOptions {
            idle_check: Duration::from_millis(200),
            ..RelayOptions::new(prefix)
        };
        let task = tokio::spawn(relay::run(
            pool.clone(),
            nats.clone(),
            options,
            wake,
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            stop: Some(stop),
            task,
        }
    }

    /// Stops the relay as SIGTERM would, and waits until it has.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.expect("the relay ended cleanly");
    }

    /// Ends the relay abruptly, as SIGKILL would: no clean shutdown.
    fn kill(self) {
        self.task.abort();
    }
}

impl Drop for RunningRelay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn stored_events(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap()
}

fn envelopes(messages: &[async_nats::jetstream::message::StreamMessage]) -> Vec<EventEnvelope> {
    messages
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).expect("every message is an envelope"))
        .collect()
}

/// Every stored event appears exactly once, and each aggregate's events in sequence order.
fn assert_exactly_once_in_order(envelopes: &[EventEnvelope], stored: i64) {
    let mut next: HashMap<(String, String), i64> = HashMap::new();
    for envelope in envelopes {
        let expected = next
            .entry((
                envelope.aggregate_type.clone(),
                envelope.aggregate_id.clone(),
            ))
            .or_insert(1);
        assert_eq!(
            envelope.sequence, *expected,
            "out of order or duplicated: {envelope:?}"
        );
        *expected += 1;
    }
    assert_eq!(envelopes.len() as i64, stored, "every stored event once");
}

async fn adjust(store: &AggregateStore<Product>, id: &str, times: usize) {
    for i in 0..times {
        let delta = if i % 3 == 0 { -1 } else { 1 };
        store
            .execute(id, ProductCommand::AdjustStock { delta }, None, &metadata())
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_event_is_published_once_in_order_with_a_stable_message_id() {
    let db = TestDatabase::new().await;
    let nats = TestNats::new().await;
    let wake = Arc::new(Notify::new());
    let hook = wake.clone();
    let store = AggregateStore::<Product>::new(
        db.pool.clone(),
        StoreOptions {
            on_append: Some(commands::AppendHook(Arc::new(move || hook.notify_one()))),
            ..StoreOptions::default()
        },
    );
    let _relay = RunningRelay::start(&db.pool, &nats.client, &nats.prefix, wake);
    let ids: Vec<String> = (0..5).map(|_| Uuid::now_v7().to_string()).collect();
    for (i, id) in ids.iter().enumerate() {
        store
            .execute(
                id,
                create_product(Uuid::parse_str(id).unwrap(), &format!("R-{i}"), 100),
                None,
                &metadata(),
            )
            .await
            .unwrap();
    }
    futures::future::join_all(ids.iter().map(|id| adjust(&store, id, 20))).await;
    let stored = stored_events(&db.pool).await;
    assert_eq!(stored, 105);
    eventually("all events in the stream", || async {
        nats.messages().await.len() as i64 >= stored
    })
    .await;
    let messages = nats.messages().await;
    let envelopes = envelopes(&messages);
    assert_exactly_once_in_order(&envelopes, stored);
    for (message, envelope) in messages.iter().zip(&envelopes) {
        let id = message
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned());
        assert_eq!(
            id,
            Some(format!(
                "product:{}:{}",
                envelope.aggregate_id, envelope.sequence
            ))
        );
        assert_eq!(
            message.subject.as_str(),
            format!("{}.events.product.{}", nats.prefix, envelope.aggregate_id)
        );
        assert_eq!(envelope.metadata["correlation_id"], "corr-test");
    }
    // The checkpoint moves once the last batch's acks are in, a moment
    // after the messages show in the stream.
    eventually("the relay's checkpoint at the last event", || async {
        relay::lag(&db.pool, &nats.prefix).await.unwrap() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_transaction_holding_a_lower_position_is_waited_for_not_skipped() {
    let db = TestDatabase::new().await;
    let insert = "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) VALUES ('product', $1, 1, 'ProductDiscontinued', '1.0', '{\"ProductDiscontinued\": {}}', '{}') RETURNING position";

    // The slow transaction takes the lower position and stays open...
    let mut slow = db.pool.begin().await.unwrap();
    let slow_position: i64 = sqlx::query_scalar(insert)
        .bind("slow")
        .fetch_one(&mut *slow)
        .await
        .unwrap();
    // ...while a fast one takes a higher position and commits.
    let fast_position: i64 = sqlx::query_scalar(insert)
        .bind("fast")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(slow_position < fast_position);

    // A naive tailer reading `position > last` sees the fast event now and
    // moves its checkpoint past the slow one's position...
    let naive: Vec<i64> =
        sqlx::query_scalar("SELECT position FROM events WHERE position > $1 ORDER BY position")
            .bind(0_i64)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(naive, vec![fast_position]);
    let naive_checkpoint = fast_position;

    // The relay reads nothing while a transaction that may commit below it is open.
    let rows = relay::read_batch(&db.pool, "0", 0, 100).await.unwrap();
    assert!(
        rows.is_empty(),
        "the relay must wait for the open transaction"
    );

    slow.commit().await.unwrap();

    // ...so after the slow commit the naive tailer has skipped it for good.
    let naive_after: Vec<i64> =
        sqlx::query_scalar("SELECT position FROM events WHERE position > $1 ORDER BY position")
            .bind(naive_checkpoint)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(
        naive_after.is_empty(),
        "the naive tailer never sees position {slow_position}"
    );

    // The relay now reads both, the slow one first. (Transactions of other
    // tests on the same server also hold the snapshot's xmin back for a
    // moment, hence the wait.)
    let read_positions = || async {
        let rows = relay::read_batch(&db.pool, "0", 0, 100).await.unwrap();
        rows.iter()
            .map(|r| sqlx::Row::get::<i64, _>(r, "position"))
            .collect::<Vec<i64>>()
    };
    eventually("the relay sees both events", || async {
        read_positions().await.len() == 2
    })
    .await;
    let positions = read_positions().await;
    assert_eq!(positions, vec![slow_position, fast_position]);

    // And end to end through JetStream.
    let nats = TestNats::new().await;
    let _relay = RunningRelay::start(
        &db.pool,
        &nats.client,
        &nats.prefix,
        Arc::new(Notify::new()),
    );
    eventually("both events in the stream", || async {
        nats.messages().await.len() == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_publish_and_checkpoint_duplicates_nothing() {
    let db = TestDatabase::new().await;
    let nats = TestNats::new().await;
    let store = AggregateStore::<Product>::new(db.pool.clone(), StoreOptions::default());
    let id = Uuid::now_v7();
    store
        .execute(
            &id.to_string(),
            create_product(id, "CRASH", 10),
            None,
            &metadata(),
        )
        .await
        .unwrap();
    adjust(&store, &id.to_string(), 30).await;

    // Committed while no relay ran (the process died right after commit).
    let relay_task = RunningRelay::start(
        &db.pool,
        &nats.client,
        &nats.prefix,
        Arc::new(Notify::new()),
    );
    eventually("the backlog relayed", || async {
        nats.messages().await.len() == 31
    })
    .await;
    relay_task.kill();

    // As if the relay died after publishing but before storing its checkpoint.
    sqlx::query("UPDATE relay_checkpoints SET transaction_id = '0', position = 0")
        .execute(&db.pool)
        .await
        .unwrap();
    adjust(&store, &id.to_string(), 5).await;
    let _relay = RunningRelay::start(
        &db.pool,
        &nats.client,
        &nats.prefix,
        Arc::new(Notify::new()),
    );
    eventually("the new events relayed", || async {
        relay::lag(&db.pool, &nats.prefix).await.unwrap_or(1) == 0
    })
    .await;
    let envelopes = envelopes(&nats.messages().await);
    assert_exactly_once_in_order(&envelopes, stored_events(&db.pool).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_catches_up_after_nats_was_down() {
    let db = TestDatabase::new().await;
    let mut server = TestNatsServer::start();
    let nats = TestNats::on(&server.url()).await;
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(server.url())
        .await
        .unwrap();
    let store = AggregateStore::<Product>::new(db.pool.clone(), StoreOptions::default());
    let id = Uuid::now_v7();
    store
        .execute(
            &id.to_string(),
            create_product(id, "OUTAGE", 10),
            None,
            &metadata(),
        )
        .await
        .unwrap();
    let _relay = RunningRelay::start(&db.pool, &client, &nats.prefix, Arc::new(Notify::new()));
    eventually("the first event relayed", || async {
        relay::lag(&db.pool, &nats.prefix).await.unwrap_or(1) == 0
    })
    .await;

    server.stop();
    // Commands go on while the broker is down: the events table is the outbox.
    adjust(&store, &id.to_string(), 40).await;
    assert!(relay::lag(&db.pool, &nats.prefix).await.unwrap() > 0);
    server.resume();

    eventually("caught up after the outage", || async {
        relay::lag(&db.pool, &nats.prefix).await.unwrap_or(1) == 0
    })
    .await;
    let fresh = TestNats::on(&server.url()).await;
    let stream = fresh
        .jetstream
        .get_stream(nats.stream_name())
        .await
        .unwrap();
    let mut messages = Vec::new();
    let last = stream.get_info().await.unwrap().state.last_sequence;
    for sequence in 1..=last {
        messages.push(stream.get_raw_message(sequence).await.unwrap());
    }
    assert_exactly_once_in_order(&envelopes(&messages), stored_events(&db.pool).await);
    drop(fresh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_relay_leads_and_a_standby_takes_over_when_it_dies() {
    let db = TestDatabase::with_pool_size(8).await;
    let nats = TestNats::new().await;
    let store = AggregateStore::<Product>::new(db.pool.clone(), StoreOptions::default());
    let id = Uuid::now_v7();
    store
        .execute(
            &id.to_string(),
            create_product(id, "LEAD", 10),
            None,
            &metadata(),
        )
        .await
        .unwrap();

    let leader = RunningRelay::start(
        &db.pool,
        &nats.client,
        &nats.prefix,
        Arc::new(Notify::new()),
    );
    eventually("relayed", || async { nats.messages().await.len() == 1 }).await;
    let holders = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    let standby = RunningRelay::start(
        &db.pool,
        &nats.client,
        &nats.prefix,
        Arc::new(Notify::new()),
    );
    adjust(&store, &id.to_string(), 5).await;
    eventually("the leader relayed more", || async {
        nats.messages().await.len() == 6
    })
    .await;
    assert_eq!(
        holders().await,
        1,
        "exactly one relay holds the lock; the other stands by"
    );

    // The leader dies; the standby takes the lock and carries on.
    leader.kill();
    adjust(&store, &id.to_string(), 10).await;
    eventually("the standby relayed the rest", || async {
        nats.messages().await.len() == 16
    })
    .await;
    assert_eq!(holders().await, 1);
    assert_exactly_once_in_order(
        &envelopes(&nats.messages().await),
        stored_events(&db.pool).await,
    );
    drop(standby);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_read_in_numeric_id_order_across_digit_counts() {
    let db = TestDatabase::new().await;
    // The rows are bare placeholders (`{}` payloads): only their order matters.
    db.allow_invalid_events();
    // Transaction 10 wrote first; transaction 9 (older, so committed no later)
    // holds the higher position. As text "10" < "9": a reader that compared
    // ids as text would read 10 first, move its cursor past 9, and skip it.
    let insert = "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, transaction_id) VALUES ('product', $1, 1, 'ProductDiscontinued', '1.0', '{}', '{}', $2::text::xid8) RETURNING position";
    let ten: i64 = sqlx::query_scalar(insert)
        .bind("ten")
        .bind("10")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let nine: i64 = sqlx::query_scalar(insert)
        .bind("nine")
        .bind("9")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let mut cursor = ("0".to_owned(), 0_i64);
    let mut seen = Vec::new();
    for _ in 0..3 {
        for row in relay::read_batch(&db.pool, &cursor.0, cursor.1, 1)
            .await
            .unwrap()
        {
            let position: i64 = sqlx::Row::get(&row, "position");
            cursor = (sqlx::Row::get(&row, "transaction_text"), position);
            seen.push(position);
        }
    }
    assert_eq!(seen, vec![nine, ten]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_relay_has_checkpointed_everything_it_published() {
    let db = TestDatabase::new().await;
    let nats = TestNats::new().await;
    let store = AggregateStore::<Product>::new(db.pool.clone(), StoreOptions::default());
    let id = Uuid::now_v7();
    store
        .execute(
            &id.to_string(),
            create_product(id, "STOP-1", 100),
            None,
            &metadata(),
        )
        .await
        .unwrap();
    adjust(&store, &id.to_string(), 30).await;
    let relay = RunningRelay::start(
        &db.pool,
        &nats.client,
        &nats.prefix,
        Arc::new(Notify::new()),
    );
    eventually("all events in the stream", || async {
        nats.messages().await.len() >= 31
    })
    .await;
    relay.stop().await;
    // The acks of the last batch were awaited and its cursor stored: a
    // restart re-sends nothing.
    assert_eq!(relay::lag(&db.pool, &nats.prefix).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_and_causality_travel_as_nats_headers_and_in_the_envelope() {
    let db = TestDatabase::new().await;
    let nats = TestNats::new().await;
    let store = AggregateStore::<Product>::new(db.pool.clone(), StoreOptions::default());
    let _relay = RunningRelay::start(
        &db.pool,
        &nats.client,
        &nats.prefix,
        Arc::new(Notify::new()),
    );
    let request = metadata();
    let id = Uuid::now_v7();
    store
        .execute(
            &id.to_string(),
            create_product(id, "TRACED-1", 5),
            None,
            &request,
        )
        .await
        .unwrap();
    eventually("the event is published", || async {
        !nats.messages().await.is_empty()
    })
    .await;

    let messages = nats.messages().await;
    let headers = messages[0].headers.clone();
    let header = |name: &str| headers.get(name).map(ToString::to_string);
    assert_eq!(header("traceparent"), Some(request.traceparent.to_string()));
    assert_eq!(header("Agora-Correlation-Id").as_deref(), Some("corr-test"));
    assert_eq!(header("Agora-Causation-Id").as_deref(), Some("cause-test"));
    let envelope = &envelopes(&messages)[0];
    assert_eq!(envelope.traceparent(), Some(request.traceparent));

    // A command caused by that event (as the saga issues them) keeps the
    // correlation id and the trace, and names the event as its cause.
    let caused = commands::CommandMetadata::caused_by(envelope);
    assert_eq!(caused.correlation_id, "corr-test");
    assert_eq!(caused.causation_id, format!("product:{id}:1"));
    assert_eq!(caused.traceparent.trace_id, request.traceparent.trace_id);
    assert_ne!(caused.traceparent.span_id, request.traceparent.span_id);
}
