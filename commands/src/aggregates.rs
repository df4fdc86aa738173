//! What the store needs to know about each aggregate beyond cqrs-es's trait,
//! and the bundle of the four stores the API and saga share.

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use domain::cart::Cart;
use domain::category::{Category, CategoryEvent};
use domain::order::Order;
use domain::payment::Payment;
use domain::product::{Product, ProductEvent};
use domain::user::{User, UserEvent};
use sqlx::PgPool;

use crate::store::{AggregateStore, StoreOptions};

/// A value an event takes or gives up in `unique_claims`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UniqueChange {
    Claim { kind: &'static str, value: String },
    Release { kind: &'static str, value: String },
}

/// An aggregate the store can persist: cqrs-es's trait plus `Clone` (cached
/// states are handed out as copies) and the uniqueness its events imply.
pub trait StoredAggregate: cqrs_es::Aggregate<Services = ()> + Clone + 'static
where
    Self::Command: Clone + Send,
    Self::Error: Send,
{
    /// The claims and releases an event makes; most make none.
    fn unique_changes(_event: &Self::Event) -> Vec<UniqueChange> {
        Vec::new()
    }

    /// Whether states are snapshotted. Not for aggregates that hold
    /// personal data in clear once loaded (a snapshot would keep a copy the
    /// erasure of their user cannot destroy).
    const SNAPSHOTS: bool = true;

    /// Which request field a clash on `kind` is reported against.
    fn unique_field(kind: &str) -> &'static str {
        match kind {
            "email" => "email",
            "sku" => "sku",
            "slug" => "slug",
            _ => "id",
        }
    }
}

impl StoredAggregate for User {
    const SNAPSHOTS: bool = false;

    fn unique_changes(event: &UserEvent) -> Vec<UniqueChange> {
        match event {
            UserEvent::UserRegistered { email, .. } => vec![UniqueChange::Claim {
                kind: "email",
                value: email.normalized(),
            }],
            UserEvent::UserEmailChanged {
                previous_email,
                email,
            } if previous_email.normalized() != email.normalized() => vec![
                UniqueChange::Release {
                    kind: "email",
                    value: previous_email.normalized(),
                },
                UniqueChange::Claim {
                    kind: "email",
                    value: email.normalized(),
                },
            ],
            UserEvent::UserErased { previous_email } => vec![UniqueChange::Release {
                kind: "email",
                value: previous_email.normalized(),
            }],
            _ => Vec::new(),
        }
    }
}

impl StoredAggregate for Product {
    fn unique_changes(event: &ProductEvent) -> Vec<UniqueChange> {
        match event {
            ProductEvent::ProductCreated { sku, .. } => vec![UniqueChange::Claim {
                kind: "sku",
                value: sku.normalized(),
            }],
            _ => Vec::new(),
        }
    }
}

/// Slugs are unique across live categories: taken on creation, moved on a
/// change, given back on deletion.
impl StoredAggregate for Category {
    fn unique_changes(event: &CategoryEvent) -> Vec<UniqueChange> {
        let claim = |slug: &domain::Slug| UniqueChange::Claim {
            kind: "slug",
            value: slug.as_str().to_owned(),
        };
        let release = |slug: &domain::Slug| UniqueChange::Release {
            kind: "slug",
            value: slug.as_str().to_owned(),
        };
        match event {
            CategoryEvent::CategoryCreated { slug, .. } => vec![claim(slug)],
            CategoryEvent::CategoryUpdated {
                slug: Some(slug),
                previous_slug,
                ..
            } => previous_slug
                .iter()
                .map(release)
                .chain([claim(slug)])
                .collect(),
            CategoryEvent::CategoryDeleted { slug } => vec![release(slug)],
            _ => Vec::new(),
        }
    }
}

impl StoredAggregate for Order {
    const SNAPSHOTS: bool = false;
}
impl StoredAggregate for Payment {
    const SNAPSHOTS: bool = false;
}
impl StoredAggregate for Cart {}

/// The aggregate stores over one pool, cheap to clone.
#[derive(Clone)]
pub struct Aggregates {
    pub users: AggregateStore<User>,
    pub products: AggregateStore<Product>,
    pub orders: AggregateStore<Order>,
    pub payments: AggregateStore<Payment>,
    pub categories: AggregateStore<Category>,
    pub carts: AggregateStore<Cart>,
    /// The one vault of these stores (and of the API's answers).
    pub vault: crate::vault::Vault,
}

impl Aggregates {
    pub fn new(pool: PgPool, options: StoreOptions) -> Self {
        let vault = crate::vault::Vault::new(pool.clone(), &options.data_key);
        Self {
            users: store(&pool, &options, &vault),
            products: store(&pool, &options, &vault),
            orders: store(&pool, &options, &vault),
            payments: store(&pool, &options, &vault),
            categories: store(&pool, &options, &vault),
            carts: store(&pool, &options, &vault),
            vault,
        }
    }
}

fn store<A: StoredAggregate>(
    pool: &PgPool,
    options: &StoreOptions,
    vault: &crate::vault::Vault,
) -> AggregateStore<A>
where
    A::Command: Clone + Send,
    A::Error: Send,
{
    AggregateStore::with_vault(pool.clone(), options.clone(), upcasters(), vault.clone())
}

/// The upcasters every store reads through: old stored event versions reach
/// the aggregates in their current shape.
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    vec![Box::new(SchemaUpcaster)]
}

/// cqrs-es's hook onto `schemas::upcast`, the one place that knows old event
/// versions, which the projections and `agora replay` use as well.
pub struct SchemaUpcaster;

impl EventUpcaster for SchemaUpcaster {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        schemas::upcast::needs_upcast(event_type, event_version)
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        if let Some(version) =
            schemas::upcast::upcast(&event.event_type, &event.event_version, &mut event.payload)
        {
            event.event_version = version.to_owned();
        }
        event
    }
}
