//! `replay`: rebuilds into shadow tables and swaps them in while workers
//! apply events, equal to a rebuild from scratch, nothing missed or doubled.

use std::sync::atomic::{AtomicBool, Ordering};

use projections::replay::verify;
use projections::replay::{Progress, Quiet, ReplayOptions, SHADOW_SCHEMA};
use projections::{replay, Projection, ReplayError};
use schemas::EventEnvelope;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{eur, live_from_scratch, Env, Recorder};

/// A small shop: a product, `users` users with an order each, paid,
/// declined, shipped or refunded, names and details changing. Returns the
/// envelopes in the order recorded.
async fn shop(r: &mut Recorder, users: usize) -> Vec<EventEnvelope> {
    let mut events = Vec::new();
    let product = Uuid::now_v7();
    events.push(
        r.record(
            "product",
            product,
            "ProductCreated",
            json!({
                "product_id": product, "sku": format!("SKU-{product}"), "name": "Lamp",
                "description": "bright", "price": eur(1500), "stock": 1000
            }),
        )
        .await,
    );
    // Version 1 of the stock adjustment: `delta`, upcast on every read.
    events.push(
        r.record(
            "product",
            product,
            "ProductStockAdjusted",
            json!({"delta": 7}),
        )
        .await,
    );
    for u in 0..users {
        let (user, order, payment) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        events.push(r.record("user", user, "UserRegistered", json!({
            "user_id": user, "email": format!("U{u}@Example.com"), "name": format!("User {u}")
        })).await);
        events.push(
            r.record(
                "order",
                order,
                "OrderPlaced",
                json!({
                    "order_id": order, "user_id": user,
                    "lines": [{"product_id": product, "quantity": 2, "unit_price": eur(1500)}],
                    "total": eur(3000), "payment_token": "tok_ok"
                }),
            )
            .await,
        );
        events.push(
            r.record(
                "product",
                product,
                "StockReserved",
                json!({"order_id": order, "quantity": 2}),
            )
            .await,
        );
        events.push(
            r.record(
                "payment",
                payment,
                "PaymentRequested",
                json!({
                    "payment_id": payment, "order_id": order, "amount": eur(3000), "token": "tok_ok"
                }),
            )
            .await,
        );
        events.push(
            r.record(
                "order",
                order,
                "OrderPaymentAssigned",
                json!({"payment_id": payment}),
            )
            .await,
        );
        if u % 3 == 0 {
            events.push(
                r.record(
                    "payment",
                    payment,
                    "PaymentDeclined",
                    json!({"reason": "declined"}),
                )
                .await,
            );
            events.push(
                r.record(
                    "product",
                    product,
                    "StockReservationReleased",
                    json!({"order_id": order, "quantity": 2}),
                )
                .await,
            );
            events.push(
                r.record(
                    "order",
                    order,
                    "OrderCancelled",
                    json!({"reason": "payment_declined", "previous_status": "pending"}),
                )
                .await,
            );
        } else {
            events.push(
                r.record(
                    "payment",
                    payment,
                    "PaymentAttemptFailed",
                    json!({"error": "503"}),
                )
                .await,
            );
            events.push(
                r.record(
                    "payment",
                    payment,
                    "PaymentAuthorized",
                    json!({"authorization_id": "a"}),
                )
                .await,
            );
            events.push(
                r.record("payment", payment, "PaymentCaptured", json!({}))
                    .await,
            );
            events.push(
                r.record(
                    "product",
                    product,
                    "StockReservationCommitted",
                    json!({"order_id": order, "quantity": 2}),
                )
                .await,
            );
            events.push(r.record("order", order, "OrderConfirmed", json!({})).await);
            events.push(r.record("order", order, "OrderShipped", json!({})).await);
            if u % 3 == 1 {
                events.push(
                    r.record("payment", payment, "PaymentRefunded", json!({}))
                        .await,
                );
                events.push(
                    r.record(
                        "order",
                        order,
                        "OrderCancelled",
                        json!({"reason": "refunded", "previous_status": "shipped"}),
                    )
                    .await,
                );
            }
        }
        events.push(
            r.record(
                "user",
                user,
                "UserNameChanged",
                json!({"name": format!("User {u} renamed")}),
            )
            .await,
        );
        if u % 4 == 0 {
            events.push(r.record("user", user, "UserEmailChanged", json!({"previous_email": format!("U{u}@Example.com"), "email": format!("New{u}@Example.com")})).await);
        }
    }
    events.push(
        r.record(
            "product",
            product,
            "ProductDetailsUpdated",
            json!({"name": "Lamp 2", "description": null}),
        )
        .await,
    );
    events.push(
        r.record(
            "product",
            product,
            "ProductPriceChanged",
            json!({"price": eur(1700)}),
        )
        .await,
    );
    // A type no model knows: the row only counts one more event.
    events.push(
        r.record("product", product, "ProductTagged", json!({"tag": "x"}))
            .await,
    );
    events
}

