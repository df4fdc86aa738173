//! A stored version 1 `ProductStockAdjusted` (`{"delta": n}`) is read as
//! version 2 (`{"stock_delta": n}`) by command handling, the live projection
//! and replay alike.

use commands::{Aggregates, CommandMetadata, StoreOptions};
use domain::{ProductCommand, ProductError};
use projections::replay::{Quiet, ReplayOptions};
use projections::{replay, Projection};
use serde_json::json;
use uuid::Uuid;

use crate::support::{eur, eventually, Env, Recorder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_v1_event_is_read_as_v2_everywhere() {
    let env = Env::new().await;
    let mut r = Recorder::new(env.pool());
    let id = Uuid::now_v7();
    let created = r
        .record(
            "product",
            id,
            "ProductCreated",
            json!({
                "product_id": id, "sku": "UP-1", "name": "Lamp", "description": null,
                "price": eur(100), "stock": 10
            }),
        )
        .await;
    // Written as a version 1 writer wrote it, straight into the table.
    let v1 = r
        .record("product", id, "ProductStockAdjusted", json!({"delta": 5}))
        .await;
    let stored: (String, serde_json::Value) = sqlx::query_as(
        "SELECT event_version, payload FROM events WHERE aggregate_id = $1 AND sequence = 2",
    )
    .bind(id.to_string())
    .fetch_one(env.pool())
    .await
    .unwrap();
    assert_eq!(
        stored,
        (
            "1.0".to_owned(),
            json!({"ProductStockAdjusted": {"delta": 5}})
        )
    );

    // The envelope every reader builds.
    let upcast = v1.clone().upcast();
    assert_eq!(upcast.event_version, "2.0");
    assert_eq!(upcast.data(), &json!({"stock_delta": 5}));

    // Command handling: the aggregate loads it (through cqrs-es's upcaster
    // hook) and decides on the stock it implies.
    let aggregates = Aggregates::new(env.pool().clone(), StoreOptions::default());
    let loaded = aggregates
        .products
        .load_stored(&id.to_string())
        .await
        .unwrap();
    assert_eq!((loaded.aggregate.available(), loaded.version), (15, 2));
    let from_all = aggregates
        .products
        .load_from_all_events(&id.to_string())
        .await
        .unwrap();
    assert_eq!(from_all.aggregate.available(), 15);
    let refused = aggregates
        .products
        .execute(
            &id.to_string(),
            ProductCommand::AdjustStock { delta: -16 },
            None,
            &CommandMetadata::system(),
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(commands::CommandError::Rejected(
                ProductError::InsufficientStock { .. }
            ))
        ),
        "{refused:?}"
    );
    let committed = aggregates
        .products
        .execute(
            &id.to_string(),
            ProductCommand::AdjustStock { delta: -15 },
            None,
            &CommandMetadata::system(),
        )
        .await
        .unwrap();
    assert_eq!(committed.version, 3);
    let written: (String, serde_json::Value) = sqlx::query_as(
        "SELECT event_version, payload FROM events WHERE aggregate_id = $1 AND sequence = 3",
    )
    .bind(id.to_string())
    .fetch_one(env.pool())
    .await
    .unwrap();
    assert_eq!(
        written,
        (
            "2.0".to_owned(),
            json!({"ProductStockAdjusted": {"stock_delta": -15}})
        )
    );

    // The live projection: the relay publishes stored rows as they are.
    let workers = env.start(&[Projection::Products]);
    env.publish(&created).await;
    env.publish(&v1).await;
    let available = || async {
        sqlx::query_scalar::<_, i64>("SELECT available FROM rm_products WHERE id = $1")
            .bind(id)
            .fetch_optional(env.pool())
            .await
            .unwrap()
    };
    eventually("the worker applied the v1 adjustment", || async {
        available().await == Some(15)
    })
    .await;
    workers.stop().await;

    // Replay, which also brings in the v2 event the command wrote.
    let report = replay(
        env.pool(),
        &ReplayOptions {
            projections: vec![Projection::Products],
            ..Default::default()
        },
        &mut Quiet,
    )
    .await
    .unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(available().await, Some(0));
    let version: i64 = sqlx::query_scalar("SELECT version FROM rm_products WHERE id = $1")
        .bind(id)
        .fetch_one(env.pool())
        .await
        .unwrap();
    assert_eq!(version, 3);
}
