//! Pure pieces of `_bulk` handling: split the client's NDJSON body into
//! lines across chunk boundaries, parse and render action/metadata lines,
//! split upstream `_bulk` responses into their raw items, and assemble the
//! client's response from items put back in the client's order.
//!
//! Item and metadata values that osproxy does not interpret are carried as
//! raw JSON, byte for byte.

use std::fmt;

use bytes::{Bytes, BytesMut};
use serde::de::{self, Deserialize, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::members::{edit_members, map_elements, Edit};
use crate::source::SourceError;

/// Why a line of a bulk body, or an upstream response, could not be used.
/// Each client-side error becomes a per-item error in the bulk response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BulkError {
    /// A line is longer than the configured limit, in bytes.
    LineTooLong {
        /// The limit.
        max: usize,
    },
    /// The action/metadata line is not a well-formed action.
    MalformedAction {
        /// What is wrong.
        reason: String,
    },
    /// The action line's single key is not a bulk operation.
    UnknownOperation {
        /// The key found.
        op: String,
    },
    /// An `index`, `create` or `update` action is the last line of the body.
    MissingSource,
    /// The upstream `_bulk` response is not shaped as expected.
    MalformedResponse {
        /// What is wrong.
        reason: String,
    },
}

impl BulkError {
    /// The HTTP status of the per-item error.
    pub fn status(&self) -> u16 {
        match self {
            BulkError::MalformedResponse { .. } => 502,
            _ => 400,
        }
    }

    /// The OpenSearch-style `error.type` of the per-item error.
    pub fn error_type(&self) -> &'static str {
        match self {
            BulkError::MissingSource => "action_request_validation_exception",
            BulkError::MalformedResponse { .. } => "bad_upstream_response_exception",
            _ => "illegal_argument_exception",
        }
    }
}

impl std::error::Error for BulkError {}

impl fmt::Display for BulkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BulkError::LineTooLong { max } => write!(
                f,
                "a line of the bulk body is longer than {max} bytes; send smaller documents \
                 or split them across requests"
            ),
            BulkError::MalformedAction { reason } => {
                write!(f, "malformed action/metadata line: {reason}")
            }
            BulkError::UnknownOperation { op } => write!(
                f,
                "unknown bulk action `{op}`; expected one of `index`, `create`, `update`, `delete`"
            ),
            BulkError::MissingSource => f.write_str(
                "the action/metadata line is not followed by a document line; `index`, `create` \
                 and `update` need one, and the body must end with a newline",
            ),
            BulkError::MalformedResponse { reason } => {
                write!(
                    f,
                    "the upstream `_bulk` response could not be read: {reason}"
                )
            }
        }
    }
}

fn malformed(reason: impl Into<String>) -> BulkError {
    BulkError::MalformedAction {
        reason: reason.into(),
    }
}

fn bad_response(reason: impl Into<String>) -> BulkError {
    BulkError::MalformedResponse {
        reason: reason.into(),
    }
}

