//! `_mget` and `_msearch` on logical indices: each document or search is
//! confined and resolved on its own, the parts are grouped per target and
//! forwarded as real upstream `_mget` / `_msearch` requests, and the answers
//! come back in the client's order. A part that cannot be routed gets an
//! error entry in its place; the others proceed.

use std::collections::HashMap;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use osproxy_core::{ErrorCode, ProxyError};
use osproxy_rewrite::search::{check_dedicated, confine_search, SearchPolicy};
use osproxy_upstream::ClientBody;
use serde_json::{json, Map, Value};

use super::params::allow_only;
use serde_json::value::RawValue;

use super::{json_ok, read_json, reverse, Target, Tenancy};
use crate::auth::Principal;
use crate::body::ResponseBody;

/// One target's share of an `_mget`: the target, the upstream docs, and for
/// each the client's position and logical id.
type MgetGroup<'t> = (Target<'t>, Vec<Value>, Vec<(usize, String)>);

/// One cluster's share of an `_msearch`: the upstream NDJSON, and for each
/// search the client's position and its target.
type MsearchGroup<'t> = (Vec<u8>, Vec<(usize, Target<'t>)>);

/// An OpenSearch-shaped error object for one part.
fn error_value(e: &ProxyError) -> Value {
    json!({"root_cause": [{"type": e.code.as_str(), "reason": e.reason}], "type": e.code.as_str(), "reason": e.reason})
}

fn bad(reason: impl Into<String>) -> ProxyError {
    ProxyError::new(ErrorCode::BadRequest, reason)
}

/// The single logical index a part names, or the path's.
fn part_index(named: Option<&Value>, path_index: Option<&str>) -> Result<String, ProxyError> {
    match named {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(a)) if a.len() == 1 => a[0]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| bad("`index` must be a string")),
        Some(_) => Err(bad("each part may name exactly one logical index")),
        None => path_index
            .map(str::to_string)
            .ok_or_else(|| bad("no index: name a logical index in the path or in the part")),
    }
}

fn resolve<'t>(
    tenancy: &'t Tenancy,
    cache: &mut HashMap<String, Result<Target<'t>, ProxyError>>,
    index: &str,
    principal: Option<&Principal>,
    headers: &HeaderMap,
) -> Result<Target<'t>, ProxyError> {
    if !cache.contains_key(index) {
        let r = if tenancy.snapshot().is_logical(index) {
            tenancy.resolve(index, principal, headers, None)
        } else {
            Err(bad(format!("{index:?} is not a logical index; a request on logical indices may only name logical indices")))
        };
        cache.insert(index.to_string(), r);
    }
    match cache.get(index) {
        Some(Ok(t)) => Ok(t.clone()),
        Some(Err(e)) => Err(e.clone()),
        None => Err(ProxyError::new(ErrorCode::Internal, "target cache miss")),
    }
}

