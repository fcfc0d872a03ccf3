//! Query strings read the way OpenSearch reads them, and rebuilt.
//!
//! OpenSearch's REST layer splits a query string on `&` **and** `;`, splits
//! each part at its first `=`, and percent-decodes names and values with
//! `+` as a space; a name given twice keeps its last value. A proxy that
//! splits only on `&`, or compares names before decoding, can be handed a
//! parameter (`size=1;q=*:*`, `wait_for_completion=%66alse`) that it never
//! saw but the cluster obeys. So osproxy parses with OpenSearch's rules,
//! checks the decoded pairs, and sends upstream only a query string it
//! rebuilt from them ([`Query::encode`]), never the client's raw text.
//!
//! Stricter than OpenSearch, on purpose: a malformed escape (`%zz`, a
//! truncated `%4`), bytes that do not decode to UTF-8, and a part with an
//! empty name (`=x`, which OpenSearch reads as a parameter named `x`) are
//! refused rather than guessed at.

use std::fmt;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Characters left as they are when a name or value is encoded: RFC 3986's
/// unreserved set. Everything else, `;`, `&`, `=`, `+` and `%` included, is
/// percent-encoded, so the rebuilt string means one thing to every reader.
const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Why a query string was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryError {
    /// A `%` not followed by two hex digits.
    BadEscape {
        /// The part it occurs in, shortened for display.
        part: String,
    },
    /// A name or value that does not decode to UTF-8.
    NotUtf8 {
        /// The part it occurs in, shortened for display.
        part: String,
    },
    /// A part such as `=value` with no name before its `=`.
    EmptyName {
        /// The part, shortened for display.
        part: String,
    },
}

impl std::error::Error for QueryError {}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::BadEscape { part } => write!(
                f,
                "the query string part `{part}` has a `%` not followed by two hex digits; percent-encode `%` as `%25`"
            ),
            QueryError::NotUtf8 { part } => write!(
                f,
                "the query string part `{part}` does not percent-decode to UTF-8"
            ),
            QueryError::EmptyName { part } => write!(
                f,
                "the query string part `{part}` has no parameter name before `=`"
            ),
        }
    }
}

/// A parsed query string: decoded `(name, value)` pairs in the order their
/// names first appeared, each name once, holding its last value (as
/// OpenSearch keeps it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses a raw query string (the text after `?`, without it).
    ///
    /// ```
    /// use osproxy_rewrite::query::Query;
    /// let q = Query::parse(Some("size=1;q=*:*&wait_for_completion=%66alse&x=a+b")).unwrap();
    /// assert_eq!(q.get("q"), Some("*:*"));
    /// assert_eq!(q.get("wait_for_completion"), Some("false"));
    /// assert_eq!(q.get("x"), Some("a b"));
    /// assert_eq!(q.encode(), "size=1&q=%2A%3A%2A&wait_for_completion=false&x=a%20b");
    /// ```
    pub fn parse(raw: Option<&str>) -> Result<Query, QueryError> {
        let mut q = Query::default();
        let Some(raw) = raw else {
            return Ok(q);
        };
        for part in raw.split(['&', ';']) {
            if part.is_empty() {
                continue;
            }
            let (name, value) = match part.split_once('=') {
                Some((n, v)) => (n, v),
                None => (part, ""),
            };
            if name.is_empty() {
                return Err(QueryError::EmptyName { part: shown(part) });
            }
            let name = decode(name, part)?;
            let value = decode(value, part)?;
            q.set(name, value);
        }
        Ok(q)
    }

    /// The decoded value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether `name` is given.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets `name` to `value`, replacing an earlier value in its place.
    pub fn set(&mut self, name: String, value: String) {
        match self.pairs.iter_mut().find(|(n, _)| *n == name) {
            Some(pair) => pair.1 = value,
            None => self.pairs.push((name, value)),
        }
    }

    /// Removes `name`; returns its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let at = self.pairs.iter().position(|(n, _)| n == name)?;
        Some(self.pairs.remove(at).1)
    }

    /// The pairs, decoded.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Whether no parameter is given.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Keeps only the pairs `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        self.pairs.retain(|(n, v)| keep(n, v));
    }

    /// The canonical query string: `name=value` pairs joined by `&`, both
    /// percent-encoded but for unreserved characters. A parameter given
    /// without `=` comes back as `name=` (OpenSearch reads both as empty).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (name, value) in &self.pairs {
            if !out.is_empty() {
                out.push('&');
            }
            out.extend(utf8_percent_encode(name, VALUE));
            out.push('=');
            out.extend(utf8_percent_encode(value, VALUE));
        }
        out
    }
}

