//! Request bodies parsed as their JSON Schemas read them: an object where a
//! struct is expected, never an array.
//!
//! serde's derived structs also accept a sequence of their fields in order,
//! so plain `serde_json::from_slice` takes `["a@example.com", "Ada"]` as a
//! `RegisterUser`. [`from_slice`] parses through a thin wrapper around
//! serde_json's deserializer that asks for a map wherever a struct is
//! expected, at every depth, and passes everything else through unchanged.
//! Integers need no wrapper: an `i64` field refuses `1.0`, `1e2` and numbers
//! past its range by itself (serde_json reads those as floats).

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

/// Parses `bytes` into `T`, refusing an array where `T` (or any struct
/// inside it) expects an object, and anything after the value.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    let mut json = serde_json::Deserializer::from_slice(bytes);
    let value = T::deserialize(Strict(&mut json))?;
    json.end()?;
    Ok(value)
}

/// A deserializer (or a sequence, map, enum or variant access) whose structs
/// are read as maps only.
struct Strict<D>(D);

/// A visitor or seed whose nested deserializers are [`Strict`] too.
struct Wrap<V>(V);

macro_rules! forward_deserialize {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.0.$method(Wrap(visitor))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Strict<D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32
        deserialize_i64 deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32
        deserialize_u64 deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char
        deserialize_str deserialize_string deserialize_bytes deserialize_byte_buf
        deserialize_option deserialize_unit deserialize_seq deserialize_map
        deserialize_identifier deserialize_ignored_any
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_unit_struct(name, Wrap(visitor))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_newtype_struct(name, Wrap(visitor))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple(len, Wrap(visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple_struct(name, len, Wrap(visitor))
    }

    // The one change: a struct is a map, so `[...]` is "invalid type:
    // sequence, expected struct X".
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(Wrap(visitor))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_enum(name, variants, Wrap(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty))*) => {$(
        fn $method<E: de::Error>(self, value: $ty) -> Result<Self::Value, E> {
            self.0.$method(value)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        self.0.expecting(f)
    }

    forward_visit! {
        visit_bool(bool) visit_i8(i8) visit_i16(i16) visit_i32(i32) visit_i64(i64)
        visit_i128(i128) visit_u8(u8) visit_u16(u16) visit_u32(u32) visit_u64(u64)
        visit_u128(u128) visit_f32(f32) visit_f64(f64) visit_char(char) visit_str(&str)
        visit_borrowed_str(&'de str) visit_string(String) visit_bytes(&[u8])
        visit_borrowed_bytes(&'de [u8]) visit_byte_buf(Vec<u8>)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.0.visit_some(Strict(deserializer))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        self.0.visit_newtype_struct(Strict(deserializer))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.0.visit_seq(Strict(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(Strict(map))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.0.visit_enum(Strict(data))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Wrap<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(Strict(deserializer))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Strict<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(Wrap(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Strict<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(Wrap(seed))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.0.next_value_seed(Wrap(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Strict<A> {
    type Error = A::Error;
    type Variant = Strict<A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let (value, variant) = self.0.variant_seed(Wrap(seed))?;
        Ok((value, Strict(variant)))
    }
}

/// The body of a struct variant, read as a map.
struct StructBody<V>(V);

impl<'de, V: Visitor<'de>> DeserializeSeed<'de> for StructBody<V> {
    type Value = V::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        deserializer.deserialize_map(Wrap(self.0))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Strict<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.0.newtype_variant_seed(Wrap(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.0.tuple_variant(len, Wrap(visitor))
    }

    // A struct variant's body is the value of its variant key, as a
    // newtype's is: reading it through a map-only seed refuses an array.
    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.0.newtype_variant_seed(StructBody(visitor))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::from_slice;
    use crate::commands::{AdjustStock, CreateProduct, PlaceOrder, RegisterUser};

    #[test]
    fn an_array_is_never_a_struct_at_any_depth() {
        assert!(from_slice::<RegisterUser>(br#"["a@example.com","Ada"]"#).is_err());
        let nested = br#"{"sku": "S", "name": "N", "price": [100, "EUR"], "stock": 1}"#;
        assert!(from_slice::<CreateProduct>(nested).is_err());
        let in_a_list = br#"{"user_id": "u", "lines": [["p", 1]], "payment_token": "t"}"#;
        assert!(from_slice::<PlaceOrder>(in_a_list).is_err());
        // A plain serde_json parse takes all three, which is why this exists.
        assert!(serde_json::from_slice::<RegisterUser>(br#"["a@example.com","Ada"]"#).is_ok());

        let good = br#"{"sku": "S", "name": "N", "price": {"amount": 100, "currency": "EUR"}, "stock": 1}"#;
        assert_eq!(from_slice::<CreateProduct>(good).unwrap().price.amount, 100);
        let order = br#"{"user_id": "u", "lines": [{"product_id": "p", "quantity": 2}], "payment_token": "t"}"#;
        assert_eq!(
            from_slice::<PlaceOrder>(order).unwrap().lines[0].quantity,
            2
        );
    }

    #[test]
    fn only_json_integers_within_range_are_integers() {
        let parse = |text: &str| from_slice::<AdjustStock>(text.as_bytes()).map(|b| b.delta);
        assert_eq!(parse(r#"{"delta": 3}"#).unwrap(), 3);
        assert_eq!(
            parse(r#"{"delta": -9223372036854775808}"#).unwrap(),
            i64::MIN
        );
        assert_eq!(
            parse(r#"{"delta": 9223372036854775807}"#).unwrap(),
            i64::MAX
        );
        for bad in [
            r#"{"delta": 1e2}"#,
            r#"{"delta": 100.0}"#,
            r#"{"delta": -3.0}"#,
            r#"{"delta": 1.5}"#,
            r#"{"delta": -9223372036854775809}"#,
            r#"{"delta": 9223372036854775808}"#,
            r#"{"delta": 1e19}"#,
            r#"{"delta": "1"}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn struct_variants_and_trailing_data() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        enum Shape {
            Square { side: i64 },
        }
        let Shape::Square { side } = from_slice::<Shape>(br#"{"Square": {"side": 2}}"#).unwrap();
        assert_eq!(side, 2);
        assert!(from_slice::<Shape>(br#"{"Square": [2]}"#).is_err());
        assert!(from_slice::<AdjustStock>(br#"{"delta": 1} {"delta": 2}"#).is_err());
    }
}