pub(crate) async fn mget(
    tenancy: &Tenancy,
    req: Request<ClientBody>,
    principal: Option<&Principal>,
    path_index: Option<&str>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let query = allow_only(
        req.uri().query(),
        &[
            "realtime",
            "refresh",
            "_source",
            "_source_includes",
            "_source_excludes",
            "stored_fields",
            "pretty",
            "human",
            "error_trace",
        ],
        "on an _mget of logical indices",
    )?
    .encode();
    let headers = req.headers().clone();
    // Kept to the end: it holds the budget charge for the trees built here.
    let raw = read_json(req.into_body()).await?;
    let body: Value = serde_json::from_slice(&raw)
        .map_err(|e| bad(format!("the body is not valid JSON: {e}")))?;
    let specs: Vec<Value> = match (body.get("docs"), body.get("ids")) {
        (Some(Value::Array(docs)), None) => docs.clone(),
        (None, Some(Value::Array(ids))) => ids.iter().map(|id| json!({"_id": id})).collect(),
        _ => return Err(bad("the body must have a `docs` array or an `ids` array")),
    };
    let mut cache = HashMap::new();
    // Raw: a stored document is relayed as the cluster wrote it (a lone
    // surrogate escape, which no JSON tree takes, included).
    let mut answers: Vec<Option<Box<RawValue>>> = vec![None; specs.len()];
    // Per target: the upstream docs and, for each, (position, logical id).
    let mut groups: HashMap<(String, String), MgetGroup<'_>> = HashMap::new();
    for (pos, spec) in specs.iter().enumerate() {
        let Some(spec) = spec.as_object() else {
            answers[pos] = Some(made(
                json!({"error": error_value(&bad("each doc must be an object"))}),
            ));
            continue;
        };
        let id = match spec.get("_id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                answers[pos] = Some(made(
                    json!({"error": error_value(&bad("each doc needs an `_id`"))}),
                ));
                continue;
            }
        };
        let index = match part_index(spec.get("_index"), path_index) {
            Ok(i) => i,
            Err(e) => {
                answers[pos] = Some(made(json!({"_id": id, "error": error_value(&e)})));
                continue;
            }
        };
        let target = match resolve(tenancy, &mut cache, &index, principal, &headers) {
            Ok(t) => t,
            Err(e) => {
                answers[pos] = Some(made(
                    json!({"_index": index, "_id": id, "error": error_value(&e)}),
                ));
                continue;
            }
        };
        let shared = target.shared();
        if shared && (spec.contains_key("routing") || spec.contains_key("_routing")) {
            let e = bad("`routing` is refused in a shared placement");
            answers[pos] = Some(made(
                json!({"_index": index, "_id": id, "error": error_value(&e)}),
            ));
            continue;
        }
        let mut upstream = Map::new();
        for (k, v) in spec {
            if matches!(
                k.as_str(),
                "_source" | "stored_fields" | "version" | "version_type"
            ) || (!shared && matches!(k.as_str(), "routing" | "_routing"))
            {
                upstream.insert(k.clone(), v.clone());
            } else if !matches!(k.as_str(), "_id" | "_index") {
                let e = bad(format!(
                    "`{k}` is not accepted in an _mget doc on logical indices"
                ));
                answers[pos] = Some(made(
                    json!({"_index": index, "_id": id, "error": error_value(&e)}),
                ));
            }
        }
        if answers[pos].is_some() {
            continue;
        }
        let physical = if shared {
            target
                .logical
                .id_template
                .physical(target.partition.as_str(), &id)
        } else {
            id.clone()
        };
        upstream.insert("_index".into(), Value::from(target.physical_index()));
        upstream.insert("_id".into(), Value::from(physical));
        if shared {
            upstream.insert("routing".into(), Value::from(target.partition.as_str()));
        }
        let key = (
            target.cluster.id.clone(),
            target.physical_index().to_string(),
        );
        let entry = groups
            .entry(key)
            .or_insert_with(|| (target.clone(), Vec::new(), Vec::new()));
        entry.1.push(Value::Object(upstream));
        entry.2.push((pos, id));
    }
    let path = if query.is_empty() {
        "/_mget".to_string()
    } else {
        format!("/_mget?{query}")
    };
    for (_, (target, docs, positions)) in groups {
        tenancy.ensure_shared_mapping(&target).await?;
        let body = Bytes::from(json!({"docs": docs}).to_string());
        let (parts, resp) = tenancy
            .read(&target, Method::POST, &path, &HeaderMap::new(), Some(body))
            .await?;
        #[derive(serde::Deserialize)]
        struct Docs {
            docs: Vec<Box<RawValue>>,
        }
        let docs: Vec<Box<RawValue>> = if parts.status.is_success() {
            serde_json::from_slice::<Docs>(&reverse_docs(&resp, &target))
                .map(|d| d.docs)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        for (i, (pos, id)) in positions.into_iter().enumerate() {
            answers[pos] = Some(docs.get(i).cloned().unwrap_or_else(|| {
                let e = ProxyError::new(
                    ErrorCode::UpstreamUnavailable,
                    format!("cluster answered {}", parts.status),
                );
                made(json!({"_index": target.logical.name, "_id": id, "error": error_value(&e)}))
            }));
        }
    }
    let null = || made(Value::Null);
    let docs: Vec<Box<RawValue>> = answers
        .into_iter()
        .map(|a| a.unwrap_or_else(null))
        .collect();
    // Written as raw JSON (not through a tree, which would refuse a lone
    // surrogate and panic in `json!`).
    let mut out = Vec::with_capacity(16 + docs.iter().map(|d| d.get().len() + 1).sum::<usize>());
    out.extend_from_slice(b"{\"docs\":[");
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(d.get().as_bytes());
    }
    out.extend_from_slice(b"]}");
    Ok(json_ok(out))
}

