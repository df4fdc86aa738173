//! The saga against real Postgres, NATS and the HTTP gateway: the relay,
//! the projections, the gateway and one or more sagas run in this process.

mod support;

mod cart_expiry;
mod compensation;
mod concurrency;
mod faults;
mod tokens;
