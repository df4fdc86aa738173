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
    /// Print a bearer token signed with AGORA_JWT_SECRET, for
    /// `Authorization: Bearer <token>`.
    Token(TokenArgs),
    /// Run the bundled test payment gateway on AGORA_GATEWAY_ADDR. Tokens:
    /// tok_ok approves, tok_decline declines, tok_slow approves after 2 s,
    /// tok_flaky fails with a 5xx twice per key, then approves. Its ledger
    /// is kept in the database of DATABASE_URL (schema `gateway`).
    Gateway,
    /// Rebuild read models from the events table while the live ones keep
    /// serving, then swap them in atomically. Also: `--verify` to compare
    /// without swapping, `--status` to list the projections.
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The token's subject: a customer's user id (a UUID), or a name of at most 128 bytes for an admin.
    #[arg(long)]
    pub sub: String,
    /// customer: may act only on its own user, orders and payments; admin: everything.
    #[arg(long, value_parser = ["customer", "admin"])]
    pub role: String,
    /// How long the token is valid, e.g. 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// A projection to rebuild (users, products, orders, payments,
    /// notifications); repeat for more. All of them when none is given.
    #[arg(long = "projection", value_name = "NAME", value_parser = parse_projection)]
    pub projections: Vec<projections::Projection>,
    /// Build and compare row by row with the live read models, without
    /// swapping; print the rows that differ and exit non-zero if any do.
    #[arg(long)]
    pub verify: bool,
    /// Events read from the store per page.
    #[arg(long, default_value_t = projections::replay::DEFAULT_BATCH,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub batch: usize,
    /// List the projections (position, lag, dead letters, last rebuild) and exit.
    #[arg(long, conflicts_with_all = ["verify", "projections"])]
    pub status: bool,
}

fn parse_projection(name: &str) -> Result<projections::Projection, String> {
    projections::Projection::parse(name).ok_or_else(|| {
        format!("no projection {name:?}: one of users, products, orders, payments, notifications")
    })
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
    /// Delivers webhooks: follows the event stream into the delivery log
    /// and works through it.
    Webhooks,
    /// Every role in one process.
    All,
}
