//! Helpers shared by the integration tests.

use chrono::{DateTime, Utc};
use commands::stream::read_stream;
use commands::CommandMetadata;
use cqrs_es::Aggregate;
use domain::values::{Description, EmailAddress, Money, Name, Sku};
use domain::{ProductCommand, UserCommand};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// Metadata with fixed, recognisable values.
pub fn metadata() -> CommandMetadata {
    CommandMetadata {
        correlation_id: "corr-test".to_owned(),
        causation_id: "cause-test".to_owned(),
        actor: "tester".to_owned(),
        time: DateTime::<Utc>::from_timestamp_micros(1_715_000_000_123_456).unwrap(),
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    }
}

pub fn eur(amount: i64) -> Money {
    Money::price(amount, "EUR").unwrap()
}

pub fn name(value: &str) -> Name {
    Name::parse(value).unwrap()
}

pub fn description(value: &str) -> Description {
    Description::parse(value).unwrap()
}

pub fn email(value: &str) -> EmailAddress {
    EmailAddress::parse(value).unwrap()
}

pub fn create_product(id: Uuid, sku: &str, stock: i64) -> ProductCommand {
    ProductCommand::Create {
        product_id: id,
        sku: Sku::parse(sku).unwrap(),
        name: name("Widget"),
        description: Some(description("A widget")),
        price: eur(1999),
        stock,
    }
}

pub fn register(id: Uuid, address: &str) -> UserCommand {
    UserCommand::Register {
        user_id: id,
        email: email(address),
        name: name("Ada"),
    }
}

/// Number of stored events of one aggregate.
pub async fn event_count(pool: &PgPool, aggregate_type: &str, aggregate_id: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Number of stored events of one type, across all aggregates.
pub async fn event_type_count(pool: &PgPool, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The `aggregate_snapshots` row of an aggregate: version and payload.
pub async fn snapshot_row(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Option<(i64, Value)> {
    sqlx::query_as(
        "SELECT version, payload FROM aggregate_snapshots WHERE aggregate_type = $1 AND aggregate_id = $2",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// Every stored event of an aggregate, decoded, in stream order.
pub async fn stored_events<A: Aggregate>(pool: &PgPool, aggregate_id: &str) -> Vec<A::Event> {
    let stream = read_stream(pool, A::TYPE, aggregate_id).await.unwrap();
    for (index, event) in stream.iter().enumerate() {
        assert_eq!(
            event.sequence,
            index as i64 + 1,
            "stream of {aggregate_id} has a gap or duplicate"
        );
    }
    stream
        .into_iter()
        .map(|event| serde_json::from_value(event.payload).unwrap())
        .collect()
}

/// The state the first `count` events fold into, with the domain's own
/// `apply` and nothing else: the reference for cached and snapshotted states.
pub fn fold<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> A {
    let mut aggregate = A::default();
    for event in events {
        aggregate.apply(event);
    }
    aggregate
}

/// A deterministic pseudo-random sequence, so a failing run can be repeated.
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
