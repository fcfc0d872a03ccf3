//! Tenancy routing: a request for a logical index is confined to one
//! partition and sent to that partition's placement.
//!
//! Stages (each a function here): resolve the partition and its placement →
//! check the endpoint is served → rewrite (path, parameters, body) →
//! dispatch → reverse the response. Endpoints not yet served for logical
//! indices are refused with `unsupported_endpoint`, never forwarded blind.

mod bulk;
mod by_query;
pub mod cursor;
mod cursors;
mod document;
mod index_admin;
mod multi;
mod params;
mod reverse;
mod search;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use osproxy_control::{ControlPlane, LogicalIndex, PartitionRule, Snapshot};
use osproxy_core::{EndpointKind, ErrorCode, PartitionId, Placement, ProxyError};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::auth::Principal;
use crate::body::{RequestBody, ResponseBody};
use crate::upstream::{UpstreamCluster, UpstreamError, Upstreams};
use osproxy_observe::trace::{Name, Stage, Value};

/// Largest request or response body osproxy reads whole in tenancy mode
/// (documents and search bodies); OpenSearch's own default limit.
pub(crate) const MAX_BUFFERED: usize = 100 * 1024 * 1024;

/// Characters kept as they are in a path segment; everything else is
/// percent-encoded, so a document id can never add a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Where one request goes: the logical index, the partition, the placement
/// and the cluster that serves it.
#[derive(Clone)]
pub(crate) struct Target<'a> {
    pub logical: Arc<LogicalIndex>,
    pub partition: PartitionId,
    pub placement: Arc<Placement>,
    pub cluster: &'a UpstreamCluster,
    /// The epoch of the placement entry it was resolved by (0: default).
    pub epoch: u64,
    /// Set while the partition is being moved.
    pub migrating: Option<Arc<osproxy_control::snapshot::Migrating>>,
}

impl Target<'_> {
    /// The physical index of this placement.
    pub(crate) fn physical_index(&self) -> &str {
        self.placement.physical_index(&self.logical.name)
    }

    pub(crate) fn shared(&self) -> bool {
        self.placement.is_shared()
    }

    /// `/{physical index}/{endpoint}[/{encoded id}]?{query}`
    pub(crate) fn path(&self, endpoint: &str, id: Option<&str>, query: &str) -> String {
        let mut p = format!(
            "/{}/{endpoint}",
            utf8_percent_encode(self.physical_index(), SEGMENT)
        );
        if let Some(id) = id {
            p.push('/');
            p.extend(utf8_percent_encode(id, SEGMENT));
        }
        if !query.is_empty() {
            p.push('?');
            p.push_str(query);
        }
        p
    }
}

/// The tenancy side of the data path.
#[derive(Debug)]
pub struct Tenancy {
    control: Arc<ControlPlane>,
    upstreams: Arc<Upstreams>,
    pub(crate) metrics: Arc<osproxy_observe::Metrics>,
    request_timeout: std::time::Duration,
    ids: osproxy_core::RequestIdMinter,
    /// Signs scroll and PIT ids.
    pub(crate) cursor_key: cursor::CursorKey,
    /// Shared physical indices whose partition field is known to be mapped
    /// as `keyword` (cluster id, index).
    /// (by cluster id, then index; looked up without allocating).
    verified:
        std::sync::Mutex<std::collections::HashMap<String, std::collections::HashSet<String>>>,
}

impl Tenancy {
    /// Over a snapshot and this worker's upstreams.
    pub fn new(
        control: Arc<ControlPlane>,
        upstreams: Arc<Upstreams>,
        metrics: Arc<osproxy_observe::Metrics>,
        request_timeout: std::time::Duration,
        nonce: u64,
        cursor_key: cursor::CursorKey,
    ) -> Self {
        Tenancy {
            control,
            upstreams,
            metrics,
            request_timeout,
            ids: osproxy_core::RequestIdMinter::new(nonce),
            cursor_key,
            verified: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The current control-plane snapshot (one atomic load).
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.control.load()
    }

    /// A fleet-unique document id for auto-id writes in shared placements.
    pub(crate) fn mint_id(&self) -> String {
        self.ids.mint()
    }

    /// Whether any index the path names is a logical index.
    pub fn claims<'a>(&self, mut names: impl Iterator<Item = &'a str>) -> bool {
        self.control
            .with_snapshot(|snap| names.any(|n| snap.is_logical(n)))
    }

