//! Personal data in stored events: which fields are sealed, and the shape of
//! a sealed value.
//!
//! A sealed value is the string `pd1.<owner user id>.<base64(nonce ||
//! ciphertext)>`: the field's JSON text encrypted (AES-256-GCM) under the
//! owner's data key (`commands::vault`). The owner is named in clear so a
//! reader knows which key opens it, and once that key is destroyed (erasure)
//! no copy of the value can be opened again: events, read models, JetStream.
//!
//! [`SEALED`] is the one table of sealed fields, per event type and version.
//! The command side seals them on append and opens them on load; the read
//! side keeps them sealed, and the API opens them at the edge when answering.

use serde_json::Value;
use uuid::Uuid;

/// The prefix of every sealed value (format version 1).
pub const PREFIX: &str = "pd1.";

/// The version of the events that first carried sealed fields.
pub const SEALED_VERSION: &str = "2.0";

/// Whose data key seals an event's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The aggregate itself is the user (user events).
    Aggregate,
    /// A field of the payload names the user (an order's `user_id`).
    Field(&'static str),
    /// The aggregate's own key (a payment's token), destroyed with its
    /// customer's on erasure.
    Own,
}

/// What a reader of the command side gets for a field it cannot open (its
/// key was destroyed): the sealed string as is, or `null` for a field the
/// aggregate holds as a structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unopened {
    KeepSealed,
    Null,
}

/// The sealed fields of one (event type, version).
#[derive(Debug)]
pub struct SealedFields {
    pub event_type: &'static str,
    pub event_version: &'static str,
    pub fields: &'static [(&'static str, Unopened)],
    pub owner: Owner,
}

/// Every event field that holds personal data (or a payment token).
pub const SEALED: &[SealedFields] = &[
    SealedFields {
        event_type: "UserRegistered",
        event_version: SEALED_VERSION,
        fields: &[
            ("email", Unopened::KeepSealed),
            ("name", Unopened::KeepSealed),
        ],
        owner: Owner::Aggregate,
    },
    SealedFields {
        event_type: "UserNameChanged",
        event_version: SEALED_VERSION,
        fields: &[("name", Unopened::KeepSealed)],
        owner: Owner::Aggregate,
    },
    SealedFields {
        event_type: "UserEmailChanged",
        event_version: SEALED_VERSION,
        fields: &[
            ("previous_email", Unopened::KeepSealed),
            ("email", Unopened::KeepSealed),
        ],
        owner: Owner::Aggregate,
    },
    SealedFields {
        event_type: "UserErased",
        event_version: "1.0",
        fields: &[("previous_email", Unopened::KeepSealed)],
        owner: Owner::Aggregate,
    },
    SealedFields {
        event_type: "OrderPlaced",
        event_version: SEALED_VERSION,
        fields: &[
            ("payment_token", Unopened::KeepSealed),
            ("shipping_address", Unopened::Null),
        ],
        owner: Owner::Field("user_id"),
    },
    SealedFields {
        event_type: "PaymentRequested",
        event_version: SEALED_VERSION,
        fields: &[("token", Unopened::KeepSealed)],
        owner: Owner::Own,
    },
];

/// The sealed fields of an event type at a version, if it has any.
pub fn fields_of(event_type: &str, event_version: &str) -> Option<&'static SealedFields> {
    SEALED
        .iter()
        .find(|s| s.event_type == event_type && s.event_version == event_version)
}

/// Whether a string has the shape of a sealed value.
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(PREFIX)
}

/// The owner and the base64 body of a sealed value.
pub fn parts(sealed: &str) -> Option<(Uuid, &str)> {
    let rest = sealed.strip_prefix(PREFIX)?;
    let (owner, body) = rest.split_once('.')?;
    Some((Uuid::parse_str(owner).ok()?, body))
}

/// Why an event could not be sealed.
#[derive(Debug)]
pub enum SealError {
    /// The table names an owner field the payload lacks.
    NoOwner(&'static str),
    /// The sealer failed (no randomness, the key store unreachable).
    Sealer(String),
}

impl std::fmt::Display for SealError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoOwner(field) => write!(f, "the event has no owner field {field:?}"),
            Self::Sealer(reason) => write!(f, "cannot seal: {reason}"),
        }
    }
}

impl std::error::Error for SealError {}

/// The owner whose key seals an event of `aggregate_id` with `payload`
/// (`{"<EventType>": {fields}}`), if the event has sealed fields.
pub fn owner_of(
    fields: &SealedFields,
    aggregate_id: &str,
    payload: &Value,
) -> Result<Uuid, SealError> {
    let named = match fields.owner {
        Owner::Aggregate | Owner::Own => Some(aggregate_id),
        Owner::Field(field) => payload
            .get(fields.event_type)
            .and_then(|data| data.get(field))
            .and_then(Value::as_str),
    };
    let field = match fields.owner {
        Owner::Field(field) => field,
        _ => "aggregate id",
    };
    named
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or(SealError::NoOwner(field))
}

/// Replaces each sealed field of `payload` (present and not `null`, not
/// sealed already) by `seal(owner, field, <the value's JSON text>)`.
pub fn seal_payload(
    fields: &SealedFields,
    owner: Uuid,
    payload: &mut Value,
    mut seal: impl FnMut(Uuid, &str, &str) -> Result<String, String>,
) -> Result<(), SealError> {
    let Some(Value::Object(data)) = payload.get_mut(fields.event_type) else {
        return Ok(());
    };
    for (field, _) in fields.fields {
        let Some(value) = data.get_mut(*field) else {
            continue;
        };
        if value.is_null() || value.as_str().is_some_and(is_sealed) {
            continue;
        }
        let text = readers_form(field, value).to_string();
        *value = Value::String(seal(owner, field, &text).map_err(SealError::Sealer)?);
    }
    Ok(())
}

