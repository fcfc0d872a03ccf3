//! `_mget` and `_msearch` on logical indices: each document or search is
//! confined and resolved on its own, the parts are grouped per target and
//! forwarded as real upstream `_mget` / `_msearch` requests, and the answers
//! come back in the client's order. A part that cannot be routed gets an
//! error entry in its place; the others proceed. When every part goes to
//! one target (`_mget`) or cluster (`_msearch`), the answer streams: a
//! document, or a search's hit, held at a time ([`ElementStream`]), the
//! entries made here written in their places between the cluster's.

use std::collections::HashMap;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use osproxy_core::{ErrorCode, ProxyError};
use osproxy_rewrite::search::{check_dedicated, confine_search, SearchPolicy};
use osproxy_upstream::ClientBody;
use serde_json::{json, Map, Value};

use super::params::allow_only;

use super::reverse::Placed;
use super::{json_ok, read_json, reverse, Target, Tenancy};
use crate::auth::Principal;
use crate::body::ResponseBody;
use osproxy_rewrite::stream::{ElementStream, Elements, SearchStream, StreamError};

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
    let mut answers: Vec<Option<Vec<u8>>> = vec![None; specs.len()];
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
        upstream.insert("_index".into(), Value::from(target.physical_index()));
        upstream.insert("_id".into(), Value::from(target.physical_id(&id)));
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
    let mut groups: Vec<MgetGroup<'_>> = groups.into_values().collect();
    if groups.len() == 1 {
        // One target (the usual case): its answer streams, one document
        // held at a time, with the answers made here in their places.
        let (target, docs, positions) = groups.remove(0);
        tenancy.ensure_shared_mapping(&target).await?;
        let body = Bytes::from(json!({"docs": docs}).to_string());
        let (parts, upstream) = tenancy
            .read_streaming(&target, Method::POST, &path, &HeaderMap::new(), Some(body))
            .await?;
        if parts.status.is_success() {
            let answer = MgetAnswer {
                names: reverse::Names::of(&target),
                list: Ordered::new(answers, positions, b"{\"docs\":[".to_vec()),
                status: parts.status,
                held: Vec::new(),
            };
            return Ok(super::json_stream_response(
                parts,
                ResponseBody::reversed(
                    upstream,
                    Box::new(ElementStream::new(answer, "docs")),
                    osproxy_upstream::Answering::Read,
                ),
            ));
        }
        for (pos, id) in positions {
            answers[pos] = Some(made(missing_doc(&target.logical.name, &id, parts.status)));
        }
    }
    for (target, docs, positions) in groups {
        tenancy.ensure_shared_mapping(&target).await?;
        let body = Bytes::from(json!({"docs": docs}).to_string());
        let (parts, resp) = tenancy
            .read(&target, Method::POST, &path, &HeaderMap::new(), Some(body))
            .await?;
        let members = if parts.status.is_success() {
            osproxy_rewrite::members::members(&resp).unwrap_or_default()
        } else {
            Vec::new()
        };
        let docs = members
            .iter()
            .find(|(k, _)| k == "docs")
            .and_then(|(_, v)| osproxy_rewrite::members::elements(v).ok())
            .unwrap_or_default();
        for (i, (pos, id)) in positions.into_iter().enumerate() {
            answers[pos] = Some(match docs.get(i) {
                Some(d) => reverse_doc(d, &target, &id),
                None => made(missing_doc(&target.logical.name, &id, parts.status)),
            });
        }
    }
    // Written as raw JSON (not through a tree, which would refuse a lone
    // surrogate and panic in `json!`).
    let mut out = Vec::with_capacity(
        16 + answers
            .iter()
            .map(|d| d.as_ref().map_or(4, Vec::len) + 1)
            .sum::<usize>(),
    );
    out.extend_from_slice(b"{\"docs\":[");
    for (i, d) in answers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(d.as_deref().unwrap_or(b"null"));
    }
    out.extend_from_slice(b"]}");
    Ok(json_ok(out))
}

/// An answer osproxy made, as raw JSON.
fn made(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap_or_else(|_| b"null".to_vec())
}

/// Why a part has no answer from the cluster: it answered `status` without
/// one.
fn unanswered(status: http::StatusCode) -> ProxyError {
    ProxyError::new(
        ErrorCode::UpstreamUnavailable,
        format!("cluster answered {status}"),
    )
}

/// The answer for a document of an `_mget` the cluster did not answer.
fn missing_doc(index: &str, id: &str, status: http::StatusCode) -> Value {
    let e = unanswered(status);
    json!({"_index": index, "_id": id, "error": error_value(&e)})
}

