//! The metadata a command carries is stored with every event it yields.

use chrono::{DateTime, Utc};
use commands::stream::read_stream;
use commands::{AggregateStore, CommandMetadata, StoreOptions};
use cqrs_es::persist::PersistedEventRepository;
use domain::{User, UserCommand};
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use testkit::TestDatabase;
use uuid::Uuid;

use crate::support::{email, metadata, name, register};

fn assert_metadata(stored: &Value, expected: &CommandMetadata) {
    assert_eq!(stored["correlation_id"], expected.correlation_id.as_str());
    assert_eq!(stored["causation_id"], expected.causation_id.as_str());
    assert_eq!(stored["actor"], expected.actor.as_str());
    let time: DateTime<Utc> = stored["time"]
        .as_str()
        .expect("time is a string")
        .parse()
        .expect("time is RFC 3339");
    assert_eq!(time, expected.time);
    assert_eq!(
        stored["traceparent"],
        expected.traceparent.to_string().as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_stores_the_commands_metadata() {
    let db = TestDatabase::new().await;
    let users = AggregateStore::<User>::new(db.pool.clone(), StoreOptions::default());
    let user_id = Uuid::now_v7();
    let id = user_id.to_string();

    let first = metadata();
    users
        .execute(&id, register(user_id, "meta@example.com"), None, &first)
        .await
        .unwrap();

    // A second command, with other metadata, yielding two events.
    let second = CommandMetadata {
        correlation_id: "corr-2".to_owned(),
        causation_id: "evt-17".to_owned(),
        actor: "user:42".to_owned(),
        time: DateTime::<Utc>::from_timestamp_micros(1_720_000_000_000_001).unwrap(),
        traceparent: schemas::TraceParent::new_root(),
    };
    let committed = users
        .execute(
            &id,
            UserCommand::UpdateProfile {
                name: Some(name("Grace")),
                email: Some(email("grace@example.com")),
            },
            None,
            &second,
        )
        .await
        .unwrap();
    assert_eq!(committed.events.len(), 2);

    let stream = read_stream(&db.pool, "user", &id).await.unwrap();
    assert_eq!(stream.len(), 3);
    assert_metadata(&stream[0].metadata, &first);
    assert_metadata(&stream[1].metadata, &second);
    assert_metadata(&stream[2].metadata, &second);
    assert_eq!(stream[0].metadata["time"], "2024-05-06T12:53:20.123456Z");

    // The stock postgres-es repository reads the same metadata.
    let events = PostgresEventRepository::new(db.pool.clone())
        .get_events::<User>(&id)
        .await
        .unwrap();
    assert_eq!(events.len(), 3);
    assert_metadata(&events[2].metadata, &second);
}
