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
mod checkout;
mod flash;
mod history;
mod integrations;
mod load;
mod orders;
mod pipeline;
mod processes;
mod replay;
mod report;
mod search;
mod stock;
mod system;
mod throughput;

use report::Table;

pub struct Settings {
    pub quick: bool,
    pub reps: usize,
    pub only: Option<String>,
    /// Where `latest.json` and `latest.svg` go: by default `ops/bench/` for
    /// a measurement (the README shows them), a temporary directory for
    /// `--quick`.
    pub out: Option<std::path::PathBuf>,
}

fn settings() -> Settings {
    let mut settings = Settings {
        quick: false,
        reps: 3,
        only: None,
        out: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => settings.quick = true,
            "--reps" => {
                settings.reps = args.next().and_then(|n| n.parse().ok()).unwrap_or(3).max(1)
            }
            "--only" => settings.only = args.next(),
            "--out" => settings.out = args.next().map(Into::into),
            _ => {
                eprintln!("usage: agora-bench [--quick] [--reps N] [--out DIR] [--only system|commands|stock|history|relay|reads|latency|catchup|orders|flash|replay|integrations|search|checkout]; agora-bench load --base URL --connections N --seconds S --products ID,... [--orders-for USER --total N]; agora-bench search-load --base URL --seconds S");
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
    if std::env::args().nth(1).as_deref() == Some("load") {
        return load::client(load::LoadArgs::parse(std::env::args().skip(2))?).await;
    }
    if std::env::args().nth(1).as_deref() == Some("search-load") {
        return search::client(std::env::args().skip(2)).await;
    }
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
    if wants("system") {
        system::run(&settings, &mut table).await?;
    }
    if wants("commands") {
        throughput::run(&settings, &mut table).await?;
    }
    if wants("stock") {
        stock::run(&settings, &mut table).await?;
    }
    if wants("history") {
        history::run(&settings, &mut table).await?;
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
    if wants("flash") {
        flash::run(&settings, &mut table).await?;
    }
    if wants("replay") {
        replay::run(&settings, &mut table).await?;
    }
    if wants("integrations") {
        integrations::run(&settings, &mut table).await?;
    }
    if wants("search") {
        search::run(&settings, &mut table).await?;
    }
    if wants("checkout") {
        checkout::run(&settings, &mut table).await?;
    }
    table.print();
    let out = settings.out.clone().unwrap_or_else(|| {
        if settings.quick {
            std::env::temp_dir().join("agora-bench")
        } else {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench")
        }
    });
    table.write(&out)?;
    println!("\nwrote {}", out.join("latest.json").display());
    Ok(())
}