/// The answer for a search of an `_msearch` the cluster did not answer.
fn missing_search(e: &ProxyError) -> Vec<u8> {
    json!({"error": error_value(e), "status": e.status()})
        .to_string()
        .into_bytes()
}

/// One document of an `_mget` answer, asked for as `id`, reversed
/// (byte-level, its source untouched but for the partition field); a
/// per-document error names the physical index and id, both replaced. A
/// document that does not scan is answered with an error in its place,
/// never handed on as it came.
fn reverse_doc(d: &[u8], t: &impl reverse::Placed, id: &str) -> Vec<u8> {
    match reverse::document(d, t) {
        Ok(doc) if reverse::is_error(&doc) => {
            reverse::error(&doc, t, Some((&t.physical_id(id), id)))
        }
        Ok(doc) => doc,
        Err(e) => {
            let e = ProxyError::new(
                ErrorCode::UpstreamUnavailable,
                format!("the cluster's answer for this document could not be read: {e}"),
            );
            made(json!({"_index": t.logical().name, "_id": id, "error": error_value(&e)}))
        }
    }
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
        let refuse = |e: ProxyError| Some(missing_search(&e));
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
    let mut groups: Vec<MsearchGroup<'_>> = groups.into_values().collect();
    if groups.len() == 1 {
        // One cluster (the usual case): its answer streams, one hit held
        // at a time, with the answers made here in their places.
        let (body, parts_of) = groups.remove(0);
        if let Some((_, first)) = parts_of.first() {
            match tenancy
                .read_streaming(first, Method::POST, &path, &nd, Some(Bytes::from(body)))
                .await
            {
                Ok((parts, upstream)) if parts.status.is_success() => {
                    let cluster = parts_of
                        .iter()
                        .map(|(pos, target)| (*pos, reverse::Names::of(target)));
                    let answer = MsearchAnswer {
                        list: Ordered::new(answers, cluster, Vec::new()),
                        started,
                        status: parts.status,
                        search: None,
                        extra: false,
                    };
                    return Ok(super::json_stream_response(
                        parts,
                        ResponseBody::reversed(
                            upstream,
                            Box::new(ElementStream::new(answer, "responses")),
                            osproxy_upstream::Answering::Read,
                        ),
                    ));
                }
                Ok((parts, _)) => {
                    let e = unanswered(parts.status);
                    for (pos, _) in &parts_of {
                        answers[*pos] = Some(missing_search(&e));
                    }
                }
                Err(e) => {
                    for (pos, _) in &parts_of {
                        answers[*pos] = Some(missing_search(&e));
                    }
                }
            }
        }
    }
    for (body, parts_of) in groups {
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
                    answers[*pos] = Some(missing_search(&e));
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
                // By the rules of the streamed path, so that one answer
                // reads the same on either.
                Some(r) => reverse::one_search(r, reverse::Names::of(target)).unwrap_or_else(|e| {
                    missing_search(&ProxyError::new(ErrorCode::UpstreamUnavailable, e.0))
                }),
                None => missing_search(&unanswered(status)),
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

/// A place in the client's answer list: answered here, or by the cluster
/// (with what reversing its answer needs).
enum Slot<C> {
    Made(Vec<u8>),
    Cluster(C),
}

/// The client's answer list written in its order as the cluster's answers
/// stream: the answers made here are written in their places between
/// them, and a place the cluster's answer did not fill gets an error.
struct Ordered<C> {
    slots: Vec<Slot<C>>,
    /// The client's positions of the cluster's answers, in its order.
    order: Vec<usize>,
    /// The cluster's answers seen.
    seen: usize,
    /// The client's positions written.
    written: usize,
    /// What the answer opens with; `None` once written.
    head: Option<Vec<u8>>,
}

impl<C> Ordered<C> {
    /// The client's list: the answers made here by position (`null` where
    /// none was), and the cluster's parts, `(position, place)` in the order
    /// it answers them.
    fn new(
        made: Vec<Option<Vec<u8>>>,
        cluster: impl IntoIterator<Item = (usize, C)>,
        head: Vec<u8>,
    ) -> Self {
        let mut slots: Vec<Slot<C>> = made
            .into_iter()
            .map(|m| Slot::Made(m.unwrap_or_else(|| b"null".to_vec())))
            .collect();
        let mut order = Vec::new();
        for (pos, c) in cluster {
            if let Some(slot) = slots.get_mut(pos) {
                *slot = Slot::Cluster(c);
                order.push(pos);
            }
        }
        Ordered {
            slots,
            order,
            seen: 0,
            written: 0,
            head: Some(head),
        }
    }

    /// Writes the places before `pos` (`missing` for one the cluster did
    /// not answer) and the separator before `pos`'s own answer.
    fn up_to(&mut self, pos: usize, out: &mut Vec<u8>, missing: impl Fn(&C) -> Vec<u8>) {
        if let Some(head) = self.head.take() {
            out.extend_from_slice(&head);
        }
        while self.written < pos.min(self.slots.len()) {
            if self.written > 0 {
                out.push(b',');
            }
            match &self.slots[self.written] {
                Slot::Made(m) => out.extend_from_slice(m),
                Slot::Cluster(c) => out.extend_from_slice(&missing(c)),
            }
            self.written += 1;
        }
        if pos < self.slots.len() && self.written > 0 {
            out.push(b',');
        }
    }

    /// The cluster's next answer: its client position and place.
    fn next(&self) -> Option<(usize, &C)> {
        let pos = *self.order.get(self.seen)?;
        match self.slots.get(pos)? {
            Slot::Cluster(c) => Some((pos, c)),
            Slot::Made(_) => None,
        }
    }

    /// The cluster's answer at `pos` is written.
    fn done(&mut self, pos: usize) {
        self.seen += 1;
        self.written = pos + 1;
    }
}

/// An `_mget` answer from one target, reversed a document at a time.
struct MgetAnswer {
    names: reverse::Names,
    list: Ordered<String>,
    status: http::StatusCode,
    held: Vec<u8>,
}

impl Elements for MgetAnswer {
    fn part(&mut self, bytes: &[u8], end: bool, out: &mut Vec<u8>) -> Result<(), StreamError> {
        if self.held.len() + bytes.len() > osproxy_upstream::MAX_BUFFERED {
            return Err(StreamError(format!(
                "a document of the cluster's _mget answer is larger than {} bytes",
                osproxy_upstream::MAX_BUFFERED
            )));
        }
        self.held.extend_from_slice(bytes);
        if !end {
            return Ok(());
        }
        // A document past the ones asked for is not the client's.
        if let Some((pos, id)) = self.list.next() {
            let doc = reverse_doc(&self.held, &self.names, id);
            let (index, status) = (&self.names.logical().name, self.status);
            self.list.up_to(pos, out, |id| {
                missing_doc(index, id, status).to_string().into_bytes()
            });
            out.extend_from_slice(&doc);
            self.list.done(pos);
        }
        self.held.clear();
        if self.held.capacity() > 1024 * 1024 {
            self.held = Vec::new();
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), StreamError> {
        let (index, status) = (&self.names.logical().name, self.status);
        let len = self.list.slots.len();
        self.list.up_to(len, out, |id| {
            missing_doc(index, id, status).to_string().into_bytes()
        });
        out.extend_from_slice(b"]}");
        Ok(())
    }

    fn holding(&self) -> usize {
        self.held.capacity()
    }
}

/// An `_msearch` answer from one cluster, each search's hits reversed one
/// at a time as they stream.
struct MsearchAnswer {
    list: Ordered<reverse::Names>,
    started: std::time::Instant,
    status: http::StatusCode,
    /// The search being streamed, and its client position.
    search: Option<(usize, SearchStream<reverse::Streamed>)>,
    /// Whether the element being read is read past: past the searches
    /// asked for, or already answered with an error.
    extra: bool,
}

impl MsearchAnswer {
    fn missing(&self) -> impl Fn(&reverse::Names) -> Vec<u8> {
        let e = unanswered(self.status);
        move |_| missing_search(&e)
    }

    /// `took` as OpenSearch's own answer has it (typed clients require
    /// it): the whole request's milliseconds until the cluster answered.
    fn open(&mut self) {
        if let Some(head) = self.list.head.as_mut() {
            if head.is_empty() {
                *head = format!(
                    "{{\"took\":{},\"responses\":[",
                    self.started.elapsed().as_millis()
                )
                .into_bytes();
            }
        }
    }
}

impl Elements for MsearchAnswer {
    fn part(&mut self, bytes: &[u8], end: bool, out: &mut Vec<u8>) -> Result<(), StreamError> {
        if self.search.is_none() && !self.extra {
            let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
            if first.is_none() && !end {
                // Which the element is is told by its first byte.
                return Ok(());
            }
            match self.list.next() {
                // Not a search's answer: an error in its place, as the
                // whole-answer path gives (found by review: the stream was
                // broken off), and the element read past.
                Some((pos, _)) if first != Some(&b'{') => {
                    self.open();
                    let missing = self.missing();
                    self.list.up_to(pos, out, missing);
                    out.extend_from_slice(&missing_search(&ProxyError::new(
                        ErrorCode::UpstreamUnavailable,
                        "the cluster's answer for this search is not a JSON object",
                    )));
                    self.list.done(pos);
                    self.extra = !end;
                }
                Some((pos, names)) => {
                    let reverse = reverse::Streamed {
                        names: names.clone(),
                        sign: None,
                    };
                    self.search = Some((
                        pos,
                        SearchStream::new(reverse, osproxy_upstream::MAX_BUFFERED),
                    ));
                    self.open();
                    let missing = self.missing();
                    self.list.up_to(pos, out, missing);
                }
                // A search past the ones asked for is not the client's.
                None => self.extra = true,
            }
        }
        if let Some((pos, search)) = self.search.as_mut() {
            search.feed(bytes, out)?;
            if end {
                search.finish(out)?;
                let pos = *pos;
                self.search = None;
                self.list.done(pos);
            }
        }
        if end {
            self.extra = false;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), StreamError> {
        self.open();
        let missing = self.missing();
        let len = self.list.slots.len();
        self.list.up_to(len, out, missing);
        out.extend_from_slice(b"]}");
        Ok(())
    }

    fn holding(&self) -> usize {
        self.search.as_ref().map_or(0, |(_, s)| s.holding())
    }
}

#[cfg(test)]
mod tests {
    use osproxy_rewrite::stream::Feed;

    use super::*;

    fn run(mut s: impl Feed, raw: &str, chunk: usize) -> Value {
        let mut out = Vec::new();
        for c in raw.as_bytes().chunks(chunk) {
            s.feed(c, &mut out).unwrap();
        }
        s.finish(&mut out).unwrap();
        serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)))
    }

    /// The cluster's documents are reversed in their client positions,
    /// between the answers made here, and a document it did not answer
    /// gets an error in its place; split anywhere, the answer is the same.
    #[test]
    fn an_mget_answer_streams_in_the_clients_order() {
        let upstream = r#"{"docs":[{"_index":"phys-shared","_id":"acme:1","_version":1,"_routing":"acme","found":true,"_source":{"_tenant":"acme","t":"]}\"{"}},{"_index":"phys-shared","_id":"acme:2","found":false},{"_index":"phys-shared","_id":"acme:x","error":{"type":"x","reason":"[acme:x] in no such index [phys-shared]","index":"phys-shared","index_uuid":"u"}},{"_index":"phys-shared","_id":"acme:5","_source":{"_tenant":"acme" "t":1}}]}"#;
        let want = json!({"docs": [
            {"error": "made 0"},
            {"_index": "orders", "_id": "1", "_version": 1, "found": true, "_source": {"t": "]}\"{"}},
            {"error": "made 2"},
            {"_index": "orders", "_id": "2", "found": false},
            {"_index": "orders", "_id": "x", "error": {"type": "x", "reason": "[x] in no such index [orders]", "index": "orders"}},
            {"_index": "orders", "_id": "5", "error": error_value(&ProxyError::new(ErrorCode::UpstreamUnavailable, "the cluster's answer for this document could not be read: the document is not valid JSON: expected `,` or `}` at byte 19"))},
            {"_index": "orders", "_id": "4", "error": error_value(&ProxyError::new(ErrorCode::UpstreamUnavailable, "cluster answered 200 OK"))},
        ]});
        for chunk in [1, 2, 3, 7, 64, 4096] {
            let made = vec![
                Some(br#"{"error":"made 0"}"#.to_vec()),
                None,
                Some(br#"{"error":"made 2"}"#.to_vec()),
                None,
                None,
                None,
                None,
            ];
            let cluster = [(1, "1"), (3, "2"), (4, "x"), (5, "5"), (6, "4")]
                .map(|(p, id)| (p, id.to_string()));
            let answer = MgetAnswer {
                names: reverse::tests::names(true),
                list: Ordered::new(made, cluster, b"{\"docs\":[".to_vec()),
                status: http::StatusCode::OK,
                held: Vec::new(),
            };
            let got = run(ElementStream::new(answer, "docs"), upstream, chunk);
            assert_eq!(got, want, "chunks of {chunk}");
        }
    }

    /// Each search of an `_msearch` answer streams through its own
    /// reversal (hits, a failed search's error), in its client position.
    #[test]
    fn an_msearch_answer_streams_in_the_clients_order() {
        let upstream = r#"{"took":4,"responses":[{"took":1,"timed_out":false,"_shards":{"total":1,"successful":1,"skipped":0,"failed":0},"hits":{"total":{"value":1,"relation":"eq"},"max_score":1.0,"hits":[{"_index":"phys-shared","_id":"acme:1","_score":1.0,"_routing":"acme","_source":{"_tenant":"acme","t":1}}]},"status":200},{"error":{"root_cause":[{"type":"index_not_found_exception","reason":"no such index [phys-shared]","index":"phys-shared","index_uuid":"u"}],"type":"index_not_found_exception","reason":"no such index [phys-shared]","index":"phys-shared","index_uuid":"u"},"status":404}, ["acme:1", {"_id":"acme:2"}] ,{"extra":1}]}"#;
        for chunk in [1, 2, 5, 64, 4096] {
            let made = vec![
                Some(br#"{"error":"made 0","status":400}"#.to_vec()),
                None,
                None,
                Some(br#"{"error":"made 3","status":400}"#.to_vec()),
                None,
            ];
            let cluster = [1, 2, 4].map(|p| (p, reverse::tests::names(true)));
            let answer = MsearchAnswer {
                list: Ordered::new(made, cluster, Vec::new()),
                started: std::time::Instant::now(),
                status: http::StatusCode::OK,
                search: None,
                extra: false,
            };
            let got = run(ElementStream::new(answer, "responses"), upstream, chunk);
            assert!(got["took"].is_u64(), "{got}");
            let r = got["responses"].as_array().unwrap();
            assert_eq!(r.len(), 5, "chunks of {chunk}: {got}");
            // An element that is not a search's answer is an error in its
            // place, as on the whole-answer path.
            assert_eq!(r[4]["status"], 502, "{got}");
            assert_eq!(r[4]["error"]["type"], "upstream_unavailable", "{got}");
            assert!(!got.to_string().contains("acme:"), "{got}");
            assert_eq!(r[0]["error"], "made 0");
            assert_eq!(r[3]["error"], "made 3");
            assert_eq!(
                r[1]["hits"]["hits"],
                json!([{"_index": "orders", "_id": "1", "_score": 1.0, "_source": {"t": 1}}])
            );
            assert_eq!(r[1]["status"], 200);
            assert_eq!(r[2]["status"], 404);
            assert_eq!(r[2]["error"]["index"], "orders");
            assert!(r[2]["error"].get("index_uuid").is_none(), "{got}");
            assert!(!got.to_string().contains("phys-shared"), "{got}");
        }
    }

    /// A search answer read whole (an `_msearch` over several clusters) is
    /// reversed by the streamed rules: a tenant's source holding members
    /// named as an error's are its own and kept; an error is scrubbed.
    #[test]
    fn a_search_read_whole_is_reversed_as_a_streamed_one() {
        let hit = r#"{"hits":{"hits":[{"_index":"phys-shared","_id":"acme:1","_source":{"_tenant":"acme","stack_trace":"mine","index_uuid":"also mine"}}]}}"#;
        let got: Value = serde_json::from_slice(
            &reverse::one_search(hit.as_bytes(), reverse::tests::names(true)).unwrap(),
        )
        .unwrap();
        assert_eq!(
            got["hits"]["hits"][0],
            json!({"_index": "orders", "_id": "1", "_source": {"stack_trace": "mine", "index_uuid": "also mine"}})
        );
        let failed = r#"{"error":{"type":"x","reason":"in [phys-shared]","index_uuid":"u","stack_trace":"at org"},"status":500}"#;
        let got = String::from_utf8(
            reverse::one_search(failed.as_bytes(), reverse::tests::names(true)).unwrap(),
        )
        .unwrap();
        assert_eq!(
            got,
            r#"{"error":{"type":"x","reason":"in [orders]"},"status":500}"#
        );
        assert!(reverse::one_search(b"[1]", reverse::tests::names(true)).is_err());
    }

    /// The answer is cut off: an error, never a complete-looking answer.
    #[test]
    fn a_cut_off_answer_is_an_error() {
        let answer = MgetAnswer {
            names: reverse::tests::names(true),
            list: Ordered::new(vec![None], [(0, "1".to_string())], b"{\"docs\":[".to_vec()),
            status: http::StatusCode::OK,
            held: Vec::new(),
        };
        let mut s = ElementStream::new(answer, "docs");
        let mut out = Vec::new();
        s.feed(br#"{"docs":[{"_id":"acme:1","found":tr"#, &mut out)
            .unwrap();
        assert!(s.finish(&mut out).is_err());
    }
}
