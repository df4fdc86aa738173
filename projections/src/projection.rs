//! The projections: their names, lock ids, what they follow, their
//! tables, and the model that folds their events.

use std::collections::HashSet;
use std::fmt;

use async_trait::async_trait;
use schemas::names::aggregate;
use schemas::{subjects, Recorded};
use sqlx::PgConnection;

use crate::model::{AnyModel, Model};
use crate::models;
use crate::subscriber::{Applied, Subscriber};
use crate::table::{Loads, Mode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Projection {
    Users,
    Products,
    Orders,
    Payments,
    Notifications,
    Categories,
    Carts,
}

impl Projection {
    pub const ALL: [Projection; 7] = [
        Projection::Users,
        Projection::Products,
        Projection::Orders,
        Projection::Payments,
        Projection::Notifications,
        Projection::Categories,
        Projection::Carts,
    ];

    /// The stable name: in checkpoints, consumer names, dead letters, change subjects.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Users => "users",
            Self::Products => "products",
            Self::Orders => "orders",
            Self::Payments => "payments",
            Self::Notifications => "notifications",
            Self::Categories => "categories",
            Self::Carts => "carts",
        }
    }

    /// Every projection, as the subscribers they are.
    pub fn subscribers() -> Vec<&'static dyn Subscriber> {
        const ALL: [Projection; 7] = Projection::ALL;
        ALL.iter().map(|p| p as &dyn Subscriber).collect()
    }

    pub fn parse(name: &str) -> Option<Projection> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The second key of its advisory lock. Fixed forever: a rolling deploy
    /// runs old and new binaries side by side, and both must take the same
    /// lock for the same projection (`lock_ids_never_change` pins them).
    pub const fn lock_id(&self) -> i32 {
        match self {
            Self::Users => 1,
            Self::Products => 2,
            Self::Orders => 3,
            Self::Payments => 4,
            Self::Notifications => 5,
            Self::Categories => 6,
            Self::Carts => 7,
        }
    }

    /// The read-model tables it writes (and `agora replay` swaps).
    pub fn tables(&self) -> &'static [&'static str] {
        match self {
            Self::Users => &["rm_users"],
            Self::Products => &["rm_products"],
            Self::Orders => &["rm_orders"],
            Self::Payments => &["rm_payments"],
            Self::Notifications => &[
                "rm_notifications",
                "rm_notification_orders",
                "rm_notification_payments",
            ],
            Self::Categories => &["rm_categories", "rm_category_listings"],
            Self::Carts => &["rm_carts"],
        }
    }

    /// Its model, with empty tables of the given mode.
    pub(crate) fn model(&self, mode: Mode) -> Box<dyn AnyModel> {
        match self {
            Self::Users => Box::new(models::users::Users::new(mode)),
            Self::Products => Box::new(models::products::Products::new(mode)),
            Self::Orders => Box::new(models::orders::Orders::new(mode)),
            Self::Payments => Box::new(models::payments::Payments::new(mode)),
            Self::Notifications => Box::new(models::notifications::Notifications::new(mode)),
            Self::Categories => Box::new(models::categories::Categories::new(mode)),
            Self::Carts => Box::new(models::carts::Carts::new(mode)),
        }
    }
}

#[async_trait]
impl Subscriber for Projection {
    fn name(&self) -> &'static str {
        Projection::name(self)
    }

    fn lock_id(&self) -> i32 {
        Projection::lock_id(self)
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        match self {
            Self::Users => &[aggregate::USER],
            Self::Products => &[aggregate::PRODUCT],
            Self::Orders => &[aggregate::ORDER],
            Self::Payments => &[aggregate::PAYMENT],
            Self::Notifications => &[aggregate::USER, aggregate::ORDER, aggregate::PAYMENT],
            Self::Categories => &[aggregate::CATEGORY, aggregate::PRODUCT],
            Self::Carts => &[aggregate::CART],
        }
    }

    fn filter_subject(&self, prefix: &str) -> String {
        match self {
            // One filter per consumer (NATS 2.9): product events reach it
            // too, and are skipped.
            Self::Notifications | Self::Categories => subjects::events_wildcard(prefix),
            _ => format!("{prefix}.events.{}.>", self.aggregate_types()[0]),
        }
    }

    /// Loads the rows the events touch in one query per table, folds every
    /// event in memory, and writes back what changed in one statement per
    /// table.
    async fn apply(
        &self,
        tx: &mut PgConnection,
        events: &[&Recorded],
    ) -> Result<Vec<Applied>, sqlx::Error> {
        let mut model = self.model(Mode::Live);
        let mut loads = Loads::default();
        for event in events {
            model.touches(event, &mut loads);
        }
        model.load(&mut *tx, &loads).await?;
        let applied = fold_all(model.as_mut(), events);
        model.write(&mut *tx).await?;
        Ok(applied)
    }
}

/// Folds `events` in order; once one fails, the later events of its
/// aggregate are held.
pub(crate) fn fold_all(model: &mut dyn AnyModel, events: &[&Recorded]) -> Vec<Applied> {
    let mut failed: HashSet<(&str, &str)> = HashSet::new();
    events
        .iter()
        .map(|event| {
            let key = (event.aggregate_type.as_str(), event.aggregate_id.as_str());
            if failed.contains(&key) {
                return Applied::Held;
            }
            match model.fold(event) {
                Ok(changes) => Applied::Done(changes),
                Err(error) => {
                    failed.insert(key);
                    Applied::Failed(error)
                }
            }
        })
        .collect()
}

impl fmt::Display for Projection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for projection in Projection::ALL {
            assert_eq!(Projection::parse(projection.name()), Some(projection));
        }
        assert_eq!(Projection::parse("nope"), None);
    }

    /// The ids every deployed binary takes. Changing one makes a new binary
    /// and an old one take different locks for the same projection during a
    /// rolling deploy: never change one, and give a new projection a new id.
    #[test]
    fn lock_ids_never_change() {
        let ids: Vec<(&str, i32)> = Projection::ALL
            .iter()
            .map(|p| (p.name(), p.lock_id()))
            .collect();
        assert_eq!(
            ids,
            [
                ("users", 1),
                ("products", 2),
                ("orders", 3),
                ("payments", 4),
                ("notifications", 5),
                ("categories", 6),
                ("carts", 7),
            ]
        );
    }

    #[test]
    fn filters_cover_what_each_projection_follows() {
        assert_eq!(Projection::Users.filter_subject("a"), "a.events.user.>");
        assert_eq!(
            Projection::Products.filter_subject("a"),
            "a.events.product.>"
        );
        assert_eq!(Projection::Orders.filter_subject("a"), "a.events.order.>");
        assert_eq!(
            Projection::Payments.filter_subject("a"),
            "a.events.payment.>"
        );
        assert_eq!(Projection::Notifications.filter_subject("a"), "a.events.>");
        assert!(Projection::Notifications.follows("order"));
        assert!(!Projection::Notifications.follows("product"));
        assert!(!Projection::Users.follows("order"));
    }
}
