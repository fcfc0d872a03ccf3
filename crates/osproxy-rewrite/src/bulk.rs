//! Pure pieces of `_bulk` handling: split the client's NDJSON body into
//! lines across chunk boundaries, parse and render action/metadata lines,
//! split upstream `_bulk` responses into their raw items, and assemble the
//! client's response from items put back in the client's order.
//!
//! Item and metadata values that osproxy does not interpret are carried as
//! raw JSON, byte for byte.

use std::fmt;

use bytes::{Bytes, BytesMut};
use serde::de::{self, Deserialize, MapAccess, Visitor};
use serde_json::value::RawValue;

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

/// A rest of the splitter's buffer shorter than this is copied out of the
/// allocation of the lines before it.
const RELEASE_BELOW: usize = 64 * 1024;
/// ... when the allocation is larger than this (a long line was read).
const RELEASE_ABOVE: usize = 1024 * 1024;

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
        let allocated = self.buf.capacity();
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
        // Split-off lines share the buffer's allocation, and what is left
        // keeps all of it alive: once a line is split off, a small rest is
        // moved to a buffer of its own, so a long line's memory goes with
        // the line rather than staying with the splitter.
        if !lines.is_empty() && allocated > RELEASE_ABOVE && self.buf.len() < RELEASE_BELOW {
            self.buf = BytesMut::from(&self.buf[..]);
        }
        self.scanned = self.buf.len();
        // A pending `\r` may still be the one before `\n`.
        let pending = self.buf.len() - usize::from(self.buf.last() == Some(&b'\r'));
        if pending > self.max_line {
            return Err(BulkError::LineTooLong { max: self.max_line });
        }
        Ok(lines)
    }

    /// The bytes the splitter holds for a line not yet complete (its
    /// buffer's capacity).
    pub fn buffered(&self) -> usize {
        self.buf.capacity()
    }

    /// At most what [`Self::buffered`] will be after feeding `n` more bytes
    /// (the buffer at least doubles when it grows), so that growth can be
    /// accounted for before it is made.
    pub fn buffered_after(&self, n: usize) -> usize {
        let need = self.buf.len().saturating_add(n);
        if need <= self.buf.capacity() {
            self.buf.capacity()
        } else {
            need.max(self.buf.capacity().saturating_mul(2))
        }
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
    /// `routing`.
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
pub(crate) struct Members(pub(crate) Vec<(String, Box<RawValue>)>);

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
            // `_routing` is not OpenSearch's (it refuses it as unknown).
            "routing" => set_string(&mut action.routing, "routing", &raw)?,
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
pub(crate) fn push_json_str(out: &mut Vec<u8>, s: &str) {
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

mod metadata;
pub use metadata::{canonical_metadata, check_metadata, check_update_body, MetadataError};
mod response;
pub use response::{
    assemble_response, inner_meta, item_error, item_status, split_response, ItemMeta, MetaReader,
    UpstreamItems,
};

#[cfg(test)]
mod tests;
