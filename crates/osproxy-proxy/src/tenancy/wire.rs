//! What goes in and out of a logical index on the wire: bodies read with a
//! bound and checked as strict JSON, media types and encodings, and the
//! JSON responses osproxy answers with.

use bytes::Bytes;
use http::{HeaderMap, Response};
use osproxy_core::{ErrorCode, ProxyError};

use crate::body::ResponseBody;

/// What a parsed JSON value costs per value it holds (a tree node, its
/// key and its allocation, on average and generously), charged to the
/// process-wide budget before a body is parsed: a small body can hold
/// millions of values (`[0,0,0,...]`, two bytes each).
pub(crate) const PARSE_COST_PER_VALUE: u64 = 256;

/// A JSON request body read whole, checked strict, with the budget charge
/// for the tree its parse builds (held while this is).
pub(crate) struct JsonBody {
    bytes: Bytes,
    _parse: osproxy_upstream::budget::Charge,
}

impl std::ops::Deref for JsonBody {
    type Target = Bytes;
    fn deref(&self) -> &Bytes {
        &self.bytes
    }
}

impl JsonBody {
    /// The bytes, with the parse's charge given back (no tree is built).
    pub(crate) fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

/// Reads a JSON request body whole (bounded) and checks it is strict JSON
/// (see [`strict_body`]); the tree a parse of it would build is charged to
/// the process-wide budget (503 `overloaded` past it).
pub(crate) async fn read_json(body: osproxy_upstream::ClientBody) -> Result<JsonBody, ProxyError> {
    let bytes = body.read_whole().await?;
    crate::limits::body_read(bytes.len());
    let values = strict_values(&bytes)?;
    let mut parse = osproxy_upstream::budget::Charge::default();
    parse.set((values as u64).saturating_mul(PARSE_COST_PER_VALUE))?;
    Ok(JsonBody {
        bytes,
        _parse: parse,
    })
}

/// [`strict_body`], returning how many values the body holds.
pub(crate) fn strict_values(bytes: &[u8]) -> Result<usize, ProxyError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(0);
    }
    osproxy_rewrite::strict::check_counting(bytes).map_err(|e| {
        ProxyError::new(
            ErrorCode::BadRequest,
            format!("the request body is refused: {e}; send standard JSON"),
        )
    })
}

/// Refuses a body that is not strict JSON (comments, a name twice, trailing
/// data, ...): OpenSearch's lenient parser could read it differently from
/// osproxy. An empty (or all-blank) body passes: it means "no body".
pub(crate) fn strict_body(bytes: &[u8]) -> Result<(), ProxyError> {
    strict_values(bytes).map(|_| ())
}

/// A 200 JSON response osproxy assembled itself.
pub(crate) fn json_ok(body: Vec<u8>) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(Bytes::from(body)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    resp
}

/// A JSON response with the upstream's status.
pub(crate) fn json_response(parts: http::response::Parts, body: Vec<u8>) -> Response<ResponseBody> {
    let status = if parts.status.is_server_error() && client_mistake(&body) {
        http::StatusCode::BAD_REQUEST
    } else {
        parts.status
    };
    with_head(&parts, status, ResponseBody::full(Bytes::from(body)))
}

/// A successful JSON answer that streams (a search reversed as it comes).
pub(crate) fn json_stream_response(
    parts: http::response::Parts,
    body: ResponseBody,
) -> Response<ResponseBody> {
    with_head(&parts, parts.status, body)
}

fn with_head(
    parts: &http::response::Parts,
    status: http::StatusCode,
    body: ResponseBody,
) -> Response<ResponseBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    for name in ["content-type", "warning", "x-opaque-id"] {
        if let Some(v) = parts.headers.get(name) {
            resp.headers_mut().insert(name, v.clone());
        }
    }
    resp
}

