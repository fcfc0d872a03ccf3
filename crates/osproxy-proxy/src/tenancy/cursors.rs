//! Scroll and point-in-time on logical indices. Every scroll id and PIT id
//! handed out is signed and bound to its cluster, partition and logical
//! index ([`super::cursor`]); continuing, searching with or closing one
//! checks the signature and the caller's grant first. Pages are reversed
//! like any search.

use std::collections::HashMap;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use osproxy_core::{EndpointKind, ErrorCode, ProxyError};
use osproxy_rewrite::members::{edit_members, Edit};
use osproxy_rewrite::search::{check_dedicated, confine_search, SearchPolicy};
use osproxy_upstream::ClientBody;
use serde_json::{json, Map, Value};

use super::cursor::{unwrap, wrap, Cursor};
use super::params::allow_only;
use super::{json_ok, json_response, read_json, reverse, Target, Tenancy};
use crate::auth::Principal;
use crate::body::ResponseBody;

fn bad(m: impl Into<String>) -> ProxyError {
    ProxyError::new(ErrorCode::BadRequest, m)
}

/// Cursors this process handed out, per (kind, partition), newest last, so
/// that `_all` can close a caller's own cursors and no one else's. Shared by
/// every worker; capped per partition (older ones expire by keep-alive).
/// Each is kept as (the cluster's id, the first id handed out for it): a
/// sealed id differs each time the same cursor is handed out (a scroll's
/// every page), and one entry per cluster cursor is enough to close it.
type OpenCursors =
    std::sync::Mutex<HashMap<(String, String), std::collections::VecDeque<(String, String)>>>;

fn open_cursors() -> &'static OpenCursors {
    static OPEN: std::sync::OnceLock<OpenCursors> = std::sync::OnceLock::new();
    OPEN.get_or_init(Default::default)
}

const MAX_OPEN_PER_PARTITION: usize = 1024;

fn sign(tenancy: &Tenancy, kind: &str, t: &Target<'_>, upstream: String) -> String {
    signer(tenancy, t)(kind, upstream)
}

/// Signs the cursor ids the cluster hands out for `t` (`scroll` or `pit`,
/// and the cluster's id): owned, for a response that streams after its
/// request's handler returned.
pub(crate) fn signer(
    tenancy: &Tenancy,
    t: &Target<'_>,
) -> impl FnMut(&str, String) -> String + Send + 'static {
    let key = tenancy.cursor_key.clone();
    let base = Cursor {
        kind: String::new(),
        cluster: t.cluster.id.clone(),
        partition: t.partition.as_str().into(),
        index: t.logical.name.clone(),
        upstream: String::new(),
        physical: t.physical_index().to_string(),
        placement: t.placement.kind().to_string(),
        epoch: t.epoch,
    };
    move |kind: &str, upstream: String| {
        let cursor = Cursor {
            kind: kind.into(),
            upstream,
            ..base.clone()
        };
        let id = wrap(&key, &cursor);
        if let Ok(mut open) = open_cursors().lock() {
            let list = open
                .entry((kind.to_string(), base.partition.clone()))
                .or_default();
            if !list.iter().any(|(u, _)| *u == cursor.upstream) {
                list.push_back((cursor.upstream, id.clone()));
                if list.len() > MAX_OPEN_PER_PARTITION {
                    list.pop_front();
                }
            }
        }
        id
    }
}

/// Forgets the cursors of `partition` that `gone` says are: closed (by the
/// cluster's id) or stale (by the id handed out).
fn forget(kind: &str, partition: &str, gone: impl Fn(&str, &str) -> bool) {
    if let Ok(mut open) = open_cursors().lock() {
        if let Some(list) = open.get_mut(&(kind.to_string(), partition.to_string())) {
            list.retain(|(upstream, id)| !gone(upstream, id));
        }
    }
}

