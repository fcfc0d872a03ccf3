//! Sizes in bytes, written as OpenSearch writes them (`100mb`, `1gb`) or
//! as a plain number of bytes.

use serde::{Deserialize, Deserializer};

/// A size in bytes: `"100mb"`, `"512kb"`, `"1gb"`, `"4096b"` (binary
/// multiples, as OpenSearch reads them) or a plain integer of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(u64);

/// A size that is not a whole number and a unit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {0:?}: write a whole number of bytes, or a whole number followed by b, kb, mb or gb, like \"100mb\"")]
pub struct ByteSizeError(pub String);

impl ByteSize {
    /// From bytes.
    pub const fn from_bytes(n: u64) -> Self {
        ByteSize(n)
    }

    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// Parses `"100mb"` and friends.
    ///
    /// ```
    /// use osproxy_config::ByteSize;
    /// assert_eq!(ByteSize::parse("100mb").unwrap().bytes(), 100 * 1024 * 1024);
    /// assert_eq!(ByteSize::parse("1GB").unwrap().bytes(), 1 << 30);
    /// assert!(ByteSize::parse("5x").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<Self, ByteSizeError> {
        let t = s.trim().to_ascii_lowercase();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let bad = || ByteSizeError(s.to_string());
        let n: u64 = num.parse().map_err(|_| bad())?;
        let scale: u64 = match unit.trim() {
            "" | "b" => 1,
            "kb" | "k" => 1 << 10,
            "mb" | "m" => 1 << 20,
            "gb" | "g" => 1 << 30,
            _ => return Err(bad()),
        };
        n.checked_mul(scale).map(ByteSize).ok_or_else(bad)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Bytes(u64),
            Text(String),
        }
        match Written::deserialize(d)? {
            Written::Bytes(n) => Ok(ByteSize(n)),
            Written::Text(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl serde::Serialize for ByteSize {
    /// As a plain number of bytes, which [`ByteSize`] reads back.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}
