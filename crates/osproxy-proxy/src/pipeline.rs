//! The request pipeline: one short function naming every stage.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::header::{
    HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, EXPECT, HOST, WWW_AUTHENTICATE,
};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use osproxy_config::Config;
use osproxy_core::request_id::is_well_formed;
use osproxy_core::{EndpointKind, ErrorCode, ProxyError, RequestIdMinter};
use osproxy_observe::{InFlight, Metrics};
use osproxy_rewrite::classify;
use tracing::{debug, warn};

use crate::auth::Authenticator;
use crate::body::{CheckedBulk, NestingChecked, RequestBody, ResponseBody};
use crate::diagnostics::{self, Diagnostics, X_DEBUG_DIRECTIVE};
use crate::resolve::{decide, Route};
use crate::route::BodyCheck;
use crate::route::Router;
use crate::tenancy::Tenancy;
use crate::upstream::Upstreams;
use osproxy_control::ControlPlane;
use osproxy_observe::trace::{Name, Stage, Value};
use osproxy_rewrite::prefixes::{references_within, BulkCheck};
use osproxy_upstream::headers::strip_hop_by_hop;
use osproxy_upstream::{ClientBody, Coding, Upload};

/// W3C trace context, sent upstream when a request is exported.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The header carrying the request id both ways.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Everything a request needs, built once at start-up and shared.
#[derive(Debug)]
pub struct Proxy {
    auth: Arc<Authenticator>,
    tenancy: Arc<Tenancy>,
    router: Router,
    upstreams: Arc<Upstreams>,
    metrics: Arc<Metrics>,
    minter: RequestIdMinter,
    request_timeout: Duration,
    /// `server.max_decompressed_body`.
    max_decompressed: u64,
    /// `server.max_in_flight`.
    max_in_flight: i64,
    /// `server.max_headers`.
    max_headers: usize,
    /// `server.max_header_bytes`.
    max_header_bytes: usize,
    /// The port a client that names none in `Host` reached the data
    /// listener at: its scheme's (443 with `listen.tls`, else 80).
    default_port: u16,
    diagnostics: Arc<Diagnostics>,
    /// Per-tenant limits.
    limiter: Arc<crate::limits::Limiter>,
}

/// What one worker's data path is built from, besides the config.
#[derive(Debug)]
pub struct Wiring {
    /// Principals and tokens.
    pub auth: Arc<Authenticator>,
    /// The control plane.
    pub control: Arc<ControlPlane>,
    /// This worker's upstream pools.
    pub upstreams: Arc<Upstreams>,
    /// The instance's metrics.
    pub metrics: Arc<Metrics>,
    /// Signs scroll and PIT ids.
    pub cursor_key: crate::tenancy::cursor::CursorKey,
    /// Directives, traces and their outputs.
    pub diagnostics: Arc<Diagnostics>,
    /// Per-tenant limits, shared by every worker of the instance.
    pub limiter: Arc<crate::limits::Limiter>,
}

impl Proxy {
    /// Wires the data path from a validated config.
    pub fn new(config: &Config, parts: Wiring, instance_nonce: u64) -> Self {
        let timeout = config.upstream.request_timeout.as_std();
        osproxy_upstream::budget::set_limit(config.server.max_buffered_total.bytes());
        osproxy_upstream::budget::report_to(parts.metrics.buffered_gauge());
        osproxy_upstream::set_body_read_timeout(config.server.body_read_timeout.as_std());
        osproxy_upstream::set_answer_pause(config.upstream.request_timeout.as_std());
        Proxy {
            limiter: parts.limiter,
            auth: parts.auth,
            tenancy: Arc::new(Tenancy::new(
                parts.control,
                parts.upstreams.clone(),
                parts.metrics.clone(),
                timeout,
                instance_nonce.rotate_left(17),
                parts.cursor_key,
            )),
            router: Router::new(config),
            upstreams: parts.upstreams,
            metrics: parts.metrics,
            minter: RequestIdMinter::new(instance_nonce),
            request_timeout: timeout,
            max_decompressed: config.server.max_decompressed_body.bytes(),
            max_in_flight: i64::try_from(config.server.max_in_flight).unwrap_or(i64::MAX),
            max_headers: config.server.max_headers,
            max_header_bytes: usize::try_from(config.server.max_header_bytes.bytes())
                .unwrap_or(usize::MAX),
            default_port: if config.listen.tls.is_some() { 443 } else { 80 },
            diagnostics: parts.diagnostics,
        }
    }

