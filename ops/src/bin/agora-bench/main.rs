//! The benchmark harness. Every workload is measured beside a baseline run in
//! the same process and the same invocation, so the ratio holds however noisy
//! the shared machine is; each runs after a warm-up and is repeated, and the
//! table shows the median and the spread.
//!
//! `cargo run --release -p ops --bin agora-bench -- [--quick] [--reps N] [--only NAME]`
//!
//! `--quick` is the smoke mode CI runs: tiny numbers, a few seconds, so the
//! harness cannot rot. Needs Postgres and NATS as the tests do.

mod catchup;
mod orders;
mod pipeline;
mod replay;
mod report;
mod stock;
mod throughput;

use report::Table;

pub struct Settings {
    pub quick: bool,
    pub reps: usize,
    pub only: Option<String>,
}

fn settings() -> Settings {
    let mut settings = Settings {
        quick: false,
        reps: 3,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => settings.quick = true,
            "--reps" => {
                settings.reps = args.next().and_then(|n| n.parse().ok()).unwrap_or(3).max(1)
            }
            "--only" => settings.only = args.next(),
            _ => {
                eprintln!("usage: agora-bench [--quick] [--reps N] [--only commands|stock|relay|reads|latency|catchup|orders|replay]");
                std::process::exit(2);
            }
        }
    }
    if settings.quick {
        settings.reps = settings.reps.min(1);
    }
    settings
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = settings();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "agora-bench{}: load client, server, Postgres and NATS share this machine's {cores} cores; {} repetition(s) after a warm-up.\n",
        if settings.quick { " --quick (smoke: tiny numbers, not a measurement)" } else { "" },
        settings.reps
    );
    let mut table = Table::default();
    let wants = |name: &str| settings.only.as_deref().is_none_or(|only| only == name);
    if wants("commands") {
        throughput::run(&settings, &mut table).await?;
    }
    if wants("stock") {
        stock::run(&settings, &mut table).await?;
    }
    if wants("relay") {
        pipeline::relay(&settings, &mut table).await?;
    }
    if wants("reads") {
        pipeline::cached_reads(&settings, &mut table).await?;
    }
    if wants("latency") {
        pipeline::write_to_read(&settings, &mut table).await?;
    }
    if wants("catchup") {
        catchup::run(&settings, &mut table).await?;
    }
    if wants("orders") {
        orders::run(&settings, &mut table).await?;
    }
    if wants("replay") {
        replay::run(&settings, &mut table).await?;
    }
    table.print();
    Ok(())
}
