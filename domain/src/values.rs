//! Validated value types.
//!
//! Input is parsed into these types once, at the edge; everything past that
//! point can rely on the invariants without re-checking. Deserialization does
//! not re-validate: stored events are trusted, and rules may tighten over time
//! without making old history unreadable.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A value failed validation. `field` names the offending input field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: &'static str,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }

    /// Re-labels the error for a caller whose field has a different name
    /// (e.g. `"contact.email"` instead of the default `"email"`).
    #[must_use]
    pub fn at(self, field: &'static str) -> Self {
        Self { field, ..self }
    }
}

fn char_count_between(
    field: &'static str,
    value: &str,
    min: usize,
    max: usize,
) -> Result<(), ValidationError> {
    let count = value.chars().count();
    if count < min || count > max {
        let message = if min == 0 {
            format!("must be at most {max} characters")
        } else {
            format!("must be between {min} and {max} characters")
        };
        return Err(ValidationError::new(field, message));
    }
    Ok(())
}

/// An email address with a plausible shape. Stored exactly as given; use
/// [`EmailAddress::normalized`] to compare addresses for uniqueness.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EmailAddress(String);

impl EmailAddress {
    const FIELD: &'static str = "email";

    pub fn parse(value: impl Into<String>) -> Result<Self, ValidationError> {
        let value = value.into();
        let invalid = |message: &str| Err(ValidationError::new(Self::FIELD, message));

        char_count_between(Self::FIELD, &value, 3, 254)?;
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return invalid("must not contain whitespace or control characters");
        }
        let Some((local, domain)) = value.split_once('@') else {
            return invalid("must contain an '@'");
        };
        if domain.contains('@') {
            return invalid("must contain exactly one '@'");
        }
        if local.is_empty() {
            return invalid("must have a part before the '@'");
        }
        if local.chars().count() > 64 {
            return invalid("part before the '@' must be at most 64 characters");
        }
        if domain.is_empty() {
            return invalid("must have a domain after the '@'");
        }
        if !domain.contains('.') {
            return invalid("domain must contain a '.'");
        }
        let labels_ok = domain.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
        if !labels_ok {
            return invalid("domain must be dot-separated labels of letters, digits and '-'");
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key under which addresses are unique: Unicode NFC, case-folded
    /// (full lower-case mapping), NFC again, so `josé` typed with a combining
    /// accent and with a precomposed `é` is one address.
    pub fn normalized(&self) -> String {
        normalize_email(&self.0)
    }
}

/// [`EmailAddress::normalized`] of any text (also of one that is not a
/// valid address, as a login's throttle key).
pub fn normalize_email(text: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let composed: String = text.trim().nfc().collect();
    composed.to_lowercase().nfc().collect()
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A human-readable name (of a person or a product).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    const FIELD: &'static str = "name";

    pub fn parse(value: impl Into<String>) -> Result<Self, ValidationError> {
        let value = value.into();
        char_count_between(Self::FIELD, &value, 1, 200)?;
        if value.trim().is_empty() {
            return Err(ValidationError::new(Self::FIELD, "must not be blank"));
        }
        if value.chars().any(char::is_control) {
            return Err(ValidationError::new(
                Self::FIELD,
                "must not contain control characters",
            ));
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password as a person typed it: 8 to 128 characters, any of them.
/// Never serialized and never printed: it lives only until the write side
/// hashes it, and only the hash is stored (outside the event stream).
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    const FIELD: &'static str = "password";

    pub fn parse(value: impl Into<String>) -> Result<Self, ValidationError> {
        let value = value.into();
        char_count_between(Self::FIELD, &value, 8, 128)?;
        Ok(Self(value))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// Whether `text` is free text (a description): no control characters but
/// newline and tab. Postgres text refuses NUL outright.
pub fn is_free_text(text: &str) -> bool {
    !text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
}

/// What a field that is not [free text](is_free_text) is told.
pub const FREE_TEXT_RULE: &str = "must not contain control characters other than newline and tab";

/// Free text describing a product. May be empty.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Description(String);

impl Description {
    const FIELD: &'static str = "description";

    pub fn parse(value: impl Into<String>) -> Result<Self, ValidationError> {
        let value = value.into();
        char_count_between(Self::FIELD, &value, 0, 2000)?;
        if !is_free_text(&value) {
            return Err(ValidationError::new(Self::FIELD, FREE_TEXT_RULE));
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Description {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stock-keeping unit. Stored as given; unique case-insensitively via
/// [`Sku::normalized`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sku(String);

impl Sku {
    const FIELD: &'static str = "sku";

    pub fn parse(value: impl Into<String>) -> Result<Self, ValidationError> {
        let value = value.into();
        char_count_between(Self::FIELD, &value, 1, 64)?;
        if !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(ValidationError::new(
                Self::FIELD,
                "may only contain ASCII letters, digits, '-', '_' and '.'",
            ));
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Upper-cased form; the key under which SKUs are unique.
    pub fn normalized(&self) -> String {
        self.0.to_ascii_uppercase()
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A category's name in URLs: lower-case ASCII letters and digits in words
/// joined by single hyphens, 1 to 100 characters. Unique across categories.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Slug(String);

impl Slug {
    const FIELD: &'static str = "slug";

    pub fn parse(value: impl Into<String>) -> Result<Self, ValidationError> {
        let value = value.into();
        char_count_between(Self::FIELD, &value, 1, 100)?;
        let words_ok = value.split('-').all(|word| {
            !word.is_empty()
                && word
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
        if !words_ok {
            return Err(ValidationError::new(
                Self::FIELD,
                "must be lower-case letters and digits in words joined by single hyphens",
            ));
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A product's attributes: at most 50 `{key: value}` strings, keys of 1 to
/// 64 characters and values of 1 to 256, neither with control characters.
/// Ordered by key, so equal sets compare and serialize equal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Attributes(std::collections::BTreeMap<String, String>);

impl Attributes {
    const FIELD: &'static str = "attributes";
    pub const MAX: usize = 50;

    /// Every problem, as `(key, message)`; an empty key names the whole map.
    pub fn parse(
        map: std::collections::BTreeMap<String, String>,
    ) -> Result<Self, Vec<(String, String)>> {
        let mut problems = Vec::new();
        if map.len() > Self::MAX {
            problems.push((String::new(), format!("at most {} attributes", Self::MAX)));
        }
        for (key, value) in &map {
            let key_len = key.chars().count();
            if !(1..=64).contains(&key_len) || key.chars().any(char::is_control) {
                problems.push((
                    key.clone(),
                    "a key is 1 to 64 characters without control characters".to_owned(),
                ));
            }
            let value_len = value.chars().count();
            if !(1..=256).contains(&value_len) || value.chars().any(char::is_control) {
                problems.push((
                    key.clone(),
                    "a value is 1 to 256 characters without control characters".to_owned(),
                ));
            }
        }
        if problems.is_empty() {
            Ok(Self(map))
        } else {
            Err(problems)
        }
    }

    pub fn field() -> &'static str {
        Self::FIELD
    }

    pub fn as_map(&self) -> &std::collections::BTreeMap<String, String> {
        &self.0
    }
}

/// Active ISO 4217 currency codes (sorted, for binary search). Fund codes
/// (BOV, CLF, ...), precious metals, SDR and testing codes (X** other than
/// the real regional currencies) are left out: nothing is priced in them.
/// Withdrawn codes (ANG, CUC, HRK, SLL, ZWL, ...) are left out too; old events
/// using them still deserialize because deserialization does not re-validate.
const ISO_4217_ACTIVE: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN",
    "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF",
    "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP",
    "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD",
    "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD", "JPY",
    "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD",
    "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK",
    "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK",
    "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG",
    "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS",
    "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS", "VED",
    "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

/// An active ISO 4217 currency code such as `EUR`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Currency(String);

impl Currency {
    const FIELD: &'static str = "currency";

    pub fn parse(value: impl Into<String>) -> Result<Self, ValidationError> {
        let value = value.into();
        if value.len() != 3 || !value.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ValidationError::new(
                Self::FIELD,
                "must be three uppercase letters (ISO 4217)",
            ));
        }
        if ISO_4217_ACTIVE.binary_search(&value.as_str()).is_err() {
            return Err(ValidationError::new(
                Self::FIELD,
                format!("{value} is not an active ISO 4217 currency"),
            ));
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An amount in the currency's minor unit (cents for EUR). Integer only, so
/// sums are exact.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub amount: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount: i64, currency: Currency) -> Self {
        Self { amount, currency }
    }

    /// Parses a price: a strictly positive amount in a known currency.
    pub fn price(amount: i64, currency: &str) -> Result<Self, ValidationError> {
        let currency = Currency::parse(currency).map_err(|e| e.at("price.currency"))?;
        if amount <= 0 {
            return Err(ValidationError::new(
                "price.amount",
                "must be greater than zero",
            ));
        }
        Ok(Self { amount, currency })
    }

    /// `None` on overflow.
    pub fn checked_mul(&self, factor: u32) -> Option<Money> {
        let amount = self.amount.checked_mul(i64::from(factor))?;
        Some(Self::new(amount, self.currency.clone()))
    }

    /// `None` on overflow or when the currencies differ.
    pub fn checked_add(&self, other: &Money) -> Option<Money> {
        if self.currency != other.currency {
            return None;
        }
        let amount = self.amount.checked_add(other.amount)?;
        Some(Self::new(amount, self.currency.clone()))
    }
}

impl fmt::Display for Money {
    /// Minor units and code, e.g. `1999 EUR`: formatting for humans needs the
    /// currency's exponent and a locale, which belong outside the domain.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

/// A line-item quantity: 1 to 1000.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Quantity(u32);

impl Quantity {
    pub const MIN: u32 = 1;
    pub const MAX: u32 = 1000;
    const FIELD: &'static str = "quantity";

    /// Takes an `i64` so callers can pass raw (possibly negative) input.
    pub fn parse(value: i64) -> Result<Self, ValidationError> {
        match u32::try_from(value) {
            Ok(q) if (Self::MIN..=Self::MAX).contains(&q) => Ok(Self(q)),
            _ => Err(ValidationError::new(
                Self::FIELD,
                format!("must be between {} and {}", Self::MIN, Self::MAX),
            )),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The JSON Schemas of the value types: their wire form (a bare string for
/// the newtypes) with the rules their parsers enforce, as far as JSON Schema
/// can say them. Patterns stick to the regex syntax that ECMA-262, Python and
/// Rust share, since schemathesis and the `jsonschema` crate both read them.
#[cfg(feature = "schemars")]
mod json_schema {
    use std::borrow::Cow;

    use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};

    use super::{
        Attributes, Currency, Description, EmailAddress, Name, Password, Sku, Slug, ISO_4217_ACTIVE,
    };

    /// `char::is_control`: the Unicode category Cc.
    const CONTROL: &str = r"\x00-\x1F\x7F-\x9F";

    macro_rules! string_schema {
        ($type:ty, $name:literal, $schema:expr) => {
            impl JsonSchema for $type {
                fn inline_schema() -> bool {
                    true
                }

                fn schema_name() -> Cow<'static, str> {
                    Cow::Borrowed($name)
                }

                fn json_schema(_: &mut SchemaGenerator) -> Schema {
                    $schema
                }
            }
        };
    }

    string_schema!(
        EmailAddress,
        "EmailAddress",
        json_schema!({
            "type": "string",
            "minLength": 3,
            "maxLength": 254,
            "pattern": format!(r"^[^\s@{CONTROL}]{{1,64}}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$"),
            "description": "An email address; unique across users, compared case-insensitively."
        })
    );

    string_schema!(
        Name,
        "Name",
        json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "pattern": format!(r"^[^{CONTROL}]*[^\s{CONTROL}][^{CONTROL}]*$"),
            "description": "1 to 200 characters, not blank, no control characters."
        })
    );

    string_schema!(
        Password,
        "Password",
        json_schema!({
            "type": "string",
            "minLength": 8,
            "maxLength": 128,
            "writeOnly": true,
            "description": "8 to 128 characters. Kept only as an Argon2id hash."
        })
    );

    string_schema!(
        Description,
        "Description",
        json_schema!({
            "type": "string",
            "maxLength": 2000,
            "pattern": r"^[^\x00-\x08\x0B-\x1F\x7F-\x9F]*$",
            "description": "Up to 2000 characters; newline and tab are the only control characters allowed."
        })
    );

    string_schema!(
        Sku,
        "Sku",
        json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": 64,
            "pattern": r"^[A-Za-z0-9._-]+$",
            "description": "A stock-keeping unit; unique across products, compared case-insensitively."
        })
    );

    string_schema!(
        Slug,
        "Slug",
        json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": 100,
            "pattern": r"^[a-z0-9]+(-[a-z0-9]+)*$",
            "description": "Lower-case words joined by hyphens; unique across categories."
        })
    );

    impl JsonSchema for Attributes {
        fn inline_schema() -> bool {
            true
        }

        fn schema_name() -> Cow<'static, str> {
            Cow::Borrowed("Attributes")
        }

        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "object",
                "maxProperties": 50,
                "propertyNames": {
                    "minLength": 1,
                    "maxLength": 64,
                    "pattern": format!(r"^[^{CONTROL}]*$")
                },
                "additionalProperties": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 256,
                    "pattern": format!(r"^[^{CONTROL}]*$")
                },
                "description": "At most 50 attributes: keys 1 to 64 characters, values 1 to 256."
            })
        }
    }

    string_schema!(
        Currency,
        "Currency",
        json_schema!({
            "type": "string",
            "enum": ISO_4217_ACTIVE,
            "description": "An active ISO 4217 currency code."
        })
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }

    #[test]
    fn validation_error_displays_field_and_message_and_can_be_relabelled() {
        let err = Name::parse("").unwrap_err();
        assert_eq!(err.field, "name");
        let err = err.at("product.name");
        assert_eq!(err.field, "product.name");
        assert!(err.to_string().starts_with("product.name: "));
    }

    #[test]
    fn email_accepts_plausible_addresses() {
        for ok in [
            "a@b.co",
            "Jane.Doe+shop@Example.COM",
            "x_y@sub-domain.example.org",
        ] {
            let email = EmailAddress::parse(ok).unwrap();
            assert_eq!(email.as_str(), ok);
            assert_eq!(email.to_string(), ok);
        }
    }

    #[test]
    fn email_rejects_malformed_addresses() {
        let long_local = format!("{}@x.com", "a".repeat(65));
        let too_long = format!("a@{}.com", "b".repeat(250));
        for bad in [
            "",
            "a@",
            "a@b",
            "@x.com",
            "a b@x.com",
            "a@@x.com",
            "a@b@x.com",
            "no-at-sign.com",
            " a@x.com",
            "a@x.com ",
            "a@x..com",
            "a@.x.com",
            "a@x.com.",
            "a@x_y.com",
            "a\u{7}@x.com",
            long_local.as_str(),
            too_long.as_str(),
        ] {
            let err = EmailAddress::parse(bad).unwrap_err();
            assert_eq!(err.field, "email", "{bad:?}");
        }
    }

    #[test]
    fn email_normalizes_to_lowercase() {
        let email = EmailAddress::parse("Jane@Example.COM").unwrap();
        assert_eq!(email.normalized(), "jane@example.com");
        assert_eq!(email.as_str(), "Jane@Example.COM");
    }

    #[test]
    fn slug_accepts_hyphenated_lower_case_words_only() {
        for ok in ["pens", "fountain-pens", "a1-b2-c3", "x"] {
            assert_eq!(Slug::parse(ok).unwrap().as_str(), ok);
        }
        let long = "a".repeat(101);
        for bad in [
            "",
            "Pens",
            "-pens",
            "pens-",
            "fountain--pens",
            "café",
            "a b",
            long.as_str(),
        ] {
            assert_eq!(Slug::parse(bad).unwrap_err().field, "slug", "{bad:?}");
        }
        assert!(Slug::parse("a".repeat(100)).is_ok());
    }

    #[test]
    fn attributes_hold_to_their_bounds() {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        assert!(Attributes::parse(map(&[("colour", "blue"), ("ink", "gel")])).is_ok());
        assert!(Attributes::parse(map(&[])).is_ok());
        let long_key = "k".repeat(65);
        let long_value = "v".repeat(257);
        assert!(Attributes::parse(map(&[(&"k".repeat(64), &"v".repeat(256))])).is_ok());
        assert_eq!(Attributes::parse(map(&[("", "x")])).unwrap_err().len(), 1);
        assert_eq!(
            Attributes::parse(map(&[(&long_key, "x")]))
                .unwrap_err()
                .len(),
            1
        );
        assert_eq!(Attributes::parse(map(&[("k", "")])).unwrap_err().len(), 1);
        assert_eq!(
            Attributes::parse(map(&[("k", &long_value)]))
                .unwrap_err()
                .len(),
            1
        );
        assert_eq!(
            Attributes::parse(map(&[("k", "a\u{7}")]))
                .unwrap_err()
                .len(),
            1
        );
        let many: std::collections::BTreeMap<String, String> =
            (0..51).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert_eq!(Attributes::parse(many).unwrap_err()[0].0, "");
        let fifty: std::collections::BTreeMap<String, String> =
            (0..50).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert!(Attributes::parse(fifty).is_ok());
    }

    #[test]
    fn name_counts_characters_not_bytes() {
        assert!(Name::parse("é".repeat(200)).is_ok());
        assert!(Name::parse("é".repeat(201)).is_err());
        assert!(Name::parse("a".repeat(200)).is_ok());
        assert!(Name::parse("a".repeat(201)).is_err());
    }

    #[test]
    fn name_rejects_empty_blank_and_control_characters() {
        for bad in ["", "   ", "\t", "Ada\nLovelace", "Ada\u{0}"] {
            assert_eq!(Name::parse(bad).unwrap_err().field, "name", "{bad:?}");
        }
        assert_eq!(
            Name::parse("Ada Lovelace").unwrap().as_str(),
            "Ada Lovelace"
        );
    }

    #[test]
    fn description_allows_empty_newlines_and_tabs() {
        assert!(Description::parse("").unwrap().is_empty());
        assert!(Description::parse("line one\n\tline two").is_ok());
        assert!(Description::parse("ü".repeat(2000)).is_ok());
    }

    #[test]
    fn description_rejects_too_long_and_other_control_characters() {
        assert!(Description::parse("x".repeat(2001)).is_err());
        let err = Description::parse("bad\r\n").unwrap_err();
        assert_eq!(err.field, "description");
        assert!(Description::parse("bell\u{7}").is_err());
    }

    #[test]
    fn sku_accepts_allowed_characters_and_normalizes_to_uppercase() {
        let sku = Sku::parse("tsh-01_blue.xl").unwrap();
        assert_eq!(sku.normalized(), "TSH-01_BLUE.XL");
        assert_eq!(sku.as_str(), "tsh-01_blue.xl");
        assert!(Sku::parse("a".repeat(64)).is_ok());
    }

    #[test]
    fn sku_rejects_bad_input() {
        let too_long = "a".repeat(65);
        for bad in ["", "has space", "ümlaut", "slash/no", too_long.as_str()] {
            assert_eq!(Sku::parse(bad).unwrap_err().field, "sku", "{bad:?}");
        }
    }

    #[test]
    fn currency_accepts_active_codes() {
        for code in ["EUR", "USD", "GBP", "JPY", "CHF", "SEK", "PLN", "XCG"] {
            assert_eq!(Currency::parse(code).unwrap().as_str(), code);
        }
    }

    #[test]
    fn currency_rejects_lowercase_unknown_and_wrong_length() {
        for bad in ["eur", "Eur", "ABC", "EU", "EURO", "", "HRK", "€UR"] {
            assert_eq!(
                Currency::parse(bad).unwrap_err().field,
                "currency",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn currency_table_is_sorted_unique_and_well_formed() {
        assert!(ISO_4217_ACTIVE.windows(2).all(|w| w[0] < w[1]));
        assert!(ISO_4217_ACTIVE
            .iter()
            .all(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase())));
        assert!(ISO_4217_ACTIVE.len() >= 150);
    }

    #[test]
    fn money_serializes_as_amount_and_currency() {
        let money = Money::price(1999, "EUR").unwrap();
        assert_eq!(
            serde_json::to_string(&money).unwrap(),
            r#"{"amount":1999,"currency":"EUR"}"#
        );
        let back: Money = serde_json::from_str(r#"{"amount":1999,"currency":"EUR"}"#).unwrap();
        assert_eq!(back, money);
    }

    #[test]
    fn price_must_be_positive_with_known_currency() {
        assert_eq!(Money::price(0, "EUR").unwrap_err().field, "price.amount");
        assert_eq!(Money::price(-5, "EUR").unwrap_err().field, "price.amount");
        assert_eq!(
            Money::price(100, "eur").unwrap_err().field,
            "price.currency"
        );
        assert_eq!(
            Money::price(100, "ABC").unwrap_err().field,
            "price.currency"
        );
        assert_eq!(Money::price(1, "EUR").unwrap(), Money::new(1, eur()));
    }

    #[test]
    fn money_arithmetic_is_checked() {
        let a = Money::new(1999, eur());
        assert_eq!(a.checked_mul(3), Some(Money::new(5997, eur())));
        assert_eq!(Money::new(i64::MAX, eur()).checked_mul(2), None);
        assert_eq!(
            a.checked_add(&Money::new(1, eur())),
            Some(Money::new(2000, eur()))
        );
        assert_eq!(Money::new(i64::MAX, eur()).checked_add(&a), None);
        let usd = Money::new(1, Currency::parse("USD").unwrap());
        assert_eq!(a.checked_add(&usd), None);
        assert_eq!(a.to_string(), "1999 EUR");
    }

    #[test]
    fn quantity_is_between_1_and_1000() {
        assert_eq!(Quantity::parse(1).unwrap().get(), 1);
        assert_eq!(Quantity::parse(1000).unwrap().get(), 1000);
        for bad in [0, -1, 1001, i64::MAX, i64::MIN] {
            assert_eq!(Quantity::parse(bad).unwrap_err().field, "quantity");
        }
    }
}