    /// Serves one request: ingress (its id) → authenticate → classify →
    /// resolve → rewrite → dispatch → reverse (see [`Proxy::serve`]).
    /// Never fails: every error becomes an OpenSearch-shaped response.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, Infallible> {
        // Dropped unread (its request refused first), the body's rest is
        // read after the answer, so that a client still sending it
        // receives the answer ([`Upload`]).
        let req = req.map(Upload::from);
        let in_flight = self.metrics.enter();
        let request_id = self.identify(&req);
        if let Some(e) = self.admission(&req) {
            self.metrics.error(e.code.as_str());
            let mut resp = error_response(&e, &request_id);
            resp.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
            self.metrics
                .request_done(EndpointKind::Other, resp.status().as_u16());
            return Ok(resp);
        }
        let active = self
            .diagnostics
            .begin(req.headers(), request_id.to_str().unwrap_or(""));
        let (kind, outcome) = match &active {
            None => self.serve(req, &request_id, in_flight).await,
            // Boxed, as are the other paths below but passthrough: a
            // request's future is moved several times on its way into
            // hyper, and its size is that of its largest path (tens of KiB
            // unboxed, copied per request).
            Some(a) => {
                Box::pin(a.scope(async {
                    diagnostics::with(|t| {
                        t.record("method", Value::Name(Name::ident(req.method().as_str())));
                        // Known before authentication, so a directive on an
                        // endpoint also selects requests that fail there.
                        if let Ok(c) = classify(req.uri().path()) {
                            t.subject.endpoint = Some(c.kind.as_str());
                        }
                    });
                    if let Some(len) = req
                        .headers()
                        .get(http::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                    {
                        diagnostics::record("body_bytes", Value::Bytes(len));
                    }
                    self.serve(req, &request_id, in_flight).await
                }))
                .await
            }
        };
        let (mut resp, error) = match outcome {
            Ok(r) => (r, None),
            Err(e) => {
                self.metrics.error(e.code.as_str());
                (error_response(&e, &request_id), Some(e))
            }
        };
        if let Some(a) = active {
            self.diagnostics
                .finish(a, resp.status().as_u16(), error.as_ref());
        }
        resp.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
        self.metrics.request_done(kind, resp.status().as_u16());
        Ok(resp)
    }

    /// The instance-wide limits a request is refused by before anything
    /// else is done with it: requests in flight, header count and size.
    fn admission(&self, req: &Request<Upload>) -> Option<ProxyError> {
        if self.metrics.in_flight_now() > self.max_in_flight {
            return Some(
                ProxyError::new(
                    ErrorCode::Overloaded,
                    format!(
                        "osproxy has {} requests in flight, its limit (server.max_in_flight): retry shortly",
                        self.max_in_flight
                    ),
                )
                .retryable(true),
            );
        }
        let headers = req.headers();
        // HTTP/2 clients send each cookie as a field of its own: they are
        // one header, as HTTP/1.1 sends them.
        let cookies = headers.get_all(http::header::COOKIE).iter().count();
        let fields = headers.len() - cookies.saturating_sub(1);
        if fields > self.max_headers {
            return Some(ProxyError::new(
                ErrorCode::HeadersTooLarge,
                format!(
                    "the request has {fields} header fields, more than server.max_headers ({})",
                    self.max_headers
                ),
            ));
        }
        // Each field as it is on the wire: `name: value` and its CRLF.
        let bytes: usize = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum();
        if bytes > self.max_header_bytes {
            return Some(ProxyError::new(
                ErrorCode::HeadersTooLarge,
                format!(
                    "the request's header fields add up to {bytes} bytes, more than server.max_header_bytes ({})",
                    self.max_header_bytes
                ),
            ));
        }
        None
    }

    /// The client's well-formed `x-request-id`, or a freshly minted one.
    fn identify(&self, req: &Request<Upload>) -> HeaderValue {
        match req.headers().get(&X_REQUEST_ID) {
            Some(v) if is_well_formed(v.as_bytes()) => v.clone(),
            _ => HeaderValue::from_bytes(&self.minter.mint_bytes())
                .unwrap_or(HeaderValue::from_static("unidentified")),
        }
    }