/// These tests store hand-made rows on purpose, among them an event type no
/// model or schema knows (`ProductTagged`) and a poison payload, so the
/// schema check at teardown is off for them.
async fn env() -> Env {
    let env = Env::new().await;
    env.db.allow_invalid_events();
    env
}

/// Aggregates whose recorded sequence in `projection_applied` is not their
/// last event's.
async fn misrecorded(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM projection_applied p
           JOIN (SELECT aggregate_type, aggregate_id, max(sequence) AS last FROM events
                  GROUP BY 1, 2) e USING (aggregate_type, aggregate_id)
          WHERE p.sequence <> e.last",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Every row of every read model, as text, sorted: to compare two builds.
async fn table_rows(pool: &PgPool) -> Vec<String> {
    let mut rows = Vec::new();
    for projection in Projection::ALL {
        for table in projection.tables() {
            let mut these: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT '{table}: ' || (to_jsonb(t) - 'updated_at')::text FROM {table} t"
            ))
            .fetch_all(pool)
            .await
            .unwrap();
            rows.append(&mut these);
        }
    }
    rows.sort();
    rows
}

fn options(batch: usize) -> ReplayOptions {
    ReplayOptions {
        batch,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fold_equals_the_live_path() {
    let env = env().await;
    let mut r = Recorder::new(env.pool());
    let events = shop(&mut r, 7).await;

    let report = replay(env.pool(), &options(13), &mut Quiet).await.unwrap();
    assert!(report.swapped);
    assert_eq!(report.events, events.len() as u64);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(misrecorded(env.pool()).await, 0);
    let swapped = table_rows(env.pool()).await;
    assert_eq!(live_from_scratch(env.pool(), 5).await, Vec::<String>::new());
    assert_eq!(table_rows(env.pool()).await, swapped);
    replay(env.pool(), &options(13), &mut Quiet).await.unwrap();

    // The v1 adjustment counted: 1000 + 7, less 2 per order not cancelled
    // by a decline (users 1, 2, 4, 5), the refunded ones included.
    let available: i64 = sqlx::query_scalar("SELECT available FROM rm_products")
        .fetch_one(env.pool())
        .await
        .unwrap();
    assert_eq!(available, 1007 - 2 * 4);
    // The swapped-in table has the migration's index and constraint names.
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'rm_products' ORDER BY 1",
    )
    .fetch_all(env.pool())
    .await
    .unwrap();
    assert_eq!(
        indexes,
        [
            "rm_products_attributes",
            "rm_products_categories",
            "rm_products_name",
            "rm_products_newest",
            "rm_products_pkey",
            "rm_products_price",
            "rm_products_search",
            "rm_products_sku_lower",
            "rm_products_status"
        ]
    );
    // With their storage options (a bounded GIN pending list, migration
    // 0017), and with statistics for the planner from the first query on.
    let options: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND 'gin_pending_list_limit=64' = ANY(c.reloptions) ORDER BY 1",
    )
    .fetch_all(env.pool())
    .await
    .unwrap();
    assert_eq!(
        options,
        [
            "rm_products_attributes",
            "rm_products_categories",
            "rm_products_search"
        ]
    );
    let analyzed: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_statistic WHERE starelid = 'public.rm_products'::regclass)",
    )
    .fetch_one(env.pool())
    .await
    .unwrap();
    assert!(analyzed, "the swapped-in table has statistics");
    // And its triggers: the search vocabulary still learns a new product's
    // words, for typo search, after the swap.
    let triggers: Vec<String> = sqlx::query_scalar(
        "SELECT tgname::text FROM pg_trigger WHERE tgrelid = 'public.rm_products'::regclass
             AND NOT tgisinternal ORDER BY 1",
    )
    .fetch_all(env.pool())
    .await
    .unwrap();
    assert_eq!(
        triggers,
        [
            "rm_products_learn_words_insert",
            "rm_products_learn_words_update"
        ]
    );
    sqlx::query("UPDATE rm_products SET description = 'a marmalade jar'")
        .execute(env.pool())
        .await
        .unwrap();
    let learnt: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM rm_search_words WHERE word = 'marmalade')",
    )
    .fetch_one(env.pool())
    .await
    .unwrap();
    assert!(learnt, "the swapped-in table teaches the vocabulary");
    let unique: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_constraint WHERE conname = 'rm_notifications_source_key' AND contype = 'u'
             AND conrelid = 'public.rm_notifications'::regclass",
    )
    .fetch_one(env.pool())
    .await
    .unwrap();
    assert_eq!(unique, 1);
    let applied_key: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_constraint WHERE conname = 'projection_applied_pkey' AND contype = 'p'
             AND conrelid = 'public.projection_applied'::regclass",
    )
    .fetch_one(env.pool())
    .await
    .unwrap();
    assert_eq!(applied_key, 1);
    let shadow: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(SHADOW_SCHEMA)
            .fetch_one(env.pool())
            .await
            .unwrap();
    assert!(!shadow, "the shadow schema is dropped after the swap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_while_commands_flow_misses_and_doubles_nothing() {
    let env = env().await;
    let workers = env.start(&Projection::ALL);
    let mut r = Recorder::new(env.pool());
    for e in shop(&mut r, 15).await {
        env.publish(&e).await;
    }
    env.drained(&Projection::ALL).await;

    let stop = AtomicBool::new(false);
    let writer = async {
        let mut written = 0u64;
        while !stop.load(Ordering::SeqCst) {
            for e in shop(&mut r, 1).await {
                env.publish(&e).await;
                written += 1;
            }
        }
        written
    };
    let replayer = async {
        let report = replay(env.pool(), &options(20), &mut Quiet).await;
        stop.store(true, Ordering::SeqCst);
        report
    };
    let (written, report) = tokio::join!(writer, replayer);
    let report = report.unwrap();
    assert!(report.swapped);
    assert!(written > 0);
    // And after the swap the workers go on with the new tables.
    for e in shop(&mut r, 2).await {
        env.publish(&e).await;
    }
    env.drained(&Projection::ALL).await;
    workers.stop().await;

    assert_eq!(verify(env.pool()).await.unwrap(), Vec::<String>::new());
    assert_eq!(misrecorded(env.pool()).await, 0);
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(env.pool())
        .await
        .unwrap();
    assert_eq!(dead, 0);
    let runs: Vec<(String, String)> = sqlx::query_as(
        "SELECT projection, outcome FROM replay_runs WHERE mode = 'replay' ORDER BY projection",
    )
    .fetch_all(env.pool())
    .await
    .unwrap();
    assert_eq!(runs.len(), Projection::ALL.len());
    assert!(
        runs.iter().all(|(_, outcome)| outcome == "swapped"),
        "{runs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_a_drifted_row_and_a_replay_repairs_it() {
    let env = env().await;
    let mut r = Recorder::new(env.pool());
    let events = shop(&mut r, 4).await;
    replay(env.pool(), &ReplayOptions::default(), &mut Quiet)
        .await
        .unwrap();

    let verify = ReplayOptions {
        verify: true,
        ..Default::default()
    };
    let healthy = replay(env.pool(), &verify, &mut Quiet).await.unwrap();
    assert!(!healthy.swapped);
    assert_eq!(healthy.drift, Vec::<String>::new());

    let product = &events[0].aggregate_id;
    sqlx::query("UPDATE rm_products SET available = available + 1 WHERE id = $1::uuid")
        .bind(product)
        .execute(env.pool())
        .await
        .unwrap();
    let only_products = ReplayOptions {
        projections: vec![Projection::Products],
        verify: true,
        ..Default::default()
    };
    let drifted = replay(env.pool(), &only_products, &mut Quiet)
        .await
        .unwrap();
    assert!(!drifted.swapped);
    assert_eq!(drifted.drift.len(), 2, "{:#?}", drifted.drift);
    assert!(drifted
        .drift
        .iter()
        .all(|l| l.starts_with("rm_products:") && l.contains(product.as_str())));
    // Verifying swapped nothing: the corruption is still there.
    let available: i64 =
        sqlx::query_scalar("SELECT available FROM rm_products WHERE id = $1::uuid")
            .bind(product)
            .fetch_one(env.pool())
            .await
            .unwrap();
    assert_eq!(available, 1007 - 2 * 2 + 1);

    let repaired = replay(
        env.pool(),
        &ReplayOptions {
            projections: vec![Projection::Products],
            ..Default::default()
        },
        &mut Quiet,
    )
    .await
    .unwrap();
    assert!(repaired.swapped);
    assert!(replay(env.pool(), &verify, &mut Quiet)
        .await
        .unwrap()
        .drift
        .is_empty());

    let last = projections::replay::last_runs(env.pool()).await.unwrap();
    assert_eq!(last.len(), Projection::ALL.len());
    assert!(last
        .values()
        .all(|run| run.outcome == "verified" && run.mode == "verify"));
    let products: Vec<String> = sqlx::query_scalar(
        "SELECT outcome FROM replay_runs WHERE projection = 'products' ORDER BY id",
    )
    .fetch_all(env.pool())
    .await
    .unwrap();
    assert_eq!(
        products,
        ["swapped", "verified", "drifted", "swapped", "verified"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replay_is_refused_while_one_runs() {
    let env = env().await;
    let mut r = Recorder::new(env.pool());
    shop(&mut r, 2).await;
    // What a running replay holds: its session lock and its runs.
    let mut running = env.pool().acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(1634168690, 0)")
        .execute(&mut *running)
        .await
        .unwrap();
    sqlx::query("INSERT INTO replay_runs (projection, mode) VALUES ('orders', 'replay')")
        .execute(&mut *running)
        .await
        .unwrap();

    let refused = replay(env.pool(), &ReplayOptions::default(), &mut Quiet).await;
    let Err(error @ ReplayError::Busy(_)) = refused else {
        panic!("a second replay ran: {refused:?}");
    };
    let message = error.to_string();
    assert!(message.contains("another replay is running"), "{message}");
    assert!(message.contains("rebuilding orders since"), "{message}");
    let empty: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_users")
        .fetch_one(env.pool())
        .await
        .unwrap();
    assert_eq!(empty, 0, "the refused replay built nothing");

    sqlx::query("SELECT pg_advisory_unlock(1634168690, 0)")
        .execute(&mut *running)
        .await
        .unwrap();
    let report = replay(env.pool(), &ReplayOptions::default(), &mut Quiet)
        .await
        .unwrap();
    assert!(report.swapped);
    let interrupted: String = sqlx::query_scalar(
        "SELECT outcome FROM replay_runs WHERE projection = 'orders' ORDER BY id LIMIT 1",
    )
    .fetch_one(env.pool())
    .await
    .unwrap();
    assert_eq!(interrupted, "interrupted");
}

/// Signals when a stage starts.
struct StopAt {
    stage: &'static str,
    reached: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Progress for StopAt {
    fn stage(&mut self, name: &str, _: u64) {
        if name == self.stage {
            if let Some(reached) = self.reached.take() {
                let _ = reached.send(());
            }
        }
    }
    fn advance(&mut self, _: u64) {}
    fn finish(&mut self) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replay_leaves_the_live_model_and_the_next_starts_clean() {
    let env = env().await;
    let mut r = Recorder::new(env.pool());
    shop(&mut r, 5).await;
    replay(env.pool(), &ReplayOptions::default(), &mut Quiet)
        .await
        .unwrap();
    let before: Vec<String> = sqlx::query_scalar("SELECT row_to_json(p)::text FROM rm_products p")
        .fetch_all(env.pool())
        .await
        .unwrap();
    // Events the stopped replay would have brought in.
    shop(&mut r, 2).await;

    // Stopped (its future dropped, as Ctrl-C does) once its shadow is built.
    let all = ReplayOptions::default();
    let (reached, stopped) = tokio::sync::oneshot::channel();
    let mut progress = StopAt {
        stage: "catching up",
        reached: Some(reached),
    };
    tokio::select! {
        result = replay(env.pool(), &all, &mut progress) => {
            panic!("the replay ended before it was stopped: {result:?}")
        }
        _ = stopped => {}
    }
    let after: Vec<String> = sqlx::query_scalar("SELECT row_to_json(p)::text FROM rm_products p")
        .fetch_all(env.pool())
        .await
        .unwrap();
    assert_eq!(after, before, "the live model is untouched");
    let leftover: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(SHADOW_SCHEMA)
            .fetch_one(env.pool())
            .await
            .unwrap();
    assert!(leftover, "the stopped replay left its shadow behind");

    // The next run starts clean (once the server has seen the stopped run's
    // connection close and its lock go).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let report = loop {
        match replay(env.pool(), &ReplayOptions::default(), &mut Quiet).await {
            Ok(report) => break report,
            Err(ReplayError::Busy(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(other) => panic!("{other}"),
        }
    };
    assert!(report.swapped);
    assert_eq!(verify(env.pool()).await.unwrap(), Vec::<String>::new());
    let outcomes: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT outcome FROM replay_runs WHERE mode = 'replay' ORDER BY 1",
    )
    .fetch_all(env.pool())
    .await
    .unwrap();
    assert_eq!(outcomes, ["interrupted", "swapped"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_recovers_dead_lettered_events() {
    let env = env().await;
    let mut r = Recorder::new(env.pool());
    let product = Uuid::now_v7();
    let created = r
        .record(
            "product",
            product,
            "ProductCreated",
            json!({
                "product_id": product, "sku": "DL-1", "name": "Lamp", "description": null,
                "price": eur(100), "stock": 10
            }),
        )
        .await;
    let adjusted = r
        .record(
            "product",
            product,
            "ProductStockAdjusted",
            json!({"delta": 5}),
        )
        .await;
    projections::apply_batch(env.pool(), &Projection::Products, &[created])
        .await
        .unwrap();
    // What a worker does when it gives up on an event (code that could not
    // apply it, since fixed): a dead letter, and the event marked done.
    sqlx::query(
        "INSERT INTO dead_letters (projection, subject, stream_sequence, aggregate_type, aggregate_id,
             sequence, message, error, deliveries)
         VALUES ('products', 'x', 2, 'product', $1, 2, '{}', 'poison: a bug', 5)",
    )
    .bind(product.to_string())
    .execute(env.pool())
    .await
    .unwrap();
    sqlx::query("UPDATE projection_applied SET sequence = 2 WHERE aggregate_id = $1")
        .bind(product.to_string())
        .execute(env.pool())
        .await
        .unwrap();
    let status = projections::status(env.pool(), &Projection::subscribers())
        .await
        .unwrap();
    assert_eq!(status[1].dead_letters, 1);

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
    assert!(report.swapped);
    let (available, version): (i64, i64) =
        sqlx::query_as("SELECT available, version FROM rm_products WHERE id = $1")
            .bind(product)
            .fetch_one(env.pool())
            .await
            .unwrap();
    assert_eq!((available, version), (15, adjusted.sequence));
    let status = projections::status(env.pool(), &Projection::subscribers())
        .await
        .unwrap();
    assert_eq!(status[1].name, "products");
    assert_eq!(status[1].dead_letters, 0);

    // An event the code still cannot apply stays a dead letter, now the
    // replay's own.
    r.record(
        "product",
        product,
        "ProductPriceChanged",
        json!({"price": "free"}),
    )
    .await;
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
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    let dead: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT subject, sequence, error FROM dead_letters WHERE projection = 'products'",
    )
    .fetch_all(env.pool())
    .await
    .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].0.as_str(), dead[0].1), ("replay", 3));
    assert!(
        dead[0].2.contains("cannot decode ProductPriceChanged"),
        "{}",
        dead[0].2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_batch_waits_while_a_replay_holds_its_projection() {
    let env = env().await;
    let mut r = Recorder::new(env.pool());
    let events = shop(&mut r, 1).await;
    let (products, users): (Vec<EventEnvelope>, Vec<EventEnvelope>) = events
        .into_iter()
        .filter(|e| e.aggregate_type == "product" || e.aggregate_type == "user")
        .partition(|e| e.aggregate_type == "product");

    // What the swap holds: the products lock (key 2), exclusively.
    let mut swap = env.pool().begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(1634168690, 2)")
        .execute(&mut *swap)
        .await
        .unwrap();
    let pool = env.pool().clone();
    let batch = tokio::spawn(async move {
        projections::apply_batch(&pool, &Projection::Products, &products).await
    });
    crate::support::eventually("the live batch waits for the lock", || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
                 AND classid::bigint = 1634168690 AND objid::bigint = 2 AND NOT granted)",
        )
        .fetch_one(env.pool())
        .await
        .unwrap()
    })
    .await;
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_products")
        .fetch_one(&mut *swap)
        .await
        .unwrap();
    assert_eq!(written, 0, "nothing applied while the lock is held");
    // Other projections are not held up.
    let outcomes = projections::apply_batch(env.pool(), &Projection::Users, &users)
        .await
        .unwrap();
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, projections::Outcome::Applied(_))));
    swap.commit().await.unwrap();

    let outcomes = batch.await.unwrap().unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, projections::Outcome::Applied(_))),
        "{outcomes:?}"
    );
}

