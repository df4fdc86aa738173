//! Request bodies of the command API, one struct per route.
//!
//! Fields are plain strings and integers so that a value breaking a rule is a
//! 422 naming its field, not a broken body; their JSON Schemas still state
//! those rules (borrowed from the domain's value types), so the OpenAPI
//! document tells clients and generated tests what the server will accept.

use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Deserializer, Unexpected};
use serde::{Deserialize, Serialize};

/// An integer as JSON Schema counts them: `2.0` is one too, so a body its
/// schema accepts is never refused for writing a whole number with a point.
fn whole_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    struct Whole;

    impl de::Visitor<'_> for Whole {
        type Value = i64;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an integer")
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<i64, E> {
            Ok(value)
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<i64, E> {
            i64::try_from(value).map_err(|_| E::invalid_value(Unexpected::Unsigned(value), &self))
        }

        fn visit_f64<E: de::Error>(self, value: f64) -> Result<i64, E> {
            // i64::MIN is exactly -2^63; 2^63 itself is out of range.
            const LIMIT: f64 = 9_223_372_036_854_775_808.0;
            if value.fract() == 0.0 && (-LIMIT..LIMIT).contains(&value) {
                Ok(value as i64)
            } else {
                Err(E::invalid_value(Unexpected::Float(value), &self))
            }
        }
    }

    deserializer.deserialize_i64(Whole)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MoneyBody {
    /// Integer minor units (cents for EUR), greater than zero.
    #[serde(deserialize_with = "whole_number")]
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
        impl fmt::Debug for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
    #[serde(deserialize_with = "whole_number")]
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
    #[serde(deserialize_with = "whole_number")]
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
    #[serde(deserialize_with = "whole_number")]
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
}

/// `POST /orders/{id}/cancel`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelOrder {
    /// Only `customer_request` can be asked for; other reasons come from the order flow.
    #[schemars(extend("enum" = ["customer_request"]))]
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_with_a_point_are_integers_and_fractions_are_not() {
        let parse = |text: &str| serde_json::from_str::<AdjustStock>(text).map(|b| b.delta);
        assert_eq!(parse(r#"{"delta": 3}"#).unwrap(), 3);
        assert_eq!(parse(r#"{"delta": -3.0}"#).unwrap(), -3);
        assert_eq!(parse(r#"{"delta": 1e3}"#).unwrap(), 1000);
        for bad in [
            r#"{"delta": 1.5}"#,
            r#"{"delta": 9223372036854775808}"#,
            r#"{"delta": 1e19}"#,
            r#"{"delta": "1"}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