    /// The stages, in order: authenticate → classify → resolve (the route,
    /// a pure decision) → the route's own rewrite, dispatch and reverse.
    async fn serve(
        &self,
        req: Request<Upload>,
        request_id: &HeaderValue,
        in_flight: InFlight,
    ) -> (EndpointKind, Result<Response<ResponseBody>, ProxyError>) {
        let principal = match self.authenticate(&req) {
            Ok(p) => p,
            Err(e) => return (EndpointKind::Other, Err(e)),
        };
        // Classify and resolve borrow the path; what they decide is owned.
        let (kind, route, passed) = {
            let classified = match Self::classify(req.uri().path()) {
                Ok(c) => c,
                Err(e) => return (EndpointKind::Other, Err(e)),
            };
            let route = decide(
                &classified,
                self.tenancy.has_catalogue(),
                |names| self.tenancy.claims(names),
                self.auth.required(),
            );
            let passed = (route == Route::Passthrough).then(|| {
                // Found by review: a catalogue loaded from the store (the
                // configuration's own check sees only its file) next to a
                // passthrough of everything would hand its physical
                // indices to every caller.
                // (The banner, which some clients read on connect, names
                // no index.)
                if self.router.forwards_everything()
                    && classified.kind != EndpointKind::Root
                    && self.tenancy.has_catalogue()
                {
                    return Err(ProxyError::new(
                        ErrorCode::UnsupportedEndpoint,
                        "passthrough forwards every request verbatim, and a catalogue of logical indices is loaded: its physical indices would be open to every caller, so nothing is passed through; the operator sets `passthrough.indices` (prefixes) or removes `[passthrough]`",
                    ));
                }
                self.router
                    .route(req.method(), req.uri().path(), &classified)
            });
            (classified.kind, route, passed)
        };
        diagnostics::record("route", Value::Name(Name::fixed(route.name())));
        // osproxy makes tenancy answers itself, so it compresses them itself
        // when the client asks; passthrough answers are the cluster's own,
        // compressed (or not) by it.
        let gzip = !matches!(route, Route::Operator | Route::Passthrough)
            && req.method() != http::Method::HEAD
            && accepts_gzip(req.headers());
        // A tenancy request is charged to the partitions it resolves to
        // (usage, limits) from here until its answer has been sent.
        let account = match &route {
            Route::Operator | Route::Passthrough => None,
            _ => Some(crate::limits::Account::new(
                self.limiter.clone(),
                self.metrics.clone(),
                crate::limits::Class::of(kind, req.method()),
                // The declared length is charged up front for a plain body;
                // a compressed one is charged as decoded, a bulk item by
                // item to each item's partition.
                req.headers()
                    .get(http::header::CONTENT_LENGTH)
                    .filter(|_| {
                        !matches!(route, Route::TenancyBulk { .. })
                            && !req.headers().contains_key(http::header::CONTENT_ENCODING)
                    })
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok()),
            )),
        };
        let outcome =
            match &account {
                Some(a) => {
                    Box::pin(a.clone().scope(
                        self.routed(req, route, passed, kind, principal, request_id, in_flight),
                    ))
                    .await
                }
                None => {
                    self.routed(req, route, passed, kind, principal, request_id, in_flight)
                        .await
                }
            };
        let outcome = if gzip {
            outcome.map(gzip_response)
        } else {
            outcome
        };
        let outcome = match account {
            Some(a) => outcome.map(|r| r.map(|b| b.metered(a))),
            None => outcome,
        };
        (kind, outcome)
    }

    /// Decodes a tenancy body that came compressed, then serves the
    /// request by its route.
    #[allow(clippy::too_many_arguments)]
    async fn routed(
        &self,
        req: Request<Upload>,
        route: Route,
        passed: Option<Result<crate::route::Passed, ProxyError>>,
        kind: EndpointKind,
        principal: Option<Arc<crate::auth::Principal>>,
        request_id: &HeaderValue,
        in_flight: InFlight,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        // A tenancy body is decoded here when it came compressed (streamed
        // for a bulk); passthrough and operator bodies go on as they are.
        let req = match &route {
            Route::TenancyBulk { .. } => Box::pin(self.decoded(req, true)).await,
            Route::Cursor | Route::UnscopedMulti | Route::Logical { .. } => {
                Box::pin(self.decoded(req, false)).await
            }
            Route::Operator | Route::Passthrough => Ok(req.map(ClientBody::from)),
        };
        let req = req?;
        match route {
            Route::TenancyBulk { index } => {
                Box::pin(Tenancy::serve_bulk(
                    self.tenancy.clone(),
                    req,
                    principal,
                    index,
                    in_flight,
                ))
                .await
            }
            Route::Cursor => {
                let out =
                    Box::pin(self.tenancy.serve_cursor(req, principal.as_deref(), kind)).await;
                out.map(|r| r.map(|b| b.holding(in_flight)))
            }
            Route::UnscopedMulti => {
                let out =
                    Box::pin(self.tenancy.serve_unscoped(req, principal.as_deref(), kind)).await;
                out.map(|r| r.map(|b| b.holding(in_flight)))
            }
            Route::Logical { index } => {
                let out =
                    Box::pin(self.tenancy.serve(req, principal.as_deref(), kind, &index)).await;
                out.map(|r| r.map(|b| b.holding(in_flight)))
            }
            Route::Operator => {
                Box::pin(self.operator(req, principal.as_deref(), request_id, in_flight)).await
            }
            Route::Passthrough => match passed {
                Some(Ok(passed)) => {
                    self.dispatch(
                        passed.cluster,
                        req,
                        request_id,
                        in_flight,
                        passed.body,
                        passed.prefixed,
                    )
                    .await
                }
                Some(Err(e)) => Err(e),
                None => Err(ProxyError::new(
                    ErrorCode::Internal,
                    "no passthrough decision",
                )),
            },
        }
    }

    /// Authenticate: the principal, when principals are configured.
    fn authenticate(
        &self,
        req: &Request<Upload>,
    ) -> Result<Option<Arc<crate::auth::Principal>>, ProxyError> {
        diagnostics::enter(Stage::Authenticate);
        let certificate = req
            .extensions()
            .get::<Arc<crate::ingress::ClientCertificate>>()
            .map(|c| &**c);
        // Checked with or without principals: with `client_auth =
        // "required"` the certificate may be the only gate.
        if let Some(cert) = certificate {
            crate::auth::in_date(cert)?;
        }
        if !self.auth.required() {
            return Ok(None);
        }
        let p = self.auth.authenticate_with(req.headers(), certificate)?;
        diagnostics::with(|t| {
            let name = Name::ident(&p.name);
            t.record("principal", Value::Name(name.clone()));
            t.subject.principal = Some(name);
        });
        Ok(Some(p))
    }

    /// Classify: the endpoint and the indices the path names.
    fn classify(path: &str) -> Result<osproxy_rewrite::Classified<'_>, ProxyError> {
        diagnostics::enter(Stage::Classify);
        let classified =
            classify(path).map_err(|e| ProxyError::new(ErrorCode::BadRequest, e.to_string()))?;
        diagnostics::with(|t| {
            t.subject.endpoint = Some(classified.kind.as_str());
            t.record(
                "endpoint",
                Value::Name(Name::fixed(classified.kind.as_str())),
            );
            t.record(
                "indices",
                Value::Count(classified.index_names().count() as u64),
            );
            t.enter(Stage::Resolve);
        });
        Ok(classified)
    }

    /// A tenancy request's body, decoded when it came compressed
    /// (`Content-Encoding: gzip` or `deflate`): streamed through the decoder
    /// for a bulk (`stream`), read whole and decoded otherwise. Either way
    /// the decoded size is bounded by `server.max_decompressed_body` (413
    /// past it) and the request no longer claims an encoding or a length.
    /// Other codings are left for the tenancy checks to refuse by name.
    async fn decoded(
        &self,
        req: Request<Upload>,
        stream: bool,
    ) -> Result<Request<ClientBody>, ProxyError> {
        let lines = req.headers().get_all(http::header::CONTENT_ENCODING);
        if lines.iter().count() > 1 {
            return Err(ProxyError::new(
                ErrorCode::BadRequest,
                "several content-encoding headers are not supported for logical indices: send one (gzip or deflate), or none",
            ));
        }
        let coding = req
            .headers()
            .get(http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Coding::of(v).ok().flatten());
        let Some(coding) = coding else {
            return Ok(req.map(ClientBody::from));
        };
        let (mut parts, body) = req.into_parts();
        parts.headers.remove(http::header::CONTENT_ENCODING);
        parts.headers.remove(http::header::CONTENT_LENGTH);
        diagnostics::record(
            "decoded",
            Value::Name(Name::fixed(match coding {
                Coding::Gzip => "gzip",
                Coding::Deflate => "deflate",
            })),
        );
        let body = ClientBody::decoded(body, coding, self.max_decompressed);
        if stream {
            return Ok(Request::from_parts(parts, body));
        }
        let bytes = osproxy_upstream::read_limited(body).await?;
        Ok(Request::from_parts(parts, ClientBody::Full(Some(bytes))))
    }

    /// A cluster-wide endpoint: operators only, to the cluster they name.
    async fn operator(
        &self,
        req: Request<ClientBody>,
        principal: Option<&crate::auth::Principal>,
        request_id: &HeaderValue,
        in_flight: InFlight,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let operator = principal.is_some_and(|p| p.operator);
        if !operator {
            let name = principal.map(|p| p.name.as_str()).unwrap_or("");
            let sniffing = if is_nodes_info(req.uri().path()) {
                ". A client that sniffs (asks _nodes for the cluster's addresses) must not, through osproxy: turn sniffing off (opensearch-py: sniff_on_start/sniff_on_connection_fail False; the Java sniffer and the Go client's discovery off) and give it osproxy's address"
            } else {
                ""
            };
            return Err(ProxyError::new(
                ErrorCode::OperatorRequired,
                format!("principal {name} may not call cluster-wide endpoints{sniffing}"),
            ));
        }
        let cluster = self.router.operator_cluster(req.headers())?;
        self.dispatch(cluster, req, request_id, in_flight, BodyCheck::None, false)
            .await
    }

    async fn dispatch(
        &self,
        cluster: usize,
        req: Request<ClientBody>,
        request_id: &HeaderValue,
        in_flight: InFlight,
        check: BodyCheck,
        prefixed: bool,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let upstream = self.upstreams.get(cluster).ok_or_else(|| {
            ProxyError::new(
                ErrorCode::Internal,
                format!("no upstream at position {cluster}"),
            )
        })?;
        let idempotent = osproxy_upstream::is_idempotent(req.method());
        // A node-info answer names the nodes' own HTTP addresses; a sniffing
        // client would go around osproxy to them. Those addresses are
        // rewritten to the one the client reached osproxy at.
        // Answered as its body is sent (`_bulk/stream`): its pauses are
        // the client's.
        let streaming = req.uri().path().ends_with("/stream");
        let advertise = (req.method() == http::Method::GET && is_nodes_info(req.uri().path()))
            .then(|| advertised_address(&req, self.default_port));
        let pretty = advertise.is_some()
            && osproxy_rewrite::query::Query::parse(req.uri().query())
                .is_ok_and(|q| q.get("pretty").is_some_and(|v| v != "false"));
        let (mut parts, body) = req.into_parts();
        if advertise.is_some() {
            // A plain answer, to rewrite.
            parts.headers.remove(http::header::ACCEPT_ENCODING);
        }
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(&X_DEBUG_DIRECTIVE);
        diagnostics::enter(Stage::Dispatch);
        diagnostics::record("cluster", Value::Name(Name::ident(&upstream.id)));
        if let Some(tp) = diagnostics::traceparent() {
            parts.headers.insert(TRACEPARENT.clone(), tp);
        }
        parts.headers.remove(HOST);
        // hyper has already answered `100-continue` to the client when the
        // body is first read; the upstream client does not wait for one.
        parts.headers.remove(EXPECT);
        if self.auth.required() {
            // The caller's osproxy credentials are not the cluster's.
            parts.headers.remove(AUTHORIZATION);
        }
        parts
            .headers
            .insert(X_REQUEST_ID.clone(), request_id.clone());
        if prefixed {
            confine_passthrough(&mut parts, &check, &self.router)?;
        }
        let violation = Arc::new(std::sync::Mutex::new(None::<String>));
        let coding = if http_body::Body::is_end_stream(&body) {
            None
        } else {
            passthrough_body_reading(&parts.headers)?
        };
        let reading = crate::body::Reading {
            coding,
            ndjson: is_ndjson_path(parts.uri.path()),
            limit: self.max_decompressed,
        };
        let body = match check {
            BodyCheck::Bulk(prefixes) => RequestBody::Checked(Box::pin(NestingChecked::new(
                CheckedBulk::new(body, BulkCheck::new(prefixes), violation.clone()),
                reading,
                violation.clone(),
            ))),
            BodyCheck::References(prefixes) => {
                // Read whole (bounded), checked, then sent as read.
                let bytes = Box::pin(osproxy_upstream::read_limited(body)).await?;
                // The check parses the body into a tree: charged to the
                // budget before it is built, as tenancy's parses are
                // (found by review: 100 MB of small values built a tree
                // of gigabytes no budget saw).
                let values = crate::tenancy::strict_values(&bytes).map_err(|e| {
                    ProxyError::new(
                        ErrorCode::UnsupportedEndpoint,
                        format!("the request was not forwarded: {}", e.reason),
                    )
                })?;
                let mut _parse = osproxy_upstream::budget::Charge::default();
                _parse.set((values as u64).saturating_mul(crate::tenancy::PARSE_COST_PER_VALUE))?;
                references_within(&bytes, &prefixes).map_err(|reason| {
                    ProxyError::new(
                        ErrorCode::UnsupportedEndpoint,
                        format!("the request was not forwarded: {reason}"),
                    )
                })?;
                parts.headers.remove(http::header::CONTENT_LENGTH);
                if bytes.is_empty() {
                    RequestBody::Empty
                } else {
                    RequestBody::Full(Some(bytes))
                }
            }
            BodyCheck::None if http_body::Body::is_end_stream(&body) => RequestBody::Client(body),
            BodyCheck::None => RequestBody::Checked(Box::pin(NestingChecked::new(
                body,
                reading,
                violation.clone(),
            ))),
        };
        let upstream_req = Request::from_parts(parts, body);

        match upstream.send(upstream_req, self.request_timeout).await {
            Ok(resp) => {
                diagnostics::with(|t| {
                    t.record(
                        "upstream_status",
                        Value::Count(u64::from(resp.status().as_u16())),
                    );
                    t.enter(Stage::Reverse);
                    t.record("streamed", Value::Flag(true));
                });
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                if let Some(address) = advertise {
                    return Box::pin(nodes_advertising(
                        parts,
                        body,
                        address.as_deref(),
                        &upstream.id,
                        pretty,
                    ))
                    .await;
                }
                let body = ResponseBody::upstream(body, in_flight);
                Ok(Response::from_parts(
                    parts,
                    if streaming { body.unwatched() } else { body },
                ))
            }
            Err(e) => {
                // A checked bulk that named an index outside the prefixes was
                // cut off before the cluster saw a complete request.
                if let Some(reason) = violation.lock().ok().and_then(|mut v| v.take()) {
                    if reason.starts_with(crate::body::BODY_PAUSED) {
                        return Err(ProxyError::new(
                            ErrorCode::RequestTimeout,
                            format!("{reason}; the request was not completed toward the cluster"),
                        ));
                    }
                    if reason.starts_with(crate::body::NESTING_REFUSED)
                        || reason.starts_with(crate::body::UNCHECKABLE)
                    {
                        return Err(ProxyError::new(
                            ErrorCode::BadRequest,
                            format!("the request was not forwarded: {reason}"),
                        ));
                    }
                    return Err(ProxyError::new(
                        ErrorCode::UnsupportedEndpoint,
                        format!("the _bulk was not forwarded: {reason}"),
                    ));
                }
                if matches!(e, osproxy_upstream::UpstreamError::UploadStalled(_)) {
                    debug!(cluster = %upstream.id, request_id = ?request_id, error = %e, "client's body stalled");
                } else {
                    warn!(cluster = %upstream.id, request_id = ?request_id, error = %e, "upstream exchange failed");
                }
                Err(e.to_proxy_error(&upstream.id, idempotent))
            }
        }
    }
}

