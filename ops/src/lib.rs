//! The `agora` binary's library: configuration, start-up of each role, and the
//! operator commands. `main.rs` only parses and dispatches.

pub mod cli;
pub mod config;
pub mod gateway;
pub mod migrate;
pub mod replay;
pub mod sampler;
pub mod serve;
pub mod status;
pub mod telemetry;
pub mod token;
