//! Categories, product categories and attributes, and search, over HTTP.
//! The read models are brought up to date by `projections::replay` (the
//! projector is not part of these tests), the same fold a live batch runs.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{spawn_app, Answer, TestApp};

async fn project(app: &TestApp) {
    let report = projections::replay(
        &app.db.pool,
        &projections::ReplayOptions::default(),
        &mut projections::replay::Quiet,
    )
    .await
    .expect("replay");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
}

async fn category(app: &TestApp, slug: &str, parent: Option<&str>) -> String {
    let answer = app
        .post(
            "/categories",
            json!({"slug": slug, "name": slug.to_uppercase(), "parent_id": parent}),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    answer.id()
}

async fn put(app: &TestApp, path: &str, body: Value) -> Answer {
    app.send(app.request(Method::PUT, path).json(&body)).await
}

async fn delete(app: &TestApp, path: &str) -> Answer {
    app.send(app.request(Method::DELETE, path)).await
}

async fn product(
    app: &TestApp,
    sku: &str,
    name: &str,
    description: &str,
    amount: i64,
    stock: i64,
) -> String {
    let answer = app
        .post(
            "/products",
            json!({"sku": sku, "name": name, "description": description,
                   "price": {"amount": amount, "currency": "EUR"}, "stock": stock}),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    answer.id()
}

fn skus(answer: &Answer) -> Vec<String> {
    answer.body["items"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|item| item["sku"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn categories_form_a_tree_with_counts_and_paths() {
    let app = spawn_app().await;
    let office = category(&app, "office", None).await;
    let writing = category(&app, "writing", Some(&office)).await;
    let pens = category(&app, "pens", Some(&writing)).await;
    let p1 = product(&app, "PEN-1", "Fountain pen", "", 1999, 3).await;
    let p2 = product(&app, "PEN-2", "Ballpoint pen", "", 299, 0).await;
    let listed = put(
        &app,
        &format!("/products/{p1}/categories"),
        json!({"category_ids": [pens]}),
    )
    .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body["categories"], json!([pens]));
    let listed = put(
        &app,
        &format!("/products/{p2}/categories"),
        json!({"category_ids": [pens, writing]}),
    )
    .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    project(&app).await;

    let tree = app.get("/categories").await;
    assert_eq!(tree.status, 200);
    let top = &tree.body["items"][0];
    assert_eq!(top["slug"], "office");
    assert_eq!(top["product_count"], 2);
    assert_eq!(top["children"][0]["slug"], "writing");
    assert_eq!(top["children"][0]["children"][0]["product_count"], 2);

    let one = app.get("/categories/pens").await;
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(one.body["id"], json!(pens));
    let path: Vec<&str> = one.body["path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["slug"].as_str().unwrap())
        .collect();
    assert_eq!(path, ["office", "writing"]);
    assert_eq!(
        app.get(&format!("/categories/{pens}")).await.body["slug"],
        "pens"
    );
    assert_eq!(app.get("/categories/no-such").await.status, 404);

    // pens to the top: counts and paths follow.
    let moved = app
        .post(
            &format!("/categories/{pens}/move"),
            json!({"parent_id": null}),
        )
        .await;
    assert_eq!(moved.status, 200, "{}", moved.body);
    assert_eq!(moved.body["parent_id"], Value::Null);
    project(&app).await;
    // The cached copy is older than the move: ask for the move's version.
    let one = app.get("/categories/pens?min_version=2").await;
    assert_eq!(one.body["path"], json!([]));
    assert_eq!(one.body["product_count"], 2);
    let tree = app.get("/categories").await;
    let office_now = tree.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["slug"] == "office")
        .unwrap();
    assert_eq!(office_now["product_count"], 1);

    let product = app.get(&format!("/products/{p2}")).await;
    assert_eq!(product.body["categories"], json!([pens, writing]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn category_rules_answer_their_statuses_and_write_nothing() {
    let app = spawn_app().await;
    let top = category(&app, "top", None).await;
    let child = category(&app, "child", Some(&top)).await;
    project(&app).await;

    let before = app.event_count().await;
    let taken = app
        .post("/categories", json!({"slug": "top", "name": "Again"}))
        .await;
    assert_eq!(taken.status, 409, "{}", taken.body);
    for bad in [
        json!({"slug": "Bad Slug", "name": "x"}),
        json!({"slug": "ok", "name": ""}),
        json!({"slug": "ok", "name": "x", "position": -1}),
        json!({"slug": "ok", "name": "x", "parent_id": "not-a-uuid"}),
        json!({"slug": "ok", "name": "x", "parent_id": uuid::Uuid::now_v7()}),
    ] {
        let refused = app.post("/categories", bad.clone()).await;
        assert_eq!(
            (refused.status, refused.problem_type()),
            (422, "/problems/validation"),
            "{bad}: {}",
            refused.body
        );
    }
    let unknown = app
        .post(
            "/categories",
            json!({"slug": "ok", "name": "x", "colour": 1}),
        )
        .await;
    assert_eq!(unknown.status, 400);

    let cycle = app
        .post(
            &format!("/categories/{top}/move"),
            json!({"parent_id": child}),
        )
        .await;
    assert_eq!(
        (cycle.status, cycle.problem_type()),
        (422, "/problems/category-cycle"),
        "{}",
        cycle.body
    );
    let itself = app
        .post(
            &format!("/categories/{top}/move"),
            json!({"parent_id": top}),
        )
        .await;
    assert_eq!(
        (itself.status, itself.problem_type()),
        (422, "/problems/category-cycle")
    );
    let missing_field = app
        .post(&format!("/categories/{top}/move"), json!({}))
        .await;
    assert_eq!(missing_field.status, 400, "{}", missing_field.body);

    let not_empty = delete(&app, &format!("/categories/{top}")).await;
    assert_eq!(
        (not_empty.status, not_empty.problem_type()),
        (422, "/problems/category-not-empty")
    );
    assert_eq!(app.event_count().await, before);

    // Eight levels are allowed, a ninth is not.
    let mut parent = child.clone();
    for level in 3..=8 {
        parent = category(&app, &format!("level-{level}"), Some(&parent)).await;
    }
    let before = app.event_count().await;
    let deep = app
        .post(
            "/categories",
            json!({"slug": "level-9", "name": "x", "parent_id": parent}),
        )
        .await;
    assert_eq!(
        (deep.status, deep.problem_type()),
        (422, "/problems/validation"),
        "{}",
        deep.body
    );
    project(&app).await;
    let other = category(&app, "other", None).await;
    let second = category(&app, "second", Some(&other)).await;
    let too_deep = app
        .post(
            &format!("/categories/{second}/move"),
            json!({"parent_id": parent}),
        )
        .await;
    assert_eq!(
        (too_deep.status, too_deep.problem_type()),
        (422, "/problems/validation")
    );
    assert_eq!(app.event_count().await, before + 2);

    // A product in a category keeps it from being deleted.
    let p = product(&app, "P-1", "Thing", "", 100, 1).await;
    assert_eq!(
        put(
            &app,
            &format!("/products/{p}/categories"),
            json!({"category_ids": [second]})
        )
        .await
        .status,
        200
    );
    project(&app).await;
    let listed = delete(&app, &format!("/categories/{second}")).await;
    assert_eq!(
        (listed.status, listed.problem_type()),
        (422, "/problems/category-not-empty")
    );
    assert_eq!(
        put(
            &app,
            &format!("/products/{p}/categories"),
            json!({"category_ids": []})
        )
        .await
        .status,
        200
    );
    project(&app).await;
    assert_eq!(
        delete(&app, &format!("/categories/{second}")).await.status,
        204
    );
    assert_eq!(
        delete(&app, &format!("/categories/{second}")).await.status,
        404
    );
    // Its slug is free again.
    category(&app, "second", None).await;

    let renamed = app
        .patch(&format!("/categories/{other}"), json!({"slug": "top"}))
        .await;
    assert_eq!(renamed.status, 409);
    let renamed = app
        .patch(
            &format!("/categories/{other}"),
            json!({"slug": "others", "position": 4}),
        )
        .await;
    assert_eq!(renamed.status, 200, "{}", renamed.body);
    assert_eq!(renamed.body["slug"], "others");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn product_categories_and_attributes_are_validated() {
    let app = spawn_app().await;
    let c = category(&app, "c", None).await;
    let p = product(&app, "P-1", "Thing", "", 100, 1).await;
    let before = app.event_count().await;
    let unknown = put(
        &app,
        &format!("/products/{p}/categories"),
        json!({"category_ids": [uuid::Uuid::now_v7()]}),
    )
    .await;
    assert_eq!(
        (unknown.status, unknown.problem_type()),
        (422, "/problems/validation")
    );
    assert_eq!(unknown.body["errors"][0]["field"], "category_ids[0]");
    let twice = put(
        &app,
        &format!("/products/{p}/categories"),
        json!({"category_ids": [c, c]}),
    )
    .await;
    assert_eq!(twice.status, 422);
    let many: Vec<String> = (0..21).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let too_many = put(
        &app,
        &format!("/products/{p}/categories"),
        json!({"category_ids": many}),
    )
    .await;
    assert_eq!(
        (too_many.status, too_many.problem_type()),
        (422, "/problems/validation")
    );
    let malformed = put(
        &app,
        &format!("/products/{p}/categories"),
        json!({"category_ids": ["x"]}),
    )
    .await;
    assert_eq!(malformed.status, 422);
    assert_eq!(
        put(
            &app,
            &format!("/products/{p}/categories"),
            json!({"ids": []})
        )
        .await
        .status,
        400
    );
    let nobody = put(
        &app,
        &format!("/products/{}/categories", uuid::Uuid::now_v7()),
        json!({"category_ids": []}),
    )
    .await;
    assert_eq!(nobody.status, 404);

    let fifty_one: serde_json::Map<String, Value> =
        (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
    for bad in [
        json!({"attributes": fifty_one}),
        json!({"attributes": {"": "v"}}),
        json!({"attributes": {"k".repeat(65): "v"}}),
        json!({"attributes": {"k": ""}}),
        json!({"attributes": {"k": "v".repeat(257)}}),
    ] {
        let refused = app.patch(&format!("/products/{p}"), bad.clone()).await;
        assert_eq!(
            (refused.status, refused.problem_type()),
            (422, "/problems/validation"),
            "{bad}"
        );
    }
    assert_eq!(
        app.patch(&format!("/products/{p}"), json!({"attributes": {"k": 1}}))
            .await
            .status,
        400
    );
    assert_eq!(app.event_count().await, before);

    let fifty: serde_json::Map<String, Value> =
        (0..50).map(|i| (format!("k{i}"), json!("v"))).collect();
    let ok = app
        .patch(&format!("/products/{p}"), json!({"attributes": fifty}))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let ok = app
        .patch(
            &format!("/products/{p}"),
            json!({"attributes": {"colour": "blue"}}),
        )
        .await;
    assert_eq!(ok.body["attributes"], json!({"colour": "blue"}));
    project(&app).await;
    assert_eq!(
        app.get(&format!("/products/{p}")).await.body["attributes"],
        json!({"colour": "blue"})
    );
}

/// The catalogue of the search examples.
async fn catalogue(app: &TestApp) -> (String, String) {
    let office = category(app, "office", None).await;
    let pens = category(app, "pens", Some(&office)).await;
    let mugs = category(app, "mugs", None).await;
    let fountain = product(app, "PEN-1", "Fountain pen", "Writes in blue ink", 2500, 3).await;
    let ballpoint = product(app, "PEN-2", "Ballpoint pen", "Cheap and cheerful", 300, 0).await;
    let mug = product(app, "MUG-1", "Café mug", "Holds a latte", 900, 5).await;
    let _pencil = product(app, "PCL-1", "Pencil", "Graphite", 150, 9).await;
    for (id, cats, colour) in [
        (&fountain, vec![&pens], "blue"),
        (&ballpoint, vec![&pens], "red"),
        (&mug, vec![&mugs], "blue"),
    ] {
        assert_eq!(
            put(
                app,
                &format!("/products/{id}/categories"),
                json!({"category_ids": cats})
            )
            .await
            .status,
            200
        );
        assert_eq!(
            app.patch(
                &format!("/products/{id}"),
                json!({"attributes": {"colour": colour}})
            )
            .await
            .status,
            200
        );
    }
    project(app).await;
    (office, mugs)
}

async fn search(app: &TestApp, query: &str) -> Answer {
    let answer = app.get(&format!("/products?{query}")).await;
    assert_eq!(answer.status, 200, "{query}: {}", answer.body);
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_word_forms_accents_prefixes_and_typos_but_not_strangers() {
    let app = spawn_app().await;
    catalogue(&app).await;
    let mut pens = skus(&search(&app, "q=pens").await);
    pens.sort();
    assert_eq!(pens, ["PEN-1", "PEN-2"]);
    assert_eq!(skus(&search(&app, "q=cafe").await), ["MUG-1"]);
    assert_eq!(skus(&search(&app, "q=CAFÉ%20MUG").await), ["MUG-1"]);
    assert_eq!(skus(&search(&app, "q=foun").await), ["PEN-1"]);
    assert_eq!(skus(&search(&app, "q=fountan").await), ["PEN-1"]);
    assert_eq!(skus(&search(&app, "q=fountain%20pen").await), ["PEN-1"]);
    // Exact sku first, then the rest.
    assert_eq!(skus(&search(&app, "q=pen-2").await)[0], "PEN-2");
    // Negatives: a typo in a short word, a prefix of a word not last, strangers.
    assert!(skus(&search(&app, "q=pwn").await).is_empty());
    assert!(skus(&search(&app, "q=foun%20pen%20xyzzy").await).is_empty());
    assert!(skus(&search(&app, "q=teapot").await).is_empty());
    assert_eq!(skus(&search(&app, "q=pencil").await), ["PCL-1"]);
    assert!(!skus(&search(&app, "q=pen").await).contains(&"MUG-1".to_owned()));
    // Attribute values are searched too.
    let mut blue = skus(&search(&app, "q=blue").await);
    blue.sort();
    assert_eq!(blue, ["MUG-1", "PEN-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_facets_and_bad_parameters() {
    let app = spawn_app().await;
    let (office, _mugs) = catalogue(&app).await;
    let mut under_office = skus(&search(&app, "category=office").await);
    under_office.sort();
    assert_eq!(under_office, ["PEN-1", "PEN-2"]);
    assert_eq!(
        skus(
            &search(
                &app,
                &format!("category={office}&min_price=1000&max_price=3000&currency=EUR")
            )
            .await
        ),
        ["PEN-1"]
    );
    assert_eq!(
        skus(&search(&app, "category=office&in_stock=true").await),
        ["PEN-1"]
    );
    let mut blue = skus(&search(&app, "attr.colour=blue").await);
    blue.sort();
    assert_eq!(blue, ["MUG-1", "PEN-1"]);
    assert!(skus(&search(&app, "category=no-such-slug").await).is_empty());
    assert_eq!(
        skus(&search(&app, "sort=price_asc").await),
        ["PCL-1", "PEN-2", "MUG-1", "PEN-1"]
    );
    assert_eq!(
        skus(&search(&app, "sort=price_desc&limit=1").await),
        ["PEN-1"]
    );
    assert_eq!(
        skus(&search(&app, "sort=name").await),
        ["PEN-2", "MUG-1", "PEN-1", "PCL-1"]
    );

    // Facets count every match, not only the page: equal to counting rows.
    let faceted = search(&app, "facets=category,attr.colour&limit=1").await;
    assert_eq!(faceted.body["items"].as_array().unwrap().len(), 1);
    for entry in faceted.body["facets"]["attr.colour"].as_array().unwrap() {
        let value = entry["value"].as_str().unwrap();
        let rows = skus(&search(&app, &format!("attr.colour={value}&limit=200")).await).len();
        assert_eq!(entry["count"], json!(rows), "{value}");
    }
    for entry in faceted.body["facets"]["category"].as_array().unwrap() {
        let id = entry["id"].as_str().unwrap();
        let direct: i64 =
            sqlx::query_scalar("SELECT count(*) FROM rm_products WHERE category_ids ? $1")
                .bind(id)
                .fetch_one(&app.db.pool)
                .await
                .unwrap();
        assert_eq!(entry["count"], json!(direct));
    }
    // Counted in one statement whatever the order, a facet named twice once.
    let reordered = search(&app, "facets=attr.colour,category,attr.colour&limit=1").await;
    assert_eq!(reordered.body["facets"], faceted.body["facets"]);
    assert_eq!(
        faceted.body["facets"].as_object().map(|f| f.len()),
        Some(2),
        "{}",
        faceted.body
    );
    assert!(search(&app, "q=pen").await.body.get("facets").is_none());

    let before = app.event_count().await;
    for bad in [
        "sort=cheapest",
        "min_price=5",
        "min_price=-1&currency=EUR",
        "currency=eur",
        "in_stock=maybe",
        "facets=colour",
        "colour=blue",
        "cursor=%21%21",
        "limit=0",
        "q=a&q=b",
        "category=Not%20A%20Slug",
    ] {
        let answer = app.get(&format!("/products?{bad}")).await;
        assert_eq!(answer.status, 400, "{bad}: {}", answer.body);
    }
    // A cursor of one sort is refused by another.
    let page = search(&app, "sort=name&limit=1").await;
    let cursor = page.body["next_cursor"].as_str().unwrap().to_owned();
    assert_eq!(
        app.get(&format!("/products?sort=price_asc&cursor={cursor}"))
            .await
            .status,
        400
    );
    assert_eq!(app.event_count().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_through_ties_returns_every_product_once_in_every_sort() {
    let app = spawn_app().await;
    for i in 0..7 {
        product(&app, &format!("TIE-{i}"), "Same pen", "tie", 500, 1).await;
    }
    product(&app, "OTHER", "Other pen", "tie", 700, 1).await;
    project(&app).await;
    for sort in ["relevance", "newest", "price_asc", "price_desc", "name"] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = format!("q=pen&sort={sort}&limit=3");
            if let Some(c) = &cursor {
                query.push_str(&format!("&cursor={c}"));
            }
            let page = search(&app, &query).await;
            seen.extend(skus(&page));
            match page.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
            assert!(seen.len() <= 8, "{sort}: {seen:?}");
        }
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!((seen.len(), unique.len()), (8, 8), "{sort}: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_rebuilds_the_same_search_results() {
    let app = spawn_app().await;
    catalogue(&app).await;
    let queries = [
        "q=pen&facets=category,attr.colour",
        "category=office&sort=price_desc",
        "q=cafe",
        "sort=newest",
    ];
    let mut before = Vec::new();
    for q in queries {
        before.push(search(&app, q).await.body);
    }
    project(&app).await;
    for (q, expected) in queries.iter().zip(before) {
        assert_eq!(search(&app, q).await.body, expected, "{q}");
    }
    let drift = projections::replay::verify(&app.db.pool).await.unwrap();
    assert!(drift.is_empty(), "{drift:?}");
}