/// Whether an upstream 5xx error is a client's mistake all the same: every
/// root cause is a parse or argument error (OpenSearch wraps some of those,
/// such as `slice` outside a cursor, in a 500 of the search phase). Such an
/// answer is the client's to fix, so it is a 400, and a client library does
/// not retry it.
fn client_mistake(body: &[u8]) -> bool {
    const CLIENT: [&str; 8] = [
        "illegal_argument_exception",
        "query_shard_exception",
        "parsing_exception",
        "x_content_parse_exception",
        "number_format_exception",
        "mapper_parsing_exception",
        "search_parse_exception",
        "json_parse_exception",
    ];
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let types: Vec<&str> = match v.pointer("/error/root_cause").and_then(|r| r.as_array()) {
        Some(causes) if !causes.is_empty() => causes
            .iter()
            .map(|c| c.get("type").and_then(|t| t.as_str()).unwrap_or(""))
            .collect(),
        _ => vec![v
            .pointer("/error/type")
            .and_then(|t| t.as_str())
            .unwrap_or("")],
    };
    types.iter().all(|t| CLIENT.contains(t))
}

/// For logical indices whose partition comes from a body field: an update
/// (its `doc` or `upsert`) may not name another partition in that field —
/// the document would claim a partition its writer is not granted.
pub(crate) fn update_keeps_partition(
    body: &[u8],
    field: &str,
    partition: &str,
) -> Result<(), ProxyError> {
    use osproxy_rewrite::members::members;
    // Read member by member (no tree: a bulk's update lines are not
    // charged to the budget as a tree); a body that does not scan is
    // refused as malformed where it is read.
    let Ok(top) = members(body) else {
        return Ok(());
    };
    for (part, doc) in top {
        if part != "doc" && part != "upsert" {
            continue;
        }
        let Ok(inner) = members(doc) else {
            continue;
        };
        for (key, named) in inner {
            if !osproxy_rewrite::source::names_field(&key, field) {
                continue;
            }
            if key != field {
                return Err(named_twice(&format!("{part}.{key}"), field));
            }
            if serde_json::from_slice::<String>(named).ok().as_deref() != Some(partition) {
                return Err(ProxyError::new(
                    ErrorCode::PartitionForbidden,
                    format!("the update's `{part}.{field}` names another partition than the document's ({partition}); a document cannot be moved to another partition by an update"),
                ));
            }
        }
    }
    Ok(())
}

/// A key OpenSearch reads as the partition field though it is not written
/// as it (`tenant_id.`): the document would name a second partition.
fn named_twice(key: &str, field: &str) -> ProxyError {
    ProxyError::new(
        ErrorCode::BadRequest,
        format!("`{key}` is read by OpenSearch as the partition field `{field}` (it drops a key's trailing dots); name the partition once, as `{field}`"),
    )
}

/// The partition a document names in `field` (a top-level string), for
/// logical indices whose partition comes from the body.
pub(crate) fn body_partition(doc: &[u8], field: &str, index: &str) -> Result<String, ProxyError> {
    let mut found: Option<Result<String, ()>> = None;
    let mut twice = None;
    osproxy_rewrite::members::edit_members(doc, |key, value| {
        if key == field {
            found = Some(serde_json::from_slice::<String>(value).map_err(|_| ()));
        } else if osproxy_rewrite::source::names_field(key, field) {
            twice.get_or_insert_with(|| key.to_string());
        }
        osproxy_rewrite::members::Edit::Keep
    })
    .map_err(|e| ProxyError::new(ErrorCode::BadRequest, e.to_string()))?;
    if let Some(key) = twice {
        return Err(named_twice(&key, field));
    }
    match found {
        Some(Ok(v)) => Ok(v),
        _ => Err(ProxyError::new(
            ErrorCode::PartitionRequired,
            format!("logical index {index:?} takes the partition from the document's top-level string field `{field}`, which is missing"),
        )),
    }
}

/// Tenancy rewrites request bodies byte by byte, so it must read them: a
/// gzip or deflate body has been decoded before it gets here (and its
/// `Content-Encoding` removed); any other coding is refused with a clear
/// error rather than misread as malformed JSON.
pub(crate) fn check_encoding(headers: &HeaderMap) -> Result<(), ProxyError> {
    check_content_type(headers)?;
    check_accept(headers)?;
    identity_encoding(headers)
}

fn identity_encoding(headers: &HeaderMap) -> Result<(), ProxyError> {
    match headers.get(http::header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase()) {
        None => Ok(()),
        Some(e) if e.is_empty() || e == "identity" => Ok(()),
        Some(e) => Err(ProxyError::new(
            ErrorCode::BadRequest,
            format!("content-encoding [{}] is not supported for logical indices: send the body uncompressed, or compressed with gzip or deflate (one coding)", e.chars().take(80).filter(|c| !c.is_control()).collect::<String>()),
        )),
    }
}

