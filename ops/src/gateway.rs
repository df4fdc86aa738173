//! `agora gateway`: the bundled test payment gateway, until SIGTERM or Ctrl-C.

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Config;

pub async fn run(config: &Config) -> anyhow::Result<()> {
    // As `serve` with its JWT secret: no token, no start, unless
    // authentication is off on purpose.
    let token = config.gateway.token.as_ref().map(|t| t.expose().to_owned());
    if token.is_none() && config.auth.enabled {
        anyhow::bail!("AGORA_GATEWAY_TOKEN is not set: set it (and give the saga the same), or set AGORA_AUTH=off to run the gateway open");
    }
    let pool = crate::migrate::connect(config, 4).await?;
    let listener = TcpListener::bind(config.gateway.addr)
        .await
        .with_context(|| format!("binding AGORA_GATEWAY_ADDR={}", config.gateway.addr))?;
    gateway::run(
        listener,
        gateway::GatewayOptions::new(pool.clone(), token),
        crate::serve::shutdown_signal(),
    )
    .await
    .context("running the payment gateway")?;
    pool.close().await;
    Ok(())
}
