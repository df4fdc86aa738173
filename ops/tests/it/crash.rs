use std::time::Duration;

use testkit::{TestDatabase, TestNatsServer};

use crate::support::{
    assert_read_models_match_rebuild, assert_saga_finished, assert_stream_matches_store,
    eventually_within, load, Agora,
};

fn prefix() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

async fn migrate(db: &TestDatabase, nats_url: &str, prefix: &str) {
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_agora"))
        .arg("migrate")
        .env("DATABASE_URL", db.url())
        .env("NATS_URL", nats_url)
        .env("AGORA_NATS_PREFIX", prefix)
        .env("RUST_LOG", "warn")
        .status()
        .await
        .expect("run agora migrate");
    assert!(status.success(), "agora migrate failed");
}

async fn ready(agora: &Agora) -> bool {
    matches!(reqwest::get(format!("{}/readyz", agora.base())).await, Ok(r) if r.status().is_success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_under_load_loses_nothing() {
    let db = TestDatabase::with_pool_size(4).await;
    let nats_url = testkit::nats_url();
    let prefix = prefix();
    migrate(&db, &nats_url, &prefix).await;
    let mut agora = Agora::new(&db, &nats_url, &prefix);
    agora.start();

    let load = tokio::spawn(load(agora.base(), 8, 2000));
    // Seeded so a failure can be replayed; printed on failure by the panic message below.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    let mut random = seed;
    let mut kills = 0;
    while !load.is_finished() {
        random = random
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let pause = 200 + (random >> 33) % 600;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if load.is_finished() {
            break;
        }
        agora.kill();
        kills += 1;
        agora.start();
    }
    let succeeded = load.await.expect("load");
    assert!(succeeded >= 2000, "seed {seed}: only {succeeded} commands");
    assert!(kills >= 2, "seed {seed}: the process was killed {kills} times; the load ended too fast to test anything");

    eventually_within(
        "agora ready after the last restart",
        Duration::from_secs(30),
        || ready(&agora),
    )
    .await;
    eventually_within("the relay caught up", Duration::from_secs(60), || async {
        commands::relay::lag(&db.pool, &prefix)
            .await
            .map(|lag| lag == 0)
            .unwrap_or(false)
    })
    .await;
    // The saga writes as long as orders are open: wait for it before comparing.
    assert_saga_finished(&db).await;
    eventually_within(
        "the relay caught up with the saga",
        Duration::from_secs(60),
        || async {
            commands::relay::lag(&db.pool, &prefix)
                .await
                .map(|lag| lag == 0)
                .unwrap_or(false)
        },
    )
    .await;
    assert_stream_matches_store(&db, &nats_url, &prefix, false).await;
    assert_read_models_match_rebuild(&db, &nats_url, &prefix).await;
    agora.kill();
    assert_stream_matches_store(&db, &nats_url, &prefix, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_for_ten_seconds_under_load_loses_nothing() {
    let db = TestDatabase::with_pool_size(4).await;
    let mut server = TestNatsServer::start();
    let nats_url = server.url();
    let prefix = prefix();
    migrate(&db, &nats_url, &prefix).await;
    let mut agora = Agora::new(&db, &nats_url, &prefix);
    agora.start();
    eventually_within("agora ready", Duration::from_secs(30), || ready(&agora)).await;

    let load = tokio::spawn(load(agora.base(), 4, 1500));
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.stop();
    // Commands keep committing while the broker is away: the table is the outbox.
    tokio::time::sleep(Duration::from_secs(10)).await;
    server.resume();
    let succeeded = load.await.expect("load");
    assert!(succeeded >= 1500);

    eventually_within("the relay caught up", Duration::from_secs(90), || async {
        commands::relay::lag(&db.pool, &prefix)
            .await
            .map(|lag| lag == 0)
            .unwrap_or(false)
    })
    .await;
    assert_saga_finished(&db).await;
    eventually_within(
        "the relay caught up with the saga",
        Duration::from_secs(60),
        || async {
            commands::relay::lag(&db.pool, &prefix)
                .await
                .map(|lag| lag == 0)
                .unwrap_or(false)
        },
    )
    .await;
    assert_read_models_match_rebuild(&db, &nats_url, &prefix).await;
    agora.kill();
    assert_stream_matches_store(&db, &nats_url, &prefix, true).await;
}
