//! Quantities as users write them: cpu `100m`, `0.5`, `2`; memory `128Mi`, `4Gi`, `1G`,
//! plain bytes; durations `60s`, `10m`, `1h`. Each keeps the form it was written in (a YAML
//! number stays a number, a string stays a string), so a stored object reads back exactly
//! as applied, and exposes the parsed value.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::limits::MAX_DURATION_MS;

/// The literal a user wrote: a string or a number.
#[derive(Clone, Debug, PartialEq)]
enum Raw {
    Str(String),
    Int(i64),
    Float(f64),
}

impl Raw {
    fn text(&self) -> String {
        match self {
            Raw::Str(s) => s.clone(),
            Raw::Int(i) => i.to_string(),
            Raw::Float(f) => f.to_string(),
        }
    }

    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Raw::Str(v) => s.serialize_str(v),
            Raw::Int(v) => s.serialize_i64(*v),
            Raw::Float(v) => s.serialize_f64(*v),
        }
    }
}

struct RawVisitor;

impl Visitor<'_> for RawVisitor {
    type Value = Raw;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or a number")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        i64::try_from(v)
            .map(Raw::Int)
            .map_err(|_| E::custom("number too large"))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }
}

/// Parses a decimal number with an optional fraction, no sign, into (integer, fraction
/// digits): "1.25" -> (125, 2).
fn decimal(s: &str) -> Option<(u128, u32)> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    let digits = format!("{int}{frac}");
    Some((digits.parse().ok()?, frac.len() as u32))
}

/// `s` times `multiplier`, refused (None) unless the result is a whole number: half a
/// byte or a tenth of a millicore is not a quantity (Kubernetes would round it up; we
/// refuse, so what is stored is exactly what was meant).
fn scaled(s: &str, multiplier: u128) -> Option<u64> {
    let (n, frac) = decimal(s)?;
    let product = n.checked_mul(multiplier)?;
    let divisor = 10u128.pow(frac);
    if product % divisor != 0 {
        return None;
    }
    u64::try_from(product / divisor).ok()
}

macro_rules! quantity_type {
    ($name:ident, $what:literal, $expect:literal, $parse:path, $getter:ident) => {
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name {
            raw: Raw,
            value: u64,
        }

        impl $name {
            pub fn $getter(&self) -> u64 {
                self.value
            }

            pub fn parse(text: &str) -> Result<Self, String> {
                Self::from_raw(Raw::Str(text.to_string()))
            }

            fn from_raw(raw: Raw) -> Result<Self, String> {
                let text = raw.text();
                match $parse(text.trim()) {
                    Some(value) => Ok($name { raw, value }),
                    None => Err(format!(
                        concat!("invalid ", $what, " quantity \"{}\": expected ", $expect),
                        text
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(&self.raw.text())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.raw.serialize(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = d.deserialize_any(RawVisitor)?;
                $name::from_raw(raw).map_err(de::Error::custom)
            }
        }
    };
}

/// Digits only (no sign, no fraction), as a u64.
fn whole(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Millicores from `100m`, `0.5`, `2`.
fn parse_cpu(s: &str) -> Option<u64> {
    match s.strip_suffix('m') {
        Some(m) => whole(m),
        None => scaled(s, 1000),
    }
}

const SUFFIXES: [(&str, u128); 12] = [
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("Pi", 1 << 50),
    ("Ei", 1 << 60),
    ("k", 1_000),
    ("K", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("P", 1_000_000_000_000_000),
];

/// `s` with an optional unit suffix, times `base`.
fn with_suffix(s: &str, base: u128) -> Option<u64> {
    for (suffix, mult) in SUFFIXES {
        if let Some(n) = s.strip_suffix(suffix) {
            return scaled(n, mult * base);
        }
    }
    scaled(s, base)
}

/// Bytes from `128Mi`, `4Gi`, `1G`, `500M`, `1Ki`, `1k`, `1048576`.
fn parse_memory(s: &str) -> Option<u64> {
    with_suffix(s, 1)
}

/// Any Kubernetes-style quantity, as a value in milli-units (so `500m` and `0.5` compare).
fn parse_generic(s: &str) -> Option<u64> {
    if let Some(m) = s.strip_suffix('m') {
        return whole(m);
    }
    with_suffix(s, 1000)
}

quantity_type!(
    CpuQuantity,
    "cpu",
    "millicores like 100m or cores like 0.5 or 2 (at most millicore precision)",
    parse_cpu,
    millis
);
quantity_type!(
    MemoryQuantity,
    "memory",
    "a whole number of bytes, with a unit like 128Mi, 4Gi or 1G",
    parse_memory,
    bytes
);
quantity_type!(
    Quantity,
    "numeric",
    "a number like 100, 1.5, 500m or 2k (at most 3 decimals)",
    parse_generic,
    millis
);

/// A duration like `60s`, `10m`, `1h`, `1h30m`, `500ms`, or a number of seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct DurationStr {
    raw: Raw,
    millis: u64,
}

impl DurationStr {
    pub fn as_millis(&self) -> u64 {
        self.millis
    }

    pub fn as_secs(&self) -> u64 {
        self.millis / 1000
    }

    fn parse_text(s: &str) -> Option<u64> {
        if let Ok(secs) = s.parse::<u64>() {
            return secs.checked_mul(1000);
        }
        let mut total: u64 = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit())?;
            if digits == 0 {
                return None;
            }
            let n: u64 = rest[..digits].parse().ok()?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let mult = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return None,
            };
            total = total.checked_add(n.checked_mul(mult)?)?;
            rest = &rest[unit_len..];
        }
        Some(total)
    }
}

impl Serialize for DurationStr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for DurationStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = d.deserialize_any(RawVisitor)?;
        let text = raw.text();
        match DurationStr::parse_text(text.trim()) {
            Some(millis) if millis > MAX_DURATION_MS => Err(de::Error::custom(format!(
                "duration \"{text}\" is longer than the maximum of {}h",
                MAX_DURATION_MS / 3_600_000
            ))),
            Some(millis) => Ok(DurationStr { raw, millis }),
            None => Err(de::Error::custom(format!(
                "invalid duration \"{text}\": expected e.g. 30s, 10m, 1h30m or a number of seconds"
            ))),
        }
    }
}

