//! The answer side of a bulk: an upstream answer split into its items,
//! item statuses, errors in OpenSearch's shape, and the assembled answer.

use super::{bad_response, push_json_str, BulkError, BulkOp};
use crate::members::{elements, members};

/// The upstream `_bulk` response split into its items, raw, in order, plus
/// `errors`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamItems<'a> {
    /// The response's `errors` flag (computed from the items if absent).
    pub errors: bool,
    /// Each item, such as `{"index":{"_index":...,"status":201}}`, verbatim
    /// (borrowed from the response).
    pub items: Vec<&'a [u8]>,
}

/// Splits an upstream `_bulk` response into its raw items, in order.
///
/// ```
/// use osproxy_rewrite::bulk::split_response;
/// let r = split_response(br#"{"took":3,"errors":false,"items":[{"index":{"status":201}}, {"delete":{"status":200}}]}"#).unwrap();
/// assert_eq!(r.items, [&br#"{"index":{"status":201}}"#[..], br#"{"delete":{"status":200}}"#]);
/// ```
pub fn split_response(body: &[u8]) -> Result<UpstreamItems<'_>, BulkError> {
    let mut errors = None;
    let mut items: Option<Vec<&[u8]>> = None;
    let mut problem: Option<String> = None;
    let top = members(body).map_err(|e| bad_response(e.to_string()))?;
    for (key, value) in top {
        match &*key {
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
            "items" => match elements(value) {
                Ok(found) if found.iter().all(|e| e.first() == Some(&b'{')) => items = Some(found),
                Ok(_) => {
                    problem.get_or_insert_with(|| "an item is not an object".to_string());
                }
                Err(e) => {
                    problem.get_or_insert_with(|| format!("`items` is malformed: {e}"));
                }
            },
            _ => {}
        }
    }
    if let Some(problem) = problem {
        return Err(bad_response(problem));
    }
    let items = items.ok_or_else(|| bad_response("it has no `items` array"))?;
    let errors = errors.unwrap_or_else(|| items.iter().any(|item| item_failed(item)));
    Ok(UpstreamItems { errors, items })
}

/// The fields of an item's inner object that matter here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemMeta {
    /// Its `status`.
    pub status: Option<u16>,
    /// An `error` member that is not `null`.
    pub error: bool,
}

/// The inner object of a one-member item `{"<op>":{...}}`. Read by
/// scanning members (this runs for every item of every bulk): a repeated
/// `status` or `error`, or a `status` that is not a small number, makes
/// the item unreadable.
fn item_meta(item: &[u8]) -> Option<ItemMeta> {
    let outer = crate::members::members(item).ok()?;
    let [(_, inner)] = outer.as_slice() else {
        return None;
    };
    inner_meta(inner)
}

/// [`item_meta`] of the inner object itself (`{...,"status":201}`), for
/// a caller that has already split the item.
pub fn inner_meta(inner: &[u8]) -> Option<ItemMeta> {
    let mut reading = MetaReader::default();
    for (key, value) in crate::members::members(inner).ok()? {
        reading.member(&key, value);
    }
    reading.finish()
}

/// Reads an item's [`ItemMeta`] member by member, for a caller that walks
/// the inner object's members itself (to edit them in the same scan).
#[derive(Debug, Default)]
pub struct MetaReader {
    status: Option<u16>,
    error: bool,
    saw_status: bool,
    saw_error: bool,
    unreadable: bool,
}

impl MetaReader {
    /// Takes one member of the inner object into account.
    pub fn member(&mut self, key: &str, value: &[u8]) {
        match key {
            "status" if !std::mem::replace(&mut self.saw_status, true) => {
                match serde_json::from_slice::<Option<u16>>(value) {
                    Ok(status) => self.status = status,
                    Err(_) => self.unreadable = true,
                }
            }
            "error" if !std::mem::replace(&mut self.saw_error, true) => {
                self.error = value != b"null";
            }
            "status" | "error" => self.unreadable = true,
            _ => {}
        }
    }

    /// What was read: `None` when `status` or `error` is repeated or the
    /// status is not a small number.
    pub fn finish(self) -> Option<ItemMeta> {
        (!self.unreadable).then_some(ItemMeta {
            status: self.status,
            error: self.error,
        })
    }
}

/// The nested `status` of an item such as `{"index":{...,"status":201}}`.
pub fn item_status(item: &[u8]) -> Option<u16> {
    item_meta(item)?.status
}

/// Whether an item failed: `status` >= 300, an `error` member, or unreadable.
fn item_failed(item: &[u8]) -> bool {
    match item_meta(item) {
        Some(meta) => meta.error || meta.status.is_none_or(|s| s >= 300),
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

/// At most `max` bytes of `s`, cut at a character boundary.
fn clip_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
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
    // Names and ids echoed at most as long as OpenSearch allows them (255
    // and 512 bytes), so that refused items cannot make the answer grow
    // without bound.
    let index = index.map(|i| clip_bytes(i, 255));
    let id = id.map(|i| clip_bytes(i, 512));
    let reason = clip_bytes(reason, 4096);
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
