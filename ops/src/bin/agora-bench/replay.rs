//! Replay: events/s of `agora replay` rebuilding all five read models from
//! the events table, against `COPY (SELECT ... ORDER BY position) TO STDOUT`
//! of the same rows through the same driver.

use std::time::Instant;

use futures::StreamExt;
use projections::replay::{Progress, Quiet, ReplayOptions};
use testkit::TestDatabase;

use crate::report::{median, spread, Row, Table};
use crate::Settings;

/// A shop's history written by SQL: products, users who register and are
/// renamed, orders that are placed, reserve stock, are paid, confirmed and
/// shipped, and stock adjustments at version 1 (upcast on read). Per
/// aggregate, sequences are dense and follow positions. Returns the count.
pub(crate) async fn seed(db: &TestDatabase, events: i64) -> anyhow::Result<i64> {
    let orders = events / 10;
    let users = (events / 25).max(1);
    let products = (events / 1000).max(5);
    let adjustments = events - 9 * orders - 2 * users - products;
    let time = "to_char(timestamp '2026-01-01' + n * interval '1 millisecond', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')";
    let meta = format!(
        "jsonb_build_object('correlation_id', 'bench-' || n, 'causation_id', 'bench-' || n, 'actor', 'bench', 'time', {time})"
    );
    let insert = "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)";
    let statements = [
        format!(
            "{insert} SELECT 'product', md5('product' || g)::uuid::text, 1, 'ProductCreated', '1.0',
                 jsonb_build_object('ProductCreated', jsonb_build_object('product_id', md5('product' || g)::uuid,
                     'sku', 'SKU-' || g, 'name', 'Product ' || g, 'description', 'A fine thing',
                     'price', jsonb_build_object('amount', 1500, 'currency', 'EUR'), 'stock', 1000000000)),
                 {meta}
               FROM generate_series(0, $1 - 1) AS g, LATERAL (SELECT g AS n) t ORDER BY g"
        ),
        format!(
            "{insert} SELECT 'user', md5('user' || g)::uuid::text, 1, 'UserRegistered', '1.0',
                 jsonb_build_object('UserRegistered', jsonb_build_object('user_id', md5('user' || g)::uuid,
                     'email', 'User' || g || '@Example.com', 'name', 'User ' || g)),
                 {meta}
               FROM generate_series(0, $2 - 1) AS g, LATERAL (SELECT g AS n) t ORDER BY g"
        ),
        format!(
            "{insert} SELECT e.t, e.id, e.s, e.et, '1.0', jsonb_build_object(e.et, e.data), {meta}
               FROM generate_series(0, $3 - 1) AS o,
               LATERAL (SELECT md5('order' || o)::uuid AS oid, md5('payment' || o)::uuid AS pid,
                               md5('product' || (o % $1))::uuid AS prod, md5('user' || (o % $2))::uuid AS uid,
                               o / $1 AS k,
                               jsonb_build_object('amount', 3000, 'currency', 'EUR') AS total) v,
               LATERAL (VALUES
                 (1, 'order', v.oid::text, 1::int8, 'OrderPlaced', jsonb_build_object('order_id', v.oid,
                     'user_id', v.uid, 'lines', jsonb_build_array(jsonb_build_object('product_id', v.prod,
                     'quantity', 2, 'unit_price', jsonb_build_object('amount', 1500, 'currency', 'EUR'))),
                     'total', v.total, 'payment_token', 'tok_ok')),
                 (2, 'product', v.prod::text, 2 + 2 * v.k, 'StockReserved',
                     jsonb_build_object('order_id', v.oid, 'quantity', 2)),
                 (3, 'payment', v.pid::text, 1, 'PaymentRequested', jsonb_build_object('payment_id', v.pid,
                     'order_id', v.oid, 'amount', v.total, 'token', 'tok_ok')),
                 (4, 'order', v.oid::text, 2, 'OrderPaymentAssigned', jsonb_build_object('payment_id', v.pid)),
                 (5, 'payment', v.pid::text, 2, 'PaymentAuthorized', jsonb_build_object('authorization_id', 'auth-' || o)),
                 (6, 'payment', v.pid::text, 3, 'PaymentCaptured', '{{}}'::jsonb),
                 (7, 'product', v.prod::text, 3 + 2 * v.k, 'StockReservationCommitted',
                     jsonb_build_object('order_id', v.oid, 'quantity', 2)),
                 (8, 'order', v.oid::text, 3, 'OrderConfirmed', '{{}}'::jsonb),
                 (9, 'order', v.oid::text, 4, 'OrderShipped', '{{}}'::jsonb)
               ) AS e(step, t, id, s, et, data),
               LATERAL (SELECT o * 9 + e.step AS n) t
              ORDER BY o, e.step"
        ),
        format!(
            "{insert} SELECT 'user', md5('user' || g)::uuid::text, 2, 'UserNameChanged', '1.0',
                 jsonb_build_object('UserNameChanged', jsonb_build_object('name', 'User ' || g || ' renamed')),
                 {meta}
               FROM generate_series(0, $2 - 1) AS g, LATERAL (SELECT g AS n) t ORDER BY g"
        ),
        format!(
            "{insert} SELECT 'product', md5('product' || (g % $1))::uuid::text,
                 2 + 2 * (($3 - (g % $1) + $1 - 1) / $1) + g / $1, 'ProductStockAdjusted', '1.0',
                 jsonb_build_object('ProductStockAdjusted', jsonb_build_object('delta', 5)),
                 {meta}
               FROM generate_series(0, $4 - 1) AS g, LATERAL (SELECT g AS n) t ORDER BY g"
        ),
    ];
    for statement in &statements {
        sqlx::query(statement)
            .bind(products)
            .bind(users)
            .bind(orders)
            .bind(adjustments)
            .execute(&db.pool)
            .await?;
    }
    sqlx::query("VACUUM ANALYZE events")
        .execute(&db.pool)
        .await?;
    Ok(sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await?)
}

