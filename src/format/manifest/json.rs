//! The strict JSON of rule 2.2 and the field conventions of spec section 3.2: duplicate keys
//! refused at any depth, `format` and `format_version` read before the schema, f32 fields
//! rounded once from their decimal text, required-but-nullable keys.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::error::excerpt;

/// A JSON value's type, for error messages.
pub(crate) fn json_type(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
    .into()
}

/// `format` and `format_version`, read before anything else with any JSON type, so that a
/// missing or mistyped value breaks rule 2.3 / 2.4 rather than the schema rule 2.5.
#[derive(Deserialize)]
pub(crate) struct Head {
    #[serde(default)]
    pub format: Option<serde_json::Value>,
    #[serde(default)]
    pub format_version: Option<serde_json::Value>,
}

/// Describes a JSON value for an error message (strings excerpted and escaped).
pub(crate) fn describe(v: &Option<serde_json::Value>) -> String {
    match v {
        None => "no such key".into(),
        Some(serde_json::Value::String(s)) => excerpt(s, 64),
        Some(other) => json_type(other),
    }
}

/// An f32 field: the f32 nearest to the JSON number's exact decimal value (spec section 3.2),
/// parsed from the number's own text so that it is rounded once, not via f64.
pub(crate) fn exact_f32<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f32, D::Error> {
    let raw: Box<serde_json::value::RawValue> = Deserialize::deserialize(d)?;
    let text = raw.get();
    let is_number = text.starts_with(|c: char| c == '-' || c.is_ascii_digit());
    match text.parse::<f32>() {
        Ok(v) if is_number => Ok(v),
        _ => Err(de::Error::custom(format_args!(
            "expected a number, found {}",
            excerpt(text, 32)
        ))),
    }
}

/// [`exact_f32`] for an optional field (absent or null is `None`).
pub(crate) fn exact_f32_opt<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<f32>, D::Error> {
    let raw: Box<serde_json::value::RawValue> = Deserialize::deserialize(d)?;
    if raw.get() == "null" {
        return Ok(None);
    }
    let mut de = serde_json::Deserializer::from_str(raw.get());
    exact_f32(&mut de).map(Some).map_err(de::Error::custom)
}

/// An `Option` field whose key must be present (its value may be null): serde treats an
/// `Option` with a `deserialize_with` as required.
pub(crate) fn required_nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> std::result::Result<Option<T>, D::Error> {
    Option::<T>::deserialize(d)
}

/// Walks any JSON value and fails on a duplicate key in any object; `.0` tells whether the
/// top-level value is an object.
pub(crate) struct NoDuplicateKeys(pub bool);

impl<'de> Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NoDuplicateKeys;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> std::result::Result<Self::Value, E> {
                Ok(NoDuplicateKeys(false))
            }
            fn visit_i64<E>(self, _: i64) -> std::result::Result<Self::Value, E> {
                Ok(NoDuplicateKeys(false))
            }
            fn visit_u64<E>(self, _: u64) -> std::result::Result<Self::Value, E> {
                Ok(NoDuplicateKeys(false))
            }
            fn visit_f64<E>(self, _: f64) -> std::result::Result<Self::Value, E> {
                Ok(NoDuplicateKeys(false))
            }
            fn visit_str<E>(self, _: &str) -> std::result::Result<Self::Value, E> {
                Ok(NoDuplicateKeys(false))
            }
            fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
                Ok(NoDuplicateKeys(false))
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
                Ok(NoDuplicateKeys(false))
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut seen = HashSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(de::Error::custom(format_args!(
                            "duplicate key {}",
                            excerpt(&key, 64)
                        )));
                    }
                    map.next_value::<NoDuplicateKeys>()?;
                }
                Ok(NoDuplicateKeys(true))
            }
        }
        d.deserialize_any(V)
    }
}

/// An optional key of a newer format version, parsed without failing: a value of the wrong
/// type gives `None` here, and [`V4Keys`] reports it when the version gives the key a meaning
/// (below that version it is an unknown key, ignored, rule 2.5).
pub(crate) fn lenient<'de, D: Deserializer<'de>, T: de::DeserializeOwned>(
    d: D,
) -> std::result::Result<Option<T>, D::Error> {
    let raw: Box<serde_json::value::RawValue> = Deserialize::deserialize(d)?;
    Ok(serde_json::from_str::<Option<T>>(raw.get()).ok().flatten())
}

/// The keys of format 4.0 with their types (rules 2.15 to 2.17), parsed strictly from a 4.x
/// manifest so that a value of the wrong type is a schema error (rule 2.5), not ignored.
#[derive(Deserialize)]
pub(crate) struct V4Keys {
    #[allow(dead_code)]
    quantization: V4Quantization,
    #[allow(dead_code)]
    files: V4Files,
    #[allow(dead_code)]
    provenance: V4Provenance,
}

#[derive(Deserialize)]
struct V4Quantization {
    #[serde(default)]
    #[allow(dead_code)]
    source: Option<super::QuantSourceSpec>,
}

#[derive(Deserialize)]
struct V4Files {
    #[serde(default)]
    #[allow(dead_code)]
    assets: Option<Vec<super::AssetEntry>>,
}

#[derive(Deserialize)]
struct V4Provenance {
    #[serde(default)]
    #[allow(dead_code)]
    original: Option<super::OriginalSpec>,
}