/// How a passed-through body is read to bound its JSON nesting: its
/// coding (gzip and deflate are inflated on the side, as the cluster
/// inflates them). A body osproxy cannot read so (another or several
/// codings, or a YAML, CBOR or Smile body, which OpenSearch parses too) is
/// refused: its nesting could not be bounded.
fn passthrough_body_reading(headers: &http::HeaderMap) -> Result<Option<Coding>, ProxyError> {
    let refuse = |what: String| {
        ProxyError::new(
            ErrorCode::BadRequest,
            format!("the request was not forwarded: {what}; osproxy bounds the nesting of JSON bodies only, plain or gzip or deflate encoded: send JSON"),
        )
    };
    if let Some(ct) = headers.get(CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let media = ct.split(';').next().unwrap_or("").trim();
        if ["yaml", "cbor", "smile"].iter().any(|f| media.contains(f)) {
            return Err(refuse(format!("its body is {media}")));
        }
    }
    let mut codings = headers.get_all(http::header::CONTENT_ENCODING).iter();
    let Some(first) = codings.next() else {
        return Ok(None);
    };
    if codings.next().is_some() {
        return Err(refuse("it names several content-encoding headers".into()));
    }
    Coding::of(first.to_str().unwrap_or("?"))
        .map_err(|c| refuse(format!("its body is encoded {c:?}")))
}

