//! `_delete_by_query` and `_update_by_query` on a logical index: the query
//! is confined like a search's (a partition filter the client cannot
//! escape; the same refusals), scripts follow the catalogue's policy, and
//! asynchronous runs (`wait_for_completion=false`, whose task only
//! operators may follow) are for operators only.

use bytes::Bytes;
use http::{Method, Request, Response};
use osproxy_core::{ErrorCode, ProxyError};
use osproxy_rewrite::search::{check_dedicated, confine_search, SearchPolicy};
use osproxy_upstream::ClientBody;
use serde_json::{Map, Value};

use super::{json_response, read_json, reverse, Target, Tenancy};
use crate::auth::Principal;
use crate::body::ResponseBody;

const ALLOWED: [&str; 13] = [
    "refresh",
    "timeout",
    "conflicts",
    "max_docs",
    "scroll_size",
    "wait_for_active_shards",
    "requests_per_second",
    "slices",
    "wait_for_completion",
    "pretty",
    "human",
    "error_trace",
    "scroll",
];

pub(crate) async fn serve(
    tenancy: &Tenancy,
    t: &Target<'_>,
    req: Request<ClientBody>,
    principal: Option<&Principal>,
) -> Result<Response<ResponseBody>, ProxyError> {
    // The endpoint as OpenSearch routes it: `/{index}/{endpoint}` exactly,
    // the endpoint not percent-decoded (OpenSearch matches it literally).
    // A guess from the path's end read `/_update_by_query/` as a delete.
    let segments: Vec<&str> = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let endpoint = match segments.as_slice() {
        [_, "_update_by_query"] => "_update_by_query",
        [_, "_delete_by_query"] => "_delete_by_query",
        _ => {
            return Err(ProxyError::new(
                ErrorCode::UnsupportedEndpoint,
                "only `POST /{index}/_update_by_query` and `POST /{index}/_delete_by_query` are served for logical indices",
            ))
        }
    };
    if req.method() != Method::POST {
        return Err(ProxyError::new(
            ErrorCode::UnsupportedEndpoint,
            format!("{} on {endpoint} is not served", req.method()),
        ));
    }
    let shared = t.shared();
    let mut query = super::params::parse(req.uri().query())?;
    for (key, value) in query.pairs() {
        let dedicated_only = matches!(
            key,
            "routing" | "q" | "df" | "analyzer" | "default_operator" | "lenient" | "preference"
        );
        if !(ALLOWED.contains(&key) || (!shared && dedicated_only)) {
            let shown: String = key.chars().take(64).filter(|c| !c.is_control()).collect();
            return Err(ProxyError::new(
                ErrorCode::BadRequest,
                format!("query parameter `{shown}` is refused on {endpoint} of a logical index"),
            ));
        }
        // Anything but an explicit `true` may leave a task running.
        if key == "wait_for_completion" && value != "true" && !principal.is_some_and(|p| p.operator)
        {
            return Err(ProxyError::new(
                ErrorCode::OperatorRequired,
                "wait_for_completion=false starts a task only operators may follow; run it synchronously",
            ));
        }
    }
    if shared {
        query.set("routing".into(), t.partition.as_str().into());
    }
    let headers = req.headers().clone();
    let raw = read_json(req.into_body()).await?;
    let body = confine(&raw, t)?;
    tenancy.ensure_shared_mapping(t).await?;
    let upstream = t.path(endpoint, None, &query.encode());
    let (parts, resp) = tenancy
        .write(t, Method::POST, &upstream, &headers, Some(body))
        .await?;
    // Charged what it touched, as the cluster counts it.
    if parts.status.is_success() {
        let touched = serde_json::from_slice::<serde_json::Value>(&resp)
            .map(|v| {
                ["created", "updated", "deleted"]
                    .iter()
                    .filter_map(|k| v.get(k).and_then(serde_json::Value::as_u64))
                    .sum::<u64>()
            })
            .unwrap_or(0);
        crate::limits::item(t.partition.as_str(), touched, 0);
    }
    Ok(json_response(parts, reverse::by_query(&resp, t)))
}

/// The body with its `query` confined (shared placements) or checked for
/// references to other indices (dedicated ones); `script` only where
/// allowed (always, in a dedicated placement); `max_docs`, `conflicts` and
/// `slice` kept. Re-serialised either way: what is forwarded was checked.
fn confine(raw: &[u8], t: &Target<'_>) -> Result<Bytes, ProxyError> {
    let bad = |m: String| ProxyError::new(ErrorCode::BadRequest, m);
    let body: Map<String, Value> = if raw.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        serde_json::from_slice(raw)
            .map_err(|e| bad(format!("the body is not a JSON object: {e}")))?
    };
    let mut kept = Map::new();
    let mut search = Map::new();
    for (k, v) in body {
        match k.as_str() {
            "query" => {
                search.insert(k, v);
            }
            "max_docs" | "conflicts" | "slice" => {
                kept.insert(k, v);
            }
            "script" if t.logical.allow_scripts || !t.shared() => {
                kept.insert(k, v);
            }
            "script" => {
                return Err(ProxyError::new(
                    ErrorCode::ConstructRefused,
                    "scripts are refused in a shared placement: a script could change or read the partition field",
                ))
            }
            other => return Err(bad(format!("`{other}` is not accepted in a by-query body on a logical index"))),
        }
    }
    let policy = SearchPolicy {
        field: &t.logical.field,
        partition: t.partition.as_str(),
        allow_scripts: t.logical.allow_scripts,
        ids: Some(&t.logical.id_template),
    };
    let search = Value::Object(search).to_string();
    let confined = if t.shared() {
        confine_search(search.as_bytes(), &policy)
    } else {
        check_dedicated(search.as_bytes(), true)
    }
    .map_err(|r| ProxyError::new(ErrorCode::ConstructRefused, r.to_string()))?;
    let mut out: Map<String, Value> = if confined.is_empty() {
        Map::new()
    } else {
        serde_json::from_slice(&confined)
            .map_err(|e| ProxyError::new(ErrorCode::Internal, e.to_string()))?
    };
    out.extend(kept);
    Ok(Bytes::from(Value::Object(out).to_string()))
}
