//! Strict JSON: the one reading of a request body that osproxy and
//! OpenSearch share.
//!
//! OpenSearch's JSON parser is lenient in ways a proxy's is not: it accepts
//! `/* */` and `//` comments, and what it does with a name given twice
//! depends on a node setting. A body that two parsers read differently can
//! hide a member from the proxy (`{"doc":{..}/*"*/}`). osproxy therefore
//! accepts only bodies that every JSON parser reads the same way: RFC 8259
//! JSON, no comments, no name twice in one object, nothing after the value,
//! at most 128 levels deep; everything else is refused before any of it is
//! inspected or forwarded.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Why a body is not strict JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StrictError {
    /// What is wrong, and where (line and column).
    pub reason: String,
}

impl std::error::Error for StrictError {}

impl fmt::Display for StrictError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Checks that `body` is one strict JSON value (see the module doc).
///
/// ```
/// use osproxy_rewrite::strict::check;
/// assert!(check(br#"{"a":{"b":[1,2,{"c":null}]}}"#).is_ok());
/// assert!(check(br#"{"a":1,"a":2}"#).unwrap_err().reason.contains("`a`"));
/// assert!(check(br#"{"a":1}/* hidden */"#).is_err());
/// assert!(check(br#"{"a":1} {"b":2}"#).is_err());
/// ```
pub fn check(body: &[u8]) -> Result<(), StrictError> {
    check_counting(body).map(|_| ())
}

/// Like [`check`], returning how many values (object members' names
/// included) the body holds: what parsing it into a tree will build.
///
/// ```
/// use osproxy_rewrite::strict::check_counting;
/// assert_eq!(check_counting(br#"{"a":[1,2]}"#).unwrap(), 5);
/// ```
pub fn check_counting(body: &[u8]) -> Result<usize, StrictError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    Strict
        .deserialize(&mut de)
        .and_then(|n| de.end().map(|()| n))
        .map_err(|e| StrictError {
            reason: describe(&e),
        })
}

/// Like [`check`], and also requires the value to be an object.
pub fn check_object(body: &[u8]) -> Result<(), StrictError> {
    let first = body
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(&b'{') {
        check(body)?;
        return Err(StrictError {
            reason: "the body must be a JSON object".into(),
        });
    }
    check(body)
}

fn describe(e: &serde_json::Error) -> String {
    let what = e.to_string();
    // serde_json names a comment as an unexpected character; say what it is.
    if what.starts_with("expected value") || what.starts_with("trailing characters") {
        format!("{what} (comments, trailing data and other non-standard JSON are refused)")
    } else {
        what
    }
}

/// OpenSearch's own parser limits (`XContentConstraints`): a longer name
/// or string makes it refuse the whole request, so osproxy refuses it
/// first (a bulk item's update body would otherwise fail its whole batch).
pub const MAX_NAME_CHARS: usize = 50_000;
/// See [`MAX_NAME_CHARS`].
pub const MAX_STRING_CHARS: usize = 50_000_000;

/// `s` is longer than `max` UTF-16 units, as Jackson counts (counted
/// only when its bytes, never fewer, are).
fn longer_than(s: &str, max: usize) -> bool {
    s.len() > max && s.encode_utf16().count() > max
}

/// Visits a value without building it, refusing a name given twice.
struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<usize, E> {
        Ok(1)
    }
    fn visit_i64<E>(self, _: i64) -> Result<usize, E> {
        Ok(1)
    }
    fn visit_u64<E>(self, _: u64) -> Result<usize, E> {
        Ok(1)
    }
    fn visit_f64<E>(self, _: f64) -> Result<usize, E> {
        Ok(1)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
        if longer_than(v, MAX_STRING_CHARS) {
            return Err(E::custom(format!(
                "a string of more than {MAX_STRING_CHARS} characters, OpenSearch's limit"
            )));
        }
        Ok(1)
    }
    fn visit_unit<E>(self) -> Result<usize, E> {
        Ok(1)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut n = 1usize;
        while let Some(inner) = seq.next_element_seed(Strict)? {
            n = n.saturating_add(inner);
        }
        Ok(n)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let mut seen = Seen::default();
        let mut n = 1usize;
        while let Some(key) = map.next_key_seed(Key)? {
            if longer_than(&key, MAX_NAME_CHARS) {
                return Err(de::Error::custom(format!(
                    "a field name of more than {MAX_NAME_CHARS} characters, OpenSearch's limit"
                )));
            }
            if seen.has(&key) {
                let shown: String = key.chars().take(64).filter(|c| !c.is_control()).collect();
                return Err(de::Error::custom(format!(
                    "duplicate field `{shown}`: a name may occur once in an object"
                )));
            }
            seen.add(key);
            n = n
                .saturating_add(1)
                .saturating_add(map.next_value_seed(Strict)?);
        }
        Ok(n)
    }
}

