//! Reverse: responses from a placement are made to look like the logical
//! index answered — logical `_index` and `_id`, the injected field removed
//! from sources, fields and highlights, `_routing` not leaked. Every byte
//! that is not rewritten is copied verbatim.

use osproxy_rewrite::members::{edit_members, map_elements, Edit};
use osproxy_rewrite::source::strip_field;

use super::Target;

fn json_string(s: &str) -> Vec<u8> {
    serde_json::Value::from(s).to_string().into_bytes()
}

fn as_str(raw: &[u8]) -> Option<String> {
    serde_json::from_slice::<String>(raw).ok()
}

/// Applies member edits; a body that does not scan as an object is kept.
fn edit(raw: &[u8], f: impl FnMut(&str, &[u8]) -> Edit) -> Vec<u8> {
    edit_members(raw, f)
        .map(|c| c.into_owned())
        .unwrap_or_else(|_| raw.to_vec())
}

/// `raw` with the injected field removed (kept as is if it does not scan).
fn stripped(raw: &[u8], field: &str) -> Edit {
    match strip_field(raw, field) {
        Ok(s) => Edit::Replace(s.into_owned()),
        Err(_) => Edit::Keep,
    }
}

/// One document as OpenSearch returns it (get, write results, a hit).
pub(crate) fn document(raw: &[u8], t: &Target<'_>) -> Vec<u8> {
    let shared = t.shared();
    let field = t.logical.field.as_str();
    edit(raw, |key, value| match key {
        "_index" => Edit::Replace(json_string(&t.logical.name)),
        "_id" if shared => {
            let physical = as_str(value);
            match physical
                .as_deref()
                .and_then(|p| t.logical.id_template.logical(t.partition.as_str(), p))
            {
                Some(logical) => Edit::Replace(json_string(logical)),
                None => Edit::Keep,
            }
        }
        "_routing" if shared => Edit::Drop,
        // `[physical-index][shard]` and node ids (with `explain`).
        "_shard" | "_node" => Edit::Drop,
        "_source" | "fields" | "highlight" if shared => stripped(value, field),
        "get" => Edit::Replace(document(value, t)),
        "inner_hits" => Edit::Replace(edit(value, |_, named| {
            Edit::Replace(search_response(named, t))
        })),
        _ => Edit::Keep,
    })
}

/// A search (or inner-hits) response: every hit under `hits.hits` reversed,
/// and so is every `top_hits` result among the aggregations.
pub(crate) fn search_response(raw: &[u8], t: &Target<'_>) -> Vec<u8> {
    edit(raw, |key, value| match key {
        "hits" => Edit::Replace(hits(value, t)),
        "aggregations" => Edit::Replace(aggregations(value, t)),
        // Shard failures name the physical index.
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
fn hits(raw: &[u8], t: &Target<'_>) -> Vec<u8> {
    edit(raw, |k, v| match k {
        "hits" => Edit::Replace(
            map_elements(v, |hit| Ok(document(hit, t))).unwrap_or_else(|_| aggregations(v, t)),
        ),
        _ => Edit::Keep,
    })
}

/// Aggregation results, walked to any depth (buckets, sub-aggregations):
/// a result shaped like a `top_hits` one (`{"hits":{"hits":[...]}}`) has
/// its hits reversed, whatever the aggregations are named.
fn aggregations(raw: &[u8], t: &Target<'_>) -> Vec<u8> {
    match raw.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') if is_top_hits(raw) => edit(raw, |key, value| match key {
            "hits" => Edit::Replace(hits(value, t)),
            _ => Edit::Replace(aggregations(value, t)),
        }),
        Some(b'{') => edit(raw, |_, value| Edit::Replace(aggregations(value, t))),
        Some(b'[') => {
            map_elements(raw, |el| Ok(aggregations(el, t))).unwrap_or_else(|_| raw.to_vec())
        }
        _ => raw.to_vec(),
    }
}

/// A by-query answer: its `failures` name documents by physical index and
/// id, translated back; the rest as an error body.
pub(crate) fn by_query(raw: &[u8], t: &Target<'_>) -> Vec<u8> {
    let out = edit(raw, |key, value| match key {
        "failures" => Edit::Replace(
            map_elements(value, |f| {
                Ok(edit(f, |k, v| match k {
                    "id" if t.shared() => as_str(v)
                        .as_deref()
                        .and_then(|p| t.logical.id_template.logical(t.partition.as_str(), p))
                        .map_or(Edit::Keep, |l| Edit::Replace(json_string(l))),
                    _ => Edit::Keep,
                }))
            })
            .unwrap_or_else(|_| value.to_vec()),
        ),
        _ => Edit::Keep,
    });
    error(&out, t, None)
}

/// An error body: physical names replaced by logical ones and, in a
/// shared placement, the physical index's `index_uuid` removed (every
/// tenant of the index would see the same one: proof they share it).
pub(crate) fn error(raw: &[u8], t: &Target<'_>, physical_id: Option<(&str, &str)>) -> Vec<u8> {
    let unshared;
    let raw = if t.shared() {
        unshared = without_index_uuid(raw, 0);
        &unshared[..]
    } else {
        raw
    };
    let mut out = replace_all(
        raw,
        t.physical_index().as_bytes(),
        t.logical.name.as_bytes(),
    );
    if let Some((physical, logical)) = physical_id {
        if physical != logical {
            out = replace_all(&out, physical.as_bytes(), logical.as_bytes());
        }
    }
    out
}

/// `raw` without any `index_uuid` member, at any depth (to 32 levels;
/// OpenSearch's error bodies are a few deep).
fn without_index_uuid(raw: &[u8], depth: usize) -> Vec<u8> {
    if depth > 32 {
        return raw.to_vec();
    }
    let nested = |v: &[u8]| match v.first() {
        Some(b'{') => Some(without_index_uuid(v, depth + 1)),
        Some(b'[') => map_elements(v, |e| Ok(without_index_uuid(e, depth + 1))).ok(),
        _ => None,
    };
    edit(raw, |key, value| match key {
        "index_uuid" => Edit::Drop,
        _ => nested(value).map_or(Edit::Keep, Edit::Replace),
    })
}

fn replace_all(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    if from.is_empty() || from == to {
        return hay.to_vec();
    }
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
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
