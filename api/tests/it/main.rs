//! HTTP tests of the command and query API against the real Postgres (a database per
//! test) and the real NATS.

mod bad_input;
mod commands;
mod concurrency;
mod helpers;
mod idempotency;
mod openapi;
mod queries;
