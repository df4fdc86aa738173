//! Commands through the whole system as deployed: stock adjustments on 100
//! products through the real `agora serve` (every role in one process, and
//! the roles split across four processes), load from a separate process
//! (`agora-bench load`), beside the Postgres ceiling measured in the same run
//! by `pgbench` (Postgres's own client: `BEGIN; INSERT one event row;
//! COMMIT` on a table of the events table's shape), at the same connection
//! counts. After each run: how far the products projection is behind.

use std::process::Stdio;

use testkit::{TestDatabase, TestNats};

use crate::load::{LoadArgs, Loaded};
use crate::processes::Serve;
use crate::report::{median, spread, Row, Series, Table};
use crate::Settings;

const PRODUCTS: usize = 100;

/// Where the roles run.
#[derive(Clone, Copy, PartialEq)]
enum Layout {
    /// `agora serve` with every role.
    One,
    /// `--role api`, `relay`, `projector` and `saga`, a process each.
    Split,
}

impl Layout {
    fn roles(self) -> &'static [&'static str] {
        match self {
            Layout::One => &["all"],
            Layout::Split => &["api", "relay", "projector", "saga"],
        }
    }

    fn label(self) -> &'static str {
        match self {
            Layout::One => "`agora serve` (all roles, one process)",
            Layout::Split => "`agora serve` roles split (api, relay, projector, saga: 4 processes)",
        }
    }
}

/// One load run against a fresh system: the rate, and the products
/// projection's lag right after the load stopped, in events and in seconds
/// of writes.
struct Run {
    loaded: Loaded,
    lag_events: i64,
}

async fn run_system(layout: Layout, connections: usize, seconds: f64) -> anyhow::Result<Run> {
    let db = TestDatabase::with_pool_size(2).await;
    let nats = TestNats::new().await;
    let client = reqwest::Client::new();
    let mut processes = Vec::new();
    // One client address sends all the load: lift its rate limit.
    let unlimited = [
        ("AGORA_RATE_LIMIT_PER_SECOND", "1000000"),
        ("AGORA_RATE_LIMIT_BURST", "1000000"),
    ];
    for role in layout.roles() {
        processes.push(Serve::start(&db, &nats.prefix, role, &unlimited)?);
    }
    for process in &processes {
        process.ready(&client).await?;
    }
    let base = processes[0].base.clone();
    let mut products = Vec::with_capacity(PRODUCTS);
    for n in 0..PRODUCTS {
        products.push(crate::stock::create_product(&client, &base, &format!("SYS-{n}")).await?);
    }
    let mut load = LoadArgs {
        base,
        connections,
        seconds: 1.0,
        products,
        orders_for: None,
        total: 0,
    };
    load_process(&load).await?; // warm-up
    load.seconds = seconds;
    let loaded = load_process(&load).await?;
    let lag_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events
          WHERE aggregate_type = 'product'
            AND position > coalesce((SELECT position FROM projection_checkpoints WHERE projection = 'products'), 0)",
    )
    .fetch_one(&db.pool)
    .await?;
    drop(processes);
    Ok(Run { loaded, lag_events })
}

/// Runs `agora-bench load` as a child and reads its one line.
pub(crate) async fn load_process(load: &LoadArgs) -> anyhow::Result<Loaded> {
    let output = tokio::process::Command::new(std::env::current_exe()?)
        .args(load.to_args())
        .stderr(Stdio::inherit())
        .output()
        .await?;
    anyhow::ensure!(output.status.success(), "the load client failed");
    Loaded::from_json(&String::from_utf8_lossy(&output.stdout))
}

