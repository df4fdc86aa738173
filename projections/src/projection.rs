//! The five projections: their names, what they consume, and how one event
//! changes their tables.

use std::fmt;

use schemas::EventEnvelope;

use crate::changes::Change;
use crate::error::ProjectionError;
use crate::models;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Projection {
    Users,
    Products,
    Orders,
    Payments,
    Notifications,
}

impl Projection {
    pub const ALL: [Projection; 5] = [
        Projection::Users,
        Projection::Products,
        Projection::Orders,
        Projection::Payments,
        Projection::Notifications,
    ];

    /// The stable name: in checkpoints, consumer names, dead letters, change subjects.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Users => "users",
            Self::Products => "products",
            Self::Orders => "orders",
            Self::Payments => "payments",
            Self::Notifications => "notifications",
        }
    }

    pub fn parse(name: &str) -> Option<Projection> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The aggregate types whose events this projection receives.
    pub fn aggregate_types(&self) -> &'static [&'static str] {
        match self {
            Self::Users => &["user"],
            Self::Products => &["product"],
            Self::Orders => &["order"],
            Self::Payments => &["payment"],
            Self::Notifications => &["user", "product", "order", "payment"],
        }
    }

    /// Whether this projection keeps track of the aggregate's events (applies
    /// them in sequence, records the last one applied). Events of other
    /// aggregates it receives (the notifications projection sees product
    /// events) are skipped without a trace.
    pub fn tracks(&self, aggregate_type: &str) -> bool {
        match self {
            Self::Notifications => matches!(aggregate_type, "user" | "order" | "payment"),
            _ => self.aggregate_types().contains(&aggregate_type),
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
        }
    }

    /// The one subject filter of its JetStream consumer.
    pub fn filter_subject(&self, prefix: &str) -> String {
        match self {
            Self::Users => format!("{prefix}.events.user.>"),
            Self::Products => format!("{prefix}.events.product.>"),
            Self::Orders => format!("{prefix}.events.order.>"),
            Self::Payments => format!("{prefix}.events.payment.>"),
            Self::Notifications => schemas::subjects::events_wildcard(prefix),
        }
    }

    /// Applies one event to this projection's tables, in the caller's
    /// transaction, and says which rows changed. Does not check or record the
    /// sequence: `apply_batch` does.
    pub async fn apply(
        &self,
        tx: &mut sqlx::PgConnection,
        event: &EventEnvelope,
    ) -> Result<Vec<Change>, ProjectionError> {
        // Envelopes are upcast where they are read (worker, events table);
        // one handed in at an old version (a caller's own) is upcast here.
        let upcast;
        let event = if schemas::upcast::needs_upcast(&event.event_type, &event.event_version) {
            upcast = event.clone().upcast();
            &upcast
        } else {
            event
        };
        match self {
            Self::Users => models::users::apply(tx, event).await,
            Self::Products => models::products::apply(tx, event).await,
            Self::Orders => models::orders::apply(tx, event).await,
            Self::Payments => models::payments::apply(tx, event).await,
            Self::Notifications => models::notifications::apply(tx, event).await,
        }
    }
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

    #[test]
    fn filters_cover_what_each_projection_tracks() {
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
        assert!(Projection::Notifications.tracks("order"));
        assert!(!Projection::Notifications.tracks("product"));
        assert!(!Projection::Users.tracks("order"));
    }
}
