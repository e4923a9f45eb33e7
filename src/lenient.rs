//! Deserializers for the loose values that installed clients send.
//!
//! Old clients send integers as JSON integers, integral floats (`50.0`) or
//! digit strings (`"50"`), and all three are accepted. A fraction, a boolean
//! or a value beyond 64 bits is a type error. Range rules (at least 0, at most
//! 2^31-1) are checked afterwards by the validator, so that the error names
//! the rule. Lists sent as `null` count as empty.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// The largest value of the 32-bit integer columns.
pub const INT_MAX: i64 = i32::MAX as i64;

struct IntVisitor;

impl<'de> Visitor<'de> for IntVisitor {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::custom(format!("integer {v} is out of range")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        if v.fract() != 0.0 || !v.is_finite() {
            return Err(E::custom(format!(
                "expected an integer, got {v}, which has a fractional part"
            )));
        }
        // Integral floats beyond 2^63 cannot be represented; reject them here.
        if v.abs() >= 9.2e18 {
            return Err(E::custom(format!("integer {v} is out of range")));
        }
        Ok(v as i64)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
        let digits = v.strip_prefix('-').unwrap_or(v);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(E::custom(format!(
                "expected an integer, got the string {v:?}"
            )));
        }
        v.parse()
            .map_err(|_| E::custom(format!("integer {v} is out of range")))
    }
}

/// Deserializes a required integer, accepting integral floats and digit strings.
pub fn int<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    deserializer.deserialize_any(IntVisitor)
}

/// As [`int`], with `null` read as absent.
pub fn opt_int<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    struct OptVisitor;

    impl<'de> Visitor<'de> for OptVisitor {
        type Value = Option<i64>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an integer or null")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            int(d).map(Some)
        }
    }

    deserializer.deserialize_option(OptVisitor)
}

/// As [`int`], with `null` read as 0 (the field's default).
pub fn int_or_zero<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    opt_int(deserializer).map(Option::unwrap_or_default)
}

/// Deserializes an optional boolean; old clients also send 0/1 and "true"/"false".
pub fn opt_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(deserializer)?;
    let parsed = match &value {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::Bool(b)) => Some(*b),
        Some(serde_json::Value::Number(n)) => match n.as_i64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        Some(serde_json::Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        Some(_) => None,
    };
    parsed.map(Some).ok_or_else(|| {
        de::Error::custom(format!(
            "expected a boolean, got {}",
            value.unwrap_or_default()
        ))
    })
}

/// Deserializes a list of at most `MAX` entries, reading `null` as empty.
/// Reading stops at the first entry too many, so that an oversized list
/// costs no more work than its limit.
pub fn list_max<'de, D, T, const MAX: usize>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct BoundedVisitor<T, const MAX: usize>(std::marker::PhantomData<T>);

    impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for BoundedVisitor<T, MAX> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a list of at most {MAX} entries, or null")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_seq(self)
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element()? {
                if items.len() == MAX {
                    return Err(de::Error::custom(format!(
                        "a list may have at most {MAX} entries"
                    )));
                }
                items.push(item);
            }
            Ok(items)
        }
    }

    deserializer.deserialize_option(BoundedVisitor::<T, MAX>(std::marker::PhantomData))
}

/// Deserializes a list, reading `null` as empty.
pub fn list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<Vec<T>>::deserialize(deserializer).map(Option::unwrap_or_default)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Holder {
        #[serde(deserialize_with = "int")]
        n: i64,
    }

    fn parse(value: serde_json::Value) -> Result<i64, String> {
        serde_json::from_value::<Holder>(json!({ "n": value }))
            .map(|h| h.n)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_integers_integral_floats_and_digit_strings() {
        assert_eq!(parse(json!(50)), Ok(50));
        assert_eq!(parse(json!(50.0)), Ok(50));
        assert_eq!(parse(json!("50")), Ok(50));
        assert_eq!(parse(json!(-3)), Ok(-3));
        assert_eq!(parse(json!("-3")), Ok(-3));
    }

    #[test]
    fn rejects_fractions_booleans_and_junk() {
        assert!(parse(json!(50.5)).unwrap_err().contains("fractional"));
        assert!(parse(json!(true)).is_err());
        assert!(parse(json!("5x")).is_err());
        assert!(parse(json!("")).is_err());
        assert!(parse(json!(" 5")).is_err());
        assert!(parse(json!(1e300)).unwrap_err().contains("out of range"));
        assert!(parse(json!(u64::MAX)).unwrap_err().contains("out of range"));
        assert!(parse(json!([1])).is_err());
    }
}
