//! `rm_categories`: the tree, one category with its path, and the facts
//! about a category's subtree that the write side hands to the domain.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::QueryError;

/// A node of `GET /categories`: its children nested, ordered by position
/// then name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CategoryNode {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub parent_id: Option<Uuid>,
    pub position: i32,
    /// Products listed in it or any of its descendants, each once.
    pub product_count: i64,
    pub children: Vec<CategoryNode>,
}

/// `GET /categories`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CategoryTree {
    pub items: Vec<CategoryNode>,
}

/// An ancestor, for breadcrumbs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CategoryCrumb {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
}

/// `GET /categories/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CategoryView {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub parent_id: Option<Uuid>,
    pub position: i32,
    pub product_count: i64,
    /// Its ancestors from the top.
    pub path: Vec<CategoryCrumb>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    slug: String,
    name: String,
    parent_id: Option<Uuid>,
    position: i32,
    product_count: i64,
}

/// The whole tree.
pub async fn category_tree(pool: &PgPool) -> Result<CategoryTree, QueryError> {
    let rows = sqlx::query_as::<_, Row>(
        "SELECT id, slug, name, parent_id, position, product_count FROM rm_categories \
         ORDER BY position, name, id",
    )
    .fetch_all(pool)
    .await?;
    let known: std::collections::HashSet<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut children: HashMap<Option<Uuid>, Vec<Row>> = HashMap::new();
    for row in rows {
        // A parent the tree lacks (a race of a delete) puts it at the top.
        let parent = row.parent_id.filter(|p| known.contains(p));
        children.entry(parent).or_default().push(row);
    }
    fn build(
        parent: Option<Uuid>,
        children: &mut HashMap<Option<Uuid>, Vec<Row>>,
        depth: usize,
    ) -> Vec<CategoryNode> {
        let Some(rows) = children.remove(&parent) else {
            return Vec::new();
        };
        rows.into_iter()
            .map(|row| CategoryNode {
                children: if depth < 64 {
                    build(Some(row.id), children, depth + 1)
                } else {
                    Vec::new()
                },
                id: row.id,
                slug: row.slug,
                name: row.name,
                parent_id: row.parent_id,
                position: row.position,
                product_count: row.product_count,
            })
            .collect()
    }
    Ok(CategoryTree {
        items: build(None, &mut children, 0),
    })
}

#[derive(sqlx::FromRow)]
struct OneRow {
    id: Uuid,
    slug: String,
    name: String,
    parent_id: Option<Uuid>,
    position: i32,
    product_count: i64,
    path: sqlx::types::Json<Vec<Uuid>>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// The id a category's id or slug names, if any.
pub async fn category_id(pool: &PgPool, id_or_slug: &str) -> Result<Option<Uuid>, QueryError> {
    if let Ok(id) = Uuid::parse_str(id_or_slug) {
        return Ok(Some(id));
    }
    // Not a slug's shape (a NUL, say, which Postgres text cannot hold):
    // names nothing, without asking the database.
    let slug_shaped = !id_or_slug.is_empty()
        && id_or_slug.len() <= 100
        && id_or_slug.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    if !slug_shaped {
        return Ok(None);
    }
    Ok(
        sqlx::query_scalar("SELECT id FROM rm_categories WHERE slug = $1")
            .bind(id_or_slug)
            .fetch_optional(pool)
            .await?,
    )
}

/// One category with its path.
pub async fn category(pool: &PgPool, id: Uuid) -> Result<Option<CategoryView>, QueryError> {
    let Some(row) = sqlx::query_as::<_, OneRow>(
        "SELECT id, slug, name, parent_id, position, product_count, path, version, \
                created_at, updated_at FROM rm_categories WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let ancestors: Vec<(Uuid, String, String)> =
        sqlx::query_as("SELECT id, slug, name FROM rm_categories WHERE id = ANY($1)")
            .bind(&row.path.0)
            .fetch_all(pool)
            .await?;
    let by_id: HashMap<Uuid, (String, String)> = ancestors
        .into_iter()
        .map(|(id, slug, name)| (id, (slug, name)))
        .collect();
    let path = row
        .path
        .0
        .iter()
        .filter_map(|id| {
            by_id.get(id).map(|(slug, name)| CategoryCrumb {
                id: *id,
                slug: slug.clone(),
                name: name.clone(),
            })
        })
        .collect();
    Ok(Some(CategoryView {
        id: row.id,
        slug: row.slug,
        name: row.name,
        parent_id: row.parent_id,
        position: row.position,
        product_count: row.product_count,
        path,
        version: row.version,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }))
}

/// What the read model knows of a category's subtree: its children, the
/// products listed in it or below, and how many levels lie below it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Subtree {
    pub children: i64,
    pub products: i64,
    pub height: i32,
}

pub async fn subtree(pool: &PgPool, id: Uuid) -> Result<Subtree, QueryError> {
    let row: Option<(i64, i64, i32)> = sqlx::query_as(
        "SELECT (SELECT count(*) FROM rm_categories k WHERE k.parent_id = c.id), \
                c.product_count, \
                (SELECT coalesce(max(d.depth), c.depth) - c.depth FROM rm_categories d \
                  WHERE d.tree_path LIKE c.tree_path || '%') \
           FROM rm_categories c WHERE c.id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row
        .map(|(children, products, height)| Subtree {
            children,
            products,
            height,
        })
        .unwrap_or_default())
}