    /// Whether a catalogue is configured (so an index-less `_bulk` is a
    /// tenancy bulk).
    pub fn has_catalogue(&self) -> bool {
        self.control.with_snapshot(Snapshot::has_indices)
    }

    /// Serves a `_bulk` on logical indices (`/_bulk`, whose items name
    /// their logical index, or `/{logical}/_bulk`). The response streams
    /// while the body is still being read; `in_flight` is held until it ends.
    pub async fn serve_bulk(
        tenancy: Arc<Tenancy>,
        req: Request<Incoming>,
        principal: Option<Arc<Principal>>,
        index: Option<String>,
        in_flight: osproxy_observe::InFlight,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        check_encoding(req.headers())?;
        if index.as_deref().is_some_and(|i| i.contains(',')) {
            return Err(ProxyError::new(
                ErrorCode::UnsupportedEndpoint,
                "a bulk path may name one logical index",
            ));
        }
        // What a directive can match a bulk on before its items stream: the
        // path's index, and the partition when the principal acts for one
        // (a gateway's bulk may span several, and matches no partition).
        crate::diagnostics::with(|t| {
            if let Some(i) = index.as_deref() {
                t.subject.index = Some(Name::ident(i));
            }
            if let Some(p) = principal
                .as_deref()
                .and_then(|p| p.partition(req.headers()).ok())
            {
                let name = Name::ident(p.as_str());
                t.record("partition", Value::Name(name.clone()));
                t.subject.partition = Some(name);
            }
            t.record("streamed", Value::Flag(true));
        });
        bulk::serve(tenancy, req, principal, index, in_flight).await
    }

    /// Serves cursor requests that name no index: scroll continue/clear,
    /// PIT search and close. The cursor id says where it belongs.
    pub async fn serve_cursor(
        &self,
        req: Request<Incoming>,
        principal: Option<&Principal>,
        kind: EndpointKind,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        check_encoding(req.headers())?;
        cursors::serve(self, req, principal, kind).await
    }

    /// Serves `/_mget` or `/_msearch` without an index in the path: every
    /// part names its logical index.
    pub async fn serve_unscoped(
        &self,
        req: Request<Incoming>,
        principal: Option<&Principal>,
        kind: EndpointKind,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        check_encoding(req.headers())?;
        match kind {
            EndpointKind::Mget => multi::mget(self, req, principal, None).await,
            _ => multi::msearch(self, req, principal, None).await,
        }
    }

