//! Reverse: responses from a placement are made to look like the logical
//! index answered — logical `_index` and `_id`, the injected field removed
//! from sources, fields and highlights, `_routing` not leaked. Every byte
//! that is not rewritten is copied verbatim.

use std::borrow::Cow;

use osproxy_rewrite::members::{edit_members, map_elements, Edit};
use osproxy_rewrite::source::strip_field;
use osproxy_rewrite::stream::StreamError;
use osproxy_rewrite::SourceError;

use super::Target;

/// Where a response came from, as its reversal needs it: a request's
/// [`Target`], or an owned copy for a response that streams after the
/// request's handler has returned.
pub(crate) trait Placed {
    fn logical(&self) -> &osproxy_control::LogicalIndex;
    fn partition(&self) -> &str;
    fn shared(&self) -> bool;
    fn physical_index(&self) -> &str;

    /// The physical id of the client's `logical` id: built from the
    /// partition's id template in a shared placement, itself elsewhere.
    fn physical_id(&self, logical: &str) -> String {
        if self.shared() {
            self.logical()
                .id_template
                .physical(self.partition(), logical)
        } else {
            logical.to_string()
        }
    }

    /// The client's id of a shared placement's `physical` one, when it was
    /// built for this partition.
    fn logical_id<'p>(&self, physical: &'p str) -> Option<&'p str> {
        self.logical()
            .id_template
            .logical(self.partition(), physical)
    }
}

impl Placed for Target<'_> {
    fn logical(&self) -> &osproxy_control::LogicalIndex {
        &self.logical
    }
    fn partition(&self) -> &str {
        self.partition.as_str()
    }
    fn shared(&self) -> bool {
        Target::shared(self)
    }
    fn physical_index(&self) -> &str {
        Target::physical_index(self)
    }
}

/// A [`Target`]'s names, owned.
#[derive(Clone)]
pub(crate) struct Names {
    logical: std::sync::Arc<osproxy_control::LogicalIndex>,
    partition: osproxy_core::PartitionId,
    placement: std::sync::Arc<osproxy_core::Placement>,
}

impl Names {
    pub(crate) fn of(t: &Target<'_>) -> Self {
        Names {
            logical: t.logical.clone(),
            partition: t.partition.clone(),
            placement: t.placement.clone(),
        }
    }
}

impl Placed for Names {
    fn logical(&self) -> &osproxy_control::LogicalIndex {
        &self.logical
    }
    fn partition(&self) -> &str {
        self.partition.as_str()
    }
    fn shared(&self) -> bool {
        self.placement.is_shared()
    }
    fn physical_index(&self) -> &str {
        self.placement.physical_index(&self.logical.name)
    }
}

/// Signs a cursor id the cluster handed out: `(kind, upstream id)`.
pub(crate) type Signer = Box<dyn FnMut(&str, String) -> String + Send>;

/// A search response's rewrites, applied as it streams
/// ([`osproxy_rewrite::stream`]): the same as [`search_response`] and, with
/// a signer, the cursor ids' wrapping.
pub(crate) struct Streamed {
    pub(crate) names: Names,
    /// Signs a cursor id the cluster handed out (`scroll` or `pit`).
    pub(crate) sign: Option<Signer>,
}

impl osproxy_rewrite::stream::Reverse for Streamed {
    fn whole(&self, key: &str) -> bool {
        // `error`: an `_msearch` answers a failed search in its place;
        // `profile` (dedicated placements) names the physical index in
        // its shard ids.
        matches!(key, "aggregations" | "_shards" | "error" | "profile")
            || (self.sign.is_some() && matches!(key, "_scroll_id" | "pit_id"))
    }

    fn member(&mut self, key: &str, value: &[u8]) -> Result<Vec<u8>, StreamError> {
        let t = &self.names;
        let out = match key {
            "hits" => hits(value, t),
            "hits.hits" => hit_list(value, t),
            "aggregations" => aggregations(value, t),
            "_shards" | "error" | "profile" => Ok(error(value, t, None)),
            "_scroll_id" | "pit_id" => {
                let kind = if key == "pit_id" { "pit" } else { "scroll" };
                Ok(
                    match (self.sign.as_mut(), serde_json::from_slice::<String>(value)) {
                        (Some(sign), Ok(upstream)) => json_string(&sign(kind, upstream)),
                        _ => value.to_vec(),
                    },
                )
            }
            _ => Ok(value.to_vec()),
        };
        out.map_err(|e| unreversible(key, &e))
    }

    fn hit(&mut self, hit: &[u8]) -> Result<Vec<u8>, StreamError> {
        document(hit, &self.names).map_err(|e| unreversible("hits.hits", &e))
    }
}

