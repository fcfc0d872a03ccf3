//! Upstream clusters: one pooled keep-alive client per cluster, with
//! `TCP_NODELAY`, a connect deadline, a response-head deadline, TLS for
//! `https` clusters, basic or API-key credentials, and connection-reuse
//! accounting.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::h1::Answer;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use osproxy_config::{Cluster, Upstream as UpstreamConfig};
use osproxy_observe::{ClusterMetrics, Counter, Metrics};
use tokio::net::TcpStream;

use crate::body::{Reported, RequestBody, UploadProgress};

/// The least of a client's body that must arrive in each deadline's time
/// while it is still being sent: a body that keeps coming may take longer
/// than the deadline (a large streamed `_bulk` on a slow link), one that
/// trickles may not hold a cluster slot for ever.
pub const MIN_UPLOAD_PROGRESS: u64 = 64 * 1024;

/// Why an upstream exchange failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection could be opened: nothing was sent.
    Connect(String),
    /// No response head within the deadline (counted from the end of the
    /// request's body).
    Timeout(Duration),
    /// The client's body was still arriving at the deadline, and less
    /// than [`MIN_UPLOAD_PROGRESS`] of it had come in the last deadline's
    /// time: the cluster never had the whole request.
    UploadStalled(Duration),
    /// The connection broke during the exchange: the request may have been
    /// (partly) processed.
    Io(String),
    /// The cluster already had `clusters[].max_concurrent_requests` requests
    /// from this instance waiting for answers, for the whole deadline:
    /// nothing was sent.
    Busy(usize),
}

/// Why a configured cluster could not be given a client (what validation
/// cannot see: an environment variable or a file read at start-up).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The URL does not parse, or names no host.
    #[error("cluster {cluster}: bad url: {reason}")]
    BadUrl {
        /// The cluster id.
        cluster: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `password_env` names a variable that is not set.
    #[error("cluster {cluster}: environment variable {var} is not set")]
    EnvNotSet {
        /// The cluster id.
        cluster: String,
        /// The variable.
        var: String,
    },
    /// `password_file` cannot be read.
    #[error("cluster {cluster}: cannot read {file}")]
    Unreadable {
        /// The cluster id.
        cluster: String,
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A `username` without a password source.
    #[error("cluster {cluster}: username without a password")]
    NoPassword {
        /// The cluster id.
        cluster: String,
    },
    /// The credentials do not make a header value.
    #[error("cluster {cluster}: the credentials are not a valid header value")]
    BadCredentials {
        /// The cluster id.
        cluster: String,
        /// Why.
        #[source]
        source: http::header::InvalidHeaderValue,
    },
    /// The cluster's TLS settings are not usable.
    #[error("cluster {cluster}: {source}")]
    Tls {
        /// The cluster id.
        cluster: String,
        /// Why.
        #[source]
        source: crate::tls::TlsError,
    },
    /// SigV4 is asked for but no AWS credentials are found.
    #[error("cluster {cluster}: sigv4: {source}")]
    SigV4 {
        /// The cluster id.
        cluster: String,
        /// Why.
        #[source]
        source: crate::sigv4::CredentialsError,
    },
    /// The API key cannot be read.
    #[error("cluster {cluster}: {source}")]
    ApiKey {
        /// The cluster id.
        cluster: String,
        /// Why.
        #[source]
        source: osproxy_config::SecretError,
    },
    /// No metrics were registered for the cluster (a wiring mistake).
    #[error("no metrics for cluster {cluster}")]
    NoMetrics {
        /// The cluster id.
        cluster: String,
    },
}

/// Every configured cluster, by position in the config.
#[derive(Debug)]
pub struct Upstreams {
    clusters: Vec<UpstreamCluster>,
}

/// One cluster's client.
#[derive(Debug)]
pub struct UpstreamCluster {
    /// The configured id.
    pub id: String,
    scheme: Scheme,
    authority: Authority,
    authorization: Option<HeaderValue>,
    /// With `sigv4`: who signs, for which region and service.
    signer: Option<Signer>,
    version: Version,
    /// HTTP/2 (`upstream.http2`): hyper's pooled client, which multiplexes.
    client: Client<CountingConnector, RequestBody>,
    /// HTTP/1.1: connections driven by their requests' tasks.
    pool: Option<Arc<crate::h1::Pool>>,
    connector: CountingConnector,
    /// `scheme://authority`, what the connector is asked for.
    origin: Uri,
    /// The `Host` of every HTTP/1.1 request.
    host: HeaderValue,
    metrics: ClusterMetrics,
    /// Requests waiting for this cluster's answer heads, for the whole
    /// instance (shared by the workers' clients).
    in_flight: Arc<tokio::sync::Semaphore>,
    max_in_flight: usize,
}

/// The per-cluster bound of requests waiting for answers, one per cluster
/// id for the whole process, so that every worker's client shares it.
fn cluster_bound(id: &str, max: usize) -> Arc<tokio::sync::Semaphore> {
    static BOUNDS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
    > = std::sync::OnceLock::new();
    let map = BOUNDS.get_or_init(Default::default);
    let mut map = map
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    map.entry(format!("{id}\u{0}{max}"))
        .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(max)))
        .clone()
}