/// Whether the cluster reads `path`'s body line by line: its endpoint is
/// `_bulk`, `_msearch` or `_msearch/template` (the last segments: a
/// document id `_bulk` in `/{index}/_doc/_bulk` is not one).
fn is_ndjson_path(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let lines = |e: &str| e == "_bulk" || e == "_msearch";
    // An index name never starts with `_`; an endpoint always does.
    let index = |i: &str| !i.starts_with('_');
    match segments.as_slice() {
        [e] => lines(e),
        ["_msearch", "template"] => true,
        [i, e] => index(i) && lines(e),
        [i, "_msearch", "template"] => index(i),
        _ => false,
    }
}

/// Whether `path` asks for node information (`GET /_nodes`,
/// `/_nodes/http`, `/_nodes/{ids}/...`), which sniffing clients read; not
/// node stats, usage or hot threads.
fn is_nodes_info(path: &str) -> bool {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    segments.next() == Some("_nodes")
        && !segments.any(|s| {
            matches!(
                s,
                "stats" | "usage" | "hot_threads" | "reload_secure_settings"
            )
        })
}

/// The address the client reached osproxy at: its `Host` (HTTP/1.1) or
/// `:authority` (h2), when it is a plain `host[:port]`, with the scheme's
/// `default_port` added when it names none (sniffing clients skip an
/// address without a port).
fn advertised_address<B>(req: &Request<B>, default_port: u16) -> Option<String> {
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_string()))?;
    let plain = !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_')
        });
    if !plain {
        return None;
    }
    // `[v6]:port`, `host:port`: a port follows the last `:` outside brackets.
    let has_port = host.rsplit_once(':').is_some_and(|(before, port)| {
        !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && (!before.contains('[') || before.ends_with(']'))
    });
    Some(if has_port {
        host
    } else {
        format!("{host}:{default_port}")
    })
}

