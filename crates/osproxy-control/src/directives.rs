//! The diagnostics directive set and its one strict decoder.
//!
//! The same decoder serves the admin API, the etcd watcher and the signed
//! request header, so a directive means the same thing on every path.
//! Anything it does not understand rejects the whole set: an unknown key, a
//! bad level, a missing expiry, a rate outside [0, 1], a duplicate id.

use serde::{Deserialize, Serialize};

/// How much a selected request records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// Nothing.
    Off,
    /// Names, ids, counts and sizes per stage.
    Shape,
    /// `shape` plus per-stage durations.
    Timing,
    /// `timing` plus which fields and constructs the rewrite added or removed.
    RewriteDiff,
}

/// Which requests a directive selects; an absent key matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// A partition id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// A logical index name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    /// A principal name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// An endpoint kind name (`search`, `bulk`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// One directive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Directive {
    /// The operator's name for it, unique in the set.
    pub id: String,
    /// What it selects.
    #[serde(default, rename = "match")]
    pub matcher: Match,
    /// How much it records.
    pub level: Level,
    /// The fraction of matching requests selected (by request id).
    #[serde(default = "full_rate")]
    pub sample_rate: f64,
    /// RFC 3339 time after which it selects nothing (mandatory).
    pub expires_at: String,
    /// Keep matching explanations in the capture ring.
    #[serde(default)]
    pub capture: bool,
    /// `expires_at` as seconds since the Unix epoch (decoded, not stored).
    #[serde(skip)]
    pub expires_unix: u64,
}

fn full_rate() -> f64 {
    1.0
}

/// The whole published set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectiveSet {
    /// The directives, in publication order.
    pub directives: Vec<Directive>,
}

/// Why a directive (set) was refused; every message names the directive
/// and the field, never a value's secret.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DirectiveError {
    /// A field is missing or of the wrong type.
    #[error("{path}: {reason}")]
    Field {
        /// Where, like `directives[0].level`.
        path: String,
        /// What the decoder said.
        reason: String,
    },
    /// Bytes after the set.
    #[error("trailing data after the set: {0}")]
    Trailing(String),
    /// More directives than may be active (or, for one, none).
    #[error("{0} directives; between 1 and {MAX_DIRECTIVES} may be active")]
    TooMany(usize),
    /// An id is empty or too long.
    #[error("directives[{0}].id: 1 to {MAX_ID_LEN} characters")]
    IdLength(usize),
    /// Two directives share an id.
    #[error("directives[{0}].id: duplicate id {1:?}")]
    DuplicateId(usize, String),
    /// A sample rate outside [0, 1].
    #[error("directives[{0}].sample_rate: {1} is outside [0, 1]")]
    SampleRate(usize, f64),
    /// An expiry that is not a time.
    #[error("directives[{0}].expires_at: {1}; write a UTC time like \"2026-11-27T12:00:00Z\"")]
    ExpiresAt(usize, NotRfc3339),
    /// A debug header's payload that is not JSON.
    #[error("not JSON (line {line}, column {column})")]
    NotJson {
        /// Line.
        line: usize,
        /// Column.
        column: usize,
    },
}

/// A time that is not `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an RFC 3339 time")]
pub struct NotRfc3339(pub String);

/// Upper bounds that keep a published set cheap to match on every request.
const MAX_DIRECTIVES: usize = 64;
const MAX_ID_LEN: usize = 128;