/// The names an object has had so far (decoded, as OpenSearch compares
/// them): compared one by one while there are few, as in most objects,
/// with nothing allocated; hashed past that.
#[derive(Default)]
struct Seen<'de> {
    few: [std::borrow::Cow<'de, str>; FEW_NAMES],
    count: usize,
    many: HashSet<std::borrow::Cow<'de, str>>,
}

/// How many names [`Seen`] compares one by one.
const FEW_NAMES: usize = 16;

impl<'de> Seen<'de> {
    fn has(&self, key: &str) -> bool {
        self.few[..self.count.min(FEW_NAMES)]
            .iter()
            .any(|k| k.as_ref() == key)
            || self.many.contains(key)
    }

    fn add(&mut self, key: std::borrow::Cow<'de, str>) {
        match self.few.get_mut(self.count) {
            Some(slot) => *slot = key,
            None => {
                self.many.insert(key);
            }
        }
        self.count += 1;
    }
}

/// An object key, borrowed where the input allows.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = std::borrow::Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = std::borrow::Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_duplicate_name_is_found_among_many() {
        let names: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        let object = |extra: &str| format!("{{{},{extra}}}", names.join(","));
        assert!(check(object("\"k40\":0").as_bytes()).is_ok());
        // Among the first names, past them, and spelt with an escape.
        for dup in [
            "\"k3\":0",
            "\"k15\":0",
            "\"k16\":0",
            "\"k39\":0",
            "\"k\\u0033\":0",
        ] {
            let e = check(object(dup).as_bytes()).err();
            assert!(
                e.is_some_and(|e| e.reason.contains("duplicate field")),
                "{dup} was not refused"
            );
        }
    }

    #[test]
    fn refuses_names_and_strings_past_opensearchs_limits() {
        let name = "a".repeat(MAX_NAME_CHARS);
        assert!(check(format!("{{\"{name}\":1}}").as_bytes()).is_ok());
        let err = check(format!("{{\"doc\":{{\"{name}a\":1}}}}").as_bytes()).unwrap_err();
        assert!(err.reason.contains("field name"), "{err}");
        // Counted in UTF-16 units, as Jackson counts: not bytes, and a
        // character outside the BMP counts twice.
        let wide = "é".repeat(MAX_NAME_CHARS);
        assert!(check(format!("{{\"{wide}\":1}}").as_bytes()).is_ok());
        let astral = "😀".repeat(MAX_NAME_CHARS / 2 + 1);
        assert!(check(format!("{{\"{astral}\":1}}").as_bytes()).is_err());
        let long = "x".repeat(MAX_STRING_CHARS + 1);
        let err = check(format!("[\"{long}\"]").as_bytes()).unwrap_err();
        assert!(err.reason.contains("string"), "{err}");
    }

    #[test]
    fn refuses_what_a_lenient_parser_reads_differently() {
        for bad in [
            &br#"{"_source":[/*"*/],"doc_as_upsert":true,"doc":{"_tenant":"globex"}/*"*/}"#[..],
            br#"{"a":1 // comment
            }"#,
            br#"{"a":1,"a":2}"#,
            br#"{"a":{"b":1,"b":1}}"#,
            br#"[{"x":1,"x":1}]"#,
            br#"{"a":1}{"a":2}"#,
            br#"{"a":1,}"#,
            br#"{'a':1}"#,
            br#"{a:1}"#,
            br#"{"a":NaN}"#,
            br#"{"a":01}"#,
            b"{\"a\":\"\x01\"}",
            b"{\"a\":\"\xff\"}",
            br#"{"a\u0000":1,"a\u0000":2}"#,
            br#"{"\u0061":1,"a":2}"#,
            b"",
        ] {
            assert!(check(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(check(deep.as_bytes()).is_err());
        assert!(check_object(b"[1]").is_err());
        assert!(check_object(b" {\"a\":[1,{}]} \n").is_ok());
    }

    proptest! {
        /// Whatever serde_json writes is strict JSON.
        #[test]
        fn accepts_what_serde_writes(v in proptest::collection::btree_map("[a-z]{1,3}", proptest::collection::vec(0i64..5, 0..3), 0..5)) {
            let text = serde_json::to_vec(&v).unwrap();
            prop_assert!(check(&text).is_ok());
        }

        /// A body strict JSON accepts reads the same in serde_json, which
        /// keeps the last of repeated names: no name was repeated, so the
        /// value re-serialised has every name of the input once.
        #[test]
        fn accepted_bodies_have_one_reading(keys in proptest::collection::vec("[ab]", 1..4)) {
            let body = format!("{{{}}}", keys.iter().enumerate().map(|(i, k)| format!("\"{k}\":{i}")).collect::<Vec<_>>().join(","));
            let distinct: HashSet<&String> = keys.iter().collect();
            prop_assert_eq!(check(body.as_bytes()).is_ok(), distinct.len() == keys.len());
        }
    }
}
