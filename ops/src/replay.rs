//! `agora replay`: rebuild read models from the events table and swap them
//! in (`projections::replay` does the work), with progress on the terminal.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use projections::replay::{Progress, ReplayOptions};
use projections::{Projection, ReplayError};

use crate::cli::ReplayArgs;
use crate::config::Config;

pub async fn run(config: &Config, args: &ReplayArgs) -> anyhow::Result<()> {
    if args.status {
        return crate::status::run(config).await;
    }
    let pool = crate::migrate::connect(config, 6).await?;
    let options = ReplayOptions {
        projections: args.projections.clone(),
        verify: args.verify,
        batch: args.batch,
    };
    let mut progress = Shown::new(std::io::stdout().is_terminal());
    let result = tokio::select! {
        result = projections::replay(&pool, &options, &mut progress) => result,
        _ = tokio::signal::ctrl_c() => {
            progress.finish();
            eprintln!("agora replay: interrupted; the live read models are untouched");
            // The replay's connections closed with it, ending its
            // transactions and its lock; clear what it built.
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if projections::replay::abandon(&pool).await.is_ok() {
                    break;
                }
            }
            anyhow::bail!("replay interrupted");
        }
    };
    let report = match result {
        Ok(report) => report,
        Err(ReplayError::Busy(holder)) => {
            anyhow::bail!("another replay is running ({holder}); wait for it to finish, or stop it, then try again")
        }
        Err(error) => {
            return Err(error).context("replay failed; the live read models are untouched")
        }
    };

    let applied: Vec<String> = report
        .applied
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    println!(
        "read {} events (up to position {}), {} more while catching up; applied: {}",
        report.events,
        report.position,
        report.caught_up,
        applied.join(", ")
    );
    for failure in &report.failures {
        println!("could not apply: {}", failure.describe());
    }
    if args.verify {
        if report.drift.is_empty() {
            println!("verified: the live read models equal a rebuild from the events");
            return Ok(());
        }
        for line in &report.drift {
            println!("drift: {line}");
        }
        anyhow::bail!(
            "{} rows differ between the live read models and a rebuild; `agora replay` repairs them",
            report.drift.len()
        );
    }
    println!("swapped in the rebuilt read models");
    if !report.failures.is_empty() {
        println!(
            "{} events could not be applied; they are the projections' dead letters now",
            report.failures.len()
        );
    }
    announce_rebuilt(config, &options).await;
    Ok(())
}

/// Tells every API process to drop its cached reads: the swapped models may
/// differ anywhere. Best effort: without it, cached entries expire by their
/// time-to-live.
async fn announce_rebuilt(config: &Config, options: &ReplayOptions) {
    let projections = if options.projections.is_empty() {
        Projection::ALL.to_vec()
    } else {
        options.projections.clone()
    };
    let connected = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(&config.nats.url)
        .await;
    let nats = match connected {
        Ok(nats) => nats,
        Err(error) => {
            tracing::warn!(%error, "cannot tell the API to drop its read cache; entries expire by their time-to-live");
            return;
        }
    };
    for projection in projections {
        let subject = schemas::subjects::change(
            &config.nats.prefix,
            projection.name(),
            schemas::subjects::ALL_ROWS,
        );
        if let Err(error) = nats.publish(subject, "0".into()).await {
            tracing::warn!(%error, "cannot announce a rebuilt read model");
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), nats.flush()).await;
}

/// Progress: an indicatif bar on a terminal, a plain line a second otherwise.
struct Shown {
    terminal: bool,
    bar: Option<ProgressBar>,
    stage: String,
    total: u64,
    done: u64,
    started: Instant,
    printed: Instant,
}

impl Shown {
    fn new(terminal: bool) -> Shown {
        Shown {
            terminal,
            bar: None,
            stage: String::new(),
            total: 0,
            done: 0,
            started: Instant::now(),
            printed: Instant::now(),
        }
    }

    fn line(&self) {
        let seconds = self.started.elapsed().as_secs_f64();
        let rate = if seconds > 0.0 {
            self.done as f64 / seconds
        } else {
            0.0
        };
        let eta = if rate > 0.0 && self.total > self.done {
            format!(", ETA {:.0} s", (self.total - self.done) as f64 / rate)
        } else {
            String::new()
        };
        let of = if self.total > 0 {
            format!("/{}", self.total)
        } else {
            String::new()
        };
        println!(
            "replay: {}: {}{of} events, {rate:.0} events/s{eta}",
            self.stage, self.done
        );
    }
}

impl Progress for Shown {
    fn stage(&mut self, name: &str, total: u64) {
        self.stage = name.to_owned();
        self.total = total;
        self.done = 0;
        self.started = Instant::now();
        self.printed = Instant::now();
        if self.terminal {
            let bar = if total > 0 {
                ProgressBar::new(total).with_style(
                    ProgressStyle::with_template(
                        "{msg:>12} [{bar:40}] {human_pos}/{human_len} events, {per_sec}, ETA {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                )
            } else {
                let spinner = ProgressBar::new_spinner();
                spinner.enable_steady_tick(Duration::from_millis(200));
                spinner
            };
            bar.set_message(name.to_owned());
            self.bar = Some(bar);
        } else {
            println!("replay: {name}...");
        }
    }

    fn advance(&mut self, events: u64) {
        self.done += events;
        if let Some(bar) = &self.bar {
            bar.inc(events);
        } else if self.printed.elapsed() >= Duration::from_secs(1) {
            self.printed = Instant::now();
            self.line();
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        } else if !self.stage.is_empty() && self.done > 0 {
            self.line();
        }
    }
}