/// `pgbench`'s transactions per second for the one-row append at
/// `connections` clients.
async fn pgbench(connections: usize, seconds: f64) -> anyhow::Result<f64> {
    let db = TestDatabase::with_pool_size(1).await;
    sqlx::query("CREATE TABLE ceiling (LIKE events INCLUDING ALL)")
        .execute(&db.pool)
        .await?;
    let script = std::env::temp_dir().join(format!("agora-pgbench-{}.sql", db.name));
    std::fs::write(
        &script,
        "BEGIN;\n\
         INSERT INTO ceiling (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('product', gen_random_uuid()::text, 1, 'ProductStockAdjusted', '2.0', \
         '{\"ProductStockAdjusted\": {\"stock_delta\": 1}}', '{\"actor\": \"bench\"}');\n\
         COMMIT;\n",
    )?;
    let output = tokio::process::Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-c", &connections.to_string()])
        .args(["-j", &connections.min(2).to_string()])
        .args(["-T", &format!("{}", seconds.ceil() as u64)])
        .arg("-f")
        .arg(&script)
        .arg(db.url())
        .output()
        .await;
    let _ = std::fs::remove_file(&script);
    let output = output.map_err(|e| {
        anyhow::anyhow!("pgbench (from Postgres's client package) did not run: {e}")
    })?;
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix("tps = ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .ok_or_else(|| anyhow::anyhow!("no tps in pgbench's output: {text}"))
}

pub async fn run(settings: &Settings, table: &mut Table) -> anyhow::Result<()> {
    let (levels, seconds): (&[usize], f64) = if settings.quick {
        (&[1, 8], 1.0)
    } else {
        (&[1, 8, 32, 64], 8.0)
    };
    println!("system: stock adjustments through `agora serve`, load from `agora-bench load`, beside pgbench");
    let mut plotted = Vec::new();
    for layout in [Layout::One, Layout::Split] {
        let mut ours_series = Series::new(layout.label());
        let mut ceiling_series = Series::new("pgbench: BEGIN; INSERT one event row; COMMIT");
        for &connections in levels {
            // The split layout at the goal's level only: four processes.
            if layout == Layout::Split && connections != 8 {
                continue;
            }
            let (mut ours, mut ceilings, mut runs) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..settings.reps {
                let run = run_system(layout, connections, seconds).await?;
                ours.push(run.loaded.per_second);
                runs.push(run);
                ceilings.push(pgbench(connections, seconds).await?);
            }
            let rate = median(&ours);
            let ceiling = median(&ceilings);
            let middle = runs
                .iter()
                .min_by(|a, b| {
                    (a.loaded.per_second - rate)
                        .abs()
                        .total_cmp(&(b.loaded.per_second - rate).abs())
                })
                .map(|run| (run.loaded, run.lag_events))
                .unwrap_or_default();
            let (loaded, lag) = middle;
            let lag_seconds = lag as f64 / rate.max(1.0);
            let failed: u64 = runs.iter().map(|r| r.loaded.failed).sum();
            ours_series.push(connections, rate, loaded.p50_ms, loaded.p99_ms);
            ceiling_series.push(connections, ceiling, 0.0, 0.0);
            table.push(Row {
                workload: format!(
                    "Stock adjustments on {PRODUCTS} products through {}, {connections} connections",
                    layout.label()
                ),
                figure: format!(
                    "{rate:.0} cmd/s (p50 {:.2} ms, p99 {:.2} ms)",
                    loaded.p50_ms, loaded.p99_ms
                ),
                baseline: format!("{ceiling:.0} tx/s pgbench -M prepared"),
                ratio: Some(rate / ceiling.max(1.0)),
                goal: if connections == 8 { "≥ 0.6, lag ≤ 1 s".to_owned() } else { "–".to_owned() },
                spread: format!("{} vs {}", spread(&ours), spread(&ceilings)),
                notes: format!(
                    "load from a separate process; products projection {lag} events ({lag_seconds:.2} s of writes) behind at the end; {failed} failed"
                ),
            });
        }
        if !ours_series.is_empty() {
            plotted.push(ours_series);
        }
        if layout == Layout::One {
            plotted.push(ceiling_series);
        }
    }
    table.plot(plotted);
    Ok(())
}