/// Why a streamed answer is broken off: a part of it did not scan as
/// OpenSearch writes it, and is never handed on unreversed.
fn unreversible(key: &str, e: &SourceError) -> StreamError {
    StreamError(format!(
        "the cluster's answer could not be reversed at `{key}` ({e}); it is not passed on as it came"
    ))
}

fn json_string(s: &str) -> Vec<u8> {
    // Names and ids are mostly plain: written between quotes as they are.
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        let mut out = Vec::with_capacity(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return out;
    }
    serde_json::to_vec(s).unwrap_or_else(|_| b"\"\"".to_vec())
}

/// `s` as it is written inside a JSON string (escaped, without quotes).
fn json_text(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or_default()
        .to_string()
}

/// JSON text with its `\uXXXX` escapes' hex digits upper-cased, as
/// Jackson writes them.
fn upper_hex_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("\\u") {
        // `\\u` is an escaped backslash followed by `u`, not an escape.
        let backslashes = rest[..at].bytes().rev().take_while(|b| *b == b'\\').count();
        out.push_str(&rest[..at + 2]);
        rest = &rest[at + 2..];
        if backslashes % 2 == 0 {
            let n = rest
                .bytes()
                .take(4)
                .take_while(u8::is_ascii_hexdigit)
                .count();
            out.push_str(&rest[..n].to_ascii_uppercase());
            rest = &rest[n..];
        }
    }
    out.push_str(rest);
    out
}

fn as_str(raw: &[u8]) -> Option<Cow<'_, str>> {
    // A string with no escape is its bytes between the quotes.
    if let Some(inner) = raw.strip_prefix(b"\"").and_then(|r| r.strip_suffix(b"\"")) {
        if !inner.contains(&b'\\') && !inner.contains(&b'"') {
            return std::str::from_utf8(inner).ok().map(Cow::Borrowed);
        }
    }
    serde_json::from_slice::<String>(raw).ok().map(Cow::Owned)
}

/// Applies member edits; a body that does not scan as an object is kept.
fn edit(raw: &[u8], f: impl FnMut(&str, &[u8]) -> Edit) -> Vec<u8> {
    edit_members(raw, f)
        .map(|c| c.into_owned())
        .unwrap_or_else(|_| raw.to_vec())
}

