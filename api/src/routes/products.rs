use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use domain::product::{Product, ProductCommand};
use domain::values::{Attributes, Currency, Description, Money, Name, Sku};
use schemars::JsonSchema;
use schemas::commands::{
    AdjustStock, ChangePrice, CreateProduct, MoneyBody, SetProductCategories, UpdateProduct,
};
use serde::Serialize;
use uuid::Uuid;

use super::{written, Fields};
use crate::auth::CatalogManager;
use crate::error::ApiError;
use crate::extract::{parse_id, Context, IfMatch, IfMatchNothing, JsonBody};
use crate::state::AppState;

/// The answer to a write on a product: the aggregate as it now is.
#[derive(Serialize, JsonSchema)]
pub(crate) struct ProductView<'a> {
    id: String,
    sku: Option<&'a str>,
    name: Option<&'a str>,
    description: Option<&'a str>,
    price: Option<&'a Money>,
    stock: Stock,
    status: domain::product::ProductStatus,
    categories: &'a [Uuid],
    attributes: &'a Attributes,
    version: usize,
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct Stock {
    available: i64,
    reserved: i64,
}

fn view<'a>(id: &str, product: &'a Product, version: usize) -> ProductView<'a> {
    ProductView {
        id: id.to_owned(),
        sku: product.sku().map(|s| s.as_str()),
        name: product.name().map(|n| n.as_str()),
        description: product.description().map(|d| d.as_str()),
        price: product.price(),
        stock: Stock {
            available: product.available(),
            reserved: product.reserved(),
        },
        status: product.status(),
        categories: product.categories(),
        attributes: product.attributes(),
        version,
    }
}

/// A positive price in a known currency; problems are reported under `field`.
pub(crate) fn parse_price(fields: &mut Fields, field: &str, price: &MoneyBody) -> Option<Money> {
    if price.amount <= 0 {
        fields.fail(
            format!("{field}.amount"),
            "must be a positive integer in minor units",
        );
    }
    let currency = fields.check(
        &format!("{field}.currency"),
        Currency::parse(&price.currency),
    )?;
    (price.amount > 0).then(|| Money::new(price.amount, currency))
}

/// Policy: an admin or a `catalog` API key.
pub async fn create(
    State(state): State<AppState>,
    _manager: CatalogManager,
    _new: IfMatchNothing,
    Context(metadata): Context,
    JsonBody(body): JsonBody<CreateProduct>,
) -> Result<Response, ApiError> {
    let mut fields = Fields::default();
    let sku = fields.check("sku", Sku::parse(&body.sku));
    let name = fields.check("name", Name::parse(&body.name));
    let description = match &body.description {
        Some(d) => fields.check("description", Description::parse(d)).map(Some),
        None => Some(None),
    };
    let price = parse_price(&mut fields, "price", &body.price);
    if body.stock < 0 {
        fields.fail("stock", "must be zero or more");
    }
    fields.finish()?;
    let (Some(sku), Some(name), Some(description), Some(price)) = (sku, name, description, price)
    else {
        return Err(ApiError::validation(Vec::new()));
    };
    let product_id = Uuid::now_v7();
    let id = product_id.to_string();
    let command = ProductCommand::Create {
        product_id,
        sku,
        name,
        description,
        price,
        stock: body.stock,
    };
    let done = state
        .aggregates
        .products
        .execute_new(&id, command, &metadata)
        .await?;
    Ok(written(
        StatusCode::CREATED,
        Some(format!("/products/{id}")),
        done.version,
        view(&id, &done.aggregate, done.version),
    ))
}

