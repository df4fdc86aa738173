//! Request bodies of the command API, one struct per route.
//!
//! Fields are plain strings and integers so that a value breaking a rule is a
//! 422 naming its field, not a broken body; their JSON Schemas still state
//! those rules (borrowed from the domain's value types), so the OpenAPI
//! document tells clients and generated tests what the server will accept.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// Integer fields are plain `i64`: serde_json reads `1.0`, `1e2` and numbers
// past i64's range as floats, which an `i64` refuses (400), as api.md wants
// of money and counts. Parse bodies with `crate::strict::from_slice`.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MoneyBody {
    /// Integer minor units (cents for EUR), greater than zero.
    #[schemars(range(min = 1, max = i64::MAX))]
    pub amount: i64,
    #[schemars(with = "domain::Currency")]
    pub currency: String,
}

/// `POST /users`
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterUser {
    #[schemars(with = "domain::EmailAddress")]
    pub email: String,
    #[schemars(with = "domain::Name")]
    pub name: String,
    /// Lets the user sign in with `POST /auth/login`; without one, the user
    /// signs in only through OpenID Connect (or an admin sets one).
    #[serde(default)]
    #[schemars(with = "Option<domain::Password>")]
    pub password: Option<String>,
}

/// `POST /auth/login`
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The email the user registered with (compared case-insensitively).
    #[schemars(length(min = 1, max = 254))]
    pub email: String,
    #[schemars(length(min = 1, max = 1024), extend("writeOnly" = true))]
    pub password: String,
}

/// `POST /auth/refresh`
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Refresh {
    /// The `refresh_token` of the last sign-in or refresh answer; single use.
    #[schemars(length(min = 1, max = 1024))]
    pub refresh_token: String,
}

/// `POST /auth/logout`
#[derive(Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Logout {
    /// The sign-in to end; without it, the sign-in of the access token.
    #[serde(default)]
    #[schemars(length(min = 1, max = 1024))]
    pub refresh_token: Option<String>,
}

/// `POST /users/{id}/password`
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    /// Required of the user itself; an admin may leave it out.
    #[serde(default)]
    #[schemars(length(min = 1, max = 1024), extend("writeOnly" = true))]
    pub current_password: Option<String>,
    #[schemars(with = "domain::Password")]
    pub new_password: String,
}

/// `POST /api-keys`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// What the key is for, e.g. "1C exchange".
    #[schemars(with = "domain::Name")]
    pub name: String,
    /// `admin` may do everything; `catalog` may manage products, prices and stock only.
    #[schemars(extend("enum" = ["admin", "catalog"]))]
    pub role: String,
}

/// Request bodies that carry passwords or tokens print without them.
macro_rules! redacted_debug {
    ($($type:ident),*) => {$(
        impl std::fmt::Debug for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($type), " { *** }"))
            }
        }
    )*};
}
redacted_debug!(RegisterUser, Login, Refresh, Logout, ChangePassword);

/// `PATCH /users/{id}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[serde(default)]
    #[schemars(with = "Option<domain::Name>")]
    pub name: Option<String>,
    #[serde(default)]
    #[schemars(with = "Option<domain::EmailAddress>")]
    pub email: Option<String>,
}

/// `POST /products`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    #[schemars(with = "domain::Sku")]
    pub sku: String,
    #[schemars(with = "domain::Name")]
    pub name: String,
    #[serde(default)]
    #[schemars(with = "Option<domain::Description>")]
    pub description: Option<String>,
    pub price: MoneyBody,
    /// Units in stock at creation.
    #[schemars(range(min = 0, max = i64::MAX))]
    pub stock: i64,
}

/// `PATCH /products/{id}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProduct {
    #[serde(default)]
    #[schemars(with = "Option<domain::Name>")]
    pub name: Option<String>,
    #[serde(default)]
    #[schemars(with = "Option<domain::Description>")]
    pub description: Option<String>,
    /// Replaces the product's attributes.
    #[serde(default)]
    #[schemars(with = "Option<domain::Attributes>")]
    pub attributes: Option<std::collections::BTreeMap<String, String>>,
}

/// `PUT /products/{id}/categories`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetProductCategories {
    /// 0 to 20 existing categories, each once.
    #[schemars(
        with = "Vec<uuid::Uuid>",
        length(min = 0, max = 20),
        extend("uniqueItems" = true)
    )]
    pub category_ids: Vec<String>,
}

/// `POST /categories`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCategory {
    #[schemars(with = "domain::Slug")]
    pub slug: String,
    #[schemars(with = "domain::Name")]
    pub name: String,
    /// The parent category; without it, a top-level one.
    #[serde(default)]
    #[schemars(with = "Option<uuid::Uuid>")]
    pub parent_id: Option<String>,
    /// Order among its siblings (then by name); 0 by default.
    #[serde(default)]
    #[schemars(range(min = 0, max = i32::MAX))]
    pub position: Option<i64>,
}