/// An integer or a string, as Kubernetes uses for ports (`8080` or `http`) and for surge
/// limits (`1` or `25%`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    Str(String),
}

impl IntOrString {
    /// Resolves against a total: `25%` of 8 is 2 (rounded down unless `round_up`).
    /// Saturates instead of overflowing (validation bounds both sides far below that).
    pub fn resolve(&self, total: i64, round_up: bool) -> Option<i64> {
        match self {
            IntOrString::Int(i) => Some(*i),
            IntOrString::Str(s) => {
                let v = total.saturating_mul(Self::percent(s)?);
                Some(if round_up {
                    v.saturating_add(99) / 100
                } else {
                    v / 100
                })
            }
        }
    }

    /// `25%` -> 25; None when `s` is not an integer followed by `%`.
    pub fn percent(s: &str) -> Option<i64> {
        s.strip_suffix('%')?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu() {
        for (s, m) in [
            ("100m", 100),
            ("0.5", 500),
            ("2", 2000),
            ("1.5", 1500),
            ("4", 4000),
            ("0.001", 1),
        ] {
            assert_eq!(CpuQuantity::parse(s).unwrap().millis(), m, "{s}");
        }
        for bad in ["lots", "-1", "1.5m", "", "m", "1e3", "0.5.5"] {
            let err = CpuQuantity::parse(bad).unwrap_err();
            assert!(
                err.contains("invalid cpu quantity") && err.contains(bad),
                "{err}"
            );
        }
    }

    #[test]
    fn memory() {
        for (s, b) in [
            ("128Mi", 128 << 20),
            ("4Gi", 4 << 30),
            ("1G", 1_000_000_000),
            ("500M", 500_000_000),
            ("1Ki", 1024),
            ("1k", 1000),
            ("1048576", 1 << 20),
            ("1.5Gi", 3 << 29),
        ] {
            assert_eq!(MemoryQuantity::parse(s).unwrap().bytes(), b, "{s}");
        }
        for bad in ["12XB", "Mi", "-5Mi", "lots"] {
            assert!(MemoryQuantity::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keeps_the_written_form() {
        let n: CpuQuantity = serde_json::from_value(serde_json::json!(4)).unwrap();
        assert_eq!(serde_json::to_value(&n).unwrap(), serde_json::json!(4));
        let s: CpuQuantity = serde_json::from_value(serde_json::json!("500m")).unwrap();
        assert_eq!(serde_json::to_value(&s).unwrap(), serde_json::json!("500m"));
        let f: CpuQuantity = serde_json::from_value(serde_json::json!(0.5)).unwrap();
        assert_eq!(
            (f.millis(), serde_json::to_value(&f).unwrap()),
            (500, serde_json::json!(0.5))
        );
    }

    #[test]
    fn durations_and_percentages() {
        let d = |s: &str| {
            serde_json::from_value::<DurationStr>(serde_json::json!(s)).map(|d| d.as_secs())
        };
        assert_eq!(d("60s").unwrap(), 60);
        assert_eq!(d("10m").unwrap(), 600);
        assert_eq!(d("1h30m").unwrap(), 5400);
        assert_eq!(d("600").unwrap(), 600);
        assert!(d("soon").is_err());
        assert!(d("10x").is_err());
        assert_eq!(IntOrString::Str("25%".into()).resolve(10, true), Some(3));
        assert_eq!(IntOrString::Str("25%".into()).resolve(10, false), Some(2));
        assert_eq!(IntOrString::Int(2).resolve(10, false), Some(2));
        assert_eq!(
            Quantity::parse("500m").unwrap().millis(),
            Quantity::parse("0.5").unwrap().millis()
        );
    }
}
