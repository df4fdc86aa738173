//! HTTP tests of the command and query API against the real Postgres (a database per
//! test) and the real NATS.

mod api_keys;
mod auth;
mod bad_input;
mod commands;
mod concurrency;
mod exposition;
mod hardening;
mod idempotency;
mod limits;
mod malformed;
mod observability;
mod oidc;
mod openapi;
mod queries;
mod sign_in;
mod support;