/// Seconds spent in each stage of a replay, for the notes beside the figure.
#[derive(Default)]
struct Stages {
    current: Option<(String, Instant)>,
    spent: Vec<(String, f64)>,
}

impl Progress for Stages {
    fn stage(&mut self, name: &str, _: u64) {
        self.finish();
        self.current = Some((name.to_owned(), Instant::now()));
    }
    fn advance(&mut self, _: u64) {}
    fn finish(&mut self) {
        if let Some((name, started)) = self.current.take() {
            self.spent.push((name, started.elapsed().as_secs_f64()));
        }
    }
}

/// Rows/s of `COPY` of the events, in position order, to this process.
async fn copy_rate(db: &TestDatabase, events: i64) -> anyhow::Result<f64> {
    let mut conn = db.pool.acquire().await?;
    let started = Instant::now();
    let mut stream = conn
        .copy_out_raw(
            "COPY (SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload,
                          metadata, position, recorded_at FROM events ORDER BY position) TO STDOUT",
        )
        .await?;
    let mut bytes = 0usize;
    while let Some(chunk) = stream.next().await {
        bytes += chunk?.len();
    }
    anyhow::ensure!(bytes > 0, "COPY returned nothing");
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

pub async fn run(settings: &Settings, table: &mut Table) -> anyhow::Result<()> {
    let wanted: i64 = if settings.quick { 5_000 } else { 1_000_000 };
    let db = TestDatabase::with_pool_size(8).await;
    let started = Instant::now();
    let events = seed(&db, wanted).await?;
    println!(
        "  replay: {events} events seeded in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Warm-up: both read the table once.
    copy_rate(&db, events).await?;
    projections::replay(&db.pool, &ReplayOptions::default(), &mut Quiet).await?;

    let (mut replayed, mut copied) = (Vec::new(), Vec::new());
    for _ in 0..settings.reps {
        copied.push(copy_rate(&db, events).await?);
        let started = Instant::now();
        let mut stages = Stages::default();
        let report = projections::replay(&db.pool, &ReplayOptions::default(), &mut stages).await?;
        let seconds = started.elapsed().as_secs_f64();
        let spent: Vec<String> = stages
            .spent
            .iter()
            .map(|(name, s)| format!("{name} {s:.2} s"))
            .collect();
        println!(
            "  replay: {seconds:.2} s: {} (build: {:.2} s waiting for pages, {:.2} s folding)",
            spent.join(", "),
            report.build_waited.as_secs_f64(),
            report.build_folded.as_secs_f64()
        );
        anyhow::ensure!(report.swapped, "the replay did not swap");
        anyhow::ensure!(
            report.events == events as u64 && report.failures.is_empty(),
            "the replay read {} of {events} events, {} failures",
            report.events,
            report.failures.len()
        );
        replayed.push(events as f64 / seconds);
    }
    // The build holds the read models (not the events) in memory.
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        if let Some(peak) = status.lines().find(|l| l.starts_with("VmHWM")) {
            println!(
                "  replay: peak resident memory of the harness: {}",
                peak.trim_start_matches("VmHWM:").trim()
            );
        }
    }
    let (figure, baseline) = (median(&replayed), median(&copied));
    table.push(Row {
        workload: format!("Replay: full rebuild of all read models, {events} events"),
        figure: format!("{figure:.0} events/s"),
        baseline: format!("{baseline:.0} rows/s `COPY (SELECT ... ORDER BY position) TO STDOUT`"),
        ratio: Some(figure / baseline),
        goal: "≥ 0.25".to_owned(),
        spread: format!("{} vs {}", spread(&replayed), spread(&copied)),
        notes: "build, bulk write, indexes, catch-up and swap".to_owned(),
    });
    Ok(())
}
