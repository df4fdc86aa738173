//! Request bodies of the command API, one struct per route.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoneyBody {
    pub amount: i64,
    pub currency: String,
}

/// `POST /users`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterUser {
    pub email: String,
    pub name: String,
}

/// `PATCH /users/{id}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
}

/// `POST /products`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    pub sku: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub price: MoneyBody,
    pub stock: i64,
}

/// `PATCH /products/{id}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateProduct {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// `POST /products/{id}/price`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePrice {
    pub price: MoneyBody,
}

/// `POST /products/{id}/stock`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdjustStock {
    pub delta: i64,
}

/// One line of `POST /orders`. Ids are strings here so that a malformed id is
/// reported as a validation error on its field, not as a broken body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderLineBody {
    pub product_id: String,
    pub quantity: i64,
}

/// `POST /orders`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    pub user_id: String,
    pub lines: Vec<OrderLineBody>,
    pub payment_token: String,
}

/// `POST /orders/{id}/cancel`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelOrder {
    pub reason: String,
}