/// Applies member edits that may fail: the first failure, or the edited
/// body. A body that does not scan as an object is a failure (it is never
/// handed on as it came: it could hold any physical name).
fn try_edit(
    raw: &[u8],
    mut f: impl FnMut(&str, &[u8]) -> Result<Edit, SourceError>,
) -> Result<Vec<u8>, SourceError> {
    let mut failed = None;
    let out = edit_members(raw, |key, value| match f(key, value) {
        Ok(e) => e,
        Err(e) => {
            failed.get_or_insert(e);
            Edit::Keep
        }
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(out.into_owned()),
    }
}

/// `raw` with the injected field removed.
fn stripped(raw: &[u8], field: &str) -> Result<Edit, SourceError> {
    strip_field(raw, field).map(|s| Edit::Replace(s.into_owned()))
}

/// One document as OpenSearch returns it (get, write results, a hit);
/// an error when it, or a part of it that is rewritten, does not scan.
pub(crate) fn document(raw: &[u8], t: &impl Placed) -> Result<Vec<u8>, SourceError> {
    document_of(raw, t, None)
}

/// [`document`] for an answer about one known document: its physical id,
/// `(physical, logical)`, is replaced in the text of its replica failures.
pub(crate) fn document_of(
    raw: &[u8],
    t: &impl Placed,
    physical_id: Option<(&str, &str)>,
) -> Result<Vec<u8>, SourceError> {
    try_edit(raw, |key, value| {
        document_member(key, value, t, physical_id)
    })
}

/// A bulk item's inner object reversed as [`document`] does, in the same
/// scan that reads its `status` and whether it has an `error` (read as
/// [`osproxy_rewrite::bulk::inner_meta`] reads them: `None` when either is
/// repeated or the status is not a small number); an error's text is then
/// reversed as [`error`] does. A success holds no free text to reverse
/// (its `get._source` is the tenant's own).
pub(crate) fn bulk_item(
    raw: &[u8],
    t: &impl Placed,
    physical_id: Option<(&str, &str)>,
) -> (Vec<u8>, Option<osproxy_rewrite::bulk::ItemMeta>) {
    let mut reading = osproxy_rewrite::bulk::MetaReader::default();
    let scanned = try_edit(raw, |key, value| {
        reading.member(key, value);
        document_member(key, value, t, physical_id)
    });
    // Found by review: an inner object that does not scan was handed on
    // as it came; it is reversed as an error is, with no status.
    let Ok(doc) = scanned else {
        return (error(raw, t, physical_id), None);
    };
    let meta = reading.finish();
    let doc = if meta.is_none_or(|m| m.error) {
        error(&doc, t, physical_id)
    } else {
        doc
    };
    (doc, meta)
}

/// One member of a document; `physical_id`, when known, is replaced in
/// the text of a write's replica failures.
fn document_member(
    key: &str,
    value: &[u8],
    t: &impl Placed,
    physical_id: Option<(&str, &str)>,
) -> Result<Edit, SourceError> {
    let shared = t.shared();
    let field = t.logical().field.as_str();
    const INDEX: Word = word(b"_index");
    const ID: Word = word(b"_id");
    const ROUTING: Word = word(b"_routing");
    const SHARDS: Word = word(b"_shards");
    const SHARD: Word = word(b"_shard");
    const NODE: Word = word(b"_node");
    const SOURCE: Word = word(b"_source");
    const FIELDS: Word = word(b"fields");
    const GET: Word = word(b"get");
    Ok(match word(key.as_bytes()) {
        INDEX => Edit::Replace(json_string(&t.logical().name)),
        // An id that is not the partition's (a document written into the
        // shared index some other way) would name another partition: the
        // document is refused, not handed on with it.
        ID if shared => {
            let physical = as_str(value);
            match physical.as_deref().and_then(|p| t.logical_id(p)) {
                Some(logical) => Edit::Replace(json_string(logical)),
                None => {
                    return Err(SourceError::Foreign {
                        id: physical.map(Cow::into_owned).unwrap_or_default(),
                    })
                }
            }
        }
        ROUTING if shared => Edit::Drop,
        // A write's replica failures name the physical index (and its
        // uuid); a `_shards` without an array holds only counts.
        SHARDS if value.contains(&b'[') => Edit::Replace(error(value, t, physical_id)),
        // `[physical-index][shard]` and node ids (with `explain`).
        SHARD | NODE => Edit::Drop,
        SOURCE | FIELDS if shared => stripped(value, field)?,
        GET => Edit::Replace(document(value, t)?),
        _ if shared && key == "highlight" => stripped(value, field)?,
        _ if key == "inner_hits" => Edit::Replace(try_edit(value, |_, named| {
            Ok(Edit::Replace(search_response(named, t)?))
        })?),
        _ => Edit::Keep,
    })
}

/// A key of up to 8 bytes as one word, with its length; a longer one as its
/// length alone. A hit's members are told apart by integer compares: a
/// `memcmp` call per compared name cost more than the rest of the hit's
/// reversal (found by profiling).
#[derive(PartialEq, Eq)]
struct Word(usize, u64);

const fn word(key: &[u8]) -> Word {
    if key.len() > 8 {
        return Word(key.len(), 0);
    }
    let mut w = [0u8; 8];
    let mut i = 0;
    while i < key.len() {
        w[i] = key[i];
        i += 1;
    }
    Word(key.len(), u64::from_le_bytes(w))
}

/// A search (or inner-hits) response: every hit under `hits.hits` reversed,
/// and so is every `top_hits` result among the aggregations; an error when
/// a hit does not scan.
pub(crate) fn search_response(raw: &[u8], t: &impl Placed) -> Result<Vec<u8>, SourceError> {
    try_edit(raw, |key, value| {
        Ok(match key {
            "hits" => Edit::Replace(hits(value, t)?),
            "aggregations" => Edit::Replace(aggregations(value, t)?),
            // Shard failures name the physical index; so do a profile's
            // shard ids.
            "_shards" | "profile" => Edit::Replace(error(value, t, None)),
            _ => Edit::Keep,
        })
    })
}

/// One search of an `_msearch` answer read whole, reversed by the rules
/// its streamed twin applies ([`Streamed`]): the same bytes either way.
pub(crate) fn one_search(raw: &[u8], names: Names) -> Result<Vec<u8>, StreamError> {
    let mut s = osproxy_rewrite::stream::SearchStream::new(
        Streamed { names, sign: None },
        osproxy_upstream::MAX_BUFFERED,
    );
    let mut out = Vec::with_capacity(raw.len());
    s.feed(raw, &mut out)?;
    s.finish(&mut out)?;
    Ok(out)
}

/// An answer whose only physical names are in its `_shards` failures (a
/// count).
pub(crate) fn shards_of(raw: &[u8], t: &impl Placed) -> Vec<u8> {
    edit(raw, |key, value| match key {
        "_shards" => Edit::Replace(error(value, t, None)),
        _ => Edit::Keep,
    })
}

/// Whether an aggregation result is a `top_hits` one: its `hits` member is
/// an object whose own `hits` is an array.
fn is_top_hits(raw: &[u8]) -> bool {
    let mut found = false;
    let _ = edit_members(raw, |key, value| {
        if key == "hits" {
            let _ = edit_members(value, |k, v| {
                found |= k == "hits" && v.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
                Edit::Keep
            });
        }
        Edit::Keep
    });
    found
}

/// The `hits` level: `{"total":..,"hits":[hit, ...]}`.
fn hits(raw: &[u8], t: &impl Placed) -> Result<Vec<u8>, SourceError> {
    try_edit(raw, |k, v| match k {
        "hits" => hit_list(v, t).map(Edit::Replace),
        _ => Ok(Edit::Keep),
    })
}

/// `hits.hits`: an array of documents, each reversed.
fn hit_list(raw: &[u8], t: &impl Placed) -> Result<Vec<u8>, SourceError> {
    map_elements(raw, |hit| document(hit, t))
}

/// Aggregation results, walked to any depth (buckets, sub-aggregations):
/// a result shaped like a `top_hits` one (`{"hits":{"hits":[...]}}`) has
/// its hits reversed, whatever the aggregations are named.
fn aggregations(raw: &[u8], t: &impl Placed) -> Result<Vec<u8>, SourceError> {
    match raw.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') if is_top_hits(raw) => try_edit(raw, |key, value| {
            Ok(Edit::Replace(match key {
                "hits" => hits(value, t)?,
                _ => aggregations(value, t)?,
            }))
        }),
        Some(b'{') => try_edit(raw, |_, value| Ok(Edit::Replace(aggregations(value, t)?))),
        Some(b'[') => map_elements(raw, |el| aggregations(el, t)),
        _ => Ok(raw.to_vec()),
    }
}

