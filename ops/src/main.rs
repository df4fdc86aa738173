//! `agora`: one binary for every role of the system and its operations.

use clap::Parser;

use ops::cli::{Cli, Command};
use ops::{config::Config, gateway, migrate, replay, serve, status, telemetry, token};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("agora: configuration error: {err}");
            std::process::exit(2);
        }
    };
    let _telemetry = telemetry::init(&config.log);
    match cli.command {
        Command::Migrate => migrate::run(&config).await,
        Command::Serve(args) => serve::run(config, args.role).await,
        Command::Projections => status::run(&config).await,
        Command::Replay(args) => replay::run(&config, &args).await,
        Command::Token(args) => token::run(&config, &args),
        Command::Gateway => gateway::run(&config).await,
    }
}
