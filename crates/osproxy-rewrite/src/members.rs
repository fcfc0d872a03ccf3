//! Edits of the top-level members of a JSON object, and of the elements of
//! a JSON array, by byte ranges: what is kept is copied verbatim, so numbers,
//! key order and formatting of untouched values never change.

use std::borrow::Cow;

use crate::source_error::SourceError;

/// What to do with one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Copy it as it is.
    Keep,
    /// Remove it (and its separating comma).
    Drop,
    /// Keep the key, replace the value with these bytes (valid JSON).
    Replace(Vec<u8>),
}

struct Span {
    /// Where whitespace before the key starts (after `{` or `,`).
    lead: usize,
    key_start: usize,
    value_start: usize,
    value_end: usize,
}

/// Calls `f(key, raw value)` for each top-level member of the object `doc`
/// (keys unescaped) and applies the edits. A dropped member goes with the
/// whitespace before its key and its comma; all other bytes are kept.
///
/// ```
/// use osproxy_rewrite::members::{edit_members, Edit};
/// let out = edit_members(br#"{"_index":"orders-shared", "n": 1.50}"#, |k, _| match k {
///     "_index" => Edit::Replace(br#""orders""#.to_vec()),
///     _ => Edit::Keep,
/// }).unwrap();
/// assert_eq!(&*out, br#"{"_index":"orders", "n": 1.50}"#);
/// ```
pub fn edit_members<F>(doc: &[u8], mut f: F) -> Result<Cow<'_, [u8]>, SourceError>
where
    F: FnMut(&str, &[u8]) -> Edit,
{
    let (spans, open_end, close) = scan_members(doc)?;
    // Written from the first edit on: the members kept before it are
    // copied as they are, separators included.
    let mut out: Option<Vec<u8>> = None;
    for (i, (span, key_end)) in spans.iter().enumerate() {
        let raw_key = &doc[span.key_start..*key_end];
        let key = unescape_key(raw_key)?;
        let edit = f(&key, &doc[span.value_start..span.value_end]);
        if out.is_none() && edit == Edit::Keep {
            continue;
        }
        let out = out.get_or_insert_with(|| {
            let kept = i.checked_sub(1).map_or(open_end, |p| spans[p].0.value_end);
            let mut o = Vec::with_capacity(doc.len());
            o.extend_from_slice(&doc[..kept]);
            o
        });
        let value = match edit {
            Edit::Drop => continue,
            Edit::Keep => &doc[span.value_start..span.value_end],
            Edit::Replace(ref v) => v.as_slice(),
        };
        // Nothing written yet past the `{`: no separator.
        if out.len() > open_end {
            out.push(b',');
        }
        out.extend_from_slice(&doc[span.lead..span.value_start]);
        out.extend_from_slice(value);
    }
    let Some(mut out) = out else {
        return Ok(Cow::Borrowed(doc));
    };
    // Whitespace before `}` after the last kept member, then the rest.
    let tail_ws_start = spans.last().map_or(open_end, |(s, _)| s.value_end);
    out.extend_from_slice(&doc[tail_ws_start..close]);
    out.extend_from_slice(&doc[close..]);
    Ok(Cow::Owned(out))
}

/// One member of an object: its key (unescaped) and its raw value.
pub type Member<'a> = (Cow<'a, str>, &'a [u8]);

/// The top-level members of the object `doc`, keys unescaped, values as
/// their raw bytes, in order: a read-only [`edit_members`] whose values
/// outlive the call.
///
/// ```
/// use osproxy_rewrite::members::members;
/// let m = members(br#"{"a":1, "b":{"c":[2]}}"#).unwrap();
/// assert_eq!(m[1].0, "b");
/// assert_eq!(m[1].1, br#"{"c":[2]}"#);
/// ```
pub fn members(doc: &[u8]) -> Result<Vec<Member<'_>>, SourceError> {
    let (spans, _, _) = scan_members(doc)?;
    spans
        .iter()
        .map(|(span, key_end)| {
            Ok((
                unescape_key(&doc[span.key_start..*key_end])?,
                &doc[span.value_start..span.value_end],
            ))
        })
        .collect()
}