/// Replaces upstream `_scroll_id` / `pit_id` in a search response with
/// signed ids.
pub(crate) fn wrap_response(tenancy: &Tenancy, raw: &[u8], t: &Target<'_>) -> Vec<u8> {
    edit_members(raw, |k, v| {
        let kind = match k {
            "_scroll_id" => "scroll",
            "pit_id" => "pit",
            // A PIT's shard failures name the physical index and its uuid.
            "_shards" => return Edit::Replace(reverse::error(v, t, None)),
            _ => return Edit::Keep,
        };
        match serde_json::from_slice::<String>(v) {
            Ok(upstream) => Edit::Replace(
                Value::from(sign(tenancy, kind, t, upstream))
                    .to_string()
                    .into_bytes(),
            ),
            Err(_) => Edit::Keep,
        }
    })
    .map(|c| c.into_owned())
    .unwrap_or_else(|_| raw.to_vec())
}

/// Checks a client's cursor id and finds its target.
fn open<'t>(
    tenancy: &'t Tenancy,
    principal: Option<&Principal>,
    kind: &str,
    id: &str,
) -> Result<(Cursor, Target<'t>), ProxyError> {
    let cursor = unwrap(&tenancy.cursor_key, kind, id)?;
    let target = tenancy.resolve_partition(&cursor.index, principal, &cursor.partition)?;
    // Bound to where it was opened: the same cluster is not enough (a
    // partition moved from the shared index to its own index on the same
    // cluster would otherwise be searched unconfined in the shared one).
    if target.cluster.id != cursor.cluster
        || target.physical_index() != cursor.physical
        || target.placement.kind() != cursor.placement
        || target.epoch != cursor.epoch
    {
        return Err(ProxyError::new(
            ErrorCode::StaleEpoch,
            format!("this {kind} id was opened on a placement of this partition that has since changed; open a new one"),
        )
        .retryable(true));
    }
    Ok((cursor, target))
}

/// `POST /{logical}/_search/point_in_time?keep_alive=...`
pub(crate) async fn open_pit(
    tenancy: &Tenancy,
    t: &Target<'_>,
    req: Request<ClientBody>,
) -> Result<Response<ResponseBody>, ProxyError> {
    if req.method() != Method::POST {
        return Err(ProxyError::new(
            ErrorCode::UnsupportedEndpoint,
            "only POST opens a point in time",
        ));
    }
    let kept = allow_only(
        req.uri().query(),
        &["keep_alive", "pretty", "human", "error_trace"],
        "when opening a point in time",
    )?;
    let mut query = kept;
    if t.shared() {
        query.set("routing".into(), t.partition.as_str().into());
    }
    tenancy.ensure_shared_mapping(t).await?;
    let path = t.path("_search/point_in_time", None, &query.encode());
    let (parts, resp) = tenancy
        .exchange(t, Method::POST, &path, req.headers(), None)
        .await?;
    let out = if parts.status.is_success() {
        wrap_response(tenancy, &resp, t)
    } else {
        reverse::error(&resp, t, None)
    };
    Ok(json_response(parts, out))
}

pub(crate) async fn serve(
    tenancy: &Tenancy,
    req: Request<ClientBody>,
    principal: Option<&Principal>,
    kind: EndpointKind,
) -> Result<Response<ResponseBody>, ProxyError> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let headers = req.headers().clone();
    let raw = read_json(req.into_body()).await?;
    let body: Map<String, Value> = if raw.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        serde_json::from_slice(&raw)
            .map_err(|e| bad(format!("the body is not a JSON object: {e}")))?
    };
    match (kind, &method) {
        (EndpointKind::Scroll, &Method::GET | &Method::POST) => {
            scroll_continue(tenancy, principal, &path, query.as_deref(), body, &headers).await
        }
        (EndpointKind::Scroll, &Method::DELETE) => {
            close(tenancy, principal, "scroll", &path, body, &headers).await
        }
        (EndpointKind::Pit, &Method::DELETE) => {
            close(tenancy, principal, "pit", &path, body, &headers).await
        }
        (EndpointKind::Search, &Method::GET | &Method::POST) => {
            pit_search(tenancy, principal, query.as_deref(), body, &headers).await
        }
        _ => Err(ProxyError::new(
            ErrorCode::UnsupportedEndpoint,
            format!("{method} {path} is not served with a catalogue configured"),
        )),
    }
}

