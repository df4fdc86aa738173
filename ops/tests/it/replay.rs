//! `agora replay` through the binary: exit codes and what it prints.

use std::process::{Command, Output};

use testkit::TestDatabase;
use uuid::Uuid;

fn agora(db: &TestDatabase, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agora"))
        .args(args)
        .env("DATABASE_URL", db.url())
        .env(
            "NATS_URL",
            std::env::var("AGORA_TEST_NATS_URL")
                .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned()),
        )
        .env(
            "AGORA_NATS_PREFIX",
            format!("t{}", &Uuid::new_v4().simple().to_string()[..12]),
        )
        .env("AGORA_AUTH", "off")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run agora")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_verifies_repairs_and_refuses_a_second_run() {
    let db = TestDatabase::new().await;
    let product = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('product', $1, 1, 'ProductCreated', '1.0', $2, '{\"actor\": \"test\"}'),
                ('product', $1, 2, 'ProductStockAdjusted', '1.0', '{\"ProductStockAdjusted\": {\"delta\": 5}}', '{\"actor\": \"test\"}')",
    )
    .bind(product.to_string())
    .bind(serde_json::json!({"ProductCreated": {
        "product_id": product, "sku": "CLI-1", "name": "Lamp", "description": null,
        "price": {"amount": 100, "currency": "EUR"}, "stock": 10
    }}))
    .execute(&db.pool)
    .await
    .unwrap();

    let built = agora(&db, &["replay"]);
    assert!(built.status.success(), "{}", text(&built));
    assert!(
        text(&built).contains("swapped in the rebuilt read models"),
        "{}",
        text(&built)
    );
    let available: i64 = sqlx::query_scalar("SELECT available FROM rm_products WHERE id = $1")
        .bind(product)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(available, 15);

    let healthy = agora(&db, &["replay", "--verify"]);
    assert!(healthy.status.success(), "{}", text(&healthy));
    assert!(text(&healthy).contains("verified"), "{}", text(&healthy));

    sqlx::query("UPDATE rm_products SET available = 99 WHERE id = $1")
        .bind(product)
        .execute(&db.pool)
        .await
        .unwrap();
    let drifted = agora(&db, &["replay", "--verify", "--projection", "products"]);
    assert!(!drifted.status.success(), "{}", text(&drifted));
    let out = text(&drifted);
    assert!(
        out.contains("drift: rm_products: live row not in the rebuild"),
        "{out}"
    );
    assert!(out.contains(&product.to_string()), "{out}");
    assert!(out.contains("\"available\":99"), "{out}");

    let status = agora(&db, &["replay", "--status"]);
    assert!(status.status.success(), "{}", text(&status));
    let out = text(&status);
    assert!(out.contains("last rebuild"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("products") && l.contains("verify drifted")),
        "{out}"
    );

    // A replay holding its lock: the second is refused and says why.
    let mut running = db.pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(1634168690, 0)")
        .execute(&mut *running)
        .await
        .unwrap();
    let refused = agora(&db, &["replay"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("another replay is running"),
        "{}",
        text(&refused)
    );
    sqlx::query("SELECT pg_advisory_unlock(1634168690, 0)")
        .execute(&mut *running)
        .await
        .unwrap();
    drop(running);

    let bad = agora(&db, &["replay", "--projection", "widgets"]);
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("no projection \"widgets\""),
        "{}",
        text(&bad)
    );

    let repaired = agora(&db, &["replay", "--projection", "products"]);
    assert!(repaired.status.success(), "{}", text(&repaired));
    let available: i64 = sqlx::query_scalar("SELECT available FROM rm_products WHERE id = $1")
        .bind(product)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(available, 15);
}