/// A value as readers show it, which is what is sealed: an address with
/// every field (`line2` and `region` null when absent), since answers show
/// the opened value as is.
fn readers_form(field: &str, value: &Value) -> Value {
    match field {
        "shipping_address" => {
            serde_json::from_value::<crate::events::ShippingAddress>(value.clone())
                .ok()
                .and_then(|address| serde_json::to_value(address).ok())
                .unwrap_or_else(|| value.clone())
        }
        _ => value.clone(),
    }
}

/// Opens each sealed field of `payload` in place with `open` (the JSON text
/// of the value, or `None` once its key is gone); an unopenable field is
/// left sealed or becomes `null`, as the table says.
pub fn open_payload(
    fields: &SealedFields,
    payload: &mut Value,
    mut open: impl FnMut(&str, &str) -> Option<String>,
) {
    let Some(Value::Object(data)) = payload.get_mut(fields.event_type) else {
        return;
    };
    for (field, unopened) in fields.fields {
        let Some(value) = data.get_mut(*field) else {
            continue;
        };
        let Some(sealed) = value.as_str().filter(|s| is_sealed(s)) else {
            continue;
        };
        match open(field, sealed).and_then(|text| serde_json::from_str(&text).ok()) {
            Some(opened) => *value = opened,
            None if *unopened == Unopened::Null => *value = Value::Null,
            None => {}
        }
    }
}

/// Opens every sealed string anywhere in `value` (an answer, a webhook body):
/// `open(sealed)` gives the value's JSON text, or `None` once its key is
/// gone, and then the string becomes `null`. Strings that are not sealed
/// are left alone, so cleartext of old events passes through.
pub fn open_all(value: &mut Value, open: &mut impl FnMut(&str) -> Option<String>) {
    match value {
        Value::String(s) if is_sealed(s) => {
            *value = open(s)
                .and_then(|text| serde_json::from_str(&text).ok())
                .unwrap_or(Value::Null);
        }
        Value::Array(items) => items.iter_mut().for_each(|item| open_all(item, open)),
        Value::Object(map) => map.values_mut().for_each(|item| open_all(item, open)),
        _ => {}
    }
}

/// The JSON Schema of a sealed field.
pub fn sealed_schema() -> Value {
    serde_json::json!({
        "type": "string",
        "pattern": "^pd1\\.[0-9a-f-]{36}\\.[A-Za-z0-9+/]+=*$",
        "description": "Personal data, sealed: `pd1.<owner user id>.<base64 of nonce || AES-256-GCM ciphertext>` of the value's JSON text. Unreadable once the owner is erased."
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fake_seal(owner: Uuid, field: &str, text: &str) -> Result<String, String> {
        use base64::Engine;
        Ok(format!(
            "{PREFIX}{owner}.{}",
            base64::engine::general_purpose::STANDARD.encode(format!("{field}:{text}"))
        ))
    }

    #[test]
    fn an_order_is_sealed_under_its_customer_and_opens_back() {
        let user = Uuid::now_v7();
        let original = json!({"OrderPlaced": {"user_id": user.to_string(), "payment_token": "tok_visa",
            "shipping_address": {"name": "A", "line1": "Main St 1"}, "total": {"amount": 1, "currency": "EUR"}}});
        let mut payload = original.clone();
        let fields = fields_of("OrderPlaced", "2.0").unwrap();
        let owner = owner_of(fields, "x", &payload).unwrap();
        assert_eq!(owner, user);
        seal_payload(fields, owner, &mut payload, fake_seal).unwrap();
        let data = &payload["OrderPlaced"];
        assert!(is_sealed(data["payment_token"].as_str().unwrap()));
        assert!(is_sealed(data["shipping_address"].as_str().unwrap()));
        assert_eq!(data["total"], original["OrderPlaced"]["total"]);
        assert_eq!(
            parts(data["payment_token"].as_str().unwrap()).unwrap().0,
            user
        );

        let unseal = |_: &str, sealed: &str| {
            use base64::Engine;
            let (_, body) = parts(sealed)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(body)
                .ok()?;
            let text = String::from_utf8(bytes).ok()?;
            Some(text.split_once(':')?.1.to_owned())
        };
        let mut opened = payload.clone();
        open_payload(fields, &mut opened, unseal);
        assert_eq!(opened, original);

        let mut erased = payload.clone();
        open_payload(fields, &mut erased, |_, _| None);
        assert!(erased["OrderPlaced"]["shipping_address"].is_null());
        assert!(is_sealed(
            erased["OrderPlaced"]["payment_token"].as_str().unwrap()
        ));

        let mut answer = json!({"orders": [payload["OrderPlaced"].clone()], "n": 1});
        open_all(&mut answer, &mut |_| None);
        assert!(answer["orders"][0]["shipping_address"].is_null());
        assert_eq!(answer["n"], 1);
    }

    #[test]
    fn an_order_without_an_owner_is_refused() {
        let fields = fields_of("OrderPlaced", "2.0").unwrap();
        assert!(owner_of(fields, "x", &json!({"OrderPlaced": {}})).is_err());
        assert!(fields_of("OrderPlaced", "1.0").is_none());
    }
}