impl Upstreams {
    /// Builds a client per cluster. Fails only on what validation should
    /// have caught (an unparsable URL, an unreadable password).
    pub fn new(
        clusters: &[Cluster],
        config: &UpstreamConfig,
        metrics: &Metrics,
    ) -> Result<Self, SetupError> {
        let built = clusters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let m = metrics
                    .cluster(i)
                    .cloned()
                    .ok_or_else(|| SetupError::NoMetrics {
                        cluster: c.id.clone(),
                    })?;
                UpstreamCluster::new(i, c, config, m)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Upstreams { clusters: built })
    }

    /// The same clients with bounds of their own, not shared with the
    /// instance's other clients of the same clusters. For migrations: a
    /// fenced write must go out right after its fence check, and (found by
    /// review) one waited for a turn behind client traffic for up to its
    /// deadline, long after the check, while another controller could have
    /// adopted the move.
    pub fn apart(mut self) -> Self {
        for c in &mut self.clusters {
            c.in_flight = Arc::new(tokio::sync::Semaphore::new(c.max_in_flight));
        }
        self
    }

    /// The cluster at `index`.
    pub fn get(&self, index: usize) -> Option<&UpstreamCluster> {
        self.clusters.get(index)
    }

    /// The cluster with this configured id.
    pub fn by_id(&self, id: &str) -> Option<&UpstreamCluster> {
        self.clusters.iter().find(|c| c.id == id)
    }

    /// How many clusters there are.
    pub fn len(&self) -> usize {
        self.clusters.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
    }
}

