//! Human durations in config values: `"250ms"`, `"30s"`, `"2m"`, `"1h"`.

use serde::{Deserialize, Deserializer};

/// A duration written as a number and a unit (`ms`, `s`, `m`, `h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(std::time::Duration);

/// A duration that is not a whole number and a unit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {0:?}: write a whole number followed by ms, s, m or h, like \"30s\"")]
pub struct DurationError(pub String);

impl Duration {
    /// From milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }

    /// From seconds.
    pub const fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }

    /// The std duration.
    pub const fn as_std(self) -> std::time::Duration {
        self.0
    }

    /// Parses `"30s"` and friends.
    ///
    /// ```
    /// use osproxy_config::Duration;
    /// assert_eq!(Duration::parse("250ms").unwrap().as_std().as_millis(), 250);
    /// assert!(Duration::parse("5x").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<Self, DurationError> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let bad = || DurationError(s.to_string());
        let n: u64 = num.parse().map_err(|_| bad())?;
        let d = match unit {
            "ms" => std::time::Duration::from_millis(n),
            "s" => std::time::Duration::from_secs(n),
            "m" => std::time::Duration::from_secs(n.saturating_mul(60)),
            "h" => std::time::Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        Ok(Duration(d))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Duration::parse(&s).map_err(serde::de::Error::custom)
    }
}
