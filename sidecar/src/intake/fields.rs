//! Field types shared by the adapters: lenient JSON scalars (platforms send money as
//! strings or numbers, ids as numbers above 2^53 or strings), money in minor units,
//! timestamps in UTC.

use std::{fmt, str::FromStr};

use rust_decimal::{Decimal, RoundingStrategy};
use serde::de::{self, Deserializer, Visitor};

use super::reason::{Reason, ReasonCode};

/// A JSON string or number, kept as its text. Numbers keep their exact digits: an integer
/// id is printed from its `u64`/`i64` (never through a float), a float from Rust's
/// shortest round-trip form.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Text(pub String);

impl<'de> serde::Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text, E> {
                Ok(Text(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl Text {
    /// The text, `None` when empty or only spaces.
    pub fn non_empty(&self) -> Option<&str> {
        let t = self.0.trim();
        (!t.is_empty()).then_some(t)
    }
}

/// The trimmed text of an optional field, `None` when absent, null or blank.
pub fn text(field: &Option<Text>) -> Option<String> {
    field.as_ref().and_then(Text::non_empty).map(str::to_owned)
}

/// A JSON boolean, or the strings "true"/"false", or 0/1 (Magento flags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flag(pub bool);

impl<'de> serde::Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a boolean, \"true\"/\"false\" or 0/1")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Flag, E> {
                Ok(Flag(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Flag, E> {
                Ok(Flag(v != 0))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Flag, E> {
                Ok(Flag(v != 0))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Flag, E> {
                match v.trim() {
                    "true" | "1" => Ok(Flag(true)),
                    "false" | "0" | "" => Ok(Flag(false)),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// The value of an optional flag, false when absent or null.
pub fn flag(field: Option<Flag>) -> bool {
    field.is_some_and(|f| f.0)
}

/// Parses a JSON document into `T`, or a [`ReasonCode::Malformed`] reason naming where.
pub fn parse_json<'a, T: serde::Deserialize<'a>>(what: &str, body: &'a [u8]) -> Result<T, Reason> {
    serde_json::from_slice(body)
        .map_err(|e| Reason::new(ReasonCode::Malformed, format!("{what}: {e}")))
}

/// An ISO 4217 currency: its code and decimals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Currency {
    /// The code.
    pub code: iso_currency::Currency,
    /// Decimals of the minor unit.
    pub exponent: u8,
}

impl Currency {
    /// The currency named by `code` (upper-case ISO 4217), or an [`ReasonCode::InvalidField`]
    /// reason.
    pub fn parse(field: &str, code: Option<&str>) -> Result<Currency, Reason> {
        let Some(code) = code.map(str::trim).filter(|c| !c.is_empty()) else {
            return Err(Reason::new(
                ReasonCode::MissingField,
                format!("{field}: no currency"),
            ));
        };
        let parsed = iso_currency::Currency::from_code(code).ok_or_else(|| {
            Reason::new(
                ReasonCode::InvalidField,
                format!("{field}: {code:?} is not an ISO 4217 currency code"),
            )
        })?;
        // Currencies without a minor unit (gold, SDR, ...) are not sold in stores.
        let exponent = parsed
            .exponent()
            .and_then(|e| u8::try_from(e).ok())
            .ok_or_else(|| {
                Reason::new(
                    ReasonCode::InvalidField,
                    format!("{field}: {code} has no minor unit"),
                )
            })?;
        Ok(Currency {
            code: parsed,
            exponent,
        })
    }

    /// The code as text.
    pub fn code_str(&self) -> String {
        self.code.code().to_owned()
    }

    /// `text` (a decimal such as "89.99", "55.9900", "12" or "5.1") in minor units,
    /// rounded half away from zero to the currency's decimals (BigCommerce sends 4).
    pub fn minor(&self, field: &str, text: &str) -> Result<i64, Reason> {
        let invalid = || {
            Reason::new(
                ReasonCode::InvalidField,
                format!("{field}: {text:?} is not an amount"),
            )
        };
        let t = text.trim();
        let d = Decimal::from_str(t)
            .or_else(|_| Decimal::from_scientific(t))
            .map_err(|_| invalid())?;
        self.minor_of(field, d)
    }

    /// `amount` (in major units) in minor units, rounded half away from zero.
    pub fn minor_of(&self, field: &str, amount: Decimal) -> Result<i64, Reason> {
        let scaled = amount
            .checked_mul(Decimal::from(10i64.pow(u32::from(self.exponent))))
            .map(|d| d.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero));
        scaled.and_then(|d| i64::try_from(d).ok()).ok_or_else(|| {
            Reason::new(
                ReasonCode::InvalidField,
                format!("{field}: {amount} is out of range"),
            )
        })
    }
}

/// A quantity from a JSON integer, or a float or string that is a whole number (Magento
/// sends `1.0000`), in `1..=u32::MAX`.
pub fn quantity(field: &str, raw: &Text) -> Result<u32, Reason> {
    let t = raw.0.trim();
    let d = Decimal::from_str(t)
        .or_else(|_| Decimal::from_scientific(t))
        .map_err(|_| {
            Reason::new(
                ReasonCode::InvalidField,
                format!("{field}: {t:?} is not a quantity"),
            )
        })?;
    if !d.fract().is_zero() {
        return Err(Reason::new(
            ReasonCode::InvalidField,
            format!("{field}: {t} is not a whole number of units"),
        ));
    }
    u32::try_from(d).ok().filter(|q| *q >= 1).ok_or_else(|| {
        Reason::new(
            ReasonCode::InvalidField,
            format!("{field}: {t} is outside 1..={}", u32::MAX),
        )
    })
}

/// How a platform writes a time.
#[derive(Clone, Copy, Debug)]
pub enum TimeFormat {
    /// RFC 3339 / ISO 8601 with an offset or `Z`.
    Rfc3339,
    /// ISO 8601 without an offset, in UTC (WooCommerce `*_gmt`, Magento).
    NaiveUtc,
    /// RFC 2822 (BigCommerce v2).
    Rfc2822,
}

/// Parses a time into a UTC timestamp.
pub fn timestamp(field: &str, raw: &str, format: TimeFormat) -> Result<jiff::Timestamp, Reason> {
    let t = raw.trim();
    let parsed = match format {
        TimeFormat::Rfc3339 => t.parse::<jiff::Timestamp>().ok(),
        TimeFormat::NaiveUtc => t
            .parse::<jiff::civil::DateTime>()
            .ok()
            .and_then(|dt| jiff::tz::TimeZone::UTC.to_timestamp(dt).ok()),
        TimeFormat::Rfc2822 => jiff::fmt::rfc2822::parse(t).ok().map(|z| z.timestamp()),
    };
    parsed.ok_or_else(|| {
        Reason::new(
            ReasonCode::InvalidField,
            format!("{field}: {raw:?} is not a {format:?} time"),
        )
    })
}

/// A required time field, parsed.
pub fn required_time(
    field: &str,
    raw: &Option<Text>,
    format: TimeFormat,
) -> Result<jiff::Timestamp, Reason> {
    let raw = text(raw)
        .ok_or_else(|| Reason::new(ReasonCode::MissingField, format!("{field}: missing")))?;
    timestamp(field, &raw, format)
}

/// Milliseconds since the epoch, as a version number; times before 1970 are version 0.
pub fn version_ms(t: jiff::Timestamp) -> u64 {
    u64::try_from(t.as_millisecond()).unwrap_or(0)
}

/// Collects every reason instead of stopping at the first: a sender fixes all at once.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<Reason>);

impl Problems {
    /// Keeps the value or records the reason.
    pub fn take<T>(&mut self, r: Result<T, Reason>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(e);
                None
            }
        }
    }

    /// Records a reason.
    pub fn push(&mut self, r: Reason) {
        self.0.push(r);
    }
}

/// A first name and a last name joined, or `None` if both are blank.
pub fn full_name(first: &Option<Text>, last: &Option<Text>) -> Option<String> {
    match (text(first), text(last)) {
        (Some(f), Some(l)) => Some(format!("{f} {l}")),
        (Some(n), None) | (None, Some(n)) => Some(n),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> Currency {
        Currency::parse("currency", Some("USD")).unwrap()
    }

    #[test]
    fn money_in_minor_units() {
        let c = usd();
        assert_eq!(c.minor("p", "89.99").unwrap(), 8999);
        assert_eq!(c.minor("p", "55.9900").unwrap(), 5599);
        assert_eq!(c.minor("p", "62.6793").unwrap(), 6268);
        assert_eq!(c.minor("p", "0.005").unwrap(), 1);
        assert_eq!(c.minor("p", "-0.005").unwrap(), -1);
        assert_eq!(c.minor("p", "12").unwrap(), 1200);
        assert_eq!(c.minor("p", "5.1").unwrap(), 510);
        assert_eq!(c.minor("p", "1e2").unwrap(), 10000);
        assert_eq!(
            c.minor("p", "abc").unwrap_err().code,
            ReasonCode::InvalidField
        );
        assert_eq!(c.minor("p", "").unwrap_err().code, ReasonCode::InvalidField);
        assert_eq!(
            c.minor("p", "99999999999999999999999").unwrap_err().code,
            ReasonCode::InvalidField
        );
        let jpy = Currency::parse("c", Some("JPY")).unwrap();
        assert_eq!(jpy.exponent, 0);
        assert_eq!(jpy.minor("p", "1500").unwrap(), 1500);
        let bhd = Currency::parse("c", Some("BHD")).unwrap();
        assert_eq!(bhd.minor("p", "1.5").unwrap(), 1500);
        assert_eq!(
            Currency::parse("c", Some("XYZ")).unwrap_err().code,
            ReasonCode::InvalidField
        );
        assert_eq!(
            Currency::parse("c", None).unwrap_err().code,
            ReasonCode::MissingField
        );
    }

    #[test]
    fn quantities_are_whole_and_positive() {
        let q = |s: &str| quantity("q", &Text(s.to_owned()));
        assert_eq!(q("2").unwrap(), 2);
        assert_eq!(q("1.0000").unwrap(), 1);
        assert!(q("1.5").is_err());
        assert!(q("0").is_err());
        assert!(q("-1").is_err());
        assert!(q("4294967296").is_err());
    }

    #[test]
    fn times_in_utc() {
        let t = |s, f| timestamp("t", s, f).map(|t| t.to_string());
        assert_eq!(
            t("2021-12-31T19:00:00-05:00", TimeFormat::Rfc3339).unwrap(),
            "2022-01-01T00:00:00Z"
        );
        assert_eq!(
            t("2017-03-22T19:28:02", TimeFormat::NaiveUtc).unwrap(),
            "2017-03-22T19:28:02Z"
        );
        assert_eq!(
            t("2017-08-21 22:22:19", TimeFormat::NaiveUtc).unwrap(),
            "2017-08-21T22:22:19Z"
        );
        assert_eq!(
            t("Tue, 05 Mar 2019 21:40:11 +0000", TimeFormat::Rfc2822).unwrap(),
            "2019-03-05T21:40:11Z"
        );
        assert!(t("yesterday", TimeFormat::Rfc3339).is_err());
        assert!(t("2017-03-22T19:28:02", TimeFormat::Rfc3339).is_err());
    }

    #[test]
    fn big_ids_keep_their_digits() {
        let t: Text = serde_json::from_str("820982911946154508").unwrap();
        assert_eq!(t.0, "820982911946154508");
        let f: Flag = serde_json::from_str("\"true\"").unwrap();
        assert!(f.0);
    }
}
