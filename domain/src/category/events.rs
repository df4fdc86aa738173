use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::{Name, Slug};
use crate::EVENT_VERSION;

#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CategoryEvent {
    CategoryCreated {
        category_id: Uuid,
        slug: Slug,
        name: Name,
        parent_id: Option<Uuid>,
        position: i32,
    },
    /// Only the fields that changed are `Some`; `previous_slug` is the slug
    /// given up when `slug` is `Some` (its unique claim is released).
    CategoryUpdated {
        slug: Option<Slug>,
        previous_slug: Option<Slug>,
        name: Option<Name>,
        position: Option<i32>,
    },
    CategoryMoved {
        parent_id: Option<Uuid>,
    },
    /// `slug` is released for another category to take.
    CategoryDeleted {
        slug: Slug,
    },
}

impl DomainEvent for CategoryEvent {
    fn event_type(&self) -> String {
        match self {
            Self::CategoryCreated { .. } => "CategoryCreated",
            Self::CategoryUpdated { .. } => "CategoryUpdated",
            Self::CategoryMoved { .. } => "CategoryMoved",
            Self::CategoryDeleted { .. } => "CategoryDeleted",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        EVENT_VERSION.to_string()
    }
}