async fn run(
    state: &AppState,
    id: &str,
    command: ProductCommand,
    expected: Option<usize>,
    metadata: &commands::CommandMetadata,
) -> Result<Response, ApiError> {
    let id = parse_id(id)?.to_string();
    let done = state
        .aggregates
        .products
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
    JsonBody(body): JsonBody<UpdateProduct>,
) -> Result<Response, ApiError> {
    parse_id(&id)?;
    let mut fields = Fields::default();
    let name = body
        .name
        .and_then(|n| fields.check("name", Name::parse(&n)));
    let description = body
        .description
        .and_then(|d| fields.check("description", Description::parse(&d)));
    let attributes = body
        .attributes
        .and_then(|map| match Attributes::parse(map) {
            Ok(attributes) => Some(attributes),
            Err(problems) => {
                for (key, message) in problems {
                    let field = if key.is_empty() {
                        "attributes".to_owned()
                    } else {
                        format!("attributes.{key}")
                    };
                    fields.fail(field, message);
                }
                None
            }
        });
    fields.finish()?;
    run(
        &state,
        &id,
        ProductCommand::UpdateDetails {
            name,
            description,
            attributes,
        },
        expected,
        &metadata,
    )
    .await
}

/// Policy: an admin or a `catalog` API key. Every id must name a live
/// category (read from the category streams).
pub async fn set_categories(
    State(state): State<AppState>,
    _manager: CatalogManager,
    Path(id): Path<String>,
    IfMatch(expected): IfMatch,
    Context(metadata): Context,
    JsonBody(body): JsonBody<SetProductCategories>,
) -> Result<Response, ApiError> {
    parse_id(&id)?;
    let mut fields = Fields::default();
    if body.category_ids.len() > domain::product::MAX_CATEGORIES {
        fields.fail(
            "category_ids",
            format!("at most {} categories", domain::product::MAX_CATEGORIES),
        );
    }
    fields.finish()?;
    let mut fields = Fields::default();
    let mut category_ids = Vec::with_capacity(body.category_ids.len());
    for (i, raw) in body.category_ids.iter().enumerate() {
        let field = format!("category_ids[{i}]");
        let Ok(category) = Uuid::parse_str(raw) else {
            fields.fail(field, "must be a category id (a UUID)");
            continue;
        };
        if category_ids.contains(&category) {
            fields.fail(field, "is listed twice");
            continue;
        }
        let loaded = state.aggregates.categories.load_id(category).await?;
        if !loaded.aggregate.exists() {
            fields.fail(field, "no category has this id");
            continue;
        }
        category_ids.push(category);
    }
    fields.finish()?;
    run(
        &state,
        &id,
        ProductCommand::SetCategories { category_ids },
        expected,
        &metadata,
    )
    .await
}

/// Policy: an admin or a `catalog` API key.
pub async fn change_price(
    State(state): State<AppState>,
    _manager: CatalogManager,
    Path(id): Path<String>,
    IfMatch(expected): IfMatch,
    Context(metadata): Context,
    JsonBody(body): JsonBody<ChangePrice>,
) -> Result<Response, ApiError> {
    parse_id(&id)?;
    let mut fields = Fields::default();
    let price = parse_price(&mut fields, "price", &body.price);
    fields.finish()?;
    let Some(price) = price else {
        return Err(ApiError::validation(Vec::new()));
    };
    run(
        &state,
        &id,
        ProductCommand::ChangePrice { price },
        expected,
        &metadata,
    )
    .await
}

/// Policy: an admin or a `catalog` API key.
pub async fn adjust_stock(
    State(state): State<AppState>,
    _manager: CatalogManager,
    Path(id): Path<String>,
    IfMatch(expected): IfMatch,
    Context(metadata): Context,
    JsonBody(body): JsonBody<AdjustStock>,
) -> Result<Response, ApiError> {
    parse_id(&id)?;
    let mut fields = Fields::default();
    if body.delta == 0 {
        fields.fail("delta", "must be a non-zero integer");
    }
    fields.finish()?;
    run(
        &state,
        &id,
        ProductCommand::AdjustStock { delta: body.delta },
        expected,
        &metadata,
    )
    .await
}

/// Policy: an admin or a `catalog` API key.
pub async fn discontinue(
    State(state): State<AppState>,
    _manager: CatalogManager,
    Path(id): Path<String>,
    IfMatch(expected): IfMatch,
    Context(metadata): Context,
) -> Result<Response, ApiError> {
    run(
        &state,
        &id,
        ProductCommand::Discontinue,
        expected,
        &metadata,
    )
    .await
}
