//! A shipping address: `{name, line1, line2?, city, region?, postal_code,
//! country}`, every text 1..200 characters, the country an ISO 3166-1
//! alpha-2 code.

use serde::{Deserialize, Serialize};

use crate::values::ValidationError;

/// The officially assigned ISO 3166-1 alpha-2 codes (249).
const ISO_3166_ALPHA_2: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// A validated shipping address, as an order stores it.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShippingAddress {
    pub name: String,
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub postal_code: String,
    pub country: String,
}

impl ShippingAddress {
    /// Checks every field; the errors name each bad one (`shipping_address.city`).
    pub fn parse(address: ShippingAddress) -> Result<Self, Vec<ValidationError>> {
        let mut errors = Vec::new();
        let mut text = |field: &'static str, value: Option<&str>| {
            if let Some(value) = value {
                let length = value.chars().count();
                if !(1..=200).contains(&length) || value.trim().is_empty() {
                    errors.push(ValidationError::new(
                        field,
                        "must be 1 to 200 characters, not blank",
                    ));
                } else if value.chars().any(char::is_control) {
                    errors.push(ValidationError::new(
                        field,
                        "must not contain control characters",
                    ));
                }
            }
        };
        text("shipping_address.name", Some(&address.name));
        text("shipping_address.line1", Some(&address.line1));
        text("shipping_address.line2", address.line2.as_deref());
        text("shipping_address.city", Some(&address.city));
        text("shipping_address.region", address.region.as_deref());
        text("shipping_address.postal_code", Some(&address.postal_code));
        if !is_country(&address.country) {
            errors.push(ValidationError::new(
                "shipping_address.country",
                "must be an ISO 3166-1 alpha-2 code, e.g. DE",
            ));
        }
        if errors.is_empty() {
            Ok(address)
        } else {
            Err(errors)
        }
    }
}

/// Whether `code` is an assigned ISO 3166-1 alpha-2 code (upper case, as the standard writes them).
pub fn is_country(code: &str) -> bool {
    code.len() == 2 && ISO_3166_ALPHA_2.split(' ').any(|c| c == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address() -> ShippingAddress {
        ShippingAddress {
            name: "Ada Lovelace".into(),
            line1: "12 St James's Square".into(),
            line2: None,
            city: "London".into(),
            region: None,
            postal_code: "SW1Y 4JH".into(),
            country: "GB".into(),
        }
    }

    #[test]
    fn a_complete_address_is_accepted() {
        assert_eq!(ShippingAddress::parse(address()), Ok(address()));
    }

    #[test]
    fn countries_are_iso_3166_alpha_2() {
        assert_eq!(ISO_3166_ALPHA_2.split(' ').count(), 249);
        for good in ["DE", "GB", "US", "FR", "JP", "AX"] {
            assert!(is_country(good), "{good}");
        }
        for bad in ["UK", "de", "DEU", "", "XX", "EU", "D"] {
            assert!(!is_country(bad), "{bad}");
        }
    }

    #[test]
    fn every_bad_field_is_named() {
        let bad = ShippingAddress {
            name: String::new(),
            line2: Some("x".repeat(201)),
            city: "  ".into(),
            region: Some("a\u{0}b".into()),
            country: "UK".into(),
            ..address()
        };
        let fields: Vec<&str> = ShippingAddress::parse(bad)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "shipping_address.name",
                "shipping_address.line2",
                "shipping_address.city",
                "shipping_address.region",
                "shipping_address.country"
            ]
        );
    }
}
