//! Request bodies to objects: YAML (several `---` documents) or JSON (an object, an array,
//! or `{"kind": "List", "items": [...]}`), each document validated.
//!
//! Before anything is built from a body:
//! - YAML goes through [`yaml_guard::check`] (nesting at most [`MAX_DEPTH`], aliases
//!   within a budget of the body's size), then each document becomes a JSON value through
//!   [`FiniteValue`], which refuses `.inf` and `.nan` by path: converted the plain way
//!   they became `null` and the field was silently dropped.
//! - JSON is parsed by serde_json, whose recursion limit (128) stops deep nesting while
//!   parsing (linear time); the value is then held to the same [`MAX_DEPTH`] as YAML.
//!   JSON has no non-finite numbers (`1e999` is a parse error).

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::yaml_guard::{self, MAX_DEPTH};
use super::{invalid, ModelError, Resource};

/// Parses a request body: YAML (several `---` documents allowed) or JSON (an object, an
/// array, or `{"kind": "List", "items": [...]}`). Every object is validated.
pub fn parse_manifests(body: &str) -> Result<Vec<Resource>, ModelError> {
    let docs = split_documents(body)?;
    let many = docs.len() > 1;
    docs.into_iter()
        .enumerate()
        .map(|(i, v)| {
            Resource::from_value(v).map_err(|mut e| {
                if many {
                    e.message = format!("{} (document {})", e.message, i + 1);
                }
                e
            })
        })
        .collect()
}

pub(super) fn split_documents(body: &str) -> Result<Vec<Value>, ModelError> {
    let trimmed = body.trim_start();
    let values = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        vec![json_document(body)?]
    } else {
        yaml_guard::check(body)?;
        let mut values = Vec::new();
        for doc in serde_norway::Deserializer::from_str(body) {
            values.push(yaml_document(doc)?);
        }
        values
    };
    let mut out = Vec::new();
    for v in values {
        match v {
            Value::Null => {}
            Value::Array(items) => out.extend(items),
            Value::Object(ref o) if o.get("kind") == Some(&Value::String("List".into())) => out
                .extend(
                    o.get("items")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                ),
            Value::Object(_) => out.push(v),
            other => {
                return Err(invalid(
                    "",
                    format!("expected an object with apiVersion and kind, got {other}"),
                ));
            }
        }
    }
    Ok(out)
}

fn json_document(body: &str) -> Result<Value, ModelError> {
    let v: Value = serde_json::from_str(body).map_err(|e| {
        invalid(
            "",
            format!(
                "invalid JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            ),
        )
    })?;
    if depth(&v) > MAX_DEPTH {
        return Err(invalid(
            "",
            format!("JSON nests deeper than {MAX_DEPTH} levels; no manifest needs that"),
        ));
    }
    Ok(v)
}

/// Nesting of collections in `v` (a scalar is 0). Recursion is bounded by serde_json's
/// own limit of 128.
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn yaml_document(doc: serde_norway::Deserializer<'_>) -> Result<Value, ModelError> {
    let non_finite = Cell::new(false);
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(doc, &mut track);
    match (FiniteValue {
        non_finite: &non_finite,
    })
    .deserialize(de)
    {
        Ok(v) => Ok(v),
        Err(e) if non_finite.get() => Err(invalid(
            &track.path().to_string(),
            format!("{e}: a quantity or number must be finite"),
        )),
        Err(e) => Err(match e.location() {
            Some(l) => invalid(
                "",
                format!(
                    "invalid YAML at line {} column {}: {e}",
                    l.line(),
                    l.column()
                ),
            ),
            None => invalid("", format!("invalid YAML: {e}")),
        }),
    }
}

/// Builds a `serde_json::Value` like its own `Deserialize` does, except that a non-finite
/// float is an error (and flags `non_finite`, so the caller names the field) instead of
/// `null`.
#[derive(Clone, Copy)]
struct FiniteValue<'a> {
    non_finite: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for FiniteValue<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FiniteValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        match serde_json::Number::from_f64(v) {
            Some(n) => Ok(Value::Number(n)),
            None => {
                self.non_finite.set(true);
                Err(E::custom(format!("{v} is not a finite number")))
            }
        }
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let v = map.next_value_seed(self)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_becomes_the_same_json_as_before() {
        let text = "a: 1\nb: -2\nc: 1.5\nd: [x, {e: null}]\nf: true\n1: one\ng: ~\n";
        let ours = yaml_document(serde_norway::Deserializer::from_str(text)).unwrap();
        let plain: Value = serde_norway::from_str(text).unwrap();
        assert_eq!(ours, plain);
    }

    #[test]
    fn non_finite_numbers_are_refused_by_path() {
        for (text, path) in [
            ("a: {b: [1, .inf]}\n", "a.b[1]"),
            ("x: .nan\n", "x"),
            ("x: -.Inf\n", "x"),
        ] {
            let e = yaml_document(serde_norway::Deserializer::from_str(text)).unwrap_err();
            assert_eq!(e.field, path, "{text}: {e}");
            assert!(e.message.contains("finite"), "{e}");
        }
        // Quoted, it is a string (and a quantity parser refuses it by name).
        let v = yaml_document(serde_norway::Deserializer::from_str("x: '.inf'\n")).unwrap();
        assert_eq!(v["x"], ".inf");
    }

    #[test]
    fn json_depth_is_bounded_like_yaml() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        json_document(&ok).unwrap();
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(json_document(&deep)
            .unwrap_err()
            .message
            .contains("deeper than 64"));
        // serde_json's own limit stops 100k levels while parsing.
        let huge = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let e = json_document(&huge).unwrap_err();
        assert!(e.message.contains("recursion limit"), "{e}");
    }
}