/// Whether a line holds only whitespace.
pub fn is_blank(line: &[u8]) -> bool {
    line.iter()
        .all(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

/// Splits a byte stream into NDJSON lines across chunk boundaries.
///
/// A line's length is counted without its `\n` and without one `\r` before
/// it. After an error the splitter should be dropped.
///
/// ```
/// use osproxy_rewrite::bulk::LineSplitter;
/// let mut s = LineSplitter::new(1024);
/// let mut lines = s.feed(b"{\"delete\":{}}\r\n\n{\"ind").unwrap();
/// lines.extend(s.feed(b"ex\":{}}\n{}").unwrap());
/// lines.extend(s.finish());
/// assert_eq!(lines, [&b"{\"delete\":{}}"[..], b"{\"index\":{}}", b"{}"]);
/// ```
#[derive(Debug)]
pub struct LineSplitter {
    buf: BytesMut,
    /// How much of `buf` is known to hold no `\n`.
    scanned: usize,
    max_line: usize,
    keep_blank: bool,
}

impl LineSplitter {
    /// A splitter refusing lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        LineSplitter {
            buf: BytesMut::new(),
            scanned: 0,
            max_line,
            keep_blank: false,
        }
    }

    /// A splitter that also returns blank lines (as they are), for readers
    /// that must see them where OpenSearch does: a blank line where a bulk
    /// expects an action is skipped, but where it expects a source it *is*
    /// the source, and the line after it is read as the next action.
    pub fn keeping_blank(max_line: usize) -> Self {
        LineSplitter {
            keep_blank: true,
            ..LineSplitter::new(max_line)
        }
    }

    /// Feeds a chunk; returns the complete lines it finished (without the
    /// trailing `\n`, and without a trailing `\r`). Empty lines (after
    /// trimming whitespace) are skipped, as OpenSearch does.
    /// `Err(BulkError::LineTooLong)` if a line grows beyond `max_line`.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Bytes>, BulkError> {
        self.buf.extend_from_slice(chunk);
        let mut lines = Vec::new();
        while let Some(nl) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            let mut line = self.buf.split_to(self.scanned + nl + 1).freeze();
            self.scanned = 0;
            line.truncate(line.len() - 1);
            if line.last() == Some(&b'\r') {
                line.truncate(line.len() - 1);
            }
            if line.len() > self.max_line {
                return Err(BulkError::LineTooLong { max: self.max_line });
            }
            if self.keep_blank || !is_blank(&line) {
                lines.push(line);
            }
        }
        self.scanned = self.buf.len();
        // A pending `\r` may still be the one before `\n`.
        let pending = self.buf.len() - usize::from(self.buf.last() == Some(&b'\r'));
        if pending > self.max_line {
            return Err(BulkError::LineTooLong { max: self.max_line });
        }
        Ok(lines)
    }

    /// End of stream: the last line if the body did not end with `\n`.
    pub fn finish(self) -> Option<Bytes> {
        let mut line = self.buf.freeze();
        if line.last() == Some(&b'\r') {
            line.truncate(line.len() - 1);
        }
        (!is_blank(&line)).then_some(line)
    }
}

/// A bulk operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BulkOp {
    /// `index`: create or replace a document.
    Index,
    /// `create`: create a document, failing if it exists.
    Create,
    /// `update`: partial update or script.
    Update,
    /// `delete`: remove a document.
    Delete,
}

impl BulkOp {
    /// All operations.
    pub const ALL: [BulkOp; 4] = [
        BulkOp::Index,
        BulkOp::Create,
        BulkOp::Update,
        BulkOp::Delete,
    ];

    /// The action line's key.
    pub fn as_str(self) -> &'static str {
        match self {
            BulkOp::Index => "index",
            BulkOp::Create => "create",
            BulkOp::Update => "update",
            BulkOp::Delete => "delete",
        }
    }

    /// Whether a source line follows the action line.
    pub fn has_source(self) -> bool {
        self != BulkOp::Delete
    }

    /// The operation named by an action line's key.
    pub fn from_name(name: &str) -> Option<BulkOp> {
        BulkOp::ALL.into_iter().find(|op| op.as_str() == name)
    }
}

impl fmt::Display for BulkOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed action line: `{"index": {"_index": "x", "_id": "1", "routing": "r", ...}}`
#[derive(Clone, Debug)]
pub struct ActionLine {
    /// The operation.
    pub op: BulkOp,
    /// `_index`.
    pub index: Option<String>,
    /// `_id`.
    pub id: Option<String>,
    /// `routing` or `_routing`.
    pub routing: Option<String>,
    /// Every other metadata member, raw and in order (if_seq_no,
    /// if_primary_term, version, version_type, pipeline, require_alias,
    /// retry_on_conflict, _source, dynamic_templates, ...).
    pub rest: Vec<(String, Box<RawValue>)>,
}

impl PartialEq for ActionLine {
    fn eq(&self, other: &Self) -> bool {
        self.op == other.op
            && self.index == other.index
            && self.id == other.id
            && self.routing == other.routing
            && self.rest.len() == other.rest.len()
            && self
                .rest
                .iter()
                .zip(&other.rest)
                .all(|((ka, va), (kb, vb))| ka == kb && va.get() == vb.get())
    }
}

/// An object's members in order, duplicates included, values raw.
struct Members(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(MembersVisitor)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
        let mut members = Vec::new();
        while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
            members.push(entry);
        }
        Ok(Members(members))
    }
}