/// A node-info answer with every node's `http.publish_address` and
/// `http.bound_address` replaced by `address` (osproxy's own, as the client
/// used it), or removed when there is none. Other answers (errors, and the
/// YAML or CBOR an operator asks for by name) pass as they are.
async fn nodes_advertising(
    mut parts: http::response::Parts,
    body: osproxy_upstream::Answer,
    address: Option<&str>,
    cluster: &str,
    pretty: bool,
) -> Result<Response<ResponseBody>, ProxyError> {
    let bytes =
        osproxy_upstream::read_answer(body, cluster, osproxy_upstream::Answering::Read).await?;
    let json = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let encoded = parts.headers.contains_key(http::header::CONTENT_ENCODING);
    if !parts.status.is_success() || !json || encoded {
        return Ok(Response::from_parts(parts, ResponseBody::full(bytes)));
    }
    let Ok(mut answer) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Ok(Response::from_parts(parts, ResponseBody::full(bytes)));
    };
    let mut changed = false;
    if let Some(nodes) = answer.get_mut("nodes").and_then(|n| n.as_object_mut()) {
        for node in nodes.values_mut() {
            let Some(http) = node.get_mut("http").and_then(|h| h.as_object_mut()) else {
                continue;
            };
            // Without an address to give, none: a sniffing client then finds
            // no node to go to around osproxy.
            for (field, value) in [
                ("publish_address", address.map(serde_json::Value::from)),
                ("bound_address", address.map(|a| serde_json::json!([a]))),
            ] {
                if http.contains_key(field) {
                    match value {
                        Some(v) => http.insert(field.into(), v),
                        None => http.remove(field),
                    };
                    changed = true;
                }
            }
        }
    }
    if !changed {
        return Ok(Response::from_parts(parts, ResponseBody::full(bytes)));
    }
    let written = if pretty {
        serde_json::to_vec_pretty(&answer)
    } else {
        serde_json::to_vec(&answer)
    };
    let out = written.map_err(|e| {
        ProxyError::new(
            ErrorCode::Internal,
            format!("cannot write the node-info answer: {e}"),
        )
    })?;
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Ok(Response::from_parts(parts, ResponseBody::full(out.into())))
}

