//! Byte-level edits of document sources for `shared` placements: inject the
//! partition field into a client's document on the way in, strip it from
//! sources on the way back. Every other byte is copied verbatim.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

pub use crate::source_error::SourceError;

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// `s` as a JSON string literal, quotes included.
fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// Adds `"<field>":"<partition>"` as the first member of the JSON object
/// `doc`, after validating all of `doc`. Bytes after the opening `{` are
/// copied verbatim; nothing is reserialised.
///
/// ```
/// use osproxy_rewrite::source::{inject_field, SourceError};
/// let out = inject_field(br#" {"a": [1, 2.50]} "#, "_tenant", "acme").unwrap();
/// assert_eq!(out, br#" {"_tenant":"acme","a": [1, 2.50]} "#);
/// assert_eq!(
///     inject_field(br#"{"_tenant":"other"}"#, "_tenant", "acme"),
///     Err(SourceError::FieldPresent { field: "_tenant".into() }),
/// );
/// ```
pub fn inject_field(doc: &[u8], field: &str, partition: &str) -> Result<Vec<u8>, SourceError> {
    let text = std::str::from_utf8(doc).map_err(|e| SourceError::NotJson {
        message: format!("it is not UTF-8 ({e})"),
    })?;
    let not_json = |e: serde_json::Error| SourceError::NotJson {
        message: e.to_string(),
    };
    let open = match doc.iter().position(|&b| !is_ws(b)) {
        Some(i) if doc.get(i) == Some(&b'{') => i,
        _ => {
            return Err(match serde_json::from_str::<IgnoredAny>(text) {
                Ok(_) => SourceError::NotAnObject,
                Err(e) => not_json(e),
            })
        }
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let present = HasKey(field).deserialize(&mut de).map_err(not_json)?;
    de.end().map_err(not_json)?;
    if present {
        return Err(SourceError::FieldPresent {
            field: field.to_string(),
        });
    }
    let (head, rest) = doc.split_at(open + 1);
    let empty = rest.iter().find(|&&b| !is_ws(b)) == Some(&b'}');
    let (field, partition) = (json_string(field), json_string(partition));
    let mut out = Vec::with_capacity(doc.len() + field.len() + partition.len() + 2);
    out.extend_from_slice(head);
    out.extend_from_slice(field.as_bytes());
    out.push(b':');
    out.extend_from_slice(partition.as_bytes());
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Ok(out)
}

/// Deserialises an object, answering whether it has the key at its top
/// level; values are validated and skipped.
struct HasKey<'f>(&'f str);

impl<'de> DeserializeSeed<'de> for HasKey<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for HasKey<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut found = false;
        while let Some(is) = map.next_key_seed(KeyIs(self.0))? {
            found |= is;
            map.next_value::<IgnoredAny>()?;
        }
        Ok(found)
    }
}

/// Deserialises a key (unescaped), answering whether it equals the field.
struct KeyIs<'f>(&'f str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(names_field(v, self.0))
    }
}