/// The kind of a raw JSON value, for messages.
fn kind(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// Sets a string metadata member, refusing duplicates and non-strings.
fn set_string(slot: &mut Option<String>, name: &str, raw: &RawValue) -> Result<(), BulkError> {
    if slot.is_some() {
        return Err(malformed(format!("`{name}` is given more than once")));
    }
    let value = serde_json::from_str::<String>(raw.get()).map_err(|_| {
        malformed(format!(
            "`{name}` must be a string, not {}",
            kind(raw.get())
        ))
    })?;
    *slot = Some(value);
    Ok(())
}

/// Parses an action/metadata line. Strict: exactly one top-level key which
/// is one of `index`/`create`/`update`/`delete`, whose value is an object;
/// `_index`/`_id`/`routing` must be strings when present; `_type` is refused.
///
/// ```
/// use osproxy_rewrite::bulk::{parse_action, BulkOp};
/// let a = parse_action(br#"{"index":{"_index":"logs","_id":"7","if_seq_no":3}}"#).unwrap();
/// assert_eq!((a.op, a.index.as_deref(), a.id.as_deref()), (BulkOp::Index, Some("logs"), Some("7")));
/// assert_eq!(a.rest[0].0, "if_seq_no");
/// ```
pub fn parse_action(line: &[u8]) -> Result<ActionLine, BulkError> {
    let text =
        std::str::from_utf8(line).map_err(|e| malformed(format!("it is not UTF-8 ({e})")))?;
    let Members(top) = serde_json::from_str(text).map_err(|e| {
        malformed(format!(
            "expected a JSON object such as {{\"index\":{{\"_index\":\"logs\"}}}} ({e})"
        ))
    })?;
    let mut top = top.into_iter();
    let (key, meta) = match (top.next(), top.next()) {
        (Some(only), None) => only,
        (None, _) => {
            return Err(malformed(
                "the object is empty; it must have exactly one key: `index`, `create`, \
                 `update` or `delete`",
            ))
        }
        (Some((a, _)), Some((b, _))) => {
            return Err(malformed(format!(
                "it has more than one top-level key (`{a}`, `{b}`, ...); it must have exactly \
                 one action key, with the document on the next line"
            )))
        }
    };
    let op = BulkOp::from_name(&key).ok_or(BulkError::UnknownOperation { op: key })?;
    let Members(meta) = serde_json::from_str(meta.get()).map_err(|_| {
        malformed(format!(
            "the value of `{op}` must be an object of metadata, not {}",
            kind(meta.get())
        ))
    })?;
    let mut action = ActionLine {
        op,
        index: None,
        id: None,
        routing: None,
        rest: Vec::new(),
    };
    for (name, raw) in meta {
        match name.as_str() {
            "_index" => set_string(&mut action.index, "_index", &raw)?,
            "_id" => set_string(&mut action.id, "_id", &raw)?,
            "routing" | "_routing" => set_string(&mut action.routing, "routing", &raw)?,
            "_type" => {
                return Err(malformed(
                    "`_type` is not supported: mapping types were removed; drop `_type` \
                     from the action line",
                ))
            }
            _ => action.rest.push((name, raw)),
        }
    }
    Ok(action)
}

/// Appends `s` as a JSON string literal, quotes included.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut copied = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[copied..i]);
        copied = i + 1;
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
    }
    out.extend_from_slice(&bytes[copied..]);
    out.push(b'"');
}

/// Renders an action line (no trailing newline) with the given physical
/// index/id/routing and the original `rest` members verbatim.
///
/// ```
/// use osproxy_rewrite::bulk::{render_action, BulkOp};
/// let line = render_action(BulkOp::Delete, "logs-shared", Some("acme:7"), Some("acme"), &[]);
/// assert_eq!(line, br#"{"delete":{"_index":"logs-shared","_id":"acme:7","routing":"acme"}}"#);
/// ```
pub fn render_action(
    op: BulkOp,
    index: &str,
    id: Option<&str>,
    routing: Option<&str>,
    rest: &[(String, Box<RawValue>)],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + index.len() + rest.len() * 24);
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(op.as_str().as_bytes());
    out.extend_from_slice(b"\":{\"_index\":");
    push_json_str(&mut out, index);
    if let Some(id) = id {
        out.extend_from_slice(b",\"_id\":");
        push_json_str(&mut out, id);
    }
    if let Some(routing) = routing {
        out.extend_from_slice(b",\"routing\":");
        push_json_str(&mut out, routing);
    }
    for (name, raw) in rest {
        out.push(b',');
        push_json_str(&mut out, name);
        out.push(b':');
        out.extend_from_slice(raw.get().as_bytes());
    }
    out.extend_from_slice(b"}}");
    out
}

