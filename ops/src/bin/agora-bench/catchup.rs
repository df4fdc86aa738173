//! Live catch-up: how fast the projections work through a backlog. A shop's
//! history is written to the events table and relayed to JetStream, then
//! the real `agora serve --role projector` starts on it; each projection's
//! rate is the events it follows over the time until it has applied the
//! last of them. The baseline is the same stream pulled and acknowledged by
//! a bare JetStream consumer (no database): the delivery path's ceiling.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy};
use futures::StreamExt;
use projections::{Projection, Subscriber};
use testkit::{TestDatabase, TestNats};
use tokio::sync::{watch, Notify};

use crate::processes::Serve;
use crate::report::{median, spread, Row, Table};
use crate::Settings;

/// Relays everything in the events table to the stream, in this process.
async fn relay_all(db: &TestDatabase, nats: &TestNats) -> anyhow::Result<()> {
    let (stop, stopped) = watch::channel(false);
    let relay = tokio::spawn(commands::relay::run(
        db.pool.clone(),
        nats.client.clone(),
        commands::relay::RelayOptions::new(nats.prefix.clone()),
        Arc::new(Notify::new()),
        async move {
            let mut stopped = stopped;
            let _ = stopped.wait_for(|s| *s).await;
        },
    ));
    while commands::relay::lag(&db.pool, &nats.prefix).await? > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(true);
    let _ = relay.await;
    Ok(())
}

/// Messages/s a bare pull consumer takes the whole stream at, acking each.
async fn raw_consume(nats: &TestNats, messages: u64) -> anyhow::Result<f64> {
    let consumer = nats
        .jetstream
        .create_consumer_on_stream(
            pull::Config {
                durable_name: Some("bench_raw".into()),
                ack_policy: AckPolicy::Explicit,
                max_ack_pending: 1000,
                ..Default::default()
            },
            nats.stream_name(),
        )
        .await?;
    let started = Instant::now();
    let mut stream = consumer
        .stream()
        .max_messages_per_batch(256)
        .messages()
        .await?;
    let mut seen = 0;
    while seen < messages {
        let Some(message) = stream.next().await else {
            break;
        };
        message
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .ack()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        seen += 1;
    }
    Ok(seen as f64 / started.elapsed().as_secs_f64())
}

pub async fn run(settings: &Settings, table: &mut Table) -> anyhow::Result<()> {
    let events: i64 = if settings.quick { 2_000 } else { 200_000 };
    println!(
        "catch-up: {events} events relayed, then `agora serve --role projector` started on them"
    );
    // Every projection in one projector, then the products projection in a
    // projector of its own (`AGORA_PROJECTIONS`), as a busy one is deployed.
    let mut rates: BTreeMap<(bool, &str), Vec<f64>> = BTreeMap::new();
    let mut raw = Vec::new();
    for (rep, alone) in (0..settings.reps).flat_map(|rep| [(rep, false), (rep, true)]) {
        let db = TestDatabase::with_pool_size(8).await;
        let nats = TestNats::new().await;
        commands::relay::ensure_stream(&nats.jetstream, &nats.prefix)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let stored = crate::replay::seed(&db, events).await?;
        relay_all(&db, &nats).await?;
        // The last position each projection must apply, and how many events it follows.
        let mut targets = Vec::new();
        for projection in Projection::ALL {
            if alone && projection != Projection::Products {
                continue;
            }
            let (last, count): (Option<i64>, i64) = sqlx::query_as(
                "SELECT max(position), count(*) FROM events WHERE aggregate_type = ANY($1)",
            )
            .bind(projection.aggregate_types())
            .fetch_one(&db.pool)
            .await?;
            // A projection that follows none of these events has nothing to catch up.
            if count > 0 {
                targets.push((projection, last.unwrap_or(0), count));
            }
        }
        let started = Instant::now();
        let only: &[(&str, &str)] = if alone {
            &[("AGORA_PROJECTIONS", "products")]
        } else {
            &[]
        };
        let projector = Serve::start(&db, &nats.prefix, "projector", only)?;
        let mut pending = targets.clone();
        while !pending.is_empty() {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(600),
                "the projections did not catch up in 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            let checkpoints: Vec<(String, i64)> =
                sqlx::query_as("SELECT projection, position FROM projection_checkpoints")
                    .fetch_all(&db.pool)
                    .await?;
            pending.retain(|(projection, last, count)| {
                let done = checkpoints
                    .iter()
                    .any(|(name, position)| name == projection.name() && position >= last);
                if done {
                    let rate = *count as f64 / started.elapsed().as_secs_f64();
                    rates
                        .entry((alone, projection.name()))
                        .or_default()
                        .push(rate);
                }
                !done
            });
        }
        drop(projector);
        raw.push(raw_consume(&nats, stored as u64).await?);
        println!(
            "  rep {}{}: caught up in {:.2} s",
            rep + 1,
            if alone { " (products alone)" } else { "" },
            started.elapsed().as_secs_f64()
        );
    }
    let ceiling = median(&raw);
    for ((alone, name), rates) in rates {
        let ours = median(&rates);
        let how = if alone {
            "`AGORA_PROJECTIONS=products agora serve --role projector` (this projection alone)"
                .to_owned()
        } else {
            format!(
                "`agora serve --role projector` (all {} at once, one process)",
                Projection::ALL.len()
            )
        };
        table.push(Row {
            workload: format!(
                "Live catch-up from a backlog: {name} projection{}",
                if alone { ", alone" } else { "" }
            ),
            figure: format!("{ours:.0} events/s"),
            baseline: format!("{ceiling:.0} msg/s bare JetStream pull + ack"),
            ratio: Some(ours / ceiling),
            goal: "≥ 30,000 events/s per projection".to_owned(),
            spread: spread(&rates),
            notes: format!(
                "{how} on {events} relayed events; from its start to the last event applied"
            ),
        });
    }
    Ok(())
}