/// A rolling deploy runs builds side by side: a replay of one and the live
/// workers of another must take the same lock for the same projection. The
/// ids are those builds before this one derived from the order of
/// `Projection::ALL` (its index + 1), fixed now. An older build's live batch
/// of notifications (a shared hold of id 5) keeps this build's replay from
/// swapping, while it holds the others'; and the live batch that waits for a
/// replay of an older build is `a_live_batch_waits_while_a_replay_holds_its_projection`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_takes_the_locks_every_build_takes() {
    let env = env().await;
    let mut r = Recorder::new(env.pool());
    shop(&mut r, 1).await;
    let mut old_batch = env.pool().begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock_shared(1634168690, 5)")
        .execute(&mut *old_batch)
        .await
        .unwrap();
    let pool = env.pool().clone();
    let replaying =
        tokio::spawn(async move { replay(&pool, &ReplayOptions::default(), &mut Quiet).await });
    let locks = || async {
        sqlx::query_as::<_, (i64, String, bool)>(
            "SELECT objid::bigint, mode, granted FROM pg_locks WHERE locktype = 'advisory'
                 AND classid::bigint = 1634168690 AND pid <> pg_backend_pid()
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
               ORDER BY 1, 3",
        )
        .fetch_all(env.pool())
        .await
        .unwrap()
    };
    crate::support::eventually("the replay waits for the older build's batch", || async {
        locks()
            .await
            .iter()
            .any(|(id, _, granted)| *id == 5 && !granted)
    })
    .await;
    let exclusive = |id: i64, granted: bool| (id, "ExclusiveLock".to_owned(), granted);
    assert_eq!(
        locks().await,
        [
            // The replay's own, then users, products, orders, payments.
            exclusive(0, true),
            exclusive(1, true),
            exclusive(2, true),
            exclusive(3, true),
            exclusive(4, true),
            exclusive(5, false),
            // The older build's batch.
            (5, "ShareLock".to_owned(), true),
        ]
    );
    old_batch.commit().await.unwrap();
    let report = replaying.await.unwrap().unwrap();
    assert!(report.swapped);
}