    /// Serves one request for a logical index.
    pub async fn serve(
        &self,
        req: Request<Incoming>,
        principal: Option<&Principal>,
        kind: EndpointKind,
        index: &str,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        check_encoding(req.headers())?;
        if matches!(kind, EndpointKind::Document | EndpointKind::Update) {
            let (parts, body) = req.into_parts();
            let writes = parts.method == http::Method::PUT || parts.method == http::Method::POST;
            let body_rule = self
                .snapshot()
                .index(index)
                .and_then(|l| match &l.partition {
                    PartitionRule::Body(field) if writes && kind == EndpointKind::Document => {
                        Some(field.clone())
                    }
                    _ => None,
                });
            return match body_rule {
                Some(field) => {
                    let bytes = read_json(body).await?;
                    let partition = body_partition(&bytes, &field, index)?;
                    let target =
                        self.resolve(index, principal, &parts.headers, Some(&partition))?;
                    document::serve(self, &target, parts, document::Body::Read(bytes)).await
                }
                None => {
                    let target = self.resolve(index, principal, &parts.headers, None)?;
                    document::serve(self, &target, parts, document::Body::Stream(body)).await
                }
            };
        }
        match kind {
            EndpointKind::Pit => {
                let target = self.resolve(index, principal, req.headers(), None)?;
                return cursors::open_pit(self, &target, req).await;
            }
            EndpointKind::Mget => return multi::mget(self, req, principal, Some(index)).await,
            EndpointKind::Msearch => {
                return multi::msearch(self, req, principal, Some(index)).await
            }
            _ => {}
        }
        let target = self.resolve(index, principal, req.headers(), None)?;
        if kind == EndpointKind::IndexAdmin {
            let (parts, body) = req.into_parts();
            return index_admin::serve(self, &target, parts, body, principal).await;
        }
        match kind {
            EndpointKind::Search | EndpointKind::Count => {
                search::serve(self, &target, req, kind).await
            }
            EndpointKind::ByQuery => by_query::serve(self, &target, req, principal).await,
            other => Err(ProxyError::new(
                ErrorCode::UnsupportedEndpoint,
                format!(
                    "the `{other}` endpoint is not served for logical index {:?} in this version",
                    target.logical.name
                ),
            )),
        }
    }