/// Every member's span, where the object's content starts (after `{`) and
/// where its `}` is.
#[allow(clippy::type_complexity)]
fn scan_members(doc: &[u8]) -> Result<(Vec<(Span, usize)>, usize, usize), SourceError> {
    let mut s = Scan { b: doc, pos: 0 };
    s.ws();
    if s.peek() != Some(b'{') {
        return Err(SourceError::NotAnObject);
    }
    s.pos += 1;
    let open_end = s.pos;
    let mut spans = Vec::with_capacity(8);
    s.ws();
    if s.peek() == Some(b'}') {
        s.pos += 1;
    } else {
        let mut lead = open_end;
        loop {
            s.ws();
            let key_start = s.pos;
            s.string()?;
            let key_end = s.pos;
            s.ws();
            s.eat(b':')?;
            s.ws();
            let value_start = s.pos;
            s.value()?;
            let value_end = s.pos;
            spans.push((
                Span {
                    lead,
                    key_start,
                    value_start,
                    value_end,
                },
                key_end,
            ));
            s.ws();
            match s.bump() {
                Some(b',') => lead = s.pos,
                Some(b'}') => break,
                _ => return Err(s.error("expected `,` or `}`")),
            }
        }
    }
    let close = s.pos - 1;
    s.ws();
    if s.pos != doc.len() {
        return Err(s.error("unexpected bytes after the object"));
    }
    Ok((spans, open_end, close))
}

/// Applies `f` to each element of the JSON array `arr`, keeping separators
/// and whitespace.
pub fn map_elements<F>(arr: &[u8], mut f: F) -> Result<Vec<u8>, SourceError>
where
    F: FnMut(&[u8]) -> Result<Vec<u8>, SourceError>,
{
    let mut out = Vec::with_capacity(arr.len());
    let mut copied = 0;
    for_elements(arr, |start, end| {
        out.extend_from_slice(&arr[copied..start]);
        out.extend_from_slice(&f(&arr[start..end])?);
        copied = end;
        Ok(())
    })?;
    out.extend_from_slice(&arr[copied..]);
    Ok(out)
}

/// The elements of the JSON array `arr`, as their raw bytes, in order: a
/// read-only [`map_elements`] that copies nothing.
///
/// ```
/// use osproxy_rewrite::members::elements;
/// assert_eq!(elements(b" [1, {\"a\":[2]} ]").unwrap(), [&b"1"[..], b"{\"a\":[2]}"]);
/// ```
pub fn elements(arr: &[u8]) -> Result<Vec<&[u8]>, SourceError> {
    let mut found = Vec::new();
    for_elements(arr, |start, end| {
        found.push(&arr[start..end]);
        Ok(())
    })?;
    Ok(found)
}

/// Calls `f(start, end)` with each element's byte range, in order.
fn for_elements<F>(arr: &[u8], mut f: F) -> Result<(), SourceError>
where
    F: FnMut(usize, usize) -> Result<(), SourceError>,
{
    let mut s = Scan { b: arr, pos: 0 };
    s.ws();
    if s.peek() != Some(b'[') {
        return Err(s.error("expected an array"));
    }
    s.pos += 1;
    s.ws();
    if s.peek() == Some(b']') {
        return Ok(());
    }
    loop {
        s.ws();
        let start = s.pos;
        s.value()?;
        f(start, s.pos)?;
        s.ws();
        match s.bump() {
            Some(b',') => {}
            Some(b']') => return Ok(()),
            _ => return Err(s.error("expected `,` or `]`")),
        }
    }
}

fn unescape_key(raw: &[u8]) -> Result<Cow<'_, str>, SourceError> {
    let inner = raw.get(1..raw.len().saturating_sub(1)).unwrap_or_default();
    if !inner.contains(&b'\\') {
        return std::str::from_utf8(inner)
            .map(Cow::Borrowed)
            .map_err(|e| SourceError::NotJson {
                message: e.to_string(),
            });
    }
    match serde_json::from_slice::<String>(raw) {
        Ok(k) => Ok(Cow::Owned(k)),
        // A key with a lone surrogate escape (`"\ud800"`), which OpenSearch
        // stores as it is: read with U+FFFD in its place. It can then equal
        // no name osproxy looks for (they are all valid text), as it equals
        // none for OpenSearch either, and the member is kept rather than
        // the whole edit failing (which left the partition field in).
        Err(e) => lossy_key(inner)
            .map(Cow::Owned)
            .ok_or(SourceError::NotJson {
                message: e.to_string(),
            }),
    }
}