/// Whether `Accept-Encoding` admits gzip: `gzip` (or `x-gzip`, or `*`
/// when gzip is not named) with a q-value above 0.
fn accepts_gzip(headers: &http::HeaderMap) -> bool {
    let mut named = None;
    let mut any = None;
    for value in headers.get_all(http::header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut fields = item.split(';');
            let coding = fields.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = fields
                .filter_map(|f| {
                    f.trim()
                        .strip_prefix("q=")
                        .or_else(|| f.trim().strip_prefix("Q="))
                })
                .next()
                .map_or(1.0, |q| q.trim().parse::<f32>().unwrap_or(0.0));
            match coding.as_str() {
                "gzip" | "x-gzip" => named = Some(named.unwrap_or(false) || q > 0.0),
                "*" => any = Some(q > 0.0),
                _ => {}
            }
        }
    }
    named.or(any).unwrap_or(false)
}

/// A tenancy answer, gzip-compressed for a client that accepts it (not one
/// that is empty or already encoded).
fn gzip_response(resp: Response<ResponseBody>) -> Response<ResponseBody> {
    use http_body::Body as _;
    let (mut parts, body) = resp.into_parts();
    let empty = body.size_hint().exact() == Some(0);
    let status = parts.status;
    if empty
        || parts.headers.contains_key(http::header::CONTENT_ENCODING)
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Response::from_parts(parts, body);
    }
    parts.headers.remove(http::header::CONTENT_LENGTH);
    parts.headers.insert(
        http::header::CONTENT_ENCODING,
        http::HeaderValue::from_static("gzip"),
    );
    parts.headers.append(
        http::header::VARY,
        http::HeaderValue::from_static("Accept-Encoding"),
    );
    Response::from_parts(parts, body.gzip())
}

/// Prefix-confined passthrough forwards only what it read: the query string
/// parsed as OpenSearch parses it and rebuilt (a `source` parameter, which
/// OpenSearch reads as the request body, is refused: osproxy would not see
/// it), and a checked body only when it is uncompressed JSON.
fn confine_passthrough(
    parts: &mut http::request::Parts,
    check: &BodyCheck,
    router: &crate::route::Router,
) -> Result<(), ProxyError> {
    let query = osproxy_rewrite::query::Query::parse(parts.uri.query())
        .map_err(|e| ProxyError::new(ErrorCode::BadRequest, e.to_string()))?;
    router.query_names_within(&parts.method, parts.uri.path(), &query)?;
    // Headers the cluster's security plugin acts on for whoever osproxy
    // connects as (impersonation, proxy authentication): a client of a
    // prefix passthrough does not choose whom the cluster takes it for.
    let security: Vec<http::HeaderName> = parts
        .headers
        .keys()
        .filter(|n| {
            let n = n.as_str();
            n.starts_with("opendistro_security")
                || n.starts_with("_opendistro_security")
                || n.starts_with("plugins_security")
                || n.starts_with("x-proxy-")
                // The client's address as the cluster's host-based role
                // mapping reads it (with `xff` on): not the client's to say.
                || n.starts_with("x-forwarded-")
                || n == "forwarded"
                || n == "x-real-ip"
        })
        .cloned()
        .collect();
    for name in security {
        parts.headers.remove(name);
    }
    if let Some(name) = ["source", "source_content_type"]
        .into_iter()
        .find(|n| query.contains(n))
    {
        return Err(ProxyError::new(
            ErrorCode::UnsupportedEndpoint,
            format!("query parameter `{name}` is refused on passthrough: OpenSearch reads it as the request body, which osproxy checks; send the body instead"),
        ));
    }
    if let Some(name) = ["pipeline", "search_pipeline"]
        .into_iter()
        .find(|n| query.contains(n))
    {
        return Err(ProxyError::new(
            ErrorCode::UnsupportedEndpoint,
            format!("query parameter `{name}` is refused on passthrough: a pipeline runs after osproxy and can write to or read indices outside the prefixes"),
        ));
    }
    if parts.uri.query().is_some() {
        let rebuilt = if query.is_empty() {
            parts.uri.path().to_string()
        } else {
            format!("{}?{}", parts.uri.path(), query.encode())
        };
        parts.uri = rebuilt.parse().map_err(|e| {
            ProxyError::new(
                ErrorCode::BadRequest,
                format!("the request target cannot be rebuilt: {e}"),
            )
        })?;
    }
    if !matches!(check, BodyCheck::None) {
        crate::tenancy::check_plain_json(&parts.headers).map_err(|e| {
            ProxyError::new(
                ErrorCode::UnsupportedEndpoint,
                format!("the request was not forwarded: {}", e.reason),
            )
        })?;
    }
    Ok(())
}