    /// Finds the partition (and checks the principal may act for it) and its
    /// placement.
    /// `from_body` is the partition a written document names, for logical
    /// indices whose partition comes from a body field.
    pub(crate) fn resolve<'s>(
        &'s self,
        index: &str,
        principal: Option<&Principal>,
        headers: &HeaderMap,
        from_body: Option<&str>,
    ) -> Result<Target<'s>, ProxyError> {
        if index.contains(',') {
            return Err(ProxyError::new(
                ErrorCode::UnsupportedEndpoint,
                "a request may name one logical index, alone; send one request per logical index",
            ));
        }
        // One snapshot for the whole decision.
        let snap = self.snapshot();
        let logical = snap.index(index).cloned().ok_or_else(|| {
            ProxyError::new(
                ErrorCode::Internal,
                "logical index vanished from the snapshot",
            )
        })?;
        let principal = principal
            .ok_or_else(|| ProxyError::new(ErrorCode::Unauthenticated, "missing bearer token"))?;
        let partition = match &logical.partition {
            PartitionRule::Principal => principal.partition(headers)?,
            PartitionRule::Header(h) => {
                let v = headers.get(h.as_str()).ok_or_else(|| {
                    ProxyError::new(ErrorCode::PartitionRequired, format!("logical index {:?} takes its partition from the `{h}` header, which is missing", logical.name))
                })?;
                let v = v.to_str().map_err(|_| {
                    ProxyError::new(
                        ErrorCode::InvalidPartition,
                        format!("the `{h}` header is not a partition id"),
                    )
                })?;
                principal.authorize(Some(v))?
            }
            PartitionRule::Body(_) => match from_body {
                Some(v) => principal.authorize(Some(v))?,
                None => principal.partition(headers)?,
            },
        };
        let resolved = snap.resolve(index, &partition).ok_or_else(|| {
            ProxyError::new(
                ErrorCode::Internal,
                "logical index vanished from the snapshot",
            )
        })?;
        let target = self.target(resolved, partition)?;
        self.traced(&target);
        Ok(target)
    }

    /// The epoch gate: a write may be dispatched only while the placement
    /// entry (and the logical index) it was routed by are still current.
    /// A write routed by a placement that has since changed is refused,
    /// retryably, before anything reaches a cluster.
    pub(crate) fn gate(&self, t: &Target<'_>) -> Result<(), ProxyError> {
        crate::diagnostics::enter(Stage::Dispatch);
        if self.is_current(t) {
            return match &t.migrating {
                None => Ok(()),
                Some(m) if m.phase == osproxy_control::store::Phase::Cutover => Err(ProxyError::new(
                    ErrorCode::PartitionMoving,
                    format!(
                        "this partition of logical index {:?} is in the cutover of a move to another placement; writes pause until it completes",
                        t.logical.name
                    ),
                )
                .retryable(true)),
                Some(_) if !self.control.is_fresh() => Err(ProxyError::new(
                    ErrorCode::ControlPlaneStale,
                    "this instance has not heard from the control store within its freshness bound, and the partition is moving; the write was not applied",
                )
                .retryable(true)),
                Some(_) => Ok(()),
            };
        }
        let entry = self
            .snapshot()
            .entry(&t.logical.name, &t.partition)
            .map(|e| e.epoch)
            .unwrap_or(0);
        Err(ProxyError::new(
            ErrorCode::StaleEpoch,
            format!(
                "the placement of this partition of logical index {:?} changed (epoch {} is now {entry}) while the write was in flight; it was not applied",
                t.logical.name, t.epoch
            ),
        )
        .retryable(true))
    }

    /// Whether the placement entry and logical index `t` was routed by are
    /// still the current ones.
    pub(crate) fn is_current(&self, t: &Target<'_>) -> bool {
        self.control.with_snapshot(|snap| {
            let entry = snap
                .entry(&t.logical.name, &t.partition)
                .map(|e| e.epoch)
                .unwrap_or(0);
            entry == t.epoch
                && snap.index(&t.logical.name).map(|l| l.epoch) == Some(t.logical.epoch)
        })
    }

    /// Records a resolved target on the request's trace and in the
    /// per-partition metrics; the request's rewrite starts here.
    fn traced(&self, t: &Target<'_>) {
        self.metrics.partition_request(t.partition.as_str());
        crate::diagnostics::with(|trace| {
            if trace.stage() != Stage::Resolve {
                trace.enter(Stage::Resolve);
            }
            let partition = Name::ident(t.partition.as_str());
            let index = Name::ident(&t.logical.name);
            trace.record("partition", Value::Name(partition.clone()));
            trace.record("index", Value::Name(index.clone()));
            trace.record("placement", Value::Name(Name::fixed(t.placement.kind())));
            trace.record("cluster", Value::Name(Name::ident(&t.cluster.id)));
            trace.record(
                "physical_index",
                Value::Name(Name::ident(t.physical_index())),
            );
            trace.record("epoch", Value::Count(t.epoch));
            trace.subject.partition = Some(partition);
            trace.subject.index = Some(index);
            trace.enter(Stage::Rewrite);
        });
    }

    /// The target of a resolved placement on this worker's upstreams.
    fn target(
        &self,
        resolved: osproxy_control::Resolved,
        partition: PartitionId,
    ) -> Result<Target<'_>, ProxyError> {
        let cluster = self
            .upstreams
            .by_id(resolved.placement.cluster())
            .ok_or_else(|| {
                ProxyError::new(
                    ErrorCode::Internal,
                    format!(
                        "placement names unknown cluster {:?}",
                        resolved.placement.cluster()
                    ),
                )
            })?;
        Ok(Target {
            logical: resolved.index,
            partition,
            placement: resolved.placement,
            cluster,
            epoch: resolved.epoch,
            migrating: resolved.migrating,
        })
    }

    /// Makes sure a shared physical index maps the partition field as
    /// `keyword` before anything is written to or searched in it: a
    /// dynamically mapped `text` field would be tokenised, and a term filter
    /// on `acme` would also match `acme-eu`. The index is created with that
    /// mapping when missing; an index that maps the field otherwise is
    /// refused. Checked once per index and worker.
    pub(crate) async fn ensure_shared_mapping(&self, t: &Target<'_>) -> Result<(), ProxyError> {
        if !t.shared() {
            return Ok(());
        }
        let known = |v: &std::collections::HashMap<String, std::collections::HashSet<String>>| {
            v.get(&t.cluster.id)
                .is_some_and(|set| set.contains(t.physical_index()))
        };
        if self.verified.lock().map(|v| known(&v)).unwrap_or(false) {
            return Ok(());
        }
        // A preparation exchange, not the request's own: the trace goes on
        // in the stage it was in.
        let stage = crate::diagnostics::stage();
        let outcome = self.prepare_shared_mapping(t).await;
        if let Some(stage) = stage {
            crate::diagnostics::enter(stage);
        }
        outcome
    }

    async fn prepare_shared_mapping(&self, t: &Target<'_>) -> Result<(), ProxyError> {
        let field = serde_json::Value::from(t.logical.field.as_str()).to_string();
        let properties = format!("{{\"properties\":{{{field}:{{\"type\":\"keyword\"}}}}}}");
        let headers = HeaderMap::new();
        let mapping_path = t.path("_mapping", None, "");
        for _ in 0..2 {
            let (parts, body) = self
                .exchange(
                    t,
                    http::Method::PUT,
                    &mapping_path,
                    &headers,
                    Some(Bytes::from(properties.clone())),
                )
                .await?;
            if parts.status.is_success() {
                self.check_concrete_index(t).await?;
                if let Ok(mut v) = self.verified.lock() {
                    v.entry(t.cluster.id.clone())
                        .or_default()
                        .insert(t.physical_index().to_string());
                }
                return Ok(());
            }
            if parts.status != http::StatusCode::NOT_FOUND {
                let reason = String::from_utf8_lossy(&reverse::error(&body, t, None))
                    .chars()
                    .take(500)
                    .collect::<String>();
                return Err(ProxyError::new(
                    ErrorCode::Internal,
                    format!("the shared index of logical index {:?} does not map the partition field as keyword, so a filter on it would not isolate tenants; osproxy refuses to use it (cluster said: {reason})", t.logical.name),
                ));
            }
            // Missing: create it from the catalogue's declaration with the
            // field mapped, then check again (a concurrent creation answers
            // resource_already_exists).
            let create = shared_create_body(&t.logical, None).to_string();
            let index_path = format!("/{}", utf8_percent_encode(t.physical_index(), SEGMENT));
            self.exchange(
                t,
                http::Method::PUT,
                &index_path,
                &headers,
                Some(Bytes::from(create)),
            )
            .await?;
        }
        Err(ProxyError::new(
            ErrorCode::UpstreamUnavailable,
            "the shared index could not be prepared; retry",
        )
        .retryable(true))
    }

    /// Refuses a shared physical name that is an alias rather than an index:
    /// `PUT {alias}/_mapping` succeeds too, and an alias someone else made
    /// could point the partition's documents into an index of theirs.
    async fn check_concrete_index(&self, t: &Target<'_>) -> Result<(), ProxyError> {
        let path = format!(
            "/{}?filter_path=*.settings.index.provided_name",
            utf8_percent_encode(t.physical_index(), SEGMENT)
        );
        let (parts, body) = self
            .exchange(t, http::Method::GET, &path, &HeaderMap::new(), None)
            .await?;
        let names: Vec<String> =
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
        if parts.status.is_success() && names.len() == 1 && names[0] == t.physical_index() {
            return Ok(());
        }
        Err(ProxyError::new(
            ErrorCode::Internal,
            format!("the shared index of logical index {:?} is not a concrete index of that name (an alias, or several indices, answer to it); osproxy refuses to use it", t.logical.name),
        ))
    }

    /// The target a cursor belongs to, for a principal that must be granted
    /// the cursor's partition.
    pub(crate) fn resolve_partition<'s>(
        &'s self,
        index: &str,
        principal: Option<&Principal>,
        partition: &str,
    ) -> Result<Target<'s>, ProxyError> {
        let principal = principal
            .ok_or_else(|| ProxyError::new(ErrorCode::Unauthenticated, "missing bearer token"))?;
        let partition = principal.authorize(Some(partition))?;
        let resolved = self.snapshot().resolve(index, &partition).ok_or_else(|| {
            ProxyError::new(
                ErrorCode::BadRequest,
                "the cursor's logical index no longer exists",
            )
        })?;
        let target = self.target(resolved, partition)?;
        self.traced(&target);
        Ok(target)
    }

    /// Sends a rewritten request and reads the response whole (bounded).
    pub(crate) async fn exchange(
        &self,
        target: &Target<'_>,
        method: http::Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Option<Bytes>,
    ) -> Result<(http::response::Parts, Bytes), ProxyError> {
        let mut req = Request::builder().method(method).uri(path_and_query);
        // The client's content type and `accept` are not forwarded: osproxy
        // checked the body as JSON and reads only JSON answers, so it says
        // so itself (a YAML or CBOR answer would pass unreversed).
        for name in ["x-opaque-id", "x-request-id"] {
            if let Some(v) = headers.get(name) {
                req = req.header(name, v);
            }
        }
        req = req.header("accept", "application/json");
        let body = match body {
            Some(b) => {
                let ndjson =
                    path_and_query.contains("/_msearch") || path_and_query.contains("/_bulk");
                req = req.header(
                    "content-type",
                    if ndjson {
                        "application/x-ndjson"
                    } else {
                        "application/json"
                    },
                );
                RequestBody::Full(Some(b))
            }
            None => RequestBody::Empty,
        };
        let req = req.body(body).map_err(|e| {
            ProxyError::new(
                ErrorCode::Internal,
                format!("cannot build the upstream request: {e}"),
            )
        })?;
        crate::diagnostics::with(|t| {
            t.enter(Stage::Dispatch);
            t.record("cluster", Value::Name(Name::ident(&target.cluster.id)));
        });
        let resp = target
            .cluster
            .send(req, self.request_timeout)
            .await
            .map_err(|e| {
                let code = match e {
                    UpstreamError::Timeout(_) => ErrorCode::UpstreamTimeout,
                    _ => ErrorCode::UpstreamUnavailable,
                };
                ProxyError::new(code, format!("cluster {}: {e}", target.cluster.id))
                    .retryable(matches!(e, UpstreamError::Connect(_)))
            })?;
        let (parts, body) = resp.into_parts();
        let bytes = read_limited(body).await?;
        crate::diagnostics::with(|t| {
            t.record(
                "upstream_status",
                Value::Count(u64::from(parts.status.as_u16())),
            );
            t.record("upstream_bytes", Value::Bytes(bytes.len() as u64));
            t.enter(Stage::Reverse);
        });
        Ok((parts, bytes))
    }
}

