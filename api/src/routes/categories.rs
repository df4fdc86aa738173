//! The category writes. The tree around a category is read here and handed
//! to the domain with the command: the ancestors of a new parent from the
//! category streams (so a parent created a moment ago counts), the children,
//! products and height of a subtree from the read model.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use domain::category::{Category, CategoryCommand, MAX_DEPTH};
use domain::values::{Name, Slug};
use schemars::JsonSchema;
use schemas::commands::{CreateCategory, MoveCategory, UpdateCategory};
use serde::Serialize;
use uuid::Uuid;

use super::{written, Fields};
use crate::auth::CatalogManager;
use crate::error::{ApiError, FieldError};
use crate::extract::{parse_id, Context, IfMatch, IfMatchNothing, JsonBody};
use crate::state::AppState;

/// The answer to a write on a category: the aggregate as it now is.
#[derive(Serialize, JsonSchema)]
pub(crate) struct CategoryView<'a> {
    id: String,
    slug: Option<&'a str>,
    name: Option<&'a str>,
    parent_id: Option<Uuid>,
    position: i32,
    version: usize,
}

fn view<'a>(id: &str, category: &'a Category, version: usize) -> CategoryView<'a> {
    CategoryView {
        id: id.to_owned(),
        slug: category.slug().map(Slug::as_str),
        name: category.name().map(Name::as_str),
        parent_id: category.parent_id(),
        position: category.position(),
        version,
    }
}

/// `position` as the domain takes it; out of range is a field problem.
fn parse_position(fields: &mut Fields, raw: Option<i64>) -> Option<i32> {
    let raw = raw?;
    match i32::try_from(raw) {
        Ok(position) if position >= 0 => Some(position),
        _ => {
            fields.fail("position", "must be an integer from 0 to 2147483647");
            None
        }
    }
}

/// A category id of a body: malformed is a problem of `field`.
fn parse_category_id(fields: &mut Fields, field: &str, raw: &str) -> Option<Uuid> {
    match Uuid::parse_str(raw) {
        Ok(id) => Some(id),
        Err(_) => {
            fields.fail(field, "must be a category id (a UUID)");
            None
        }
    }
}

fn no_parent() -> ApiError {
    ApiError::validation(vec![FieldError::new(
        "parent_id",
        "no category has this id",
    )])
}

/// The ancestors of `parent` from the top, then `parent`, read from the
/// category streams; `None` when it does not exist. The walk stops past the
/// deepest tree the domain allows.
pub(crate) async fn lineage(state: &AppState, parent: Uuid) -> Result<Option<Vec<Uuid>>, ApiError> {
    let mut path = Vec::new();
    let mut at = Some(parent);
    while let Some(id) = at {
        if path.len() > MAX_DEPTH || path.contains(&id) {
            break;
        }
        let loaded = state.aggregates.categories.load_id(id).await?;
        if !loaded.aggregate.exists() {
            if id == parent {
                return Ok(None);
            }
            break;
        }
        path.push(id);
        at = loaded.aggregate.parent_id();
    }
    path.reverse();
    Ok(Some(path))
}

/// Policy: an admin or a `catalog` API key.
pub async fn create(
    State(state): State<AppState>,
    _manager: CatalogManager,
    _new: IfMatchNothing,
    Context(metadata): Context,
    JsonBody(body): JsonBody<CreateCategory>,
) -> Result<Response, ApiError> {
    let mut fields = Fields::default();
    let slug = fields.check("slug", Slug::parse(&body.slug));
    let name = fields.check("name", Name::parse(&body.name));
    let position = parse_position(&mut fields, body.position);
    let parent_id = body
        .parent_id
        .as_deref()
        .and_then(|raw| parse_category_id(&mut fields, "parent_id", raw));
    fields.finish()?;
    let (Some(slug), Some(name)) = (slug, name) else {
        return Err(ApiError::validation(Vec::new()));
    };
    let parent_path = match parent_id {
        None => Vec::new(),
        Some(parent) => match lineage(&state, parent).await? {
            Some(path) => path,
            None => return Err(no_parent()),
        },
    };
    let category_id = Uuid::now_v7();
    let id = category_id.to_string();
    let command = CategoryCommand::Create {
        category_id,
        slug,
        name,
        parent_id,
        position: position.unwrap_or(0),
        parent_path,
    };
    let done = state
        .aggregates
        .categories
        .execute_new(&id, command, &metadata)
        .await?;
    Ok(written(
        StatusCode::CREATED,
        Some(format!("/categories/{id}")),
        done.version,
        view(&id, &done.aggregate, done.version),
    ))
}

async fn run(
    state: &AppState,
    id: Uuid,
    command: CategoryCommand,
    expected: Option<usize>,
    metadata: &commands::CommandMetadata,
) -> Result<Response, ApiError> {
    let id = id.to_string();
    let done = state
        .aggregates
        .categories
        .execute(&id, command, expected, metadata)
        .await?;
    Ok(written(
        StatusCode::OK,
        None,
        done.version,
        view(&id, &done.aggregate, done.version),
    ))
}

/// Policy: an admin or a `catalog` API key.
pub async fn update(
    State(state): State<AppState>,
    _manager: CatalogManager,
    Path(id): Path<String>,
    IfMatch(expected): IfMatch,
    Context(metadata): Context,
    JsonBody(body): JsonBody<UpdateCategory>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let mut fields = Fields::default();
    let slug = body
        .slug
        .and_then(|s| fields.check("slug", Slug::parse(&s)));
    let name = body
        .name
        .and_then(|n| fields.check("name", Name::parse(&n)));
    let position = parse_position(&mut fields, body.position);
    fields.finish()?;
    let command = CategoryCommand::Update {
        slug,
        name,
        position,
    };
    run(&state, id, command, expected, &metadata).await
}

/// Policy: an admin or a `catalog` API key.
pub async fn move_category(
    State(state): State<AppState>,
    _manager: CatalogManager,
    Path(id): Path<String>,
    IfMatch(expected): IfMatch,
    Context(metadata): Context,
    JsonBody(body): JsonBody<MoveCategory>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let mut fields = Fields::default();
    let parent_id = body
        .parent_id
        .as_deref()
        .and_then(|raw| parse_category_id(&mut fields, "parent_id", raw));
    fields.finish()?;
    let parent_path = match parent_id {
        None => Vec::new(),
        // Under itself: the domain says it is a cycle, whatever the walk finds.
        Some(parent) if parent == id => vec![id],
        Some(parent) => match lineage(&state, parent).await? {
            Some(path) => path,
            None => return Err(no_parent()),
        },
    };
    let subtree = projections::queries::subtree(&state.pool, id).await?;
    let command = CategoryCommand::Move {
        parent_id,
        parent_path,
        subtree_height: u32::try_from(subtree.height).unwrap_or(0),
    };
    run(&state, id, command, expected, &metadata).await
}

/// Policy: an admin or a `catalog` API key.
pub async fn delete(
    State(state): State<AppState>,
    _manager: CatalogManager,
    Path(id): Path<String>,
    IfMatch(expected): IfMatch,
    Context(metadata): Context,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let subtree = projections::queries::subtree(&state.pool, id).await?;
    let command = CategoryCommand::Delete {
        children: u64::try_from(subtree.children).unwrap_or(0),
        products: u64::try_from(subtree.products).unwrap_or(0),
    };
    state
        .aggregates
        .categories
        .execute(&id.to_string(), command, expected, &metadata)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
