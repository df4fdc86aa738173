use uuid::Uuid;

use crate::values::{Name, Slug};

/// The tree around a category is not the category's own state: the caller
/// reads it (the parent's ancestors from the store, the children and
/// products from the read model) and hands it in, and `handle` decides.
#[derive(Debug, Clone, PartialEq)]
pub enum CategoryCommand {
    Create {
        category_id: Uuid,
        slug: Slug,
        name: Name,
        parent_id: Option<Uuid>,
        position: i32,
        /// The parent's ancestors from the top, then the parent itself;
        /// empty for a top-level category.
        parent_path: Vec<Uuid>,
    },
    /// `None` leaves a field as it is.
    Update {
        slug: Option<Slug>,
        name: Option<Name>,
        position: Option<i32>,
    },
    Move {
        parent_id: Option<Uuid>,
        /// As for `Create`: the new parent's ancestors, then the new parent.
        parent_path: Vec<Uuid>,
        /// Levels below this category (0 for a leaf).
        subtree_height: u32,
    },
    Delete {
        children: u64,
        products: u64,
    },
}