impl UpstreamCluster {
    fn new(
        position: usize,
        c: &Cluster,
        config: &UpstreamConfig,
        metrics: ClusterMetrics,
    ) -> Result<Self, SetupError> {
        let uri: Uri = c
            .url
            .parse()
            .map_err(|e: http::uri::InvalidUri| SetupError::BadUrl {
                cluster: c.id.clone(),
                reason: e.to_string(),
            })?;
        let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTP);
        let authority = uri.authority().cloned().ok_or_else(|| SetupError::BadUrl {
            cluster: c.id.clone(),
            reason: "it names no host".into(),
        })?;
        let authorization = match api_key(position, c)? {
            Some(key) => Some(key),
            None => basic_auth(c)?,
        };

        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout.as_std()));
        http.set_keepalive(Some(Duration::from_secs(60)));
        // The scheme is the cluster's, checked here: TLS is layered on the
        // TCP connection below for https.
        http.enforce_http(false);
        let tls = if scheme == Scheme::HTTPS {
            let key = format!("clusters[{position}].tls");
            let config = crate::tls::client_config(&key, c.tls.as_ref(), config.http2).map_err(
                |source| SetupError::Tls {
                    cluster: c.id.clone(),
                    source,
                },
            )?;
            let host = c
                .tls
                .as_ref()
                .and_then(|t| t.server_name.clone())
                .unwrap_or_else(|| authority.host().trim_matches(['[', ']']).to_string());
            let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| {
                SetupError::BadUrl {
                    cluster: c.id.clone(),
                    reason: format!("{host:?} is not a TLS server name: {e}"),
                }
            })?;
            Some(Arc::new((tokio_rustls::TlsConnector::from(config), name)))
        } else {
            None
        };
        let connector = CountingConnector {
            inner: http,
            opened: metrics.connections_opened.clone(),
            tls,
            handshake_timeout: config.connect_timeout.as_std(),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.pool_idle_timeout.as_std())
            .pool_max_idle_per_host(config.pool_max_idle_per_cluster)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(config.http2)
            .build(connector.clone());
        let pool = (!config.http2).then(|| {
            crate::h1::Pool::new(
                config.pool_max_idle_per_cluster,
                config.pool_idle_timeout.as_std(),
            )
        });
        let origin = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| SetupError::BadUrl {
                cluster: c.id.clone(),
                reason: e.to_string(),
            })?;
        let host = HeaderValue::from_str(authority.as_str()).map_err(|e| SetupError::BadUrl {
            cluster: c.id.clone(),
            reason: e.to_string(),
        })?;
        let version = if config.http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        let signer = match &c.sigv4 {
            Some(sig) => Some(Signer {
                credentials: crate::sigv4::Credentials::from_environment().map_err(|source| {
                    SetupError::SigV4 {
                        cluster: c.id.clone(),
                        source,
                    }
                })?,
                region: sig.region.clone(),
                service: sig.service.clone(),
            }),
            None => None,
        };
        Ok(UpstreamCluster {
            id: c.id.clone(),
            scheme,
            authority,
            authorization,
            signer,
            version,
            client,
            pool,
            connector,
            origin,
            host,
            metrics,
            in_flight: cluster_bound(&c.id, c.max_concurrent_requests),
            max_in_flight: c.max_concurrent_requests,
        })
    }

    /// Sends a request whose URI holds only path and query. The cluster's
    /// scheme, authority, protocol version and credentials are applied here.
    pub async fn send(
        &self,
        mut req: Request<RequestBody>,
        deadline: Duration,
    ) -> Result<Response<Answer>, UpstreamError> {
        if self.pool.is_some() {
            // HTTP/1.1 on a connection of its own: the origin form, and the
            // cluster as `Host`.
            if req.uri().scheme().is_some() || req.uri().authority().is_some() {
                let mut parts = http::uri::Parts::default();
                parts.path_and_query = req.uri().path_and_query().cloned();
                *req.uri_mut() = Uri::from_parts(parts)
                    .map_err(|e| UpstreamError::Io(format!("cannot build upstream uri: {e}")))?;
            }
            req.headers_mut()
                .insert(http::header::HOST, self.host.clone());
        } else {
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(self.scheme.clone());
            parts.authority = Some(self.authority.clone());
            parts.path_and_query = req.uri().path_and_query().cloned();
            *req.uri_mut() = Uri::from_parts(parts)
                .map_err(|e| UpstreamError::Io(format!("cannot build upstream uri: {e}")))?;
        }
        *req.version_mut() = self.version;
        if let Some(auth) = &self.authorization {
            req.headers_mut()
                .insert(http::header::AUTHORIZATION, auth.clone());
        }
        if let Some(signer) = &self.signer {
            signer.sign(&mut req, &self.authority)?;
        }

        let started = Instant::now();
        // Waiting for a turn counts toward the deadline; nothing is sent
        // without one.
        let Ok(Ok(_turn)) =
            tokio::time::timeout(deadline, self.in_flight.clone().acquire_owned()).await
        else {
            return Err(UpstreamError::Busy(self.max_in_flight));
        };
        // A body still streaming from the client reports its progress:
        // the deadline for the cluster's answer counts from its end.
        // The cluster reads nothing of a streaming body before the turn, so
        // its progress is watched from the turn.
        let turned = Instant::now();
        let progress = match req.body() {
            RequestBody::Client(_) | RequestBody::Checked(_)
                if !http_body::Body::is_end_stream(req.body()) =>
            {
                let progress = Arc::new(UploadProgress::new(turned));
                let watched = progress.clone();
                req = req.map(|inner| {
                    RequestBody::Checked(Box::pin(Reported {
                        inner,
                        progress: watched,
                    }))
                });
                Some(progress)
            }
            _ => None,
        };
        let exchange = self.exchange(req);
        tokio::pin!(exchange);
        let mut until = later(if progress.is_some() { turned } else { started }, deadline);
        let mut seen = 0u64;
        let result = loop {
            match tokio::time::timeout_at(until.into(), &mut exchange).await {
                Ok(answered) => break Ok(answered),
                Err(_) => {
                    let Some(p) = &progress else {
                        break Err(UpstreamError::Timeout(deadline));
                    };
                    let now = Instant::now();
                    if let Some(ended) = p.ended() {
                        if later(ended, deadline) > now {
                            until = later(ended, deadline);
                            continue;
                        }
                        break Err(UpstreamError::Timeout(deadline));
                    }
                    let sent = p.bytes();
                    if sent.saturating_sub(seen) < MIN_UPLOAD_PROGRESS {
                        break Err(UpstreamError::UploadStalled(deadline));
                    }
                    seen = sent;
                    until = later(now, deadline);
                }
            }
        };
        match result {
            Err(e) => {
                if matches!(e, UpstreamError::Timeout(_)) {
                    self.metrics.errors_timeout.inc();
                }
                Err(e)
            }
            Ok(Err(Failure::Connect(e))) => {
                self.metrics.errors_connect.inc();
                Err(UpstreamError::Connect(e))
            }
            Ok(Err(Failure::Io(e))) => {
                self.metrics.errors_io.inc();
                Err(UpstreamError::Io(e))
            }
            Ok(Ok(resp)) => {
                Metrics::observe_latency(&self.metrics, started.elapsed());
                self.metrics.response(resp.status().as_u16());
                if let Some(uses) = resp.extensions().get::<ConnectionUses>() {
                    if uses.0.fetch_add(1, Ordering::Relaxed) > 0 {
                        self.metrics.connections_reused.inc();
                    }
                }
                Ok(resp)
            }
        }
    }

    /// One exchange: over HTTP/1.1 on a connection of this worker's pool
    /// (or a new one), driven by this task; over HTTP/2 through hyper's
    /// pooled client.
    async fn exchange(&self, req: Request<RequestBody>) -> Result<Response<Answer>, Failure> {
        let Some(pool) = &self.pool else {
            return match self.client.request(req).await {
                Ok(resp) => Ok(resp.map(Answer::pooled)),
                Err(e) if e.is_connect() => Err(Failure::Connect(error_chain(&e))),
                Err(e) => Err(Failure::Io(error_chain(&e))),
            };
        };
        let mut req = req;
        let mut fresh = false;
        loop {
            let pooled = if fresh { None } else { pool.checkout() };
            let reused = pooled.is_some();
            let mut link = match pooled {
                Some(link) => link,
                None => Box::pin(self.connect()).await?,
            };
            match link.exchange(req).await {
                Ok(started) => {
                    if reused {
                        self.metrics.connections_reused.inc();
                    }
                    return Ok(Answer::driven(started, link, pool.clone()));
                }
                // The cluster closed an idle connection as the request was
                // given to it: nothing was written, so it is sent again on
                // a new connection.
                Err((_, Some(back))) if reused => {
                    req = back;
                    fresh = true;
                }
                // Handed back by a new connection: it closed before the
                // request was written, so nothing was sent (retryable).
                Err((e, Some(_))) => return Err(Failure::Connect(error_chain(&e))),
                Err((e, None)) => return Err(Failure::Io(error_chain(&e))),
            }
        }
    }

    /// A new HTTP/1.1 connection (TCP, then TLS for https).
    async fn connect(&self) -> Result<crate::h1::Link, Failure> {
        let mut connector = self.connector.clone();
        let io = tower_service::Service::call(&mut connector, self.origin.clone())
            .await
            .map_err(|e| Failure::Connect(error_chain(&*e)))?;
        Ok(crate::h1::Link::open(io))
    }
}

