//! Durations (`500ms`, `1m30s`) and byte quantities (`128Mi`, `1G`) as written in manifests.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as a sum of `<n>h`, `<n>m`, `<n>s` and `<n>ms` parts, largest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(std::time::Duration);

const UNITS_MS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

impl Duration {
    pub const fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }

    pub const fn from_millis(millis: u64) -> Self {
        Duration(std::time::Duration::from_millis(millis))
    }

    pub fn as_std(&self) -> std::time::Duration {
        self.0
    }

    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = || {
            format!(
                "invalid duration \"{text}\" (expected a number with a unit h, m, s or ms, such as 500ms, 10s or 1m30s)"
            )
        };
        if text.is_empty() {
            return Err(invalid());
        }
        let mut rest = text;
        let mut total_ms: u64 = 0;
        let mut smallest_unit_so_far = u64::MAX;
        while !rest.is_empty() {
            let digits_end = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
                format!("invalid duration \"{text}\": add a unit (h, m, s or ms), e.g. {text}s")
            })?;
            if digits_end == 0 {
                return Err(invalid());
            }
            let number: u64 = rest[..digits_end].parse().map_err(|_| invalid())?;
            let after = &rest[digits_end..];
            let unit_end = after
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(after.len());
            let unit_ms = UNITS_MS
                .iter()
                .find(|(unit, _)| *unit == &after[..unit_end])
                .map(|(_, ms)| *ms)
                .ok_or_else(invalid)?;
            if unit_ms >= smallest_unit_so_far {
                return Err(invalid());
            }
            smallest_unit_so_far = unit_ms;
            total_ms = number
                .checked_mul(unit_ms)
                .and_then(|ms| total_ms.checked_add(ms))
                .ok_or_else(|| format!("duration \"{text}\" is too large"))?;
            rest = &after[unit_end..];
        }
        Ok(Duration(std::time::Duration::from_millis(total_ms)))
    }
}

impl fmt::Display for Duration {
    /// The canonical form: `1m30s`, `500ms`, `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, unit_ms) in UNITS_MS {
            if ms >= unit_ms {
                write!(f, "{}{unit}", ms / unit_ms)?;
                ms %= unit_ms;
            }
        }
        Ok(())
    }
}

/// A number of bytes, written as plain bytes or with a k, M, G (powers of 1000) or
/// Ki, Mi, Gi (powers of 1024) suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(u64);

/// Binary suffixes first so that the canonical form of 128Mi stays 128Mi.
const SUFFIXES: [(&str, u64); 6] = [
    ("Gi", 1 << 30),
    ("Mi", 1 << 20),
    ("Ki", 1 << 10),
    ("G", 1_000_000_000),
    ("M", 1_000_000),
    ("k", 1_000),
];

impl ByteSize {
    pub const fn from_bytes(bytes: u64) -> Self {
        ByteSize(bytes)
    }

    pub fn bytes(&self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = || {
            format!(
                "invalid quantity \"{text}\" (expected bytes with an optional k, M, G, Ki, Mi or Gi suffix)"
            )
        };
        let digits_end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        if digits_end == 0 {
            return Err(invalid());
        }
        let number: u64 = text[..digits_end].parse().map_err(|_| invalid())?;
        let multiplier = match &text[digits_end..] {
            "" => 1,
            suffix => SUFFIXES
                .iter()
                .find(|(name, _)| *name == suffix)
                .map(|(_, multiplier)| *multiplier)
                .ok_or_else(invalid)?,
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("quantity \"{text}\" is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let suffix = SUFFIXES
            .iter()
            .find(|(_, multiplier)| self.0 != 0 && self.0 % multiplier == 0);
        match suffix {
            Some((name, multiplier)) => write!(f, "{}{name}", self.0 / multiplier),
            None => write!(f, "{}", self.0),
        }
    }
}

/// Both types are read from their text form and written in canonical form, so that
/// `128Mi` and `134217728` are the same value everywhere, including the spec hash.
macro_rules! text_serde {
    ($type:ty, $schema_name:literal, $schema:expr) => {
        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(de::Error::custom)
            }
        }

        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl JsonSchema for $type {
            fn schema_name() -> Cow<'static, str> {
                $schema_name.into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                $schema
            }
        }
    };
}

text_serde!(
    Duration,
    "Duration",
    json_schema!({
        "description": "A duration: a sum of <n>h, <n>m, <n>s and <n>ms parts, largest first (500ms, 10s, 1m30s, 1h).",
        "type": "string",
        "pattern": "^(?=[0-9])([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?$"
    })
);

text_serde!(
    ByteSize,
    "ByteSize",
    json_schema!({
        "description": "Bytes, plain or with a k, M, G (powers of 1000) or Ki, Mi, Gi (powers of 1024) suffix: 1048576, 512k, 128Mi, 1G.",
        "anyOf": [
            {"type": "integer", "minimum": 0},
            {"type": "string", "pattern": "^[0-9]+(k|M|G|Ki|Mi|Gi)?$"}
        ]
    })
);

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> Result<u128, String> {
        text.parse::<Duration>().map(|d| d.as_std().as_millis())
    }

    #[test]
    fn durations_accept_units_and_combinations() {
        assert_eq!(ms("500ms"), Ok(500));
        assert_eq!(ms("10s"), Ok(10_000));
        assert_eq!(ms("5m"), Ok(300_000));
        assert_eq!(ms("1h"), Ok(3_600_000));
        assert_eq!(ms("1m30s"), Ok(90_000));
        assert_eq!(ms("1h2m3s4ms"), Ok(3_723_004));
        assert_eq!(ms("0s"), Ok(0));
    }

    #[test]
    fn durations_reject_missing_units_and_disorder() {
        assert!(ms("10").unwrap_err().contains("add a unit"));
        for bad in ["", "s", "10x", "1s1m", "1s1s", "-1s", "1.5s", "10 s"] {
            assert!(ms(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn durations_print_in_canonical_form() {
        for (written, canonical) in [("90s", "1m30s"), ("1500ms", "1s500ms"), ("0ms", "0s")] {
            let duration: Duration = written.parse().expect("valid");
            assert_eq!(duration.to_string(), canonical);
        }
    }

    #[test]
    fn quantities_accept_decimal_and_binary_suffixes() {
        let bytes = |t: &str| t.parse::<ByteSize>().map(|b| b.bytes());
        assert_eq!(bytes("1024"), Ok(1024));
        assert_eq!(bytes("512k"), Ok(512_000));
        assert_eq!(bytes("1M"), Ok(1_000_000));
        assert_eq!(bytes("1G"), Ok(1_000_000_000));
        assert_eq!(bytes("1Ki"), Ok(1024));
        assert_eq!(bytes("128Mi"), Ok(128 << 20));
        assert_eq!(bytes("2Gi"), Ok(2 << 30));
        let err = bytes("12Q").unwrap_err();
        assert_eq!(
            err,
            "invalid quantity \"12Q\" (expected bytes with an optional k, M, G, Ki, Mi or Gi suffix)"
        );
        for bad in [
            "",
            "Mi",
            "1.5Gi",
            "-1",
            "1mi",
            "1 Mi",
            "99999999999999999999",
        ] {
            assert!(bytes(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn quantities_print_in_canonical_form() {
        for (written, canonical) in [("134217728", "128Mi"), ("1000k", "1M"), ("1500", "1500")] {
            let size: ByteSize = written.parse().expect("valid");
            assert_eq!(size.to_string(), canonical);
        }
    }
}