/// The create-index body of a shared physical index: the catalogue's
/// declared settings and mappings, with `extra` (an operator's or a
/// tenant's already checked create body) laid over them, and the partition
/// field mapped as `keyword`.
pub(crate) fn shared_create_body(
    logical: &LogicalIndex,
    extra: Option<&serde_json::Map<String, serde_json::Value>>,
) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let object = |v: Option<&Value>| v.and_then(Value::as_object).cloned().unwrap_or_default();
    let mut settings = object(logical.settings.as_deref());
    let mut mappings = object(logical.mappings.as_deref());
    if let Some(extra) = extra {
        settings.extend(object(extra.get("settings")));
        for (k, v) in object(extra.get("mappings")) {
            match (k.as_str(), mappings.get_mut("properties")) {
                ("properties", Some(Value::Object(props))) => props.extend(object(Some(&v))),
                _ => {
                    mappings.insert(k, v);
                }
            }
        }
    }
    let props = mappings
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(props) = props {
        props.insert(logical.field.clone(), json!({"type": "keyword"}));
    }
    let mut body = Map::new();
    if !settings.is_empty() {
        body.insert("settings".into(), Value::Object(settings));
    }
    body.insert("mappings".into(), Value::Object(mappings));
    if let Some(aliases) = extra.and_then(|e| e.get("aliases")) {
        body.insert("aliases".into(), aliases.clone());
    }
    Value::Object(body)
}

