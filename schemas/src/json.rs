//! JSON Schemas (draft 2020-12) of every command body and every stored event
//! payload, per version, generated from the Rust types.
//!
//! The tables below are the one list of what has a schema: one line per
//! command body or per (aggregate type, event type, event version). When an
//! event changes shape, its old version keeps its line (pointing at the Rust
//! type kept for upcasting) and the new version gets one more. The generated
//! files are checked in under `schemas/json/`; the test
//! `checked_in_files_match_the_code` fails when they drift and names the
//! command that rewrites them.
//!
//! Subschemas are inlined, so each file stands alone and the same JSON can
//! sit as is under `components.schemas` of the OpenAPI document.

use std::collections::HashMap;

use domain::{CartEvent, CategoryEvent, OrderEvent, PaymentEvent, ProductEvent, UserEvent};
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::Value;

use crate::commands::{
    AdjustStock, CancelOrder, ChangePassword, ChangePrice, CheckoutCart, ClaimCart, CreateApiKey,
    CreateCart, CreateCategory, CreateProduct, Login, Logout, MoveCategory, PlaceOrder, Refresh,
    RegisterUser, SetCartLine, SetProductCategories, UpdateCategory, UpdateProduct, UpdateUser,
};
use crate::commands::{CreateWebhook, UpdateWebhook};

/// The command that rewrites `schemas/json/` from the code.
pub const REGENERATE: &str = "UPDATE_SCHEMAS=1 cargo test -p schemas --lib json";

/// The schema of one command body.
pub struct CommandSchema {
    /// The body's type name; also its name under `components.schemas`.
    pub name: &'static str,
    pub version: u32,
    pub schema: fn() -> Value,
}

/// The schema of one stored event payload, `{"<event_type>": {...}}`.
pub struct EventSchema {
    pub aggregate_type: &'static str,
    pub event_type: &'static str,
    pub event_version: &'static str,
    pub schema: fn() -> Value,
}

macro_rules! command {
    ($type:ident, $version:literal) => {
        CommandSchema {
            name: stringify!($type),
            version: $version,
            schema: || schema_of::<$type>(),
        }
    };
}

/// `event!(aggregate, EventType, "version", EnumOfTheAggregate)`: the variant
/// of that enum, as cqrs-es stores it (externally tagged).
macro_rules! event {
    ($aggregate:literal, $event:ident, $version:literal, $enum:ty) => {
        EventSchema {
            aggregate_type: $aggregate,
            event_type: stringify!($event),
            event_version: $version,
            schema: || variant_of::<$enum>(stringify!($event)),
        }
    };
}

/// `sealed_event!(aggregate, EventType, "version", Enum)`: as [`event!`],
/// with the fields `crate::sealed::SEALED` lists for that version stored as
/// sealed strings.
macro_rules! sealed_event {
    ($aggregate:literal, $event:ident, $version:literal, $enum:ty) => {
        EventSchema {
            aggregate_type: $aggregate,
            event_type: stringify!($event),
            event_version: $version,
            schema: || sealed_variant_of::<$enum>(stringify!($event), $version),
        }
    };
}

pub const COMMANDS: &[CommandSchema] = &[
    command!(RegisterUser, 1),
    command!(UpdateUser, 1),
    command!(CreateProduct, 1),
    command!(UpdateProduct, 1),
    command!(ChangePrice, 1),
    command!(AdjustStock, 1),
    command!(PlaceOrder, 1),
    command!(CancelOrder, 1),
    command!(Login, 1),
    command!(Refresh, 1),
    command!(Logout, 1),
    command!(ChangePassword, 1),
    command!(CreateApiKey, 1),
    command!(CreateCategory, 1),
    command!(UpdateCategory, 1),
    command!(MoveCategory, 1),
    command!(SetProductCategories, 1),
    command!(CreateCart, 1),
    command!(SetCartLine, 1),
    command!(ClaimCart, 1),
    command!(CheckoutCart, 1),
    command!(CreateWebhook, 1),
    command!(UpdateWebhook, 1),
];