/// Why an exchange failed: no connection opened, or it broke.
enum Failure {
    Connect(String),
    Io(String),
}

impl UpstreamError {
    /// The one mapping of a failed exchange to the client's error, and the
    /// one retry rule: a connection that never opened sent nothing, so a
    /// retry is always safe; after a timeout or a broken connection the
    /// request may have been applied, so only an idempotent one
    /// ([`is_idempotent`]) may be retried.
    pub fn to_proxy_error(&self, cluster: &str, idempotent: bool) -> osproxy_core::ProxyError {
        use osproxy_core::{ErrorCode, ProxyError};
        let (code, retryable) = match self {
            UpstreamError::Connect(_) => (ErrorCode::UpstreamUnavailable, true),
            UpstreamError::Timeout(_) => (ErrorCode::UpstreamTimeout, idempotent),
            UpstreamError::Io(_) => (ErrorCode::UpstreamUnavailable, idempotent),
            UpstreamError::Busy(_) => (ErrorCode::Overloaded, true),
            // The client's fault, and nothing was applied: the cluster
            // never had the whole request.
            UpstreamError::UploadStalled(_) => {
                return ProxyError::new(ErrorCode::RequestTimeout, self.to_string());
            }
        };
        ProxyError::new(code, format!("cluster {cluster}: {self}")).retryable(retryable)
    }
}