/// A JSON string's content (between the quotes) unescaped, a lone
/// surrogate escape read as U+FFFD; `None` when it is not JSON text.
fn lossy_key(inner: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(inner).ok()?;
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    let hex = |chars: &mut std::str::Chars<'_>| -> Option<u32> {
        let digits: String = chars.by_ref().take(4).collect();
        (digits.len() == 4 && digits.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u32::from_str_radix(&digits, 16).ok())?
    };
    let mut pending: Option<u32> = None;
    while let Some(c) = chars.next() {
        if c != '\\' {
            if pending.take().is_some() {
                out.push('\u{FFFD}');
            }
            out.push(c);
            continue;
        }
        let esc = chars.next()?;
        let unit = match esc {
            'u' => hex(&mut chars)?,
            other => {
                if pending.take().is_some() {
                    out.push('\u{FFFD}');
                }
                out.push(match other {
                    '"' => '"',
                    '\\' => '\\',
                    '/' => '/',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    _ => return None,
                });
                continue;
            }
        };
        match (pending.take(), unit) {
            (Some(high), 0xDC00..=0xDFFF) => {
                let c = 0x10000 + ((high - 0xD800) << 10) + (unit - 0xDC00);
                out.push(char::from_u32(c)?);
            }
            (previous, 0xD800..=0xDBFF) => {
                if previous.is_some() {
                    out.push('\u{FFFD}');
                }
                pending = Some(unit);
            }
            (previous, _) => {
                if previous.is_some() {
                    out.push('\u{FFFD}');
                }
                out.push(char::from_u32(unit).unwrap_or('\u{FFFD}'));
            }
        }
    }
    if pending.is_some() {
        out.push('\u{FFFD}');
    }
    Some(out)
}