pub const EVENTS: &[EventSchema] = &[
    event!("user", UserRegistered, "1.0", UserEvent),
    sealed_event!("user", UserRegistered, "2.0", UserEvent),
    event!("user", UserNameChanged, "1.0", UserEvent),
    sealed_event!("user", UserNameChanged, "2.0", UserEvent),
    event!("user", UserEmailChanged, "1.0", UserEvent),
    sealed_event!("user", UserEmailChanged, "2.0", UserEvent),
    event!("user", UserDeactivated, "1.0", UserEvent),
    event!("user", UserPasswordChanged, "1.0", UserEvent),
    sealed_event!("user", UserErased, "1.0", UserEvent),
    event!("product", ProductCreated, "1.0", ProductEvent),
    event!("product", ProductDetailsUpdated, "1.0", ProductEvent),
    event!("product", ProductPriceChanged, "1.0", ProductEvent),
    EventSchema {
        aggregate_type: "product",
        event_type: "ProductStockAdjusted",
        event_version: "1.0",
        schema: || stored_as::<crate::upcast::ProductStockAdjustedV1>("ProductStockAdjusted"),
    },
    event!("product", ProductStockAdjusted, "2.0", ProductEvent),
    event!("product", ProductDiscontinued, "1.0", ProductEvent),
    event!("product", StockReserved, "1.0", ProductEvent),
    event!("product", StockReservationReleased, "1.0", ProductEvent),
    event!("product", StockReservationCommitted, "1.0", ProductEvent),
    event!("product", StockReturned, "1.0", ProductEvent),
    event!("product", ProductCategoriesSet, "1.0", ProductEvent),
    event!("product", ProductAttributesSet, "1.0", ProductEvent),
    event!("order", OrderPlaced, "1.0", OrderEvent),
    sealed_event!("order", OrderPlaced, "2.0", OrderEvent),
    event!("order", OrderPaymentAssigned, "1.0", OrderEvent),
    event!("order", OrderConfirmed, "1.0", OrderEvent),
    event!("order", OrderShipped, "1.0", OrderEvent),
    event!("order", OrderCancelled, "1.0", OrderEvent),
    event!("order", OrderRefunded, "1.0", OrderEvent),
    event!("payment", PaymentRequested, "1.0", PaymentEvent),
    sealed_event!("payment", PaymentRequested, "2.0", PaymentEvent),
    event!("payment", PaymentAttemptFailed, "1.0", PaymentEvent),
    event!("payment", PaymentAuthorized, "1.0", PaymentEvent),
    event!("payment", PaymentDeclined, "1.0", PaymentEvent),
    event!("payment", PaymentFailed, "1.0", PaymentEvent),
    event!("payment", PaymentCaptured, "1.0", PaymentEvent),
    event!("payment", PaymentRefunded, "1.0", PaymentEvent),
    event!("category", CategoryCreated, "1.0", CategoryEvent),
    event!("category", CategoryUpdated, "1.0", CategoryEvent),
    event!("category", CategoryMoved, "1.0", CategoryEvent),
    event!("category", CategoryDeleted, "1.0", CategoryEvent),
    event!("cart", CartCreated, "1.0", CartEvent),
    event!("cart", CartLineSet, "1.0", CartEvent),
    event!("cart", CartLineRemoved, "1.0", CartEvent),
    event!("cart", CartClaimed, "1.0", CartEvent),
    event!("cart", CartMerged, "1.0", CartEvent),
    event!("cart", CartLinesMerged, "1.0", CartEvent),
    event!("cart", CartCheckedOut, "1.0", CartEvent),
    event!("cart", CartExpired, "1.0", CartEvent),
];

/// Draft 2020-12 with every subschema inlined: no `$ref`, no `$defs`.
pub fn settings() -> SchemaSettings {
    SchemaSettings::draft2020_12().with(|s| s.inline_subschemas = true)
}