/// A by-query answer: its `failures` name documents by physical index and
/// id, in their `id` and in their text (`[acme:1]: version conflict`),
/// translated back; the rest as an error body.
pub(crate) fn by_query(raw: &[u8], t: &impl Placed) -> Vec<u8> {
    let failure = |f: &[u8]| {
        let mut ids = None;
        let out = edit(f, |k, v| match k {
            "id" if t.shared() => {
                let physical = as_str(v);
                match physical.as_deref().and_then(|p| t.logical_id(p)) {
                    Some(l) => {
                        let edit = Edit::Replace(json_string(l));
                        ids = physical.as_deref().map(|p| (p.to_string(), l.to_string()));
                        edit
                    }
                    None => Edit::Keep,
                }
            }
            _ => Edit::Keep,
        });
        let ids = ids.as_ref().map(|(p, l)| (p.as_str(), l.as_str()));
        Ok(error(&out, t, ids))
    };
    let out = edit(raw, |key, value| match key {
        "failures" => {
            Edit::Replace(map_elements(value, failure).unwrap_or_else(|_| value.to_vec()))
        }
        _ => Edit::Keep,
    });
    error(&out, t, None)
}

/// An error body: physical names replaced by logical ones, any
/// `stack_trace` removed (a Java trace names physical indices with their
/// uuids) and, in a shared placement, the physical index's `index_uuid`
/// removed (every tenant of the index would see the same one: proof they
/// share it).
pub(crate) fn error(raw: &[u8], t: &impl Placed, physical_id: Option<(&str, &str)>) -> Vec<u8> {
    let mut out = scrub(raw, t.shared(), 0);
    out = replace_all(
        out,
        t.physical_index().as_bytes(),
        t.logical().name.as_bytes(),
    );
    if let Some((physical, logical)) = physical_id {
        out = replace_all(out, physical.as_bytes(), logical.as_bytes());
        // Found by review: in JSON text an id holding `"`, `\` or a
        // control character is written escaped (`acme:a\"b`); OpenSearch
        // (Jackson) writes `\u001F` where serde writes `\u001f`.
        let escaped = json_text(physical);
        if escaped != physical {
            out = replace_all(out, escaped.as_bytes(), json_text(logical).as_bytes());
            let upper = upper_hex_escapes(&escaped);
            if upper != escaped {
                out = replace_all(
                    out,
                    upper.as_bytes(),
                    upper_hex_escapes(&json_text(logical)).as_bytes(),
                );
            }
        }
    }
    if t.shared() {
        out = without_uuid_in_text(out, t.logical().name.as_bytes());
    }
    out
}

/// `[<index>/<uuid>]` in free text (`index [orders/p5cm...] already
/// exists`) as `[<index>]`: the uuid of a shared index is the same for all
/// its tenants.
fn without_uuid_in_text(hay: Vec<u8>, index: &[u8]) -> Vec<u8> {
    const UUID: usize = 22;
    let mut opening = Vec::with_capacity(index.len() + 1);
    opening.push(b'[');
    opening.extend_from_slice(index);
    let finder = memchr::memmem::Finder::new(&opening);
    // Most bodies (every successful bulk item) name no index in brackets:
    // they are handed back as they are.
    if finder.find(&hay).is_none() {
        return hay;
    }
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while let Some(at) = finder.find(&hay[i..]) {
        let start = i + at;
        let rest = &hay[start..];
        let after = opening.len();
        let uuid = rest.get(after + 1..after + 1 + UUID);
        if rest.get(after) == Some(&b'/')
            && rest.get(after + 1 + UUID) == Some(&b']')
            && uuid.is_some_and(|u| {
                u.iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
            })
        {
            out.extend_from_slice(&hay[i..start + after]);
            out.push(b']');
            i = start + after + 2 + UUID;
        } else {
            // Searched again from the next byte, as a name holding `[`
            // may begin inside this one.
            out.extend_from_slice(&hay[i..=start]);
            i = start + 1;
        }
    }
    out.extend_from_slice(&hay[i..]);
    out
}