/// Methods whose repetition cannot change the outcome, so a timed-out or
/// broken exchange may be retried by the client.
pub fn is_idempotent(m: &http::Method) -> bool {
    use http::Method;
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
    )
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Connect(e) => write!(f, "cannot connect: {e}"),
            UpstreamError::Timeout(d) => write!(
                f,
                "no response within {} ms of the end of the request",
                d.as_millis()
            ),
            UpstreamError::UploadStalled(d) => write!(
                f,
                "the request body was still arriving after {} s, less than {} KiB of it in the last {} s (upstream.request_timeout); the cluster never had the whole request, so nothing was applied: send the body faster, or raise [upstream] request_timeout",
                d.as_secs(),
                MIN_UPLOAD_PROGRESS / 1024,
                d.as_secs()
            ),
            UpstreamError::Io(e) => write!(f, "connection failed: {e}"),
            UpstreamError::Busy(n) => write!(
                f,
                "{n} requests from this instance were already waiting for its answers (clusters[].max_concurrent_requests) for the whole deadline; nothing was sent"
            ),
        }
    }
}

/// `error: cause: cause`, so a 502's reason says what really happened
/// (hyper's top-level message alone is "client error (Connect)").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// A cluster's SigV4 signing: credentials, region, service.
struct Signer {
    credentials: crate::sigv4::Credentials,
    region: String,
    service: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("region", &self.region)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Sets `host`, `x-amz-date`, `x-amz-content-sha256` (the body streams:
    /// `UNSIGNED-PAYLOAD`), `x-amz-security-token` with temporary
    /// credentials, and the `Authorization` signing them. The client's own
    /// values of these headers are replaced.
    fn sign(
        &self,
        req: &mut Request<RequestBody>,
        authority: &Authority,
    ) -> Result<(), UpstreamError> {
        use crate::sigv4::{amz_date, sign, Request as ToSign, UNSIGNED_PAYLOAD};
        // The client's own x-amz-* headers are never forwarded unsigned.
        let theirs: Vec<http::HeaderName> = req
            .headers()
            .keys()
            .filter(|k| k.as_str().starts_with("x-amz-"))
            .cloned()
            .collect();
        for name in theirs {
            req.headers_mut().remove(name);
        }
        let date = amz_date(std::time::SystemTime::now());
        let host = authority.as_str();
        let mut signed = vec![
            ("host", host),
            ("x-amz-content-sha256", UNSIGNED_PAYLOAD),
            ("x-amz-date", date.as_str()),
        ];
        if let Some(token) = &self.credentials.session_token {
            signed.push(("x-amz-security-token", token.as_str()));
        }
        let signature = sign(
            &ToSign {
                method: req.method().as_str(),
                path: req.uri().path(),
                query: req.uri().query(),
                headers: &signed,
                payload: UNSIGNED_PAYLOAD,
            },
            &self.credentials,
            &self.region,
            &self.service,
            &date,
            true,
        );
        // The query is sent encoded exactly as signed (each name and value
        // decoded, then encoded the SigV4 way), in the client's order: the
        // service, whatever its own decoding, reads the signed bytes, and
        // OpenSearch the same parameters (`+` and `%20` are both spaces to
        // it; the last of a repeated parameter still wins).
        if req.uri().query().is_some() {
            let path_and_query = if signature.sent_query.is_empty() {
                req.uri().path().to_string()
            } else {
                format!("{}?{}", req.uri().path(), signature.sent_query)
            };
            let mut parts = req.uri().clone().into_parts();
            parts.path_and_query =
                Some(path_and_query.parse().map_err(|e| {
                    UpstreamError::Io(format!("cannot build the signed query: {e}"))
                })?);
            *req.uri_mut() = Uri::from_parts(parts)
                .map_err(|e| UpstreamError::Io(format!("cannot build the signed uri: {e}")))?;
        }
        let bad = |e: http::header::InvalidHeaderValue| {
            UpstreamError::Io(format!("cannot build the SigV4 headers: {e}"))
        };
        let mut values = Vec::with_capacity(signed.len() + 1);
        for (name, value) in &signed {
            values.push((*name, HeaderValue::from_str(value).map_err(bad)?));
        }
        let mut authorization = HeaderValue::from_str(&signature.authorization).map_err(bad)?;
        authorization.set_sensitive(true);
        let headers = req.headers_mut();
        for (name, mut value) in values {
            if name == "x-amz-security-token" {
                value.set_sensitive(true);
            }
            headers.insert(name, value);
        }
        headers.insert(http::header::AUTHORIZATION, authorization);
        Ok(())
    }
}

/// `Authorization: ApiKey <value>` from `api_key_env` / `api_key_file`.
fn api_key(position: usize, c: &Cluster) -> Result<Option<HeaderValue>, SetupError> {
    let key = format!("clusters[{position}].api_key");
    let Some(value) =
        osproxy_config::read_secret(&key, c.api_key_env.as_deref(), c.api_key_file.as_deref())
            .map_err(|source| SetupError::ApiKey {
                cluster: c.id.clone(),
                source,
            })?
    else {
        return Ok(None);
    };
    let mut header = HeaderValue::try_from(format!("ApiKey {value}")).map_err(|source| {
        SetupError::BadCredentials {
            cluster: c.id.clone(),
            source,
        }
    })?;
    header.set_sensitive(true);
    Ok(Some(header))
}

fn basic_auth(c: &Cluster) -> Result<Option<HeaderValue>, SetupError> {
    let Some(user) = &c.username else {
        return Ok(None);
    };
    let cluster = || c.id.clone();
    let password = match (&c.password_env, &c.password_file) {
        (Some(var), _) => std::env::var(var).map_err(|_| SetupError::EnvNotSet {
            cluster: cluster(),
            var: var.clone(),
        })?,
        (None, Some(file)) => std::fs::read_to_string(file)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
            .map_err(|source| SetupError::Unreadable {
                cluster: cluster(),
                file: file.clone(),
                source,
            })?,
        (None, None) => return Err(SetupError::NoPassword { cluster: cluster() }),
    };
    let token = osproxy_core::b64::encode(format!("{user}:{password}").as_bytes());
    let mut value = HeaderValue::try_from(format!("Basic {token}")).map_err(|source| {
        SetupError::BadCredentials {
            cluster: cluster(),
            source,
        }
    })?;
    value.set_sensitive(true);
    Ok(Some(value))
}

/// How many requests a pooled connection has carried; shared between the
/// connection and every response it delivers.
#[derive(Clone, Debug)]
struct ConnectionUses(Arc<AtomicU64>);

/// An [`HttpConnector`] that counts opened connections and tags each with
/// a use counter so reuse can be measured per response. The pooled client
/// clones its connector on every request, so it stays two `Arc`s small.
#[derive(Clone)]
pub struct CountingConnector {
    inner: HttpConnector,
    opened: Counter<u64, AtomicU64>,
    /// For an https cluster: the TLS client and the name its certificate
    /// must carry.
    tls: Option<
        Arc<(
            tokio_rustls::TlsConnector,
            rustls::pki_types::ServerName<'static>,
        )>,
    >,
    /// A cluster that accepts TCP but never finishes the handshake is
    /// given up on after this (the connect timeout).
    handshake_timeout: Duration,
}

impl std::fmt::Debug for CountingConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountingConnector")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl tower_service::Service<Uri> for CountingConnector {
    type Response = TrackedConnection;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<TrackedConnection, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower_service::Service::<Uri>::poll_ready(&mut self.inner, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = tower_service::Service::<Uri>::call(&mut self.inner, uri);
        let opened = self.opened.clone();
        let tls = self.tls.clone();
        let handshake_timeout = self.handshake_timeout;
        Box::pin(async move {
            let tcp = connecting.await?;
            let io = match tls {
                None => Stream::Plain(Box::new(tcp)),
                Some(tls) => {
                    let (connector, name) = &*tls;
                    let handshake = connector.connect(name.clone(), tcp.into_inner());
                    let stream = tokio::time::timeout(handshake_timeout, handshake)
                        .await
                        .map_err(|_| {
                            TlsHandshake(format!("no answer within {handshake_timeout:?}"))
                        })?
                        .map_err(|e| TlsHandshake(e.to_string()))?;
                    Stream::Tls(Box::new(TokioIo::new(stream)))
                }
            };
            opened.inc();
            Ok(TrackedConnection {
                io,
                uses: ConnectionUses(Arc::new(AtomicU64::new(0))),
            })
        })
    }
}

