//! Tests of the real `agora` binary as a child process against the real
//! Postgres and NATS: processes killed with SIGKILL mid-load and the broker
//! stopped under load (what was lost: nothing), start-up and shutdown, and
//! the deployment files held to the binary.

mod broker_loss;
mod browser;
mod crash;
mod deploy;
#[path = "../../../api/tests/it/exposition.rs"]
mod exposition;
mod observability;
mod postgres_restart;
mod privacy;
mod replay;
mod shutdown;
mod startup;
mod support;
mod webhooks;