/// An OpenSearch-shaped error response.
pub fn error_response(e: &ProxyError, request_id: &HeaderValue) -> Response<ResponseBody> {
    let id = request_id.to_str().unwrap_or("");
    let mut resp = Response::new(ResponseBody::full(e.to_body(id)));
    *resp.status_mut() =
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    match e.retry_after {
        Some(s) => {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(s));
        }
        None if matches!(e.code, ErrorCode::Overloaded | ErrorCode::ShuttingDown) => {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        None => {}
    }
    if e.code == ErrorCode::Unauthenticated {
        resp.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"osproxy\""),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by review: a prefix passthrough forwarded the headers the
    /// security plugin acts on for osproxy's own user.
    #[test]
    fn prefix_passthrough_removes_impersonation_and_address_headers() {
        let config = osproxy_config::from_str(
            "[[clusters]]\nid = \"main\"\nurl = \"http://127.0.0.1:1\"\n[passthrough]\ncluster = \"main\"\nindices = [\"legacy-\"]\n",
            std::iter::empty(),
            &[],
        )
        .unwrap();
        let router = crate::route::Router::new(&config);
        let (mut parts, ()) = Request::builder()
            .uri("/legacy-a/_search?size=1")
            .header("opendistro_security_impersonate_as", "admin")
            .header("x-proxy-user", "admin")
            .header("x-proxy-roles", "all_access")
            .header("x-forwarded-for", "10.0.0.1")
            .header("forwarded", "for=10.0.0.1")
            .header("x-opaque-id", "kept")
            .body(())
            .unwrap()
            .into_parts();
        confine_passthrough(&mut parts, &BodyCheck::None, &router).unwrap();
        let names: Vec<&str> = parts.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-opaque-id"]);
        assert_eq!(parts.uri, "/legacy-a/_search?size=1");
        let (mut parts, ()) = Request::builder()
            .uri("/legacy-a/_alias?name=orders")
            .body(())
            .unwrap()
            .into_parts();
        assert!(confine_passthrough(&mut parts, &BodyCheck::None, &router).is_err());
    }

    fn with_host(host: &str) -> Request<()> {
        Request::builder()
            .uri("/_nodes/http")
            .header(HOST, host)
            .body(())
            .unwrap()
    }

    #[test]
    fn the_advertised_address_always_has_a_port() {
        assert_eq!(
            advertised_address(&with_host("proxy.example:9200"), 443).as_deref(),
            Some("proxy.example:9200")
        );
        assert_eq!(
            advertised_address(&with_host("proxy.example"), 443).as_deref(),
            Some("proxy.example:443")
        );
        assert_eq!(
            advertised_address(&with_host("[::1]:9200"), 80).as_deref(),
            Some("[::1]:9200")
        );
        assert_eq!(
            advertised_address(&with_host("[::1]"), 80).as_deref(),
            Some("[::1]:80")
        );
        for bad in ["a b", "x\"y", "evil.example/path", ""] {
            assert_eq!(advertised_address(&with_host(bad), 80), None, "{bad:?}");
        }
    }

    #[test]
    fn node_info_is_told_from_stats_usage_and_hot_threads() {
        for info in [
            "/_nodes",
            "/_nodes/",
            "/_nodes/http",
            "/_nodes/_all/http",
            "/_nodes/n1,n2",
        ] {
            assert!(is_nodes_info(info), "{info}");
        }
        for other in [
            "/_nodes/stats",
            "/_nodes/n1/stats/http",
            "/_nodes/usage",
            "/_nodes/hot_threads",
            "/_nodes/reload_secure_settings",
            "/_cluster/health",
            "/_nodesx",
        ] {
            assert!(!is_nodes_info(other), "{other}");
        }
    }

    #[test]
    fn ndjson_bodies_are_told_by_their_endpoint() {
        for p in [
            "/_bulk",
            "/idx/_bulk",
            "/_msearch",
            "/idx/_msearch/template",
        ] {
            assert!(is_ndjson_path(p), "{p}");
        }
        // Found by review: a document id `_bulk` is not an endpoint.
        for p in ["/idx/_doc/_bulk", "/idx/_update/_msearch", "/_bulk/x", "/"] {
            assert!(!is_ndjson_path(p), "{p}");
        }
    }

    #[test]
    fn gzip_is_accepted_as_the_header_says() {
        let accepts = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(
                http::header::ACCEPT_ENCODING,
                HeaderValue::from_str(v).unwrap(),
            );
            accepts_gzip(&h)
        };
        assert!(accepts("gzip"));
        assert!(accepts("deflate, gzip;q=0.5"));
        assert!(accepts("*"));
        assert!(accepts("x-gzip"));
        assert!(!accepts("gzip;q=0"));
        assert!(!accepts("*, gzip;q=0"));
        assert!(!accepts("identity"));
        assert!(!accepts("br"));
        assert!(!accepts_gzip(&http::HeaderMap::new()));
    }
}
