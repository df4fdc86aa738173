//! `agora projections`: how far the relay and each projection have come.

use anyhow::Context;
use projections::Projection;

use crate::config::Config;

pub async fn run(config: &Config) -> anyhow::Result<()> {
    let pool = crate::migrate::connect(config, 1).await?;
    let relay_lag = commands::relay::lag(&pool, &config.nats.prefix)
        .await
        .context("reading the relay's checkpoint")?;
    println!(
        "relay ({}): {relay_lag} events not yet published\n",
        config.nats.prefix
    );
    let runs = projections::replay::last_runs(&pool)
        .await
        .context("reading the replay runs")?;
    println!(
        "{:<14} {:>10} {:>8} {:>14} {:>9} {:>12}  {:<32}  last rebuild",
        "projection",
        "position",
        "lag",
        "events applied",
        "repaired",
        "dead letters",
        "last applied"
    );
    // Every subscriber: the projections, and the saga's intake.
    let intake = saga::intake::Intake::new();
    let mut subscribers = Projection::subscribers();
    subscribers.push(&intake);
    for status in projections::status(&pool, &subscribers)
        .await
        .context("reading projection progress")?
    {
        let rebuild = runs.get(&status.name).map_or("never".to_owned(), |run| {
            format!(
                "{} {} {}",
                run.mode,
                run.outcome,
                run.finished_at
                    .map_or("(running)".to_owned(), |t| t.to_rfc3339())
            )
        });
        println!(
            "{:<14} {:>10} {:>8} {:>14} {:>9} {:>12}  {:<32}  {rebuild}",
            status.name,
            status.position,
            status.lag,
            status.events_applied,
            status.repaired,
            status.dead_letters,
            status
                .updated_at
                .map_or("never".to_owned(), |t| t.to_rfc3339())
        );
    }
    Ok(())
}