/// The upstream `_bulk` response split into its items, raw, in order, plus
/// `errors`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamItems {
    /// The response's `errors` flag (computed from the items if absent).
    pub errors: bool,
    /// Each item, such as `{"index":{"_index":...,"status":201}}`, verbatim.
    pub items: Vec<Vec<u8>>,
}

/// Splits an upstream `_bulk` response into its raw items, in order.
///
/// ```
/// use osproxy_rewrite::bulk::split_response;
/// let r = split_response(br#"{"took":3,"errors":false,"items":[{"index":{"status":201}}, {"delete":{"status":200}}]}"#).unwrap();
/// assert_eq!(r.items, [&br#"{"index":{"status":201}}"#[..], br#"{"delete":{"status":200}}"#]);
/// ```
pub fn split_response(body: &[u8]) -> Result<UpstreamItems, BulkError> {
    let mut errors = None;
    let mut items: Option<Vec<Vec<u8>>> = None;
    let mut problem: Option<String> = None;
    edit_members(body, |key, value| {
        match key {
            "errors" => match value {
                b"true" => errors = Some(true),
                b"false" => errors = Some(false),
                _ => {
                    problem.get_or_insert_with(|| "`errors` is not a boolean".to_string());
                }
            },
            "items" if items.is_some() => {
                problem.get_or_insert_with(|| "`items` occurs more than once".to_string());
            }
            "items" => {
                let mut found = Vec::new();
                let scanned = map_elements(value, |element| {
                    if element.first() != Some(&b'{') {
                        return Err(SourceError::NotAnObject);
                    }
                    found.push(element.to_vec());
                    Ok(Vec::new())
                });
                match scanned {
                    Ok(_) => items = Some(found),
                    Err(SourceError::NotAnObject) => {
                        problem.get_or_insert_with(|| "an item is not an object".to_string());
                    }
                    Err(e) => {
                        problem.get_or_insert_with(|| format!("`items` is malformed: {e}"));
                    }
                }
            }
            _ => {}
        }
        Edit::Keep
    })
    .map_err(|e| bad_response(e.to_string()))?;
    if let Some(problem) = problem {
        return Err(bad_response(problem));
    }
    let items = items.ok_or_else(|| bad_response("it has no `items` array"))?;
    let errors = errors.unwrap_or_else(|| items.iter().any(|item| item_failed(item)));
    Ok(UpstreamItems { errors, items })
}