/// An uncompressed JSON (or NDJSON) body: what osproxy can check byte for
/// byte.
pub(crate) fn check_plain_json(headers: &HeaderMap) -> Result<(), ProxyError> {
    check_content_type(headers)?;
    identity_encoding(headers)
}

/// Only JSON goes in: a request body declared as YAML, CBOR or SMILE
/// (which OpenSearch would parse as such, while osproxy reads JSON), or a
/// form, is refused.
fn check_content_type(headers: &HeaderMap) -> Result<(), ProxyError> {
    if let Some(v) = headers.get(http::header::CONTENT_TYPE) {
        let v = v.to_str().unwrap_or("?").to_ascii_lowercase();
        let essence = v.split(';').next().unwrap_or("").trim();
        let json = matches!(essence, "application/json" | "application/x-ndjson")
            || (essence.starts_with("application/") && essence.ends_with("+json"));
        if !json {
            let shown: String = essence
                .chars()
                .take(80)
                .filter(|c| !c.is_control())
                .collect();
            return Err(ProxyError::new(
                ErrorCode::BadRequest,
                format!("Content-Type header [{shown}] is not supported for logical indices: send `application/json` (or `application/x-ndjson` for _bulk and _msearch)"),
            ));
        }
    }
    Ok(())
}

/// Only JSON comes out: an `Accept` that asks for an answer osproxy could
/// not reverse is refused.
fn check_accept(headers: &HeaderMap) -> Result<(), ProxyError> {
    for v in headers.get_all(http::header::ACCEPT) {
        let v = v.to_str().unwrap_or("?").to_ascii_lowercase();
        if ["yaml", "cbor", "smile"].iter().any(|f| v.contains(f)) {
            let shown: String = v.chars().take(80).filter(|c| !c.is_control()).collect();
            return Err(ProxyError::new(
                ErrorCode::BadRequest,
                format!(
                    "Accept [{shown}] is refused for logical indices: osproxy answers in JSON only"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_cannot_move_a_document_to_another_partition() {
        let ok = br#"{"doc":{"tenant_id":"acme","n":1},"upsert":{"n":0}}"#;
        assert!(update_keeps_partition(ok, "tenant_id", "acme").is_ok());
        for bad in [
            &br#"{"doc":{"tenant_id":"globex"}}"#[..],
            br#"{"doc":{"n":1},"upsert":{"tenant_id":"globex"}}"#,
            br#"{"doc":{"tenant_id":1}}"#,
            br#"{"doc":{"n":1},"doc":{"tenant_id":"globex"}}"#,
        ] {
            let e = update_keeps_partition(bad, "tenant_id", "acme").unwrap_err();
            assert_eq!(
                e.code,
                ErrorCode::PartitionForbidden,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// Found by review: OpenSearch drops a key's trailing dots, so
    /// `tenant_id.` is the partition field a second time.
    #[test]
    fn a_key_opensearch_reads_as_the_partition_field_is_refused() {
        for bad in [
            &br#"{"tenant_id":"acme","tenant_id.":"globex"}"#[..],
            br#"{"tenant_id..":"globex","tenant_id":"acme"}"#,
            br#"{"tenant_id":"acme","tenant_id.x":1}"#,
        ] {
            let e = body_partition(bad, "tenant_id", "events").unwrap_err();
            assert_eq!(
                e.code,
                ErrorCode::BadRequest,
                "{}",
                String::from_utf8_lossy(bad)
            );
            assert!(e.reason.contains("trailing dots"), "{}", e.reason);
        }
        assert_eq!(
            body_partition(
                br#"{"tenant_id":"acme","tenant_idx":"globex"}"#,
                "tenant_id",
                "events"
            )
            .unwrap(),
            "acme"
        );
        let e = update_keeps_partition(br#"{"doc":{"tenant_id.":"globex"}}"#, "tenant_id", "acme")
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(
            update_keeps_partition(br#"{"doc":{"tenant_id":"acme"}}"#, "tenant_id", "acme").is_ok()
        );
    }
}