async fn scroll_continue(
    tenancy: &Tenancy,
    principal: Option<&Principal>,
    path: &str,
    query: Option<&str>,
    body: Map<String, Value>,
    headers: &HeaderMap,
) -> Result<Response<ResponseBody>, ProxyError> {
    let mut scroll = body
        .get("scroll")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut id = body
        .get("scroll_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    // Read as OpenSearch reads it (`;` too, percent-decoded).
    for (name, v) in super::params::parse(query)?.pairs() {
        match name {
            "scroll" => scroll = Some(v.to_string()),
            "scroll_id" => id = Some(v.to_string()),
            "rest_total_hits_as_int" | "pretty" | "human" | "error_trace" => {}
            _ => {
                return Err(bad(
                    "only `scroll` and `scroll_id` are accepted when continuing a scroll",
                ))
            }
        }
    }
    if let Some(from_path) = path.trim_start_matches('/').strip_prefix("_search/scroll/") {
        id = Some(from_path.to_string());
    }
    let id = id.ok_or_else(|| bad("a scroll_id is required"))?;
    let (cursor, t) = open(tenancy, principal, "scroll", &id)?;
    let mut upstream = json!({"scroll_id": cursor.upstream});
    if let Some(s) = scroll {
        upstream["scroll"] = Value::from(s);
    }
    // Streamed, and never broken off for the budget: the cluster has
    // advanced the scroll, so a refused page would be lost to a retry.
    super::search::streamed(
        tenancy,
        &t,
        "/_search/scroll",
        headers,
        Some(Bytes::from(upstream.to_string())),
        osproxy_upstream::Answering::Change,
    )
    .await
}

/// Clears scrolls or closes PITs, each checked, grouped per cluster.
async fn close(
    tenancy: &Tenancy,
    principal: Option<&Principal>,
    kind: &str,
    path: &str,
    body: Map<String, Value>,
    headers: &HeaderMap,
) -> Result<Response<ResponseBody>, ProxyError> {
    let field = if kind == "scroll" {
        "scroll_id"
    } else {
        "pit_id"
    };
    let all = path.ends_with("/_all") || body.get(field).and_then(Value::as_str) == Some("_all");
    // `DELETE /_search/scroll/<id>[,<id>...]`, as OpenSearch takes it (the
    // Go client clears scrolls this way).
    let in_path = (kind == "scroll" && !all)
        .then(|| path.trim_start_matches('/').strip_prefix("_search/scroll/"))
        .flatten()
        .filter(|ids| !ids.is_empty());
    let ids: Vec<String> = match body.get(field) {
        _ if in_path.is_some() => in_path
            .into_iter()
            .flat_map(|ids| ids.split(','))
            .filter(|id| !id.is_empty())
            .map(str::to_string)
            .collect(),
        // `_all` means the caller's own cursors (OpenSearch's would close
        // every tenant's): those this instance handed out to its partition.
        _ if all => {
            let principal = principal.ok_or_else(|| {
                ProxyError::new(ErrorCode::Unauthenticated, "missing bearer token")
            })?;
            let partition = principal.partition(headers)?;
            open_cursors()
                .lock()
                .map(|open| {
                    open.get(&(kind.to_string(), partition.as_str().to_string()))
                        .map(|l| l.iter().map(|(_, id)| id.clone()).collect())
                        .unwrap_or_default()
                })
                .unwrap_or_default()
        }
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => return Err(bad(format!("`{field}` is required"))),
    };
    // Every id is checked before anything is sent.
    let mut per_cluster: HashMap<String, (Target<'_>, Vec<(String, String)>)> = HashMap::new();
    let mut stale = Vec::new();
    for id in ids {
        let (cursor, t) = match open(tenancy, principal, kind, &id) {
            Ok(opened) => opened,
            // `_all`: one of the caller's own that can no longer be used
            // (its partition moved since) is forgotten, not a failure of
            // the whole request (found by review).
            Err(_) if all => {
                stale.push(id);
                continue;
            }
            Err(e) => return Err(e),
        };
        per_cluster
            .entry(t.cluster.id.clone())
            .or_insert_with(|| (t.clone(), Vec::new()))
            .1
            .push((cursor.upstream, id));
    }
    if !stale.is_empty() {
        if let Some(partition) = principal.and_then(|p| p.partition(headers).ok()) {
            forget(kind, partition.as_str(), |_, id| {
                stale.iter().any(|s| s == id)
            });
        }
    }
    let (upstream_path, mut freed, mut pits) = if kind == "scroll" {
        ("/_search/scroll", 0u64, Vec::new())
    } else {
        ("/_search/point_in_time", 0, Vec::new())
    };
    let mut succeeded = true;
    for (_, (t, ids)) in per_cluster {
        let upstream_ids: Vec<&str> = ids.iter().map(|(u, _)| u.as_str()).collect();
        let body = json!({field: upstream_ids}).to_string();
        let (parts, resp) = tenancy
            .exchange(
                &t,
                Method::DELETE,
                upstream_path,
                headers,
                Some(Bytes::from(body)),
            )
            .await?;
        let v: Value = serde_json::from_slice(&resp).unwrap_or(Value::Null);
        succeeded &= parts.status.is_success();
        forget(kind, t.partition.as_str(), |upstream, _| {
            upstream_ids.contains(&upstream)
        });
        freed += v.get("num_freed").and_then(Value::as_u64).unwrap_or(0);
        if let Some(list) = v.get("pits").and_then(Value::as_array) {
            for p in list {
                let upstream = p.get("pit_id").and_then(Value::as_str).unwrap_or("");
                let client = ids
                    .iter()
                    .find(|(u, _)| u == upstream)
                    .map(|(_, c)| c.clone())
                    .unwrap_or_default();
                pits.push(json!({"successful": p.get("successful").cloned().unwrap_or(Value::Bool(false)), "pit_id": client}));
            }
        }
    }
    let out = if kind == "scroll" {
        json!({"succeeded": succeeded, "num_freed": freed})
    } else {
        json!({"pits": pits})
    };
    Ok(json_ok(out.to_string().into_bytes()))
}

/// `POST /_search` with `{"pit": {"id": ...}}`: the PIT says where; the
/// body is confined like any search of its placement.
async fn pit_search(
    tenancy: &Tenancy,
    principal: Option<&Principal>,
    query: Option<&str>,
    mut body: Map<String, Value>,
    headers: &HeaderMap,
) -> Result<Response<ResponseBody>, ProxyError> {
    let Some(Value::Object(mut pit)) = body.remove("pit") else {
        return Err(ProxyError::new(
            ErrorCode::UnsupportedEndpoint,
            "a search without an index is served only with a point in time (`pit`) from a logical index; name a logical index in the path",
        ));
    };
    let id = pit
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("`pit.id` is required"))?
        .to_string();
    let (cursor, t) = open(tenancy, principal, "pit", &id)?;
    let mut kept = super::params::rewrite_query(
        query,
        super::params::Op::Search,
        t.shared(),
        t.partition.as_str(),
    )?;
    // PIT searches may not name routing; the filter confines them.
    kept.remove("routing");
    kept.remove("scroll");
    let raw = Value::Object(body).to_string();
    let confined = if t.shared() {
        let policy = SearchPolicy {
            field: &t.logical.field,
            partition: t.partition.as_str(),
            allow_scripts: t.logical.allow_scripts,
            ids: Some(&t.logical.id_template),
        };
        confine_search(raw.as_bytes(), &policy)
            .map_err(|r| ProxyError::new(ErrorCode::ConstructRefused, r.to_string()))?
    } else {
        let checked = check_dedicated(raw.as_bytes(), true)
            .map_err(|r| ProxyError::new(ErrorCode::ConstructRefused, r.to_string()))?;
        if checked.is_empty() {
            b"{}".to_vec()
        } else {
            checked
        }
    };
    let mut upstream: Map<String, Value> = serde_json::from_slice(&confined)
        .map_err(|e| ProxyError::new(ErrorCode::Internal, e.to_string()))?;
    pit.insert("id".into(), Value::from(cursor.upstream));
    upstream.insert("pit".into(), Value::Object(pit));
    let path = if kept.is_empty() {
        "/_search".to_string()
    } else {
        format!("/_search?{}", kept.encode())
    };
    super::search::streamed(
        tenancy,
        &t,
        &path,
        headers,
        Some(Bytes::from(Value::Object(upstream).to_string())),
        osproxy_upstream::Answering::Read,
    )
    .await
}
