//! `agora gateway`: the bundled test payment gateway, until SIGTERM or Ctrl-C.

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Config;

pub async fn run(config: &Config) -> anyhow::Result<()> {
    let pool = crate::migrate::connect(config, 4).await?;
    let listener = TcpListener::bind(config.gateway.addr)
        .await
        .with_context(|| format!("binding AGORA_GATEWAY_ADDR={}", config.gateway.addr))?;
    gateway::run(
        listener,
        gateway::GatewayOptions::new(pool.clone()),
        crate::serve::shutdown_signal(),
    )
    .await
    .context("running the payment gateway")?;
    pool.close().await;
    Ok(())
}
