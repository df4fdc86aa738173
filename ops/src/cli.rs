use clap::{Args, Parser, Subcommand, ValueEnum};

/// Agora: an event-sourced commerce backend.
///
/// Configured by environment variables (DATABASE_URL, NATS_URL, AGORA_*); see
/// `.env.example` for every one of them and its default.
#[derive(Debug, Parser)]
#[command(name = "agora", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the database if it is missing and apply every migration.
    /// Idempotent: safe to run twice, or from two processes at once.
    Migrate,
    /// Run the system, or one of its roles, until SIGTERM or Ctrl-C.
    Serve(ServeArgs),
    /// List every projection with its position, lag, dead letters and the
    /// time it last applied an event; and the relay's lag.
    Projections,
    /// Run the bundled test payment gateway on AGORA_GATEWAY_ADDR. Tokens:
    /// tok_ok approves, tok_decline declines, tok_slow approves after 2 s,
    /// tok_flaky fails with a 5xx twice per key, then approves. Its ledger
    /// is kept in the database of DATABASE_URL (schema `gateway`).
    Gateway,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Which part of the system this process runs.
    #[arg(long, value_enum, default_value_t = Role::All, env = "AGORA_ROLE")]
    pub role: Role,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The HTTP API: commands, queries and operations paths.
    Api,
    /// Publishes committed events to JetStream.
    Relay,
    /// Builds the read models from JetStream.
    Projector,
    /// Drives orders through stock reservation and payment.
    Saga,
    /// Every role in one process.
    All,
}