/// An answer osproxy made, as raw JSON.
fn made(v: Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(&v)
        .unwrap_or_else(|_| serde_json::value::to_raw_value(&Value::Null).unwrap_or_default())
}

/// `{"docs": [...]}` with every doc reversed (byte-level, sources untouched
/// but for the partition field).
fn reverse_docs(raw: &[u8], t: &Target<'_>) -> Vec<u8> {
    osproxy_rewrite::members::edit_members(raw, |k, v| match k {
        "docs" => osproxy_rewrite::members::Edit::Replace(
            osproxy_rewrite::members::map_elements(v, |d| {
                // A per-document error names the physical index.
                let doc = reverse::document(d, t);
                Ok(if reverse::is_error(&doc) {
                    reverse::error(&doc, t, None)
                } else {
                    doc
                })
            })
            .unwrap_or_else(|_| v.to_vec()),
        ),
        _ => osproxy_rewrite::members::Edit::Keep,
    })
    .map(|c| c.into_owned())
    .unwrap_or_else(|_| raw.to_vec())
}

pub(crate) async fn msearch(
    tenancy: &Tenancy,
    req: Request<ClientBody>,
    principal: Option<&Principal>,
    path_index: Option<&str>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let started = std::time::Instant::now();
    let query = allow_only(
        req.uri().query(),
        &[
            "max_concurrent_searches",
            "typed_keys",
            "rest_total_hits_as_int",
            "pretty",
            "human",
            "error_trace",
        ],
        "on an _msearch of logical indices",
    )?
    .encode();
    let headers = req.headers().clone();
    let raw = req.into_body().read_whole().await?;
    crate::limits::body_read(raw.len());
    let non_blank = || {
        raw.split(|b| *b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
    };
    // Every line strict JSON, or nothing is searched; the trees their
    // parses build (and each line's bookkeeping) charged to the budget
    // before any of it is built.
    let mut values = 0u64;
    for line in non_blank() {
        values = values.saturating_add(super::wire::strict_values(line)? as u64 + 1);
    }
    let mut _parse = osproxy_upstream::budget::Charge::default();
    _parse.set(values.saturating_mul(super::wire::PARSE_COST_PER_VALUE))?;
    let lines: Vec<&[u8]> = non_blank().collect();
    if !lines.len().is_multiple_of(2) {
        return Err(bad(
            "an _msearch body is pairs of header and body lines; the last header has no body",
        ));
    }
    let mut cache = HashMap::new();
    let mut searched = std::collections::HashSet::new();
    let pairs = lines.len() / 2;
    let mut answers: Vec<Option<Vec<u8>>> = vec![None; pairs];
    // Per cluster: the upstream NDJSON and (position, target) of each search.
    let mut groups: HashMap<String, MsearchGroup<'_>> = HashMap::new();
    for pos in 0..pairs {
        let refuse = |e: ProxyError| {
            Some(
                json!({"error": error_value(&e), "status": e.status()})
                    .to_string()
                    .into_bytes(),
            )
        };
        let header: Map<String, Value> = match serde_json::from_slice(lines[2 * pos]) {
            Ok(h) => h,
            Err(e) => {
                answers[pos] = refuse(bad(format!("header line is not a JSON object: {e}")));
                continue;
            }
        };
        let target = match part_index(header.get("index"), path_index)
            .and_then(|i| resolve(tenancy, &mut cache, &i, principal, &headers))
        {
            Ok(t) => t,
            Err(e) => {
                answers[pos] = refuse(e);
                continue;
            }
        };
        // Each search is a read of its partition's budget; one past it is
        // answered with its own 429, as OpenSearch answers a rejected one.
        if !searched.insert(target.partition.as_str().to_string()) {
            if let Err(e) = crate::limits::again(target.partition.as_str()) {
                answers[pos] = refuse(e);
                continue;
            }
        }
        let shared = target.shared();
        let mut upstream = Map::new();
        let mut refused = None;
        for (k, v) in &header {
            match k.as_str() {
                "index" => {}
                "search_type"
                | "request_cache"
                | "allow_partial_search_results"
                | "ignore_unavailable"
                | "allow_no_indices"
                | "expand_wildcards" => {
                    upstream.insert(k.clone(), v.clone());
                }
                "routing" | "preference" if !shared => {
                    upstream.insert(k.clone(), v.clone());
                }
                other => {
                    refused = Some(bad(format!(
                        "`{other}` is refused in an _msearch header on logical indices"
                    )))
                }
            }
        }
        if let Some(e) = refused {
            answers[pos] = refuse(e);
            continue;
        }
        upstream.insert("index".into(), Value::from(target.physical_index()));
        let body = if shared {
            upstream.insert("routing".into(), Value::from(target.partition.as_str()));
            let policy = SearchPolicy {
                field: &target.logical.field,
                partition: target.partition.as_str(),
                allow_scripts: target.logical.allow_scripts,
                ids: Some(&target.logical.id_template),
            };
            match confine_search(lines[2 * pos + 1], &policy) {
                Ok(b) => b,
                Err(r) => {
                    answers[pos] =
                        refuse(ProxyError::new(ErrorCode::ConstructRefused, r.to_string()));
                    continue;
                }
            }
        } else {
            match check_dedicated(lines[2 * pos + 1], true) {
                Ok(b) if b.is_empty() => b"{}".to_vec(),
                Ok(b) => b,
                Err(r) => {
                    answers[pos] =
                        refuse(ProxyError::new(ErrorCode::ConstructRefused, r.to_string()));
                    continue;
                }
            }
        };
        if let Err(e) = tenancy.ensure_shared_mapping(&target).await {
            answers[pos] = refuse(e);
            continue;
        }
        let entry = groups
            .entry(target.cluster.id.clone())
            .or_insert_with(|| (Vec::new(), Vec::new()));
        entry
            .0
            .extend_from_slice(Value::Object(upstream).to_string().as_bytes());
        entry.0.push(b'\n');
        entry.0.extend_from_slice(&body);
        entry.0.push(b'\n');
        entry.1.push((pos, target));
    }
    let path = if query.is_empty() {
        "/_msearch".to_string()
    } else {
        format!("/_msearch?{query}")
    };
    let mut nd = HeaderMap::new();
    nd.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-ndjson"),
    );
    for (_, (body, parts_of)) in groups {
        let Some((_, first)) = parts_of.first() else {
            continue;
        };
        let (status, resp) = match tenancy
            .read(first, Method::POST, &path, &nd, Some(Bytes::from(body)))
            .await
        {
            Ok((p, r)) => (p.status, r),
            Err(e) => {
                for (pos, _) in &parts_of {
                    answers[*pos] = Some(
                        json!({"error": error_value(&e), "status": e.status()})
                            .to_string()
                            .into_bytes(),
                    );
                }
                continue;
            }
        };
        let mut responses = Vec::new();
        let _ = osproxy_rewrite::members::edit_members(&resp, |k, v| {
            if k == "responses" {
                let _ = osproxy_rewrite::members::map_elements(v, |r| {
                    responses.push(r.to_vec());
                    Ok(r.to_vec())
                });
            }
            osproxy_rewrite::members::Edit::Keep
        });
        for (i, (pos, target)) in parts_of.iter().enumerate() {
            answers[*pos] = Some(match responses.get(i) {
                Some(r) => reverse::error(&reverse::search_response(r, target), target, None),
                None => {
                    let e = ProxyError::new(
                        ErrorCode::UpstreamUnavailable,
                        format!("cluster answered {status}"),
                    );
                    json!({"error": error_value(&e), "status": e.status()})
                        .to_string()
                        .into_bytes()
                }
            });
        }
    }
    // `took` as OpenSearch's own answer has it (typed clients require it):
    // the whole request's milliseconds.
    let mut out = format!(
        "{{\"took\":{},\"responses\":[",
        started.elapsed().as_millis()
    )
    .into_bytes();
    for (i, a) in answers.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&a.unwrap_or_else(|| b"null".to_vec()));
    }
    out.extend_from_slice(b"]}");
    Ok(json_ok(out))
}
