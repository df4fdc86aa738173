//! Integration tests of the command side against a real Postgres: every test
//! gets its own migrated database from `testkit::TestDatabase`.

mod cloudevents;
mod event_schemas;
mod idempotency;
mod identity;
mod metadata;
mod migrations;
mod privacy;
mod relay;
mod store;
mod support;
mod uniqueness;