/// `raw` without any `stack_trace` member and, with `uuids`, any
/// `index_uuid` or `node` member, at any depth (to 32 levels; OpenSearch's error
/// bodies are a few deep).
fn scrub(raw: &[u8], uuids: bool, depth: usize) -> Vec<u8> {
    // A body that cannot hold such a member (every successful bulk item)
    // is not walked. A key may be written with escapes (`stack\u005ftrace`):
    // a body with any escape is walked.
    use memchr::memmem::Finder;
    use std::sync::LazyLock;
    static ESCAPE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\\u"));
    static TRACE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"stack_trace"));
    static UUID: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"index_uuid"));
    static NODE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"node\""));
    if depth == 0
        && ESCAPE.find(raw).is_none()
        && TRACE.find(raw).is_none()
        && !(uuids && (UUID.find(raw).is_some() || NODE.find(raw).is_some()))
    {
        return raw.to_vec();
    }
    if depth > 32 {
        return raw.to_vec();
    }
    let nested = |v: &[u8]| match v.first() {
        Some(b'{') => Some(scrub(v, uuids, depth + 1)),
        Some(b'[') => map_elements(v, |e| Ok(scrub(e, uuids, depth + 1))).ok(),
        _ => None,
    };
    edit(raw, |key, value| match key {
        "stack_trace" => Edit::Drop,
        // A shard failure's `node` names the node holding the shared
        // index's shard (found by review), as a hit's `_node` does.
        "index_uuid" | "node" if uuids => Edit::Drop,
        _ => nested(value).map_or(Edit::Keep, Edit::Replace),
    })
}

/// Every `from` in `hay` replaced by `to`; `hay` itself when there is none.
fn replace_all(hay: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
    if from.is_empty() || from == to {
        return hay;
    }
    let finder = memchr::memmem::Finder::new(from);
    let mut found = finder.find_iter(&hay).peekable();
    if found.peek().is_none() {
        return hay;
    }
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    for at in found {
        // Occurrences do not overlap: one inside a replaced one is skipped,
        // as the scan from the left would.
        if at < i {
            continue;
        }
        out.extend_from_slice(&hay[i..at]);
        out.extend_from_slice(to);
        i = at + from.len();
    }
    out.extend_from_slice(&hay[i..]);
    out
}