/// A TLS handshake with a cluster failed (an untrusted or expired
/// certificate, a name that does not match, a cleartext server).
#[derive(Debug)]
struct TlsHandshake(String);

impl std::fmt::Display for TlsHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TLS handshake with the cluster failed: {}", self.0)
    }
}

impl std::error::Error for TlsHandshake {}

/// A connection to a cluster: cleartext or TLS.
#[derive(Debug)]
enum Stream {
    Plain(Box<TokioIo<TcpStream>>),
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>),
}

/// A connection with its use counter.
#[derive(Debug)]
pub struct TrackedConnection {
    io: Stream,
    uses: ConnectionUses,
}

impl Connection for TrackedConnection {
    fn connected(&self) -> Connected {
        match &self.io {
            Stream::Plain(io) => io.connected().extra(self.uses.clone()),
            Stream::Tls(io) => {
                let (tcp, session) = io.inner().get_ref();
                let connected = tcp.connected();
                let connected = if session.alpn_protocol() == Some(b"h2") {
                    connected.negotiated_h2()
                } else {
                    connected
                };
                connected.extra(self.uses.clone())
            }
        }
    }
}

/// Forwards one I/O call to whichever stream the connection is.
macro_rules! each_stream {
    ($self:expr, $io:ident => $call:expr) => {
        match &mut $self.get_mut().io {
            Stream::Plain($io) => $call,
            Stream::Tls($io) => $call,
        }
    };
}

