//! `rm_categories`: the category tree, one row per live category, with its
//! ancestors (`path`, `tree_path`, `depth`) and how many products are listed
//! in it directly (`direct_count`) and in it or any descendant
//! (`product_count`, each product once). `rm_category_listings` keeps each
//! product's list, so the counts can be recounted when the tree changes.
//!
//! The counts are a function of the tree and the listings, whatever order
//! their events arrive in: a listing change adjusts the counts of the
//! categories it leaves and joins (with their ancestors), and a change to the
//! tree (a category created, moved or deleted) recomputes every path and
//! recounts from all listings, so a listing folded before its category's
//! creation still counts once the category exists.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use schemas::events::{CategoryEvent, Event, ProductEvent};
use schemas::Recorded;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{change, newer, no_row, Versioned};
use crate::changes::Change;
use crate::error::ProjectionError;
use crate::model::Model;
use crate::table::{AnyTable, Loads, Mode, Record, Table};

pub(crate) const MODEL: &str = "categories";

/// A walk up the tree stops after this many steps: the domain keeps the
/// tree at 8 levels and without cycles, and a fold must end even if a race
/// between two moves broke that.
const MAX_WALK: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CategoryRow {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub parent_id: Option<Uuid>,
    pub position: i32,
    /// Ancestors' ids from the top.
    pub path: Vec<Uuid>,
    /// `/<top>/.../<own id>/`: descendants are the rows it prefixes.
    pub tree_path: String,
    pub depth: i32,
    pub direct_count: i64,
    pub product_count: i64,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Versioned for CategoryRow {
    fn version(&mut self) -> &mut i64 {
        &mut self.version
    }
}

impl Record for CategoryRow {
    const TABLE: &'static str = "rm_categories";
    const KEY: &'static str = "id";
    fn key(&self) -> Uuid {
        self.id
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ListingRow {
    pub product_id: Uuid,
    pub category_ids: Vec<Uuid>,
}

impl Record for ListingRow {
    const TABLE: &'static str = "rm_category_listings";
    const KEY: &'static str = "product_id";
    fn key(&self) -> Uuid {
        self.product_id
    }
}

pub(crate) struct Categories {
    categories: Table<CategoryRow>,
    listings: Table<ListingRow>,
}

impl Model for Categories {
    fn new(mode: Mode) -> Self {
        Self {
            categories: Table::new(mode),
            listings: Table::new(mode),
        }
    }

    fn tables(&mut self) -> Vec<&mut dyn AnyTable> {
        vec![&mut self.categories, &mut self.listings]
    }

    fn touches(event: &Recorded, loads: &mut Loads) {
        // The tree is small and every fold walks it.
        loads.all::<CategoryRow>();
        match &event.event {
            Event::Product(ProductEvent::ProductCategoriesSet { .. }) => {
                loads.key::<ListingRow>(event.id)
            }
            Event::Category(
                CategoryEvent::CategoryCreated { .. }
                | CategoryEvent::CategoryMoved { .. }
                | CategoryEvent::CategoryDeleted {},
            ) => loads.all::<ListingRow>(),
            _ => {}
        }
    }

    fn fold(&mut self, event: &Recorded) -> Result<Vec<Change>, ProjectionError> {
        match &event.event {
            Event::Category(category) => self.category(event, category),
            Event::Product(ProductEvent::ProductCategoriesSet { category_ids }) => {
                Ok(self.listed(event.id, category_ids))
            }
            Event::Unknown if event.aggregate_type == schemas::names::aggregate::CATEGORY => {
                Ok(newer(&mut self.categories, MODEL, event))
            }
            _ => Ok(Vec::new()),
        }
    }
}

impl Categories {
    fn category(
        &mut self,
        event: &Recorded,
        category: &CategoryEvent,
    ) -> Result<Vec<Change>, ProjectionError> {
        match category {
            CategoryEvent::CategoryCreated {
                slug,
                name,
                parent_id,
                position,
            } => {
                self.categories.put(CategoryRow {
                    id: event.id,
                    slug: slug.clone(),
                    name: name.clone(),
                    parent_id: *parent_id,
                    position: *position,
                    path: Vec::new(),
                    tree_path: String::new(),
                    depth: 1,
                    direct_count: 0,
                    product_count: 0,
                    version: event.sequence,
                    created_at: event.time,
                    updated_at: event.time,
                });
                Ok(self.reshape(event))
            }
            CategoryEvent::CategoryUpdated {
                slug,
                name,
                position,
            } => {
                let row = self.update(event)?;
                if let Some(slug) = slug {
                    row.slug = slug.clone();
                }
                if let Some(name) = name {
                    row.name = name.clone();
                }
                if let Some(position) = position {
                    row.position = *position;
                }
                // Descendants show its slug and name in their paths.
                let below: BTreeSet<Uuid> = self
                    .categories
                    .rows()
                    .filter(|row| row.path.contains(&event.id))
                    .map(|row| row.id)
                    .chain([event.id])
                    .collect();
                Ok(self.announce(below, Some((event.id, event.sequence))))
            }
            CategoryEvent::CategoryMoved { parent_id } => {
                self.update(event)?.parent_id = *parent_id;
                Ok(self.reshape(event))
            }
            CategoryEvent::CategoryDeleted {} => {
                if self.categories.get(event.id).is_none() {
                    return Err(no_row(CategoryRow::TABLE, event));
                }
                self.categories.remove(event.id);
                Ok(self.reshape(event))
            }
        }
    }

    /// The row an event of its stream changes, at the event's version.
    fn update(&mut self, event: &Recorded) -> Result<&mut CategoryRow, ProjectionError> {
        let row = self
            .categories
            .get_mut(event.id)
            .ok_or_else(|| no_row(CategoryRow::TABLE, event))?;
        row.version = event.sequence;
        row.updated_at = event.time;
        Ok(row)
    }

    /// After a change to the tree: every path and count recomputed; the
    /// event's own category and every row that changed are announced.
    fn reshape(&mut self, event: &Recorded) -> Vec<Change> {
        let mut changed = self.repath();
        changed.extend(self.recount());
        changed.insert(event.id);
        self.announce(changed, Some((event.id, event.sequence)))
    }

    fn announce(&self, ids: BTreeSet<Uuid>, event: Option<(Uuid, i64)>) -> Vec<Change> {
        ids.into_iter()
            .map(|id| {
                let version = match (self.categories.get(id), event) {
                    (_, Some((own, sequence))) if own == id => sequence,
                    (Some(row), _) => row.version,
                    (None, _) => 0,
                };
                change(MODEL, id, version)
            })
            .collect()
    }

    fn parents(&self) -> HashMap<Uuid, Option<Uuid>> {
        self.categories
            .rows()
            .map(|row| (row.id, row.parent_id))
            .collect()
    }

    /// `id`'s ancestors from the top, as far as they exist.
    fn ancestors(parents: &HashMap<Uuid, Option<Uuid>>, id: Uuid) -> Vec<Uuid> {
        let mut path = Vec::new();
        let mut at = parents.get(&id).copied().flatten();
        while let Some(parent) = at {
            if path.len() >= MAX_WALK || parent == id || !parents.contains_key(&parent) {
                break;
            }
            path.push(parent);
            at = parents.get(&parent).copied().flatten();
        }
        path.reverse();
        path
    }

    /// Recomputes `path`, `tree_path` and `depth` of every row; the ids of
    /// the rows that changed.
    fn repath(&mut self) -> BTreeSet<Uuid> {
        let parents = self.parents();
        let mut changed = BTreeSet::new();
        for &id in parents.keys() {
            let path = Self::ancestors(&parents, id);
            let mut tree_path = String::from("/");
            for step in path.iter().chain([&id]) {
                tree_path.push_str(&step.to_string());
                tree_path.push('/');
            }
            let depth = i32::try_from(path.len() + 1).unwrap_or(i32::MAX);
            let same = self.categories.get(id).is_some_and(|row| {
                row.path == path && row.tree_path == tree_path && row.depth == depth
            });
            if !same {
                if let Some(row) = self.categories.get_mut(id) {
                    row.path = path;
                    row.tree_path = tree_path;
                    row.depth = depth;
                    changed.insert(id);
                }
            }
        }
        changed
    }

    /// The existing categories of a list, each once, and the same with
    /// every ancestor added.
    fn expand(
        parents: &HashMap<Uuid, Option<Uuid>>,
        category_ids: &[Uuid],
    ) -> (BTreeSet<Uuid>, BTreeSet<Uuid>) {
        let direct: BTreeSet<Uuid> = category_ids
            .iter()
            .copied()
            .filter(|id| parents.contains_key(id))
            .collect();
        let mut all = direct.clone();
        for id in &direct {
            all.extend(Self::ancestors(parents, *id));
        }
        (direct, all)
    }

    /// Recounts every row from all listings; the ids of the rows that changed.
    fn recount(&mut self) -> BTreeSet<Uuid> {
        let parents = self.parents();
        let mut direct: HashMap<Uuid, i64> = HashMap::new();
        let mut total: HashMap<Uuid, i64> = HashMap::new();
        for listing in self.listings.rows() {
            let (own, all) = Self::expand(&parents, &listing.category_ids);
            for id in own {
                *direct.entry(id).or_default() += 1;
            }
            for id in all {
                *total.entry(id).or_default() += 1;
            }
        }
        let mut changed = BTreeSet::new();
        for &id in parents.keys() {
            let d = direct.get(&id).copied().unwrap_or(0);
            let t = total.get(&id).copied().unwrap_or(0);
            let same = self
                .categories
                .get(id)
                .is_some_and(|row| row.direct_count == d && row.product_count == t);
            if !same {
                if let Some(row) = self.categories.get_mut(id) {
                    row.direct_count = d;
                    row.product_count = t;
                    changed.insert(id);
                }
            }
        }
        changed
    }

    /// A product's new list: the counts of the categories it left and joined
    /// (and of their ancestors) move by one.
    fn listed(&mut self, product_id: Uuid, category_ids: &[Uuid]) -> Vec<Change> {
        let parents = self.parents();
        let old = self
            .listings
            .get(product_id)
            .map(|l| l.category_ids.clone())
            .unwrap_or_default();
        let (old_direct, old_all) = Self::expand(&parents, &old);
        let (new_direct, new_all) = Self::expand(&parents, category_ids);
        self.listings.put(ListingRow {
            product_id,
            category_ids: category_ids.to_vec(),
        });
        let mut changed = BTreeSet::new();
        let mut add = |table: &mut Table<CategoryRow>, id: Uuid, direct: i64, total: i64| {
            if let Some(row) = table.get_mut(id) {
                row.direct_count += direct;
                row.product_count += total;
                changed.insert(id);
            }
        };
        for id in old_direct.difference(&new_direct) {
            add(&mut self.categories, *id, -1, 0);
        }
        for id in new_direct.difference(&old_direct) {
            add(&mut self.categories, *id, 1, 0);
        }
        for id in old_all.difference(&new_all) {
            add(&mut self.categories, *id, 0, -1);
        }
        for id in new_all.difference(&old_all) {
            add(&mut self.categories, *id, 0, 1);
        }
        self.announce(changed, None)
    }
}
