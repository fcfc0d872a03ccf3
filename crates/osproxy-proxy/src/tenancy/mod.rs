//! Tenancy routing: a request for a logical index is confined to one
//! partition and sent to that partition's placement.
//!
//! Stages (each a function here): resolve the partition and its placement →
//! check the endpoint is served → rewrite (path, parameters, body) →
//! dispatch → reverse the response. Endpoints not served for logical
//! indices are refused with `unsupported_endpoint`, never forwarded blind.

mod bulk;
mod by_query;
pub mod cursor;
mod cursors;
mod document;
mod index_admin;
mod multi;
mod params;
pub(crate) mod reverse;
mod search;
mod shared_index;
mod wire;

pub(crate) use shared_index::shared_create_body;
pub(crate) use wire::{
    body_partition, check_encoding, check_plain_json, json_ok, json_response, json_stream_response,
    read_json, strict_body, strict_values, update_keeps_partition, PARSE_COST_PER_VALUE,
};

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use osproxy_control::{ControlPlane, LogicalIndex, PartitionRule, Snapshot, WriteTicket};
use osproxy_core::{EndpointKind, ErrorCode, PartitionId, Placement, ProxyError};
use osproxy_upstream::{Answering, ClientBody};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::auth::Principal;
use crate::body::{RequestBody, ResponseBody};
use crate::upstream::{UpstreamCluster, Upstreams};
use osproxy_observe::trace::{Name, Stage, Value};