impl TrackedConnection {
    /// Whether the connection is TLS.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self.io, Stream::Tls(_))
    }

    /// Reads what the cluster sent into the spare capacity of `buf`
    /// (`Ok(0)`: the cluster closed the connection).
    pub(crate) fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut bytes::BytesMut,
    ) -> Poll<io::Result<usize>> {
        use tokio::io::AsyncReadExt;
        // `read_buf` only registers for readiness and reads: a future of
        // it dropped while pending loses nothing.
        match &mut self.io {
            Stream::Plain(io) => std::pin::pin!(io.inner_mut().read_buf(buf)).poll(cx),
            Stream::Tls(io) => std::pin::pin!(io.inner_mut().read_buf(buf)).poll(cx),
        }
    }
}

impl hyper::rt::Read for TrackedConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        each_stream!(self, io => Pin::new(io.as_mut()).poll_read(cx, buf))
    }
}

impl hyper::rt::Write for TrackedConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each_stream!(self, io => Pin::new(io.as_mut()).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_stream!(self, io => Pin::new(io.as_mut()).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_stream!(self, io => Pin::new(io.as_mut()).poll_shutdown(cx))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Stream::Plain(io) => io.is_write_vectored(),
            Stream::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each_stream!(self, io => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs))
    }
}