struct Scan<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Scan<'_> {
    fn error(&self, what: &str) -> SourceError {
        SourceError::NotJson {
            message: format!("{what} at byte {}", self.pos),
        }
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }
    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }
    fn eat(&mut self, want: u8) -> Result<(), SourceError> {
        if self.bump() == Some(want) {
            Ok(())
        } else {
            Err(self.error(&format!("expected `{}`", want as char)))
        }
    }
    fn string(&mut self) -> Result<(), SourceError> {
        self.eat(b'"')?;
        // Keys and most values are short: their end is looked for byte by
        // byte first (a vector search costs more to set up than they take).
        let short = self.b.len().min(self.pos + 24);
        while self.pos < short {
            match self.b[self.pos] {
                b'"' => {
                    self.pos += 1;
                    return Ok(());
                }
                b'\\' => break,
                _ => self.pos += 1,
            }
        }
        // Jump from quote or backslash to the next one (hits are mostly
        // long strings in sources).
        loop {
            let rest = self.b.get(self.pos..).unwrap_or_default();
            match memchr::memchr2(b'"', b'\\', rest) {
                Some(i) => {
                    let at = self.pos + i;
                    self.pos = at + 1;
                    if self.b.get(at) == Some(&b'"') {
                        return Ok(());
                    }
                    // An escape: skip the escaped byte.
                    if self.pos >= self.b.len() {
                        return Err(self.error("unterminated escape"));
                    }
                    self.pos += 1;
                }
                None => {
                    self.pos = self.b.len();
                    return Err(self.error("unterminated string"));
                }
            }
        }
    }
    /// Skips one value; nested containers are matched by bracket depth.
    fn value(&mut self) -> Result<(), SourceError> {
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b'{' | b'[') => {
                let mut depth = 0usize;
                loop {
                    // Only quotes and brackets matter inside a container.
                    let rest = self.b.get(self.pos..).unwrap_or_default();
                    let Some(i) = rest
                        .iter()
                        .position(|&c| matches!(c, b'"' | b'{' | b'[' | b'}' | b']'))
                    else {
                        self.pos = self.b.len();
                        return Err(self.error("unterminated container"));
                    };
                    self.pos += i;
                    match self.b.get(self.pos) {
                        Some(b'"') => self.string()?,
                        Some(b'{' | b'[') => {
                            depth += 1;
                            self.pos += 1;
                        }
                        _ => {
                            self.pos += 1;
                            depth -= 1;
                            if depth == 0 {
                                return Ok(());
                            }
                        }
                    }
                }
            }
            Some(_) => {
                let start = self.pos;
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    self.pos += 1;
                }
                if self.pos == start {
                    Err(self.error("expected a value"))
                } else {
                    Ok(())
                }
            }
            None => Err(self.error("expected a value")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_with_a_lone_surrogate_does_not_stop_the_edit() {
        // Found by review: the partition field stayed in a document that
        // also had such a key.
        let doc = br#"{"\ud800":1,"_tenant":"acme","\ud83d\ude00x\udc00":2,"a\n":3}"#;
        let mut seen = Vec::new();
        let out = edit_members(doc, |k, _| {
            seen.push(k.to_string());
            if k == "_tenant" {
                Edit::Drop
            } else {
                Edit::Keep
            }
        })
        .unwrap()
        .into_owned();
        assert_eq!(out, br#"{"\ud800":1,"\ud83d\ude00x\udc00":2,"a\n":3}"#);
        assert_eq!(seen, ["\u{FFFD}", "_tenant", "\u{1F600}x\u{FFFD}", "a\n"]);
        assert_eq!(
            lossy_key(br"\ud800\ud800").as_deref(),
            Some("\u{FFFD}\u{FFFD}")
        );
        assert_eq!(lossy_key(br"\uD800a").as_deref(), Some("\u{FFFD}a"));
        assert_eq!(lossy_key(br"\q"), None);
        assert_eq!(lossy_key(br"\u12"), None);
        assert_eq!(lossy_key(br"\u+05f"), None, "four hex digits, no sign");
    }

    #[test]
    fn drop_first_middle_last_only() {
        let drop_b = |doc: &[u8]| {
            edit_members(doc, |k, _| if k == "b" { Edit::Drop } else { Edit::Keep })
                .unwrap()
                .into_owned()
        };
        assert_eq!(drop_b(br#"{"b":1,"a":2}"#), br#"{"a":2}"#);
        assert_eq!(
            drop_b(br#"{"a":1, "b":[1,{"x":"}"}], "c":3}"#),
            br#"{"a":1, "c":3}"#
        );
        assert_eq!(drop_b(br#"{"a":1,"b":2}"#), br#"{"a":1}"#);
        assert_eq!(drop_b(br#"{ "b" : 2 }"#), br#"{ }"#);
        assert_eq!(drop_b(br#"{}"#), br#"{}"#);
    }

    #[test]
    fn replace_keeps_everything_else() {
        let out = edit_members(br#"{"a" : "x\"y", "n": 12345678901234567890}"#, |k, _| {
            if k == "a" {
                Edit::Replace(b"\"z\"".to_vec())
            } else {
                Edit::Keep
            }
        })
        .unwrap()
        .into_owned();
        assert_eq!(out, br#"{"a" : "z", "n": 12345678901234567890}"#);
    }

    #[test]
    fn escaped_keys_are_compared_unescaped() {
        let out = edit_members(br#"{"\u005fid":"1"}"#, |k, _| {
            if k == "_id" {
                Edit::Drop
            } else {
                Edit::Keep
            }
        })
        .unwrap()
        .into_owned();
        assert_eq!(out, b"{}");
    }

    #[test]
    fn elements_are_mapped_in_place() {
        let out = map_elements(br#"[ {"a":1}, {"a":2} ]"#, |e| Ok([e, b"!"].concat())).unwrap();
        assert_eq!(out, br#"[ {"a":1}!, {"a":2}! ]"#);
        assert_eq!(map_elements(b"[]", |e| Ok(e.to_vec())).unwrap(), b"[]");
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            &b"{"[..],
            b"{\"a\"",
            b"{\"a\":",
            b"{\"a\":1",
            b"[1,",
            b"{\"a\":}",
            b"{1:2}",
        ] {
            assert!(
                edit_members(bad, |_, _| Edit::Drop).is_err()
                    || map_elements(bad, |e| Ok(e.to_vec())).is_err()
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = edit_members(&bytes, |_, _| Edit::Drop);
            let _ = map_elements(&bytes, |e| Ok(e.to_vec()));
        }
    }
}