/// `PATCH /categories/{id}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCategory {
    #[serde(default)]
    #[schemars(with = "Option<domain::Slug>")]
    pub slug: Option<String>,
    #[serde(default)]
    #[schemars(with = "Option<domain::Name>")]
    pub name: Option<String>,
    #[serde(default)]
    #[schemars(range(min = 0, max = i32::MAX))]
    pub position: Option<i64>,
}

/// `POST /categories/{id}/move`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveCategory {
    /// The new parent, or `null` for the top level. Required.
    #[serde(deserialize_with = "present")]
    #[schemars(with = "Option<uuid::Uuid>", required, extend("type" = ["string", "null"]))]
    pub parent_id: Option<String>,
}

/// A field that must be present and may be `null`: serde would read a
/// missing `Option` as `None`, and a `deserialize_with` makes it required.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

/// `POST /products/{id}/price`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePrice {
    pub price: MoneyBody,
}

/// `POST /products/{id}/stock`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustStock {
    /// Units to add (positive) or remove (negative); never zero.
    #[schemars(range(min = i64::MIN, max = i64::MAX), extend("not" = { "const": 0 }))]
    pub delta: i64,
}

/// One line of `POST /orders`. Ids are strings here so that a malformed id is
/// reported as a validation error on its field, not as a broken body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderLineBody {
    #[schemars(with = "uuid::Uuid")]
    pub product_id: String,
    #[schemars(range(min = 1, max = 1000))]
    pub quantity: i64,
}

/// `POST /orders`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    #[schemars(with = "uuid::Uuid")]
    pub user_id: String,
    /// 1 to 50 lines, each product at most once.
    #[schemars(length(min = 1, max = 50))]
    pub lines: Vec<OrderLineBody>,
    /// What the payment gateway charges: 1 to 255 characters, no control characters.
    #[schemars(
        length(min = 1, max = 255),
        regex(pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")
    )]
    pub payment_token: String,
    /// Where the order goes; optional here, required at a cart's checkout.
    #[serde(default)]
    pub shipping_address: Option<ShippingAddressBody>,
}

/// `{name, line1, line2?, city, region?, postal_code, country}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShippingAddressBody {
    #[schemars(length(min = 1, max = 200))]
    pub name: String,
    #[schemars(length(min = 1, max = 200))]
    pub line1: String,
    #[serde(default)]
    #[schemars(length(min = 1, max = 200))]
    pub line2: Option<String>,
    #[schemars(length(min = 1, max = 200))]
    pub city: String,
    #[serde(default)]
    #[schemars(length(min = 1, max = 200))]
    pub region: Option<String>,
    #[schemars(length(min = 1, max = 200))]
    pub postal_code: String,
    /// An ISO 3166-1 alpha-2 code, e.g. `DE`.
    #[schemars(regex(pattern = r"^[A-Z]{2}$"))]
    pub country: String,
}

/// `POST /orders/{id}/cancel`; the body may be left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelOrder {
    /// Free text, 0 to 500 characters, kept as the order's `cancel_note`;
    /// the order's `cancel_reason` is `customer_request` whatever it says.
    #[serde(default)]
    #[schemars(length(max = 500))]
    pub reason: Option<String>,
}

/// `POST /carts`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCart {}

/// `PUT /carts/{id}/lines/{product_id}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetCartLine {
    /// 1 to 1000; 0 removes the line.
    #[schemars(range(min = 0, max = 1000))]
    pub quantity: i64,
}

/// `POST /carts/{id}/claim`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimCart {}

/// `POST /carts/{id}/checkout`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutCart {
    /// As for `POST /orders`.
    #[schemars(
        length(min = 1, max = 255),
        regex(pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")
    )]
    pub payment_token: String,
    pub shipping_address: ShippingAddressBody,
}

/// `POST /webhooks`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// `https://...`; `http://` only to a loopback address, when the
    /// deployment allows it. Private, link-local and loopback addresses are refused.
    #[schemars(length(min = 1, max = 2048), extend("format" = "uri"))]
    pub url: String,
    /// Event names (`order.placed`), a resource's pattern (`order.*`) or `*`.
    #[schemars(length(min = 1, max = 50))]
    pub events: Vec<String>,
    #[serde(default)]
    #[schemars(length(max = 500))]
    pub description: Option<String>,
}

/// `PATCH /webhooks/{id}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    #[serde(default)]
    #[schemars(length(min = 1, max = 2048), extend("format" = "uri"))]
    pub url: Option<String>,
    #[serde(default)]
    #[schemars(length(min = 1, max = 50))]
    pub events: Option<Vec<String>>,
    #[serde(default)]
    #[schemars(length(max = 500))]
    pub description: Option<String>,
    #[serde(default)]
    #[schemars(extend("enum" = ["enabled", "disabled"]))]
    pub status: Option<String>,
}