/// Whether OpenSearch reads the top-level key `key` of a document as the
/// field `field`, or as a path below it: the key itself, the key with dots
/// after it, or a dotted path that starts with it. OpenSearch splits a key
/// on its dots and drops the empty parts at its end, so `_tenant.` and
/// `_tenant..` index into `_tenant` itself (found by review: a document
/// with `"_tenant.":"globex"` was indexed with both partitions' values).
///
/// ```
/// use osproxy_rewrite::source::names_field;
/// assert!(names_field("_tenant", "_tenant") && names_field("_tenant.", "_tenant"));
/// assert!(names_field("_tenant..", "_tenant") && names_field("_tenant.x", "_tenant"));
/// assert!(!names_field("_tenants", "_tenant") && !names_field("x._tenant", "_tenant"));
/// ```
pub fn names_field(key: &str, field: &str) -> bool {
    key.strip_prefix(field)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// Removes every top-level member of the JSON object `doc` whose key is
/// `field` (compared after unescaping), with its adjacent comma. All other
/// bytes are kept verbatim; without such a member, `doc` is returned as is.
///
/// The scanner checks the top-level object's grammar, string boundaries and
/// bracket nesting, but not the grammar inside nested values: it is meant for
/// sources coming back from OpenSearch.
///
/// ```
/// use osproxy_rewrite::source::strip_field;
/// let out = strip_field(br#"{"a":1, "_tenant":"acme" }"#, "_tenant").unwrap();
/// assert_eq!(&*out, br#"{"a":1 }"#);
/// ```
pub fn strip_field<'a>(doc: &'a [u8], field: &str) -> Result<Cow<'a, [u8]>, SourceError> {
    crate::members::edit_members(doc, |key, _| {
        if key == field {
            crate::members::Edit::Drop
        } else {
            crate::members::Edit::Keep
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    const F: &str = "_tenant";

    fn inject(doc: &str) -> Result<String, SourceError> {
        inject_field(doc.as_bytes(), F, "acme").map(|v| String::from_utf8(v).unwrap())
    }

    fn strip(doc: &str) -> String {
        String::from_utf8(strip_field(doc.as_bytes(), F).unwrap().into_owned()).unwrap()
    }

    #[test]
    fn inject_splices_after_the_brace() {
        assert_eq!(inject(r#"{"a":1}"#).unwrap(), r#"{"_tenant":"acme","a":1}"#);
        assert_eq!(inject("{}").unwrap(), r#"{"_tenant":"acme"}"#);
        assert_eq!(
            inject(" \n{ \t}\r\n").unwrap(),
            " \n{\"_tenant\":\"acme\" \t}\r\n"
        );
        assert_eq!(
            inject("{\n  \"a\": 1e3,\n  \"b\": \"\\u00e9\"\n}").unwrap(),
            "{\"_tenant\":\"acme\",\n  \"a\": 1e3,\n  \"b\": \"\\u00e9\"\n}"
        );
    }

    #[test]
    fn inject_escapes_field_and_partition() {
        let out = inject_field(b"{}", "we\"ird\\", "p\n").unwrap();
        assert_eq!(out, br#"{"we\"ird\\":"p\n"}"#);
    }

    #[test]
    fn inject_refuses_a_present_field_even_escaped_or_repeated() {
        let present = Err(SourceError::FieldPresent { field: F.into() });
        assert_eq!(inject(r#"{"_tenant":"x"}"#), present);
        assert_eq!(inject(r#"{"a":1,"\u005ftenant":"x"}"#), present);
        assert_eq!(inject(r#"{"a":1,"_tenant":null,"_tenant":1}"#), present);
        assert!(inject(r#"{"a":{"_tenant":"x"}}"#).is_ok());
        assert!(inject(r#"{"_tenantx":1,"_tenan":2}"#).is_ok());
        // Keys OpenSearch reads as the field (it drops trailing dots) or as
        // a path below it.
        for key in ["_tenant.", "_tenant..", r"_tenant\u002e", "_tenant.x"] {
            assert_eq!(
                inject(&format!(r#"{{"a":1,"{key}":"globex"}}"#)),
                present,
                "{key}"
            );
        }
        assert!(inject(r#"{"x._tenant":1,"._tenantx":2}"#).is_ok());
    }

    #[test]
    fn inject_validates_the_whole_document() {
        for bad in [
            r#"{"a":}"#,
            "{} x",
            "{}{}",
            r#"{"a":1"#,
            "",
            "  ",
            "{'a':1}",
        ] {
            assert!(
                matches!(inject(bad), Err(SourceError::NotJson { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            inject_field(b"{\"a\":\"\xff\"}", F, "p"),
            Err(SourceError::NotJson { .. })
        ));
        for not_object in ["[1]", "\"x\"", " 1 ", "null", "true"] {
            assert_eq!(
                inject(not_object),
                Err(SourceError::NotAnObject),
                "{not_object}"
            );
        }
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = inject(r#"{"_tenant":1}"#).unwrap_err().to_string();
        assert!(e.contains("`_tenant`") && e.contains("remove it"), "{e}");
        let e = inject(r#"{"a":}"#).unwrap_err().to_string();
        assert!(e.starts_with("the document is not valid JSON: "), "{e}");
        assert!(SourceError::NotAnObject.to_string().contains("JSON object"));
    }

    #[test]
    fn strip_first_middle_last_only() {
        assert_eq!(strip(r#"{"_tenant":"a","x":1}"#), r#"{"x":1}"#);
        assert_eq!(strip(r#"{"x":1,"_tenant":"a","y":2}"#), r#"{"x":1,"y":2}"#);
        assert_eq!(strip(r#"{"x":1,"_tenant":"a"}"#), r#"{"x":1}"#);
        assert_eq!(strip(r#"{"_tenant":"a"}"#), "{}");
        assert_eq!(
            strip("{ \"x\" : 1 ,\n \"_tenant\" : \"a\" \n}"),
            "{ \"x\" : 1 \n}"
        );
        // The dropped member goes with the whitespace before its key.
        assert_eq!(
            strip("{\n  \"_tenant\" : \"a\" ,\n  \"x\": [1, {\"y\": \"}\"}]\n}"),
            "{\n  \"x\": [1, {\"y\": \"}\"}]\n}"
        );
    }

    #[test]
    fn strip_handles_escapes_values_and_repeats() {
        assert_eq!(strip(r#"{"\u005ftenant":"a","x":1}"#), r#"{"x":1}"#);
        assert_eq!(
            strip(r#"{"a\"b":"\"_tenant\"","_tenant":{"k":["}",{"q":"\\"}]},"z":-1.5e+2}"#),
            r#"{"a\"b":"\"_tenant\"","z":-1.5e+2}"#
        );
        assert_eq!(
            strip(r#"{"_tenant":1,"x":true,"_tenant":2}"#),
            r#"{"x":true}"#
        );
        assert_eq!(
            strip(r#"{"x":null,"_tenant":1,"_tenant":2}"#),
            r#"{"x":null}"#
        );
        assert_eq!(strip(r#"{"_tenant":1,"_tenant":2}"#), "{}");
    }

    #[test]
    fn strip_leaves_absent_and_nested_fields_alone() {
        let doc = br#"{"x":{"_tenant":"a"},"y":[{"_tenant":1}]}"#;
        assert!(matches!(strip_field(doc, F), Ok(Cow::Borrowed(d)) if d == doc));
        assert!(matches!(
            strip_field(b" {} ", F),
            Ok(Cow::Borrowed(b" {} "))
        ));
    }

    #[test]
    fn strip_reports_malformed_input() {
        for bad in [
            "",
            "{",
            r#"{"a"}"#,
            r#"{"a":1,}"#,
            r#"{"a":[1}"#,
            r#"{"a":"x}"#,
            "{} x",
            r#"{"a":1 "b":2}"#,
        ] {
            assert!(strip_field(bad.as_bytes(), F).is_err(), "{bad:?}");
        }
        assert_eq!(strip_field(b"[1]", F), Err(SourceError::NotAnObject));
        assert!(strip_field(br#"{"\u12":1}"#, F).is_err());
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof!["\\PC{0,8}", "[\"\\\\\\x00-\\x1f{}:,\\[\\] ]{0,6}"]
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e9..1e9f64).prop_map(Value::from),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(text(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn object() -> impl Strategy<Value = Map<String, Value>> {
        prop::collection::btree_map(text(), json(), 0..6)
            .prop_map(|m| m.into_iter().filter(|(k, _)| k != F).collect())
    }

    fn render(m: &Map<String, Value>, pretty: bool) -> Vec<u8> {
        let v = Value::Object(m.clone());
        if pretty {
            serde_json::to_vec_pretty(&v).unwrap()
        } else {
            serde_json::to_vec(&v).unwrap()
        }
    }

    proptest! {
        #[test]
        fn strip_undoes_inject(m in object(), pretty in any::<bool>(), p in "[A-Za-z0-9_.-]{1,16}") {
            let doc = render(&m, pretty);
            let injected = inject_field(&doc, F, &p).unwrap();
            let stripped = strip_field(&injected, F).unwrap();
            prop_assert_eq!(stripped.as_ref(), doc.as_slice());
        }

        #[test]
        fn inject_adds_exactly_the_field(m in object(), pretty in any::<bool>(), p in "[A-Za-z0-9_.-]{1,16}") {
            let doc = render(&m, pretty);
            let injected = inject_field(&doc, F, &p).unwrap();
            let mut out: Map<String, Value> = serde_json::from_slice(&injected).unwrap();
            prop_assert_eq!(out.remove(F), Some(Value::String(p)));
            let before: Map<String, Value> = serde_json::from_slice(&doc).unwrap();
            prop_assert_eq!(out, before);
        }

        #[test]
        fn strip_removes_the_field_wherever_it_is(m in object(), v in json(), pretty in any::<bool>()) {
            let mut with = m.clone();
            with.insert(F.to_string(), v);
            let stripped = strip_field(&render(&with, pretty), F).unwrap().into_owned();
            let out: Map<String, Value> = serde_json::from_slice(&stripped).unwrap();
            let want: Map<String, Value> = serde_json::from_slice(&render(&m, pretty)).unwrap();
            prop_assert_eq!(out, want);
        }

        #[test]
        fn nested_fields_are_left_alone(m in object(), key in text(), pretty in any::<bool>()) {
            prop_assume!(key != F);
            let mut m = m;
            let mut inner = Map::new();
            inner.insert(F.to_string(), Value::from("other"));
            m.insert(key, Value::Object(inner));
            let doc = render(&m, pretty);
            prop_assert!(matches!(strip_field(&doc, F), Ok(Cow::Borrowed(_))));
            prop_assert!(inject_field(&doc, F, "acme").is_ok());
        }

        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64), s in "[{}\\[\\]\",:\\\\ a1_]{0,32}") {
            let _ = strip_field(&bytes, F);
            let _ = inject_field(&bytes, F, "p");
            let _ = strip_field(s.as_bytes(), F);
            let _ = inject_field(s.as_bytes(), F, "p");
        }
    }
}
