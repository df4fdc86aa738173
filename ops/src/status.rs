//! `agora projections`: how far the relay and each projection have come.

use anyhow::Context;

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
    println!(
        "{:<14} {:>10} {:>8} {:>14} {:>12}  last applied",
        "projection", "position", "lag", "events applied", "dead letters"
    );
    for status in projections::status(&pool)
        .await
        .context("reading projection progress")?
    {
        println!(
            "{:<14} {:>10} {:>8} {:>14} {:>12}  {}",
            status.name,
            status.position,
            status.lag,
            status.events_applied,
            status.dead_letters,
            status
                .updated_at
                .map_or("never".to_owned(), |t| t.to_rfc3339())
        );
    }
    Ok(())
}