/// Whether a body is an OpenSearch error (`{"error": ...}`).
pub(crate) fn is_error(raw: &[u8]) -> bool {
    let mut found = false;
    let _ = edit_members(raw, |key, _| {
        found |= key == "error";
        Edit::Keep
    });
    found
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use osproxy_rewrite::stream::SearchStream;

    use super::*;

    /// `orders` of partition `acme`, in `phys-shared` or `phys-acme`.
    pub(crate) fn names(shared: bool) -> Names {
        let placement = Arc::new(if shared {
            osproxy_core::Placement::Shared {
                cluster: "main".into(),
                index: "phys-shared".into(),
            }
        } else {
            osproxy_core::Placement::Index {
                cluster: "main".into(),
                index: "phys-acme".into(),
            }
        });
        Names {
            logical: Arc::new(osproxy_control::LogicalIndex {
                name: "orders".into(),
                partition: osproxy_control::PartitionRule::Principal,
                id_template: osproxy_rewrite::IdTemplate::parse("{partition}:{id}").unwrap(),
                field: "_tenant".into(),
                default: placement.clone(),
                allow_scripts: false,
                mappings: None,
                settings: None,
                epoch: 0,
            }),
            partition: osproxy_core::PartitionId::new("acme").unwrap(),
            placement,
        }
    }

    /// What the whole-answer path gives: the reversal, then the cursor
    /// ids' wrapping (as `cursors::wrap_response` does it).
    fn whole(raw: &[u8], t: &Names) -> Vec<u8> {
        let out = search_response(raw, t).unwrap();
        edit(&out, |k, v| {
            match (k, serde_json::from_slice::<String>(v)) {
                ("_scroll_id" | "pit_id", Ok(id)) => {
                    Edit::Replace(json_string(&format!("S({id})")))
                }
                _ => Edit::Keep,
            }
        })
    }

    fn streamed(raw: &[u8], t: Names, chunk: usize) -> Vec<u8> {
        let reverse = Streamed {
            names: t,
            sign: Some(Box::new(|_: &str, id: String| format!("S({id})"))),
        };
        let mut s = SearchStream::new(reverse, 1 << 20);
        let mut out = Vec::new();
        for c in raw.chunks(chunk) {
            s.feed(c, &mut out).unwrap();
        }
        s.finish(&mut out).unwrap();
        out
    }

    /// The streamed reversal is byte for byte the whole-answer one, on
    /// answers shaped as OpenSearch shapes them (compact and pretty), split
    /// anywhere.
    #[test]
    fn a_streamed_answer_is_reversed_as_the_whole_one_is() {
        let answers = [
            r#"{"_scroll_id":"abc","took":3,"timed_out":false,"_shards":{"total":1,"successful":1,"skipped":0,"failed":1,"failures":[{"shard":0,"index":"phys-shared","reason":{"type":"x","index_uuid":"u1","index":"phys-shared"}}]},"hits":{"total":{"value":2,"relation":"eq"},"max_score":1.0,"hits":[{"_index":"phys-shared","_id":"acme:1","_score":1.0,"_routing":"acme","_source":{"_tenant":"acme","title":"a \"}]["},"highlight":{"_tenant":["<em>acme</em>"],"title":["a"]},"inner_hits":{"c":{"hits":{"total":{"value":1},"hits":[{"_index":"phys-shared","_id":"acme:2","_source":{"_tenant":"acme"}}]}}}},{"_index":"phys-shared","_id":"acme:3","_score":0.5,"_routing":"acme","_source":{"_tenant":"acme","n":[1,2,{"k":null}]},"fields":{"_tenant":["acme"]}}]},"aggregations":{"top":{"hits":{"total":{"value":1},"hits":[{"_index":"phys-shared","_id":"acme:9","_source":{"_tenant":"acme"}}]}},"by":{"buckets":[{"key":"x","doc_count":1,"t":{"hits":{"hits":[{"_id":"acme:7","_index":"phys-shared"}]}}}]}},"pit_id":"p1"}"#,
            "{\n  \"took\" : 1,\n  \"hits\" : {\n    \"total\" : { \"value\" : 1 },\n    \"hits\" : [\n      {\n        \"_index\" : \"phys-shared\",\n        \"_id\" : \"acme:1\",\n        \"_source\" : { \"_tenant\" : \"acme\", \"t\" : 1 }\n      }\n    ]\n  }\n}\n",
            r#"{"took":1,"hits":{"total":{"value":0},"max_score":null,"hits":[]}}"#,
            r#"{"took":2,"profile":{"shards":[{"id":"[n1][phys-acme][0]","searches":[]}]},"hits":{"hits":[]}}"#,
            r#"{"count":1}"#,
        ];
        for raw in answers {
            for shared in [true, false] {
                let want = whole(raw.as_bytes(), &names(shared));
                for chunk in [1, 2, 3, 5, 8, 13, 64, 4096] {
                    let got = streamed(raw.as_bytes(), names(shared), chunk);
                    assert_eq!(
                        String::from_utf8_lossy(&got),
                        String::from_utf8_lossy(&want),
                        "shared {shared}, chunks of {chunk}"
                    );
                }
                if shared {
                    let text = String::from_utf8(want).unwrap();
                    assert!(!text.contains("phys-shared"), "{text}");
                    assert!(!text.contains("acme:"), "{text}");
                    assert!(!text.contains("_tenant"), "{text}");
                }
            }
        }
    }

    /// A profile's shard ids name the physical index (a dedicated
    /// placement allows `profile`); both paths write the logical one.
    #[test]
    fn a_profile_names_the_logical_index() {
        let raw = br#"{"profile":{"shards":[{"id":"[n1][phys-acme][0]"}]},"hits":{"hits":[]}}"#;
        let got = String::from_utf8(streamed(raw, names(false), 3)).unwrap();
        assert!(
            got.contains("[n1][orders][0]") && !got.contains("phys-acme"),
            "{got}"
        );
    }

    /// What OpenSearch never answers (a hit that is not an object, a
    /// source that does not scan, `hits.hits` not an array, a top-hits
    /// result whose hit does not scan) is refused on both paths, never
    /// handed on with its physical id and partition field.
    #[test]
    fn an_answer_that_does_not_scan_is_refused_not_passed_on() {
        for raw in [
            r#"{"hits":{"hits":[{"_index":"phys-shared","_id":"acme:1"} ]}}"#.replace("} ]", "}x]"),
            r#"{"hits":{"hits":[{"_id":"acme:1","_source":{"_tenant":"acme" "t":1}}]}}"#.to_string(),
            r#"{"hits":{"hits":{"odd":{"_id":"acme:1","_source":{"_tenant":"acme"}}}}}"#.to_string(),
            r#"{"hits":"acme:1"}"#.to_string(),
            r#"{"hits":{"hits":[]},"aggregations":{"t":{"hits":{"hits":[{"_id":"acme:1","_source":{"_tenant":"acme",}}]}}}}"#.to_string(),
            r#"{"hits":{"hits":[{"_id":"acme:1","inner_hits":{"c":{"hits":{"hits":[{"_id":"acme:2" "x":1}]}}}}]}}"#.to_string(),
        ] {
            assert!(search_response(raw.as_bytes(), &names(true)).is_err(), "{raw}");
            for chunk in [1, 4, 4096] {
                let reverse = Streamed {
                    names: names(true),
                    sign: None,
                };
                let mut s = SearchStream::new(reverse, 1 << 20);
                let mut out = Vec::new();
                let r = raw
                    .as_bytes()
                    .chunks(chunk)
                    .try_for_each(|c| s.feed(c, &mut out))
                    .and_then(|()| s.finish(&mut out));
                assert!(r.is_err(), "{raw} in chunks of {chunk}");
                let text = String::from_utf8_lossy(&out);
                assert!(!text.contains("acme:") && !text.contains("_tenant"), "{text}");
            }
        }
        assert!(document(br#"{"_id":"acme:1" "found":true}"#, &names(true)).is_err());
        // A document whose id is not the partition's (written into the
        // shared index some other way) is refused, not handed on.
        assert_eq!(
            document(
                br#"{"_id":"globex:1","_source":{"_tenant":"acme"}}"#,
                &names(true)
            ),
            Err(SourceError::Foreign {
                id: "globex:1".into()
            })
        );
        assert!(document(br#"{"_id":"globex:1"}"#, &names(false)).is_ok());
        assert!(document(br#"{"_id":"acme:1","_source":[1]}"#, &names(true)).is_err());
    }

    /// Found by review: a shard failure's node id, a by-query failure's
    /// text and an id escaped as Jackson escapes it named the physical
    /// document or the shared index's node.
    #[test]
    fn failures_name_no_node_and_the_logical_id() {
        let t = names(true);
        let failed = br#"{"error":{"type":"search_phase_execution_exception","failed_shards":[{"shard":0,"index":"phys-shared","node":"_bPqF0uxRcC5e","reason":{"type":"x"}}]},"status":400}"#;
        let out = String::from_utf8(error(failed, &t, None)).unwrap();
        assert!(
            !out.contains("_bPqF0") && !out.contains("phys-shared"),
            "{out}"
        );
        assert!(error(failed, &names(false), None)
            .windows(6)
            .any(|w| w == b"_bPqF0"));
        let byq = br#"{"total":2,"failures":[{"index":"phys-shared","id":"acme:1","cause":{"type":"version_conflict_engine_exception","reason":"[acme:1]: version conflict","index_uuid":"u","index":"phys-shared"},"status":409}]}"#;
        let out = String::from_utf8(by_query(byq, &t)).unwrap();
        assert!(
            !out.contains("acme:") && !out.contains("index_uuid"),
            "{out}"
        );
        assert!(
            out.contains(r#""id":"1""#) && out.contains(r#""reason":"[1]: version conflict""#),
            "{out}"
        );
        let jackson = br#"{"error":{"reason":"[acme:a\u001Fb]: version conflict"}}"#;
        let out =
            String::from_utf8(error(jackson, &t, Some(("acme:a\u{1f}b", "a\u{1f}b")))).unwrap();
        assert_eq!(
            out,
            r#"{"error":{"reason":"[a\u001Fb]: version conflict"}}"#
        );
        assert_eq!(
            upper_hex_escapes(r"a\u00ffb\\u00ff\u00é"),
            r"a\u00FFb\\u00ff\u00é"
        );
    }

    #[test]
    fn a_counts_shard_failures_name_the_logical_index() {
        let raw = br#"{"count":3,"_shards":{"total":2,"successful":1,"failed":1,"failures":[{"shard":1,"index":"phys-shared","reason":{"type":"x","index_uuid":"u1","index":"phys-shared"}}]}}"#;
        let out = String::from_utf8(shards_of(raw, &names(true))).unwrap();
        assert!(
            !out.contains("phys-shared") && !out.contains("index_uuid"),
            "{out}"
        );
        assert!(
            out.contains(r#""count":3"#) && out.contains(r#""index":"orders""#),
            "{out}"
        );
    }

    /// The scan the searched versions replaced: byte by byte from the left.
    fn replace_naive(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < hay.len() {
            if !from.is_empty() && hay[i..].starts_with(from) {
                out.extend_from_slice(to);
                i += from.len();
            } else {
                out.push(hay[i]);
                i += 1;
            }
        }
        out
    }

    fn without_uuid_naive(hay: &[u8], index: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < hay.len() {
            let rest = &hay[i..];
            if rest[0] == b'[' && rest[1..].starts_with(index) {
                let after = 1 + index.len();
                let uuid = rest.get(after + 1..after + 23);
                if rest.get(after) == Some(&b'/')
                    && rest.get(after + 23) == Some(&b']')
                    && uuid.is_some_and(|u| {
                        u.iter()
                            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
                    })
                {
                    out.extend_from_slice(&rest[..after]);
                    out.push(b']');
                    i += after + 24;
                    continue;
                }
            }
            out.push(hay[i]);
            i += 1;
        }
        out
    }

    #[test]
    fn searched_replacements_match_the_byte_by_byte_scan() {
        let uuid = "p5cmAbCdEfGhIjKlMnOp_-";
        assert_eq!(uuid.len(), 22);
        let hays = [
            String::new(),
            "no names here".to_string(),
            "phys".to_string(),
            "physphys-sharedphys-shared".to_string(),
            "aaaa".to_string(),
            format!("index [orders/{uuid}] exists, [orders/{uuid}] again"),
            format!("[orders/{uuid}"),
            format!("[orders/{uuid}x] [orders/short] [[orders/{uuid}]"),
            format!("[orders/{uuid}]"),
            format!("[a[a[a/{uuid}]"),
            "[orders".to_string(),
        ];
        for hay in &hays {
            for (from, to) in [
                ("phys-shared", "orders"),
                ("aa", "b"),
                ("a", "aa"),
                ("orders", "orders"),
            ] {
                assert_eq!(
                    replace_all(hay.as_bytes().to_vec(), from.as_bytes(), to.as_bytes()),
                    replace_naive(hay.as_bytes(), from.as_bytes(), to.as_bytes()),
                    "{hay:?} {from:?} -> {to:?}"
                );
            }
            for index in ["orders", "a[a", "a"] {
                assert_eq!(
                    without_uuid_in_text(hay.as_bytes().to_vec(), index.as_bytes()),
                    without_uuid_naive(hay.as_bytes(), index.as_bytes()),
                    "{hay:?} {index:?}"
                );
            }
        }
    }

    #[test]
    fn a_body_with_an_escaped_key_is_still_scrubbed() {
        let raw = br#"{"error":{"stack\u005ftrace":"at org...","index_uuid":"u1","reason":"x"}}"#;
        let out = String::from_utf8(error(raw, &names(true), None)).unwrap();
        assert!(!out.contains("org...") && !out.contains("u1"), "{out}");
        let ok = br#"{"_index":"phys-shared","result":"created","status":201}"#;
        assert_eq!(
            error(ok, &names(true), None),
            br#"{"_index":"orders","result":"created","status":201}"#.to_vec()
        );
    }

    #[test]
    fn a_bulk_item_reads_its_status_as_inner_meta_does_in_the_same_scan() {
        let t = names(true);
        for raw in [
            &br#"{"_index":"phys-shared","_id":"acme:1","status":201}"#[..],
            br#"{"_index":"phys-shared","_id":"acme:1","status":409,"error":{"type":"x","reason":"[acme:1] in [phys-shared/p5cmAbCdEfGhIjKlMnOp_-]","index_uuid":"u"}}"#,
            br#"{"status":200,"status":201}"#,
            br#"{"status":"x"}"#,
            br#"{"error":null,"status":200}"#,
            br#"{"error":{},"error":{}}"#,
            br#"{"_shards":{"total":2,"successful":1,"failed":1,"failures":[{"_index":"phys-shared","reason":{"reason":"in document with id 'acme:1'","index_uuid":"u"}}]},"status":201}"#,
        ] {
            let (out, meta) = bulk_item(raw, &t, Some(("acme:1", "1")));
            assert_eq!(meta, osproxy_rewrite::bulk::inner_meta(raw), "{raw:?}");
            let text = String::from_utf8(out).unwrap();
            assert!(!text.contains("phys-shared") && !text.contains("acme:1"), "{text}");
            assert!(!text.contains("index_uuid") && !text.contains("p5cm"), "{text}");
        }
    }

    #[test]
    fn an_item_that_does_not_scan_and_an_escaped_id_are_still_reversed() {
        let t = names(true);
        let (out, meta) = bulk_item(
            br#"{"_index":"phys-shared" "_id":"acme:1"}"#,
            &t,
            Some(("acme:1", "1")),
        );
        assert_eq!(meta, None);
        let text = String::from_utf8(out).unwrap();
        assert!(
            !text.contains("phys-shared") && !text.contains("acme:1"),
            "{text}"
        );
        let raw = br#"{"status":409,"error":{"type":"version_conflict_engine_exception","reason":"[acme:a\"b]: version conflict"}}"#;
        let (out, _) = bulk_item(raw, &t, Some(("acme:a\"b", "a\"b")));
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("acme:"), "{text}");
        assert!(text.contains(r#"[a\"b]: version conflict"#), "{text}");
    }
}
