//! CloudEvents on the stream, read by a consumer that is not ours: Python's
//! `nats-py` fetches the messages and the CloudEvents SDK decodes them in
//! binary mode (`ops/tools/cloudevents_read.py`). Every attribute the
//! contract lists must come out right, and the body must be the envelope as
//! before.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use commands::relay::{self, RelayOptions};
use commands::{AggregateStore, StoreOptions};
use domain::product::{Product, ProductCommand};
use domain::user::User;
use schemas::EventEnvelope;
use serde_json::Value;
use testkit::{eventually, tools, TestDatabase, TestNats};
use tokio::sync::{oneshot, Notify};
use uuid::Uuid;

use crate::support::{create_product, metadata, register};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloudevents_sdk_reads_every_attribute_of_every_message() {
    let python = tools::python_bin().await;
    let db = TestDatabase::new().await;
    let nats = TestNats::new().await;
    let users = AggregateStore::<User>::new(db.pool.clone(), StoreOptions::default());
    let products = AggregateStore::<Product>::new(db.pool.clone(), StoreOptions::default());

    let user_id = Uuid::now_v7();
    users
        .execute_new(
            &user_id.to_string(),
            register(user_id, "ada@example.com"),
            &metadata(),
        )
        .await
        .unwrap();
    let product_id = Uuid::now_v7();
    let product = product_id.to_string();
    products
        .execute_new(&product, create_product(product_id, "CE-1", 5), &metadata())
        .await
        .unwrap();
    products
        .execute(
            &product,
            ProductCommand::AdjustStock { delta: 3 },
            None,
            &metadata(),
        )
        .await
        .unwrap();
    // An event stored at an old version is published as stored, so its
    // type names that version's major.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('product', $1, 3, 'ProductStockAdjusted', '1.0', '{\"ProductStockAdjusted\": {\"delta\": -2}}', '{}')",
    )
    .bind(&product)
    .execute(&db.pool)
    .await
    .unwrap();
    let stored: Vec<(
        String,
        String,
        i64,
        String,
        String,
        chrono::DateTime<chrono::Utc>,
    )> = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, recorded_at
               FROM events ORDER BY position",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(stored.len(), 4);

    let (stop, stopped) = oneshot::channel::<()>();
    let relay = tokio::spawn(relay::run(
        db.pool.clone(),
        nats.client.clone(),
        RelayOptions {
            idle_check: Duration::from_millis(100),
            ..RelayOptions::new(nats.prefix.clone())
        },
        Arc::new(Notify::new()),
        async move {
            let _ = stopped.await;
        },
    ));
    eventually("every event in the stream", || async {
        nats.messages().await.len() == stored.len()
    })
    .await;
    let _ = stop.send(());
    relay.await.unwrap();
    let bodies: Vec<Value> = nats
        .messages()
        .await
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();

    let output = tools::run(
        &python.join("python"),
        &[
            tools::file("cloudevents_read.py").as_os_str(),
            OsStr::new(&testkit::nats_url()),
            OsStr::new(&nats.stream_name()),
            OsStr::new(&format!("{}.events.>", nats.prefix)),
            OsStr::new(&stored.len().to_string()),
        ],
    )
    .await;
    assert!(output.status.success(), "{}", tools::said(&output));
    let read: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(read.len(), stored.len(), "{}", tools::said(&output));

    let expected_types = [
        "agora.user.UserRegistered.v2",
        "agora.product.ProductCreated.v1",
        "agora.product.ProductStockAdjusted.v2",
        "agora.product.ProductStockAdjusted.v1",
    ];
    for (((message, row), body), expected_type) in
        read.iter().zip(&stored).zip(&bodies).zip(expected_types)
    {
        let (aggregate_type, aggregate_id, sequence, _, _, recorded_at) = row;
        let attributes = &message["attributes"];
        let id = format!("{aggregate_type}:{aggregate_id}:{sequence}");
        assert_eq!(attributes["specversion"], "1.0", "{message}");
        assert_eq!(attributes["id"], id.as_str(), "{message}");
        assert_eq!(message["headers"]["Nats-Msg-Id"], id.as_str(), "{message}");
        assert_eq!(
            attributes["source"],
            format!("/agora/{}", nats.prefix),
            "{message}"
        );
        assert_eq!(attributes["type"], expected_type, "{message}");
        assert_eq!(
            attributes["subject"],
            format!("{aggregate_type}/{aggregate_id}"),
            "{message}"
        );
        assert_eq!(attributes["datacontenttype"], "application/json");
        let time = chrono::DateTime::parse_from_rfc3339(attributes["time"].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(&time, recorded_at, "{message}");
        // The data is the envelope, unchanged.
        assert_eq!(&message["data"], body, "{message}");
        let envelope: EventEnvelope = serde_json::from_value(message["data"].clone()).unwrap();
        assert_eq!(
            (&envelope.aggregate_id, envelope.sequence),
            (aggregate_id, *sequence)
        );
    }
}