/// Reads a client body whole, up to [`MAX_BUFFERED`] bytes (for the data
/// path's checks outside tenancy).
pub(crate) async fn read_body(body: Incoming) -> Result<Bytes, ProxyError> {
    read_limited(body).await
}

/// Reads a body whole, up to [`MAX_BUFFERED`] bytes.
pub(crate) async fn read_limited<B>(body: B) -> Result<Bytes, ProxyError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Display + Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Limited::new(body, MAX_BUFFERED)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| {
            ProxyError::new(
                ErrorCode::BadRequest,
                format!("body could not be read (limit {MAX_BUFFERED} bytes): {e}"),
            )
        })
}

/// Reads a JSON request body whole (bounded) and checks it is strict JSON
/// (see [`strict_body`]).
pub(crate) async fn read_json<B>(body: B) -> Result<Bytes, ProxyError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Display + Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let bytes = read_limited(body).await?;
    strict_body(&bytes)?;
    Ok(bytes)
}

/// Refuses a body that is not strict JSON (comments, a name twice, trailing
/// data, ...): OpenSearch's lenient parser could read it differently from
/// osproxy. An empty (or all-blank) body passes: it means "no body".
pub(crate) fn strict_body(bytes: &[u8]) -> Result<(), ProxyError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    osproxy_rewrite::strict::check(bytes).map_err(|e| {
        ProxyError::new(
            ErrorCode::BadRequest,
            format!("the request body is refused: {e}; send standard JSON"),
        )
    })
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
    let mut resp = Response::new(ResponseBody::full(Bytes::from(body)));
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

