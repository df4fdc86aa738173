//! `agora token`: a bearer token for a subject and role, signed with the
//! configured secret, printed on stdout alone so scripts can capture it.

use anyhow::Context;
use api::auth::{JwtSecret, Role};

use crate::cli::TokenArgs;
use crate::config::Config;

pub fn run(config: &Config, args: &TokenArgs) -> anyhow::Result<()> {
    let secret = config.auth.jwt_secret.as_ref().context(
        "AGORA_JWT_SECRET is not set: a token needs the secret the server checks it with",
    )?;
    let role: Role = args.role.parse().map_err(anyhow::Error::msg)?;
    let token = JwtSecret::new(secret.expose().as_bytes())
        .issue(&args.sub, role, args.ttl)
        .map_err(|err| anyhow::anyhow!(err.detail))?;
    println!("{token}");
    Ok(())
}
