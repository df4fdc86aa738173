//! The real processes a workload runs against: `agora serve` with its roles,
//! and this binary re-run as the load client (`agora-bench load`), so load,
//! server and baselines are separate processes as a user would run them.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::TestDatabase;

/// The `agora` binary beside this one (`cargo build -p ops` builds both).
pub(crate) fn agora_binary() -> anyhow::Result<std::path::PathBuf> {
    let path = std::env::current_exe()?.with_file_name("agora");
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build both binaries first (cargo build --release -p ops)",
        path.display()
    );
    Ok(path)
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The test payment gateway on a free port, in this process, until the
/// returned sender is dropped or sent to: its URL and that sender.
pub(crate) async fn start_gateway(
    db: &TestDatabase,
) -> anyhow::Result<(String, tokio::sync::oneshot::Sender<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gateway::run(
        listener,
        gateway::GatewayOptions::new(db.pool.clone(), None),
        async move {
            let _ = stopped.await;
        },
    ));
    Ok((url, stop))
}

/// `agora serve --role <role>` on the database and prefix, killed on drop.
pub(crate) struct Serve {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub(crate) base: String,
}

impl Serve {
    pub(crate) fn start(
        db: &TestDatabase,
        prefix: &str,
        role: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let child = Command::new(agora_binary()?)
            .args(["serve", "--role", role])
            .env("DATABASE_URL", db.url())
            .env("NATS_URL", testkit::nats_url())
            .env("AGORA_NATS_PREFIX", prefix)
            .env("AGORA_HTTP_ADDR", &addr)
            .env("AGORA_AUTH", "off")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Self {
            child,
            base: format!("http://{addr}"),
        })
    }

    /// Waits until `/readyz` answers 200.
    pub(crate) async fn ready(&self, client: &reqwest::Client) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let answer = client.get(format!("{}/readyz", self.base)).send().await;
            if answer.is_ok_and(|a| a.status().is_success()) {
                return Ok(());
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "`agora serve` at {} was not ready within 60 s",
                self.base
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