/// `t + d`, saturating far in the future: a configured timeout of any size
/// (`"9999999999h"`) must not overflow an `Instant` on the request path.
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migration's clients take turns of their own: client traffic
    /// holding every turn of a cluster does not hold up a fenced write.
    #[tokio::test]
    async fn clients_apart_have_turns_of_their_own() {
        let config = osproxy_config::from_str(
            "[[clusters]]\nid = \"bounds-apart\"\nurl = \"http://127.0.0.1:1\"\nmax_concurrent_requests = 1\n[passthrough]\ncluster = \"bounds-apart\"\n",
            std::iter::empty(),
            &[],
        )
        .unwrap();
        let metrics = Metrics::new(["bounds-apart"]);
        let shared = Upstreams::new(&config.clusters, &config.upstream, &metrics).unwrap();
        let also_shared = Upstreams::new(&config.clusters, &config.upstream, &metrics).unwrap();
        let apart = Upstreams::new(&config.clusters, &config.upstream, &metrics)
            .unwrap()
            .apart();
        let _held = shared.clusters[0]
            .in_flight
            .clone()
            .try_acquire_owned()
            .unwrap();
        assert_eq!(also_shared.clusters[0].in_flight.available_permits(), 0);
        assert_eq!(apart.clusters[0].in_flight.available_permits(), 1);
    }

    #[test]
    fn a_deadline_of_any_size_does_not_overflow() {
        let now = Instant::now();
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert!(later(now, Duration::MAX) > now + Duration::from_secs(365 * 24 * 3600));
    }

    #[test]
    fn only_what_cannot_have_been_applied_twice_is_retryable() {
        let connect = UpstreamError::Connect("refused".into());
        let timeout = UpstreamError::Timeout(Duration::from_secs(1));
        let io = UpstreamError::Io("reset".into());
        assert!(connect.to_proxy_error("main", false).retryable);
        assert!(!timeout.to_proxy_error("main", false).retryable);
        assert!(!io.to_proxy_error("main", false).retryable);
        assert!(timeout.to_proxy_error("main", true).retryable);
        assert_eq!(
            timeout.to_proxy_error("main", false).code,
            osproxy_core::ErrorCode::UpstreamTimeout
        );
        assert!(!is_idempotent(&http::Method::POST));
        assert!(is_idempotent(&http::Method::GET));
    }
}
