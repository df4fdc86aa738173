//! Integration tests of the projections against the real Postgres and NATS.
//! Each test has its own database and its own JetStream stream.

mod catalog;
mod exactly_once;
mod models;
mod property;
mod rebuild;
mod replay;
mod support;
mod upcast;
mod workers;