/// The partition a document names in `field` (a top-level string), for
/// logical indices whose partition comes from the body.
pub(crate) fn body_partition(doc: &[u8], field: &str, index: &str) -> Result<String, ProxyError> {
    let mut found: Option<Result<String, ()>> = None;
    osproxy_rewrite::members::edit_members(doc, |key, value| {
        if key == field {
            found = Some(serde_json::from_slice::<String>(value).map_err(|_| ()));
        }
        osproxy_rewrite::members::Edit::Keep
    })
    .map_err(|e| ProxyError::new(ErrorCode::BadRequest, e.to_string()))?;
    match found {
        Some(Ok(v)) => Ok(v),
        _ => Err(ProxyError::new(
            ErrorCode::PartitionRequired,
            format!("logical index {index:?} takes the partition from the document's top-level string field `{field}`, which is missing"),
        )),
    }
}

/// Tenancy rewrites request bodies byte by byte, so they must arrive
/// uncompressed; a compressed one is refused with a clear error rather than
/// misread as malformed JSON.
pub(crate) fn check_encoding(headers: &HeaderMap) -> Result<(), ProxyError> {
    check_media_types(headers)?;
    identity_encoding(headers)
}

fn identity_encoding(headers: &HeaderMap) -> Result<(), ProxyError> {
    match headers.get(http::header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase()) {
        None => Ok(()),
        Some(e) if e.is_empty() || e == "identity" => Ok(()),
        Some(e) => Err(ProxyError::new(
            ErrorCode::BadRequest,
            format!("request bodies for logical indices must not be compressed (content-encoding: {e}); send them uncompressed (opensearch-py: http_compress=False)"),
        )),
    }
}

/// An uncompressed JSON (or NDJSON) body: what osproxy can check byte for
/// byte.
pub(crate) fn check_plain_json(headers: &HeaderMap) -> Result<(), ProxyError> {
    check_content_type(headers)?;
    identity_encoding(headers)
}

/// Only JSON goes in and out of a logical index: a request body declared
/// as YAML, CBOR or SMILE (which OpenSearch would parse as such, while
/// osproxy reads JSON), or a form, is refused; so is an `Accept` that asks
/// for an answer osproxy could not reverse.
pub(crate) fn check_media_types(headers: &HeaderMap) -> Result<(), ProxyError> {
    check_content_type(headers)?;
    check_accept(headers)
}

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
