//! The teardown check of `TestDatabase`: every stored event must match the
//! JSON Schema of its type and version, or the test owning the database fails.

use serde_json::json;
use testkit::TestDatabase;

async fn store(db: &TestDatabase, event_type: &str, payload: serde_json::Value) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('product', gen_random_uuid()::text, 1, $1, '1.0', $2, '{}')",
    )
    .bind(event_type)
    .bind(payload)
    .execute(&db.pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stored_event_that_breaks_its_schema_fails_the_test_at_teardown() {
    let db = TestDatabase::new().await;
    store(
        &db,
        "ProductStockAdjusted",
        json!({"ProductStockAdjusted": {"delta": 2}}),
    )
    .await;
    assert_eq!(db.invalid_events().await.unwrap(), Vec::<String>::new());

    // A renamed field, and a type with no schema at all.
    store(
        &db,
        "ProductStockAdjusted",
        json!({"ProductStockAdjusted": {"change": 2}}),
    )
    .await;
    store(&db, "ProductRenamed", json!({"ProductRenamed": {}})).await;
    let invalid = db.invalid_events().await.unwrap();
    assert_eq!(invalid.len(), 2, "{invalid:#?}");
    assert!(invalid[0].contains("ProductStockAdjusted") && invalid[0].contains("delta"));
    assert!(invalid[1].contains("no schema for product/ProductRenamed"));

    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(db)));
    let message = dropped.expect_err("dropping the database must fail the test");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("2 stored event(s)"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_test_that_stores_malformed_events_on_purpose_can_say_so() {
    let db = TestDatabase::new().await;
    store(&db, "ProductStockAdjusted", json!({})).await;
    db.allow_invalid_events();
    drop(db);
}