/// The root schema of `T`.
pub fn schema_of<T: JsonSchema>() -> Value {
    settings()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

/// The root schema of what serializing `T` produces, for answers: a field
/// skipped when empty is optional there, and every other field required.
/// Named subschemas stay definitions (`$defs`), so a document that hoists
/// them (the API's `components`) gives each shared type one name.
pub fn serialized_schema_of<T: JsonSchema>() -> Value {
    SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

/// The schema of one variant of an externally tagged enum, as a root schema
/// titled with the variant's name; `null` if the enum has no such variant
/// (a table typo, which the checked-in-files test reports).
pub fn variant_of<T: JsonSchema>(name: &str) -> Value {
    let whole = schema_of::<T>();
    let found = whole
        .get("oneOf")
        .and_then(Value::as_array)
        .and_then(|variants| {
            variants
                .iter()
                .find(|v| v.get("required") == Some(&Value::from(vec![name])))
        });
    let Some(Value::Object(variant)) = found else {
        return Value::Null;
    };
    let mut root = serde_json::Map::new();
    if let Some(dialect) = whole.get("$schema") {
        root.insert("$schema".to_owned(), dialect.clone());
    }
    root.insert("title".to_owned(), Value::from(name));
    root.extend(variant.clone());
    Value::Object(root)
}

/// [`variant_of`], with each field sealed at `version` (see
/// `crate::sealed`) described as a sealed string: what the store holds.
pub fn sealed_variant_of<T: JsonSchema>(name: &str, version: &str) -> Value {
    let mut root = variant_of::<T>(name);
    let Some(fields) = crate::sealed::fields_of(name, version) else {
        return root;
    };
    if let Some(properties) = root
        .pointer_mut(&format!("/properties/{name}/properties"))
        .and_then(Value::as_object_mut)
    {
        for (field, _) in fields.fields {
            if let Some(schema) = properties.get_mut(*field) {
                let description = schema.get("description").cloned();
                *schema = crate::sealed::sealed_schema();
                if let (Some(Value::String(own)), Some(o)) = (description, schema.as_object_mut()) {
                    o.insert(
                        "description".to_owned(),
                        Value::from(format!("{own}\n\nSealed: `pd1.<owner user id>.<base64 of nonce || AES-256-GCM ciphertext>` of the value's JSON text.")),
                    );
                }
            }
        }
    }
    root
}

/// An old version kept only as a Rust type for upcasting, in its stored
/// (externally tagged) form: `{"<EventType>": {fields}}`.
pub fn stored_as<T: JsonSchema>(name: &str) -> Value {
    let mut inner = schema_of::<T>();
    let dialect = inner.as_object_mut().and_then(|o| o.remove("$schema"));
    if let Some(o) = inner.as_object_mut() {
        o.remove("title");
    }
    let mut root = serde_json::Map::new();
    if let Some(dialect) = dialect {
        root.insert("$schema".to_owned(), dialect);
    }
    root.insert("title".to_owned(), Value::from(name));
    root.insert("type".to_owned(), Value::from("object"));
    root.insert("properties".to_owned(), serde_json::json!({ name: inner }));
    root.insert("required".to_owned(), serde_json::json!([name]));
    root.insert("additionalProperties".to_owned(), Value::Bool(false));
    Value::Object(root)
}

/// Where a command body's schema lives under `schemas/json/`.
pub fn command_file(schema: &CommandSchema) -> String {
    format!("commands/{}.v{}.json", schema.name, schema.version)
}

/// Where an event's schema lives under `schemas/json/`.
pub fn event_file(schema: &EventSchema) -> String {
    format!(
        "events/{}/{}.v{}.json",
        schema.aggregate_type, schema.event_type, schema.event_version
    )
}

/// Every file of `schemas/json/`, by relative path, with its exact text.
pub fn files() -> Vec<(String, String)> {
    let commands = COMMANDS
        .iter()
        .map(|c| (command_file(c), render(&(c.schema)())));
    let events = EVENTS
        .iter()
        .map(|e| (event_file(e), render(&(e.schema)())));
    commands.chain(events).collect()
}

fn render(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}

/// Validates stored event payloads against the schema of their
/// (aggregate type, event type, event version).
pub struct EventValidator {
    validators: HashMap<(String, String, String), jsonschema::Validator>,
}

impl EventValidator {
    /// Compiles every event schema of [`EVENTS`].
    pub fn new() -> Result<Self, String> {
        let mut validators = HashMap::new();
        for event in EVENTS {
            let schema = (event.schema)();
            let validator = jsonschema::validator_for(&schema)
                .map_err(|err| format!("{}: {err}", event_file(event)))?;
            validators.insert(
                (
                    event.aggregate_type.to_owned(),
                    event.event_type.to_owned(),
                    event.event_version.to_owned(),
                ),
                validator,
            );
        }
        Ok(Self { validators })
    }

    /// `Err` says which rule the payload breaks, or that it has no schema.
    pub fn validate(
        &self,
        aggregate_type: &str,
        event_type: &str,
        event_version: &str,
        payload: &Value,
    ) -> Result<(), String> {
        let key = (
            aggregate_type.to_owned(),
            event_type.to_owned(),
            event_version.to_owned(),
        );
        let Some(validator) = self.validators.get(&key) else {
            return Err(format!(
                "no schema for {aggregate_type}/{event_type} version {event_version}: add a line to schemas::json::EVENTS"
            ));
        };
        let errors: Vec<String> = validator
            .iter_errors(payload)
            .map(|err| format!("at {:?}: {err}", err.instance_path().to_string()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use serde_json::json;

    use super::*;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("json")
    }

    fn files_on_disk(dir: &Path, prefix: &str, found: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            if entry.path().is_dir() {
                files_on_disk(&entry.path(), &relative, found);
            } else {
                found.insert(relative);
            }
        }
    }

    /// With `UPDATE_SCHEMAS=1` it rewrites `schemas/json/` instead of checking it.
    #[test]
    fn checked_in_files_match_the_code() {
        let expected = files();
        let root = root();
        if std::env::var_os("UPDATE_SCHEMAS").is_some() {
            let _ = std::fs::remove_dir_all(&root);
            for (path, text) in &expected {
                let path = root.join(path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, text).unwrap();
            }
        }
        let mut problems = Vec::new();
        for (path, text) in &expected {
            match std::fs::read_to_string(root.join(path)) {
                Ok(on_disk) if &on_disk == text => {}
                Ok(_) => problems.push(format!("{path} differs from the code")),
                Err(_) => problems.push(format!("{path} is missing")),
            }
        }
        let mut on_disk = BTreeSet::new();
        files_on_disk(&root, "", &mut on_disk);
        let wanted: BTreeSet<String> = expected.iter().map(|(p, _)| p.clone()).collect();
        for stale in on_disk.difference(&wanted) {
            problems.push(format!("{stale} has no line in schemas::json"));
        }
        assert!(
            problems.is_empty(),
            "schemas/json/ is out of date:\n  {}\nRegenerate it with:\n  {REGENERATE}",
            problems.join("\n  ")
        );
    }

    #[test]
    fn every_line_names_a_real_type_and_every_event_has_a_line() {
        for event in EVENTS {
            assert!(
                (event.schema)().is_object(),
                "{} has no such variant",
                event_file(event)
            );
        }
        for (aggregate, whole) in [
            ("user", schema_of::<UserEvent>()),
            ("product", schema_of::<ProductEvent>()),
            ("order", schema_of::<OrderEvent>()),
            ("payment", schema_of::<PaymentEvent>()),
            ("category", schema_of::<CategoryEvent>()),
        ] {
            for variant in whole["oneOf"].as_array().unwrap() {
                let name = variant["required"][0].as_str().unwrap();
                assert!(
                    EVENTS
                        .iter()
                        .any(|e| e.aggregate_type == aggregate && e.event_type == name),
                    "{aggregate}/{name} has no line in schemas::json::EVENTS"
                );
            }
        }
    }

    #[test]
    fn every_event_of_the_domain_validates_and_a_changed_one_does_not() {
        let validator = EventValidator::new().unwrap();
        let placed = serde_json::to_value(OrderEvent::OrderPlaced {
            order_id: uuid::Uuid::now_v7(),
            user_id: uuid::Uuid::now_v7(),
            lines: vec![domain::OrderLine {
                product_id: uuid::Uuid::now_v7(),
                quantity: 2,
                unit_price: domain::Money::price(1999, "EUR").unwrap(),
            }],
            total: domain::Money::price(3998, "EUR").unwrap(),
            payment_token: "tok_ok".to_owned(),
            cart_id: None,
            shipping_address: None,
        })
        .unwrap();
        validator
            .validate("order", "OrderPlaced", "1.0", &placed)
            .unwrap();

        let mut renamed = placed.clone();
        let total = renamed["OrderPlaced"]["total"].take();
        renamed["OrderPlaced"]["totals"] = total;
        renamed["OrderPlaced"]
            .as_object_mut()
            .unwrap()
            .remove("total");
        assert!(validator
            .validate("order", "OrderPlaced", "1.0", &renamed)
            .is_err());
        let wrong_currency =
            json!({"ProductPriceChanged": {"price": {"amount": 1, "currency": "eur"}}});
        assert!(validator
            .validate("product", "ProductPriceChanged", "1.0", &wrong_currency)
            .is_err());
        let other_variant = json!({"OrderShipped": {}});
        assert!(validator
            .validate("order", "OrderPlaced", "1.0", &other_variant)
            .is_err());
        assert!(validator
            .validate("order", "OrderPlaced", "9.0", &placed)
            .is_err());
        // Version 2.0 holds the token sealed, never in clear.
        assert!(validator
            .validate("order", "OrderPlaced", "2.0", &placed)
            .is_err());
        let mut sealed = placed.clone();
        sealed["OrderPlaced"]["payment_token"] =
            json!("pd1.0190a5c4-0000-7000-8000-000000000001.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        validator
            .validate("order", "OrderPlaced", "2.0", &sealed)
            .unwrap();
    }

    /// The value types' schemas say what their parsers accept: a sample the
    /// parser takes is schema-valid and one it refuses is not.
    #[test]
    fn value_schemas_agree_with_the_parsers() {
        fn agree<T: JsonSchema, V>(
            parse: fn(String) -> Result<V, domain::ValidationError>,
            samples: &[&str],
        ) {
            let validator = jsonschema::validator_for(&schema_of::<T>()).unwrap();
            for sample in samples {
                let parsed = parse((*sample).to_owned()).is_ok();
                let valid = validator.is_valid(&json!(sample));
                assert_eq!(
                    parsed,
                    valid,
                    "{} {sample:?}: parser {parsed}, schema {valid}",
                    T::schema_name()
                );
            }
        }
        let long_name = "n".repeat(201);
        let long_sku = "S".repeat(65);
        let long_local = format!("{}@x.com", "a".repeat(65));
        agree::<domain::Name, _>(
            domain::Name::parse,
            &[
                "Ada",
                " Ada ",
                "é",
                "",
                "   ",
                "\t",
                "Ada\nLovelace",
                "Ada\u{0}",
                "Ada\u{85}",
                &long_name,
            ],
        );
        agree::<domain::Sku, _>(
            domain::Sku::parse,
            &[
                "PEN-1",
                "a.b_c",
                "",
                "has space",
                "ümlaut",
                "slash/no",
                &long_sku,
            ],
        );
        agree::<domain::Description, _>(
            domain::Description::parse,
            &["", "line\n\tnext", "bad\r\n", "bell\u{7}"],
        );
        agree::<domain::EmailAddress, _>(
            domain::EmailAddress::parse,
            &[
                "a@b.co",
                "Jane.Doe+shop@Example.COM",
                "x_y@sub-domain.example.org",
                "",
                "a@",
                "a@b",
                "@x.com",
                "a b@x.com",
                "a@@x.com",
                "a@b@x.com",
                "a@x..com",
                "a@.x.com",
                "a@x.com.",
                "a@x_y.com",
                "a\u{7}@x.com",
                &long_local,
            ],
        );
        agree::<domain::Currency, _>(
            domain::Currency::parse,
            &["EUR", "XCG", "eur", "ABC", "HRK", "EURO"],
        );
    }

    #[test]
    fn command_bodies_reject_unknown_fields_and_state_the_rules() {
        let register = schema_of::<RegisterUser>();
        assert_eq!(register["additionalProperties"], json!(false));
        assert_eq!(register["properties"]["name"]["maxLength"], json!(200));
        let order = schema_of::<PlaceOrder>();
        assert_eq!(order["properties"]["lines"]["maxItems"], json!(50));
        assert!(!render(&order).contains("$ref"));
    }
}
