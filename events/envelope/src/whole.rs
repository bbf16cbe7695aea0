//! Whole numbers as JSON Schema counts them: `2` and `2.0` alike.
//!
//! JSON Schema's `integer` is any number without a fractional part, so a
//! client that writes `1.0` sends a schema-valid quantity; serde's integer
//! types refuse it. Fields that carry counts and cents read through
//! [`deserialize`] (`#[serde(deserialize_with = "crate::whole::deserialize")]`)
//! and stay integers on the way out.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserializer;
use serde::de::{Error, Visitor};

/// The largest float that is still an exact whole number (2^53).
const EXACT: f64 = 9_007_199_254_740_992.0;

/// Reads a whole number that fits `T`, written as an integer or as a
/// number with a zero fractional part.
pub fn deserialize<'de, D: Deserializer<'de>, T: TryFrom<u64>>(deserializer: D) -> Result<T, D::Error> {
    struct Whole<T>(PhantomData<T>);

    impl<T: TryFrom<u64>> Visitor<'_> for Whole<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(
                f,
                "{} (a whole number from 0; 2.0 counts)",
                std::any::type_name::<T>().rsplit("::").next().unwrap_or("?")
            )
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<T, E> {
            T::try_from(v).map_err(|_| E::custom(format!("{v} is too large")))
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<T, E> {
            let v =
                u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative: expected a whole number from 0")))?;
            self.visit_u64(v)
        }

        fn visit_f64<E: Error>(self, v: f64) -> Result<T, E> {
            if v.fract() != 0.0 || !(0.0..=EXACT).contains(&v) {
                return Err(E::custom(format!("{v} is not a whole number from 0")));
            }
            // Exact: a whole number of at most 2^53.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            self.visit_u64(v as u64)
        }
    }

    deserializer.deserialize_any(Whole(PhantomData))
}

#[cfg(test)]
mod tests {
    #[derive(Debug, serde::Deserialize)]
    struct Line {
        #[serde(deserialize_with = "super::deserialize")]
        quantity: u32,
    }

    fn quantity(json: &str) -> Result<u32, String> {
        serde_json::from_str::<Line>(json).map(|l| l.quantity).map_err(|e| e.to_string())
    }

    #[test]
    fn integral_numbers_are_whole_whatever_their_spelling_and_nothing_else_is() {
        assert_eq!(quantity(r#"{"quantity": 2}"#), Ok(2));
        assert_eq!(quantity(r#"{"quantity": 2.0}"#), Ok(2));
        assert_eq!(quantity(r#"{"quantity": 2e0}"#), Ok(2));
        assert!(quantity(r#"{"quantity": 2.5}"#).unwrap_err().contains("2.5 is not a whole number"));
        assert!(quantity(r#"{"quantity": -1}"#).unwrap_err().contains("negative"));
        assert!(quantity(r#"{"quantity": 4294967296}"#).unwrap_err().contains("too large"));
        assert!(quantity(r#"{"quantity": "2"}"#).unwrap_err().contains("expected u32 (a whole number from 0"));
    }
}
