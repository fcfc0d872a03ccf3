//! `_search` and `_count` on a logical index. In a shared placement the
//! body is confined (the client query under a partition filter it cannot
//! escape; constructs that read outside the query refused) and routed to the
//! partition's shard; hits are reversed on the way back.

use http::{Method, Request, Response};
use osproxy_core::{EndpointKind, ErrorCode, ProxyError};
use osproxy_observe::trace::{Change, Name, Value};
use osproxy_rewrite::search::{check_dedicated, confine_search, SearchPolicy};
use osproxy_upstream::ClientBody;

use super::params::{rewrite_query, Op};
use super::{cursors, json_response, json_stream_response, read_json, reverse, Target, Tenancy};
use crate::body::ResponseBody;

pub(crate) async fn serve(
    tenancy: &Tenancy,
    t: &Target<'_>,
    req: Request<ClientBody>,
    kind: EndpointKind,
) -> Result<Response<ResponseBody>, ProxyError> {
    let (op, endpoint) = if kind == EndpointKind::Count {
        (Op::Count, "_count")
    } else {
        (Op::Search, "_search")
    };
    let method = req.method().clone();
    if method != Method::GET && method != Method::POST {
        return Err(ProxyError::new(
            ErrorCode::UnsupportedEndpoint,
            format!("{method} on {endpoint} is not served"),
        ));
    }
    let segments = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .count();
    if segments != 2 {
        return Err(ProxyError::new(
            ErrorCode::UnsupportedEndpoint,
            format!("only `/{{index}}/{endpoint}` is served for logical indices (no templates or sub-endpoints yet)"),
        ));
    }
    let shared = t.shared();
    tenancy.ensure_shared_mapping(t).await?;
    let params = rewrite_query(req.uri().query(), op, shared, t.partition.as_str())?;
    let headers = req.headers().clone();
    let raw = read_json(req.into_body()).await?;
    if op == Op::Search && memchr::memmem::find(&raw, b"\"slice\"").is_some() {
        slice_needs_a_cursor(&raw, params.contains("scroll"))?;
    }
    // The rewritten copy is built beside the client's body and its parse
    // (three copies of a large body, for the read's charge of two): it is
    // charged before it is built, and while it is sent.
    let mut _copy = osproxy_upstream::budget::Charge::default();
    _copy.set(raw.len() as u64)?;
    let body = if shared {
        let policy = SearchPolicy {
            field: &t.logical.field,
            partition: t.partition.as_str(),
            allow_scripts: t.logical.allow_scripts,
            ids: Some(&t.logical.id_template),
        };
        let confined = confine_search(&raw, &policy)
            .map(bytes::Bytes::from)
            .map_err(|r| ProxyError::new(ErrorCode::ConstructRefused, r.to_string()))?;
        crate::diagnostics::with(|tr| {
            tr.record("body_bytes_in", Value::Bytes(raw.len() as u64));
            tr.record("body_bytes_out", Value::Bytes(confined.len() as u64));
            tr.change(Change::Added, Name::fixed("query.bool.filter.term"));
            tr.change(Change::Added, Name::ident(&t.logical.field));
            tr.change(Change::Added, Name::fixed("routing"));
            tr.change(Change::Removed, Name::fixed("hits._source.partition_field"));
        });
        confined
    } else {
        // Scripts cannot reach outside the partition's own index.
        check_dedicated(&raw, true)
            .map(bytes::Bytes::from)
            .map_err(|r| ProxyError::new(ErrorCode::ConstructRefused, r.to_string()))?
    };
    // The client's body and its parse are given back; the copy stays
    // charged while it is sent.
    drop(raw);
    _copy.set(body.len() as u64)?;
    let body = if body.is_empty() { None } else { Some(body) };
    let path = t.path(endpoint, None, &params.encode());
    if op == Op::Search {
        // An answer that opens a scroll is charged past the budget rather
        // than broken off (breaking it would orphan the cluster's context).
        let answering = if params.contains("scroll") {
            osproxy_upstream::Answering::Change
        } else {
            osproxy_upstream::Answering::Read
        };
        return streamed(tenancy, t, &path, &headers, body, answering).await;
    }
    let (parts, resp) = tenancy.read(t, Method::POST, &path, &headers, body).await?;
    let out = if parts.status.is_success() {
        // A count with shard failures names the physical index in them.
        reverse::shards_of(&resp, t)
    } else {
        reverse::error(&resp, t, None)
    };
    Ok(json_response(parts, out))
}

/// Sends a search (or a cursor's page of one) and answers with its answer
/// reversed as it streams: memory bounded by the largest hit, not by the
/// answer. An error answer is read whole (it is small).
pub(crate) async fn streamed(
    tenancy: &Tenancy,
    t: &Target<'_>,
    path: &str,
    headers: &http::HeaderMap,
    body: Option<bytes::Bytes>,
    answering: osproxy_upstream::Answering,
) -> Result<Response<ResponseBody>, ProxyError> {
    if answering == osproxy_upstream::Answering::Change {
        // Its answer will be charged past the budget rather than broken
        // off: asked for only while the budget has room.
        osproxy_upstream::budget::admit_unbreakable("this scroll's page")?;
    }
    let (parts, upstream) = tenancy
        .read_streaming(t, Method::POST, path, headers, body)
        .await?;
    if parts.status.is_success() {
        let reverse = reverse::Streamed {
            names: reverse::Names::of(t),
            sign: Some(Box::new(cursors::signer(tenancy, t))),
        };
        return Ok(json_stream_response(
            parts,
            ResponseBody::reversed(
                upstream,
                Box::new(osproxy_rewrite::stream::SearchStream::new(
                    reverse,
                    osproxy_upstream::MAX_BUFFERED,
                )),
                answering,
            ),
        ));
    }
    let resp = osproxy_upstream::read_answer(upstream, &t.cluster.id, answering).await?;
    Ok(json_response(parts, reverse::error(&resp, t, None)))
}

/// `slice` splits a scroll or a point in time; OpenSearch answers a plain
/// search with one with a 500, which is the client's mistake: a 400 here.
fn slice_needs_a_cursor(raw: &[u8], scrolled: bool) -> Result<(), ProxyError> {
    let sliced = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(raw)
        .is_ok_and(|m| m.contains_key("slice"));
    if sliced && !scrolled {
        return Err(ProxyError::new(
            ErrorCode::BadRequest,
            "`slice` can only be used with a scroll (`?scroll=1m`) or a point in time",
        ));
    }
    Ok(())
}