/// The fields of an item's inner object that matter here.
#[derive(serde::Deserialize)]
struct ItemMeta {
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

/// The inner object of a one-member item `{"<op>":{...}}`.
fn item_meta(item: &[u8]) -> Option<ItemMeta> {
    let text = std::str::from_utf8(item).ok()?;
    let Members(members) = serde_json::from_str(text).ok()?;
    match members.as_slice() {
        [(_, inner)] => serde_json::from_str(inner.get()).ok(),
        _ => None,
    }
}

/// The nested `status` of an item such as `{"index":{...,"status":201}}`.
pub fn item_status(item: &[u8]) -> Option<u16> {
    item_meta(item)?.status
}

/// Whether an item failed: `status` >= 300, an `error` member, or unreadable.
fn item_failed(item: &[u8]) -> bool {
    match item_meta(item) {
        Some(meta) => meta.error.is_some() || meta.status.is_none_or(|s| s >= 300),
        None => true,
    }
}

/// Assembles the client's response:
/// `{"took":<took>,"errors":<errors>,"items":[<items in order>]}`, where
/// `errors` is true iff an item has a `status` >= 300 or an `error` member.
///
/// ```
/// use osproxy_rewrite::bulk::assemble_response;
/// let out = assemble_response(5, &[br#"{"index":{"status":409,"error":{}}}"#.to_vec()]);
/// assert_eq!(out, br#"{"took":5,"errors":true,"items":[{"index":{"status":409,"error":{}}}]}"#);
/// ```
pub fn assemble_response(took_ms: u64, items: &[Vec<u8>]) -> Vec<u8> {
    let errors = items.iter().any(|item| item_failed(item));
    let len: usize = items.iter().map(|i| i.len() + 1).sum();
    let mut out = Vec::with_capacity(48 + len);
    out.extend_from_slice(b"{\"took\":");
    out.extend_from_slice(took_ms.to_string().as_bytes());
    out.extend_from_slice(if errors {
        b",\"errors\":true,\"items\":["
    } else {
        b",\"errors\":false,\"items\":["
    });
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.extend_from_slice(b"]}");
    out
}

/// A per-item error object shaped like OpenSearch's, for items osproxy
/// refused or could not route:
/// `{"<op>":{"_index":<index or null>,"_id":<id or null>,"status":<status>,"error":{"type":<type>,"reason":<reason>}}}`
pub fn item_error(
    op: BulkOp,
    index: Option<&str>,
    id: Option<&str>,
    status: u16,
    error_type: &str,
    reason: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + reason.len());
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(op.as_str().as_bytes());
    out.extend_from_slice(b"\":{\"_index\":");
    match index {
        Some(index) => push_json_str(&mut out, index),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"_id\":");
    match id {
        Some(id) => push_json_str(&mut out, id),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"status\":");
    out.extend_from_slice(status.to_string().as_bytes());
    out.extend_from_slice(b",\"error\":{\"type\":");
    push_json_str(&mut out, error_type);
    out.extend_from_slice(b",\"reason\":");
    push_json_str(&mut out, reason);
    out.extend_from_slice(b"}}}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn split_all(body: &[u8], max: usize) -> Result<Vec<Bytes>, BulkError> {
        let mut s = LineSplitter::new(max);
        let mut lines = s.feed(body)?;
        lines.extend(s.finish());
        Ok(lines)
    }