/// Largest request or response body osproxy reads whole in tenancy mode
/// (documents and search bodies); OpenSearch's own default limit.
pub(crate) use osproxy_upstream::MAX_BUFFERED;

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
        req: Request<ClientBody>,
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
        // A bulk acting for one partition is admitted or refused whole by
        // its limits before any item is read; a gateway's items are
        // charged to their partitions as they are routed.
        if let Some(p) = principal
            .as_deref()
            .and_then(|p| p.partition(req.headers()).ok())
        {
            // A refused body is read (and dropped) after its 429 is
            // answered (`osproxy_upstream::Upload`), so that a client
            // still sending it receives the answer.
            crate::limits::seat(p.as_str())?;
        }
        bulk::serve(tenancy, req, principal, index, in_flight).await
    }

    /// Serves cursor requests that name no index: scroll continue/clear,
    /// PIT search and close. The cursor id says where it belongs.
    pub async fn serve_cursor(
        &self,
        req: Request<ClientBody>,
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
        req: Request<ClientBody>,
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
        req: Request<ClientBody>,
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
                    document::serve(
                        self,
                        &target,
                        parts,
                        document::Body::Read(bytes.into_bytes()),
                    )
                    .await
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
                let v = crate::auth::partition_header(headers, h.as_str())?.ok_or_else(|| {
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
        crate::limits::seat(target.partition.as_str())?;
        Ok(target)
    }

    /// The epoch gate: a write may be dispatched only while the placement
    /// entry (and the logical index) it was routed by are still current.
    /// A write routed by a placement that has since changed is refused,
    /// retryably, before anything reaches a cluster.
    pub(crate) fn gate(&self, t: &Target<'_>) -> Result<WriteTicket, ProxyError> {
        crate::diagnostics::enter(Stage::Dispatch);
        // Admitted (and counted in flight) first, then checked against the
        // snapshot current now.
        let ticket = self.control.admit_write().map_err(|e| {
            ProxyError::new(
                ErrorCode::ControlPlaneStale,
                format!("{e}; the write was not applied"),
            )
            .retryable(true)
        })?;
        if self.is_current(t) {
            return match &t.migrating {
                Some(m) if m.phase == osproxy_control::store::Phase::Cutover => Err(ProxyError::new(
                    ErrorCode::PartitionMoving,
                    format!(
                        "this partition of logical index {:?} is in the cutover of a move to another placement; writes pause until it completes",
                        t.logical.name
                    ),
                )
                .retryable(true)),
                _ => Ok(ticket),
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

    /// Whether an admitted write may be acknowledged: its lease held from
    /// admission until the cluster answered. When not, the answer is
    /// "outcome unknown" (a barrier may have passed without this instance,
    /// so the write may be lost with its placement).
    pub(crate) fn acknowledge(&self, ticket: &WriteTicket) -> Result<(), ProxyError> {
        if ticket.held() {
            return Ok(());
        }
        Err(ProxyError::new(
            ErrorCode::OutcomeUnknown,
            "this instance lost its fleet lease while the write was in flight (etcd unreachable or the instance paused); the write may or may not have been applied: read it back before retrying",
        ))
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
        crate::limits::seat(target.partition.as_str())?;
        Ok(target)
    }

    /// A write's exchange: admitted by the gate (lease, epoch, cutover)
    /// first, and a success acknowledged only under the lease it was
    /// admitted under.
    pub(crate) async fn write(
        &self,
        target: &Target<'_>,
        method: http::Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Option<Bytes>,
    ) -> Result<(http::response::Parts, Bytes), ProxyError> {
        let ticket = self.gate(target)?;
        let answer = self
            .exchange(target, method, path_and_query, headers, body)
            .await?;
        if answer.0.status.is_success() {
            self.acknowledge(&ticket)?;
        }
        Ok(answer)
    }

    /// Sends a rewritten request that may change something and reads the
    /// response whole (bounded; charged to the budget, past it if need be,
    /// since what was applied must be told).
    pub(crate) async fn exchange(
        &self,
        target: &Target<'_>,
        method: http::Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Option<Bytes>,
    ) -> Result<(http::response::Parts, Bytes), ProxyError> {
        self.exchange_as(
            target,
            method,
            path_and_query,
            headers,
            body,
            Answering::Change,
        )
        .await
    }

    /// Sends a rewritten read and reads the response whole (bounded); an
    /// answer the budget cannot cover is not read further, and the read is
    /// refused `503 overloaded` (retryable: nothing changed).
    pub(crate) async fn read(
        &self,
        target: &Target<'_>,
        method: http::Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Option<Bytes>,
    ) -> Result<(http::response::Parts, Bytes), ProxyError> {
        self.exchange_as(
            target,
            method,
            path_and_query,
            headers,
            body,
            Answering::Read,
        )
        .await
    }

    async fn exchange_as(
        &self,
        target: &Target<'_>,
        method: http::Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Option<Bytes>,
        answering: Answering,
    ) -> Result<(http::response::Parts, Bytes), ProxyError> {
        let (parts, body, sent) = self
            .send(target, method, path_and_query, headers, body)
            .await?;
        let bytes = osproxy_upstream::read_answer(body, &target.cluster.id, answering).await;
        crate::limits::upstream(sent.elapsed());
        let bytes = bytes?;
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

    /// Sends a rewritten read and hands back the answer's body unread, to
    /// be reversed as it streams (the time waited on the cluster counts to
    /// its headers).
    pub(crate) async fn read_streaming(
        &self,
        target: &Target<'_>,
        method: http::Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Option<Bytes>,
    ) -> Result<(http::response::Parts, osproxy_upstream::Answer), ProxyError> {
        let (parts, body, sent) = self
            .send(target, method, path_and_query, headers, body)
            .await?;
        crate::limits::upstream(sent.elapsed());
        crate::diagnostics::with(|t| {
            t.record(
                "upstream_status",
                Value::Count(u64::from(parts.status.as_u16())),
            );
            t.enter(Stage::Reverse);
        });
        Ok((parts, body))
    }

    /// Sends a rewritten request; the answer's head, its body unread, and
    /// when it was sent.
    async fn send(
        &self,
        target: &Target<'_>,
        method: http::Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Option<Bytes>,
    ) -> Result<
        (
            http::response::Parts,
            osproxy_upstream::Answer,
            std::time::Instant,
        ),
        ProxyError,
    > {
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
        // Never "idempotent" here, whatever the upstream method: a tenancy
        // write is sent as PUT even when the client's request was not one
        // (an auto-id POST becomes `PUT _create/{minted id}`), and a timed-out
        // write may still land after the client's retry. Only a failed
        // connect, which sent nothing, is retryable.
        let sent = std::time::Instant::now();
        let resp = target.cluster.send(req, self.request_timeout).await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                crate::limits::upstream(sent.elapsed());
                return Err(e.to_proxy_error(&target.cluster.id, false));
            }
        };
        let (parts, body) = resp.into_parts();
        Ok((parts, body, sent))
    }
}