/// Percent-decodes one name or value, `+` as a space.
fn decode(s: &str, part: &str) -> Result<String, QueryError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = |b: u8| char::from(b).to_digit(16);
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(QueryError::BadEscape { part: shown(part) });
                };
                // Two hex digits are at most 0xff.
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(0));
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| QueryError::NotUtf8 { part: shown(part) })
}

/// A part shortened and cleaned for an error message.
fn shown(part: &str) -> String {
    part.chars().take(64).filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A model of OpenSearch's `RestUtils.decodeQueryString`, written as
    /// its character loop reads: a name ends at the first `=` of a part, a
    /// part ends at `&` or `;`, a part without `=` is a name with an empty
    /// value, the last value of a name wins. (OpenSearch also accepts a
    /// part with an empty name; the parser refuses those, and the property
    /// below only compares strings without them.)
    fn model(raw: &str) -> Option<Vec<(String, String)>> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut name: Option<String> = None;
        let mut start = 0;
        let chars: Vec<char> = raw.chars().collect();
        let text = |a: usize, b: usize| chars[a..b].iter().collect::<String>();
        let add = |n: String, v: String, out: &mut Vec<(String, String)>| {
            out.retain(|(k, _)| *k != n);
            out.push((n, v));
        };
        for i in 0..=chars.len() {
            let c = chars.get(i).copied();
            if c == Some('=') && name.is_none() {
                name = Some(decode(&text(start, i), "").ok()?);
                start = i + 1;
            } else if c.is_none() || c == Some('&') || c == Some(';') {
                match name.take() {
                    Some(n) => add(n, decode(&text(start, i), "").ok()?, &mut out),
                    None if start != i => {
                        add(decode(&text(start, i), "").ok()?, String::new(), &mut out)
                    }
                    None => {}
                }
                start = i + 1;
            }
        }
        Some(out)
    }

    fn sorted(q: &Query) -> Vec<(String, String)> {
        let mut v: Vec<_> = q.pairs.clone();
        v.sort();
        v
    }

    proptest! {
        /// On every string without an empty name, the parser reads the same
        /// pairs as OpenSearch's rules.
        #[test]
        fn agrees_with_opensearch(raw in "([a-z_]{0,3}|%[0-9a-fA-F]{2}|[=&;+]|%6[0-9a-f]|%3[bBdD]|%26|%2[bB]){0,12}") {
            let Some(mut expected) = model(&raw) else {
                // A bad escape or bytes that are not UTF-8: refused.
                prop_assert!(Query::parse(Some(&raw)).is_err());
                return Ok(());
            };
            let has_empty_name = raw.split(['&', ';']).any(|p| p.starts_with('='));
            match Query::parse(Some(&raw)) {
                Ok(q) => {
                    prop_assert!(!has_empty_name);
                    expected.sort();
                    prop_assert_eq!(sorted(&q), expected);
                }
                Err(e) => prop_assert!(has_empty_name, "{raw:?}: {e}"),
            }
        }

        /// What osproxy sends upstream reads back, by OpenSearch's rules, as
        /// exactly the pairs it checked.
        #[test]
        fn encoding_round_trips(pairs in proptest::collection::vec(("\\PC{1,8}", "\\PC{0,8}"), 0..6)) {
            let mut q = Query::default();
            for (n, v) in &pairs {
                q.set(n.clone(), v.clone());
            }
            let sent = q.encode();
            let mut reread = model(&sent).expect("the encoding decodes");
            reread.sort();
            prop_assert_eq!(reread, sorted(&q));
            prop_assert_eq!(Query::parse(Some(&sent)).unwrap(), q);
            prop_assert!(!sent.contains(';') && !sent.contains('+'));
        }
    }

    #[test]
    fn smuggling_examples_are_seen() {
        let q = Query::parse(Some("size=100;q=*:*")).unwrap();
        assert_eq!(q.get("size"), Some("100"));
        assert_eq!(q.get("q"), Some("*:*"));
        let q = Query::parse(Some("ro%75ting=x&refresh")).unwrap();
        assert_eq!(q.get("routing"), Some("x"));
        assert_eq!(q.get("refresh"), Some(""));
        let q = Query::parse(Some("a=1&a=2")).unwrap();
        assert_eq!(q.get("a"), Some("2"));
        assert_eq!(q.encode(), "a=2");
        for bad in ["a=%zz", "a=%4", "%ff=1", "=x", "a=1&=2"] {
            assert!(Query::parse(Some(bad)).is_err(), "{bad}");
        }
        assert!(Query::parse(None).unwrap().is_empty());
        assert!(Query::parse(Some("&&;")).unwrap().is_empty());
    }
}