impl DirectiveSet {
    /// Decodes and checks a published set; every problem names the
    /// directive and the field.
    pub fn decode(bytes: &[u8]) -> Result<DirectiveSet, DirectiveError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let mut set: DirectiveSet =
            serde_path_to_error::deserialize(&mut de).map_err(|e| DirectiveError::Field {
                path: e.path().to_string(),
                reason: e.inner().to_string(),
            })?;
        de.end()
            .map_err(|e| DirectiveError::Trailing(e.to_string()))?;
        if set.directives.len() > MAX_DIRECTIVES {
            return Err(DirectiveError::TooMany(set.directives.len()));
        }
        for i in 0..set.directives.len() {
            let d = &set.directives[i];
            if d.id.is_empty() || d.id.len() > MAX_ID_LEN {
                return Err(DirectiveError::IdLength(i));
            }
            if set.directives[..i].iter().any(|o| o.id == d.id) {
                return Err(DirectiveError::DuplicateId(i, d.id.clone()));
            }
            if !(0.0..=1.0).contains(&d.sample_rate) {
                return Err(DirectiveError::SampleRate(i, d.sample_rate));
            }
            let expires =
                parse_rfc3339(&d.expires_at).map_err(|e| DirectiveError::ExpiresAt(i, e))?;
            set.directives[i].expires_unix = expires;
        }
        Ok(set)
    }

    /// Decodes one directive (the signed debug header's payload) with the
    /// same rules as a published set.
    pub fn decode_one(bytes: &[u8]) -> Result<Directive, DirectiveError> {
        let one: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| DirectiveError::NotJson {
                line: e.line(),
                column: e.column(),
            })?;
        let wrapped = serde_json::json!({ "directives": [one] });
        DirectiveSet::decode(wrapped.to_string().as_bytes())?
            .directives
            .pop()
            .ok_or(DirectiveError::TooMany(0))
    }

    /// The directives not yet expired at `now` (seconds since the epoch).
    pub fn live(&self, now: u64) -> impl Iterator<Item = &Directive> {
        self.directives.iter().filter(move |d| d.expires_unix > now)
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)` to seconds since the
/// Unix epoch (fractions are dropped).
pub fn parse_rfc3339(s: &str) -> Result<u64, NotRfc3339> {
    let bad = || NotRfc3339(s.to_string());
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(bad());
    }
    if b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, NotRfc3339> {
        let part = s.get(r).ok_or_else(bad)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse::<i64>().map_err(|_| bad())
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
            if rest.as_bytes()[3] != b':' {
                return Err(bad());
            }
            let hh = rest[1..3].parse::<i64>().map_err(|_| bad())?;
            let mm = rest[4..6].parse::<i64>().map_err(|_| bad())?;
            if hh > 23 || mm > 59 {
                return Err(bad());
            }
            let off = hh * 3600 + mm * 60;
            if rest.starts_with('-') {
                -off
            } else {
                off
            }
        }
        _ => return Err(bad()),
    };
    if !(1..=12).contains(&month)
        || day < 1
        || day > osproxy_core::civil::days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad());
    }
    let days = osproxy_core::civil::days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    u64::try_from(secs).map_err(|_| bad()) // before 1970
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00Z").unwrap(), 951_868_800);
        assert_eq!(
            parse_rfc3339("2026-11-27T12:00:00.123+01:00").unwrap(),
            parse_rfc3339("2026-11-27T11:00:00Z").unwrap()
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T23:59:59Z").unwrap(),
            1_709_251_199
        );
        for bad in [
            "2026-02-30T00:00:00Z",
            "2026-11-27",
            "2026-11-27T12:00:00",
            "2026-13-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "2026-11-27T12:00:00+0100",
            "soon",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn strict_decoder() {
        let ok = br#"{"directives":[{"id":"a","match":{"partition":"acme","index":"orders"},"level":"timing","sample_rate":0.5,"expires_at":"2030-01-01T00:00:00Z","capture":true}]}"#;
        let set = DirectiveSet::decode(ok).unwrap();
        assert_eq!(set.directives[0].level, Level::Timing);
        assert_eq!(set.live(0).count(), 1);
        assert_eq!(set.live(u64::MAX).count(), 0);
        for (bad, names) in [
            (
                r#"{"directives":[{"id":"a","level":"loud","expires_at":"2030-01-01T00:00:00Z"}]}"#,
                "level",
            ),
            (
                r#"{"directives":[{"id":"a","level":"shape"}]}"#,
                "expires_at",
            ),
            (
                r#"{"directives":[{"id":"a","level":"shape","expires_at":"2030-01-01T00:00:00Z","sample_rate":1.5}]}"#,
                "sample_rate",
            ),
            (
                r#"{"directives":[{"id":"a","level":"shape","expires_at":"2030-01-01T00:00:00Z","colour":1}]}"#,
                "colour",
            ),
            (
                r#"{"directives":[{"id":"a","level":"shape","expires_at":"2030-01-01T00:00:00Z","match":{"tenant":"x"}}]}"#,
                "tenant",
            ),
            (
                r#"{"directives":[{"id":"a","level":"shape","expires_at":"2030-01-01T00:00:00Z"},{"id":"a","level":"off","expires_at":"2030-01-01T00:00:00Z"}]}"#,
                "duplicate",
            ),
            (r#"{"directive":[]}"#, "directive"),
            (r#"{"directives":[]} x"#, "trailing"),
        ] {
            let err = DirectiveSet::decode(bad.as_bytes()).unwrap_err();
            assert!(err.to_string().contains(names), "{bad}: {err}");
        }
    }
}