    fn split_chunked(body: &[u8], cuts: &[usize], max: usize) -> Result<Vec<Bytes>, BulkError> {
        let mut s = LineSplitter::new(max);
        let mut lines = Vec::new();
        let mut at = 0;
        for &cut in cuts {
            let cut = cut.clamp(at, body.len());
            lines.extend(s.feed(&body[at..cut])?);
            at = cut;
        }
        lines.extend(s.feed(&body[at..])?);
        lines.extend(s.finish());
        Ok(lines)
    }

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_string()).unwrap()
    }

    fn reason(line: &str) -> String {
        match parse_action(line.as_bytes()) {
            Err(BulkError::MalformedAction { reason }) => reason,
            other => panic!("{line}: expected MalformedAction, got {other:?}"),
        }
    }

    #[test]
    fn crlf_blank_lines_and_no_final_newline() {
        let lines = split_all(b"a\r\n\r\n  \t\n\nb\n \r\nc\r", 16).unwrap();
        assert_eq!(lines, [&b"a"[..], b"b", b"c"]);
        assert_eq!(split_all(b"a\n", 16).unwrap(), [&b"a"[..]]);
        assert_eq!(split_all(b"", 16).unwrap(), Vec::<Bytes>::new());
        assert_eq!(split_all(b"  \r\n \r", 16).unwrap(), Vec::<Bytes>::new());
        // Only one trailing `\r` is removed; inner whitespace is kept.
        assert_eq!(split_all(b" x \r\r\n", 16).unwrap(), [&b" x \r"[..]]);
    }

    #[test]
    fn blank_lines_can_be_kept() {
        let mut s = LineSplitter::keeping_blank(16);
        let mut lines = s.feed(b"a\r\n\n \nb\n").unwrap();
        lines.extend(s.finish());
        assert_eq!(lines, [&b"a"[..], b"", b" ", b"b"]);
    }

    #[test]
    fn lines_cross_chunk_boundaries() {
        let mut s = LineSplitter::new(64);
        assert!(s.feed(b"{\"de").unwrap().is_empty());
        assert!(s.feed(b"lete\":{}}\r").unwrap().is_empty());
        assert_eq!(s.feed(b"\n{").unwrap(), [&b"{\"delete\":{}}"[..]]);
        assert_eq!(s.finish().as_deref(), Some(&b"{"[..]));
    }

    #[test]
    fn line_too_long() {
        let too_long = Err(BulkError::LineTooLong { max: 4 });
        assert_eq!(split_all(b"abcd\nabcd\r\n", 4).unwrap().len(), 2);
        assert_eq!(split_all(b"abcde\n", 4), too_long);
        assert_eq!(split_all(b"abcde", 4), too_long);
        assert_eq!(split_all(b"     \n", 4), too_long);
        // Detected while the line is still incomplete, before its end arrives.
        let mut s = LineSplitter::new(4);
        assert_eq!(s.feed(b"abcd").unwrap(), Vec::<Bytes>::new());
        assert_eq!(s.feed(b"\r").unwrap(), Vec::<Bytes>::new());
        assert_eq!(s.feed(b"e"), too_long);
        let mut s = LineSplitter::new(4);
        assert_eq!(s.feed(b"abcde"), too_long);
        assert!(BulkError::LineTooLong { max: 4 }
            .to_string()
            .contains("4 bytes"));
    }

    #[test]
    fn parses_full_metadata() {
        let a = parse_action(
            br#" {"update": {"_index":"logs","_id":"a\"b","_routing":"r","retry_on_conflict":3,"_source":{"includes":["x"]}}} "#,
        )
        .unwrap();
        assert_eq!(a.op, BulkOp::Update);
        assert_eq!(a.index.as_deref(), Some("logs"));
        assert_eq!(a.id.as_deref(), Some("a\"b"));
        assert_eq!(a.routing.as_deref(), Some("r"));
        let rest: Vec<_> = a.rest.iter().map(|(k, v)| (k.as_str(), v.get())).collect();
        assert_eq!(
            rest,
            [
                ("retry_on_conflict", "3"),
                ("_source", r#"{"includes":["x"]}"#)
            ]
        );
        let d = parse_action(br#"{"delete":{}}"#).unwrap();
        assert_eq!(
            (d.op, d.index, d.id, d.routing),
            (BulkOp::Delete, None, None, None)
        );
        assert!(!d.op.has_source() && BulkOp::Create.has_source());
    }

    #[test]
    fn malformed_action_lines() {
        assert!(reason("not json").contains("JSON object"));
        assert!(reason(r#"{"index":{}"#).contains("JSON object"));
        assert!(reason(r#"[{"index":{}}]"#).contains("JSON object"));
        assert!(reason(r#"{"index":{}} {}"#).contains("JSON object"));
        assert!(reason("{}").contains("exactly one"));
        let two = reason(r#"{"index":{},"field":1}"#);
        assert!(two.contains("`index`, `field`"), "{two}");
        assert!(reason(r#"{"index":[]}"#).contains("not an array"));
        assert!(reason(r#"{"index":{"_type":"_doc"}}"#).contains("_type"));
        assert_eq!(
            reason(r#"{"index":{"_id":1}}"#),
            "`_id` must be a string, not a number"
        );
        assert!(reason(r#"{"index":{"_index":null}}"#).contains("not null"));
        assert!(reason(r#"{"index":{"routing":["r"]}}"#).contains("`routing`"));
        assert!(reason(r#"{"index":{"routing":"a","_routing":"b"}}"#).contains("more than once"));
        assert!(reason(r#"{"index":{"_id":"a","_id":"b"}}"#).contains("more than once"));
        assert!(parse_action(b"{\"index\":{\"_id\":\"\xff\"}}").is_err());
        let unknown = parse_action(br#"{"upsert":{"_id":"1"}}"#).unwrap_err();
        assert_eq!(
            unknown,
            BulkError::UnknownOperation {
                op: "upsert".into()
            }
        );
        assert!(unknown.to_string().contains("`upsert`"));
        assert!(malformed("x").to_string().contains("action/metadata line"));
    }

    #[test]
    fn renders_with_escapes() {
        let line = render_action(
            BulkOp::Index,
            "l\"o\\g",
            None,
            None,
            &[
                ("pipeline".into(), raw(r#""p""#)),
                ("a\nb".into(), raw("1")),
            ],
        );
        assert_eq!(
            String::from_utf8(line).unwrap(),
            r#"{"index":{"_index":"l\"o\\g","pipeline":"p","a\nb":1}}"#
        );
        let mut out = Vec::new();
        push_json_str(&mut out, "\u{0}\u{1f}\u{8}\u{c}é\u{7f}");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"\\u0000\\u001f\\b\\fé\u{7f}\""
        );
    }

    #[test]
    fn item_error_shape() {
        let e = item_error(
            BulkOp::Create,
            Some("logs"),
            None,
            403,
            "security_exception",
            "tenant \"x\" may not write",
        );
        let v: Value = serde_json::from_slice(&e).unwrap();
        assert_eq!(
            v,
            json!({"create":{"_index":"logs","_id":null,"status":403,
                "error":{"type":"security_exception","reason":"tenant \"x\" may not write"}}})
        );
        assert_eq!(item_status(&e), Some(403));
        let e = item_error(BulkOp::Delete, None, Some("1"), 400, "t", "r");
        let v: Value = serde_json::from_slice(&e).unwrap();
        assert_eq!(v["delete"]["_index"], Value::Null);
        assert_eq!(v["delete"]["_id"], "1");
        let err = BulkError::MissingSource;
        assert_eq!(
            (err.status(), err.error_type()),
            (400, "action_request_validation_exception")
        );
    }

    #[test]
    fn item_status_and_errors_flag() {
        assert_eq!(
            item_status(br#"{"index":{"_id":"1","status":201}}"#),
            Some(201)
        );
        assert_eq!(item_status(br#"{"index":{"_id":"1"}}"#), None);
        assert_eq!(item_status(br#"{"index":{"status":"x"}}"#), None);
        assert_eq!(item_status(b"nope"), None);
        let ok = br#"{"index":{"status":201}}"#.to_vec();
        let conflict = br#"{"index":{"status":409}}"#.to_vec();
        let err_member = br#"{"update":{"status":200,"error":{"type":"x"}}}"#.to_vec();
        let flag = |items: &[Vec<u8>]| {
            let v: Value = serde_json::from_slice(&assemble_response(1, items)).unwrap();
            v["errors"].as_bool().unwrap()
        };
        assert!(!flag(&[]));
        assert!(!flag(&[ok.clone(), ok.clone()]));
        assert!(flag(&[ok.clone(), conflict]));
        assert!(flag(&[err_member, ok]));
        assert_eq!(
            assemble_response(0, &[]),
            br#"{"took":0,"errors":false,"items":[]}"#
        );
    }

    #[test]
    fn split_response_shapes() {
        let r = split_response(
            b"{\"took\" : 2,\n \"errors\" : true, \"items\" : [ {\"index\":{\"status\":409}} ,{\"index\":{\"status\":201}}\n] }",
        )
        .unwrap();
        assert!(r.errors);
        assert_eq!(r.items.len(), 2);
        assert_eq!(r.items[0], br#"{"index":{"status":409}}"#);
        // Without `errors`, it is computed.
        let r = split_response(br#"{"items":[{"index":{"status":500}}]}"#).unwrap();
        assert!(r.errors);
        let r = split_response(br#"{"items":[]}"#).unwrap();
        assert_eq!((r.errors, r.items.len()), (false, 0));
        for bad in [
            &br#"{"error":{"type":"x"},"status":429}"#[..],
            br#"{"errors":"no","items":[]}"#,
            br#"{"items":[1]}"#,
            br#"{"items":{}}"#,
            br#"{"items":[],"items":[]}"#,
            br#"[]"#,
            br#"{"items":[{"a":1}"#,
        ] {
            let err = split_response(bad).unwrap_err();
            assert!(
                matches!(err, BulkError::MalformedResponse { .. }),
                "{err:?}"
            );
            assert_eq!(err.status(), 502);
        }
    }

    fn body() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b" ".to_vec()),
            Just(br#"{"index":{"_id":"1"}}"#.to_vec()),
            "[a-z{}\":é]{1,12}".prop_map(String::into_bytes),
        ];
        proptest::collection::vec(piece, 0..24).prop_map(|p| p.concat())
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(any::<String>(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn op() -> impl Strategy<Value = BulkOp> {
        proptest::sample::select(BulkOp::ALL.to_vec())
    }

    const RESERVED: [&str; 5] = ["_index", "_id", "routing", "_routing", "_type"];

    /// A random item, and whether it failed.
    fn item() -> impl Strategy<Value = (Vec<u8>, bool)> {
        let status = proptest::sample::select(vec![200u16, 201, 299, 300, 404, 409, 429, 500]);
        (op(), any::<String>(), any::<String>(), status, any::<bool>()).prop_map(
            |(op, index, id, status, with_error)| {
                if with_error {
                    (item_error(op, Some(&index), Some(&id), status, "x_exception", &id), true)
                } else {
                    let item = json!({ op.as_str(): {"_index": index, "_id": id, "_version": 1, "status": status} });
                    (serde_json::to_vec(&item).unwrap(), status >= 300)
                }
            },
        )
    }

    proptest! {
        #[test]
        fn chunking_never_changes_lines(
            body in body(),
            cuts in proptest::collection::vec(0usize..400, 0..8),
            max in prop_oneof![Just(usize::MAX), 0usize..40],
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let whole = split_all(&body, max);
            prop_assert_eq!(split_chunked(&body, &cuts, max), whole.clone());
            let bytewise: Vec<usize> = (0..body.len()).collect();
            prop_assert_eq!(split_chunked(&body, &bytewise, max), whole.clone());
            if max == usize::MAX {
                let naive: Vec<Vec<u8>> = body
                    .split(|&b| b == b'\n')
                    .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
                    .filter(|l| !is_blank(l))
                    .collect();
                let got: Vec<Vec<u8>> = whole.unwrap().iter().map(|l| l.to_vec()).collect();
                prop_assert_eq!(got, naive);
            }
        }

        #[test]
        fn render_then_parse_round_trips(
            op in op(),
            index in any::<String>(),
            id in proptest::option::of(any::<String>()),
            routing in proptest::option::of(".*[\"\\\\].*"),
            rest in proptest::collection::vec((any::<String>(), json_value()), 0..5),
        ) {
            let rest: Vec<(String, Box<RawValue>)> = rest
                .into_iter()
                .filter(|(k, _)| !RESERVED.contains(&k.as_str()))
                .map(|(k, v)| (k, serde_json::value::to_raw_value(&v).unwrap()))
                .collect();
            let line = render_action(op, &index, id.as_deref(), routing.as_deref(), &rest);
            prop_assert!(!line.contains(&b'\n'));
            let parsed = parse_action(&line).unwrap();
            let expected = ActionLine { op, index: Some(index), id, routing, rest };
            prop_assert_eq!(parsed, expected);
        }

        #[test]
        fn split_then_reassemble_keeps_order_and_count(
            items in proptest::collection::vec(item(), 0..24),
            targets in proptest::collection::vec(0usize..4, 24),
            spaced in any::<bool>(),
        ) {
            // Group per target, remembering each item's position.
            let mut groups: Vec<Vec<usize>> = vec![Vec::new(); 4];
            for i in 0..items.len() {
                groups[targets[i]].push(i);
            }
            let mut placed: Vec<Option<Vec<u8>>> = vec![None; items.len()];
            for positions in groups.iter().filter(|g| !g.is_empty()) {
                let sep: &[u8] = if spaced { b" ,\n " } else { b"," };
                let joined = positions.iter().map(|&i| items[i].0.clone()).collect::<Vec<_>>().join(sep);
                let upstream = [&br#"{"took":1,"errors":false,"items":["#[..], &joined, b"]}"].concat();
                let split = split_response(&upstream).unwrap();
                prop_assert_eq!(split.items.len(), positions.len());
                for (&i, item) in positions.iter().zip(split.items) {
                    prop_assert!(placed[i].replace(item).is_none());
                }
            }
            let placed: Vec<Vec<u8>> = placed.into_iter().map(Option::unwrap).collect();
            let out = assemble_response(7, &placed);
            let back = split_response(&out).unwrap();
            let originals: Vec<Vec<u8>> = items.iter().map(|(i, _)| i.clone()).collect();
            prop_assert_eq!(&back.items, &originals);
            prop_assert_eq!(back.errors, items.iter().any(|(_, failed)| *failed));
            let v: Value = serde_json::from_slice(&out).unwrap();
            prop_assert_eq!(v["took"].as_u64(), Some(7));
            prop_assert_eq!(v["items"].as_array().map(Vec::len), Some(items.len()));
        }

        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_action(&bytes);
            let _ = split_response(&bytes);
            let _ = item_status(&bytes);
        }
    }
}
