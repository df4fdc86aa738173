//! The categories model (tree, paths, counts with descendants) and the
//! products model's categories and attributes, live and against a replay.

use projections::{apply_batch, Projection};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::{assert_all_applied, database, eur, Recorder};

/// Both models, each given the events it follows, as their consumers would.
async fn apply(pool: &sqlx::PgPool, events: &[schemas::EventEnvelope]) {
    assert_all_applied(
        &apply_batch(pool, &Projection::Categories, events)
            .await
            .unwrap(),
    );
    let products: Vec<_> = events
        .iter()
        .filter(|e| e.aggregate_type == "product")
        .cloned()
        .collect();
    if !products.is_empty() {
        assert_all_applied(
            &apply_batch(pool, &Projection::Products, &products)
                .await
                .unwrap(),
        );
    }
}

async fn category_row(pool: &sqlx::PgPool, id: Uuid) -> (Value, i32, i64, i64) {
    sqlx::query_as::<_, (Value, i32, i64, i64)>(
        "SELECT path, depth, direct_count, product_count FROM rm_categories WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn created(slug: &str, id: Uuid, parent: Option<Uuid>) -> Value {
    json!({"category_id": id, "slug": slug, "name": slug, "parent_id": parent, "position": 0})
}

fn product(sku: &str, id: Uuid) -> Value {
    json!({"product_id": id, "sku": sku, "name": sku, "description": null, "price": eur(100), "stock": 1})
}

/// A tree a > b > c, products listed at each level (p2 twice in one
/// subtree), then c moved to the top: the counts follow, each product once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_include_descendants_once_and_follow_a_move() {
    let db = database().await;
    let mut r = Recorder::new(&db.pool);
    let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let (p1, p2, p3) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let mut events = vec![
        r.record("category", a, "CategoryCreated", created("a", a, None))
            .await,
        r.record("category", b, "CategoryCreated", created("b", b, Some(a)))
            .await,
        r.record("category", c, "CategoryCreated", created("c", c, Some(b)))
            .await,
    ];
    for (sku, id) in [("P1", p1), ("P2", p2), ("P3", p3)] {
        events.push(
            r.record("product", id, "ProductCreated", product(sku, id))
                .await,
        );
    }
    events.push(
        r.record(
            "product",
            p1,
            "ProductCategoriesSet",
            json!({"category_ids": [c]}),
        )
        .await,
    );
    events.push(
        r.record(
            "product",
            p2,
            "ProductCategoriesSet",
            json!({"category_ids": [b, c]}),
        )
        .await,
    );
    events.push(
        r.record(
            "product",
            p3,
            "ProductCategoriesSet",
            json!({"category_ids": [a]}),
        )
        .await,
    );
    apply(&db.pool, &events).await;
    assert_eq!(category_row(&db.pool, a).await, (json!([]), 1, 1, 3));
    assert_eq!(category_row(&db.pool, b).await, (json!([a]), 2, 1, 2));
    assert_eq!(category_row(&db.pool, c).await, (json!([a, b]), 3, 2, 2));

    // c to the top, then p2 leaves b: a batch of its own, as live.
    let moved = vec![
        r.record("category", c, "CategoryMoved", json!({"parent_id": null}))
            .await,
        r.record(
            "product",
            p2,
            "ProductCategoriesSet",
            json!({"category_ids": [c]}),
        )
        .await,
    ];
    apply(&db.pool, &moved).await;
    assert_eq!(category_row(&db.pool, a).await, (json!([]), 1, 1, 1));
    assert_eq!(category_row(&db.pool, b).await, (json!([a]), 2, 0, 0));
    assert_eq!(category_row(&db.pool, c).await, (json!([]), 1, 2, 2));
    let tree_path: String = sqlx::query_scalar("SELECT tree_path FROM rm_categories WHERE id = $1")
        .bind(c)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(tree_path, format!("/{c}/"));

    let listed: (Value, Value) =
        sqlx::query_as("SELECT category_ids, attributes FROM rm_products WHERE id = $1")
            .bind(p2)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(listed, (json!([c]), json!({})));

    let drift = projections::replay::verify(&db.pool).await.unwrap();
    assert!(drift.is_empty(), "{drift:?}");
}

/// A listing folded before its category exists counts once the category is
/// created (a redelivery can reorder aggregates), as a replay counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_before_its_category_counts_once_it_exists() {
    let db = database().await;
    let mut r = Recorder::new(&db.pool);
    let (a, p) = (Uuid::now_v7(), Uuid::now_v7());
    let early = r
        .record("product", p, "ProductCreated", product("P", p))
        .await;
    let listed = r
        .record(
            "product",
            p,
            "ProductCategoriesSet",
            json!({"category_ids": [a]}),
        )
        .await;
    let create = r
        .record("category", a, "CategoryCreated", created("a", a, None))
        .await;
    apply(&db.pool, &[early, listed]).await;
    apply(&db.pool, &[create]).await;
    assert_eq!(category_row(&db.pool, a).await, (json!([]), 1, 1, 1));
    let drift = projections::replay::verify(&db.pool).await.unwrap();
    assert!(drift.is_empty(), "{drift:?}");
}

/// Renames, deletion and attributes: the rows follow, a deleted category
/// leaves the tree, and live equals replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_deletes_and_attributes_fold_like_a_replay() {
    let db = database().await;
    let mut r = Recorder::new(&db.pool);
    let (a, b, p) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let events = vec![
        r.record("category", a, "CategoryCreated", created("a", a, None))
            .await,
        r.record("category", b, "CategoryCreated", created("b", b, Some(a)))
            .await,
        r.record(
            "category",
            a,
            "CategoryUpdated",
            json!({"slug": "pens", "previous_slug": "a", "name": "Pens", "position": 3}),
        )
        .await,
        r.record("category", b, "CategoryDeleted", json!({"slug": "b"}))
            .await,
        r.record("product", p, "ProductCreated", product("P", p))
            .await,
        r.record(
            "product",
            p,
            "ProductAttributesSet",
            json!({"attributes": {"colour": "blue", "ink": "gel"}}),
        )
        .await,
    ];
    apply(&db.pool, &events).await;
    let rows: Vec<(Uuid, String, String, i32, i64)> =
        sqlx::query_as("SELECT id, slug, name, position, version FROM rm_categories")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(rows, vec![(a, "pens".to_owned(), "Pens".to_owned(), 3, 2)]);
    let attributes: Value = sqlx::query_scalar("SELECT attributes FROM rm_products WHERE id = $1")
        .bind(p)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(attributes, json!({"colour": "blue", "ink": "gel"}));
    let drift = projections::replay::verify(&db.pool).await.unwrap();
    assert!(drift.is_empty(), "{drift:?}");
}
