//! HTTP tests of the command and query API against the real Postgres (a database per
//! test) and the real NATS.

mod api_keys;
mod asyncapi;
mod auth;
mod bad_input;
mod carts;
mod catalog;
mod commands;
mod concurrency;
mod docs;
mod exposition;
mod generators;
mod hardening;
mod idempotency;
mod limits;
mod malformed;
mod observability;
mod oidc;
mod openapi;
mod privacy;
mod queries;
mod sign_in;
mod support;
mod updates;
mod webhooks;
