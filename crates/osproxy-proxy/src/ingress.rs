//! Ingress: accept TCP connections and serve HTTP/1.1 and HTTP/2 on one
//! port — cleartext (h2c, prior knowledge) or TLS (ALPN `h2` and
//! `http/1.1`) — with `TCP_NODELAY`, a handshake and header-read deadline,
//! and a graceful drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

mod watch;
use watch::{Activity, Watched};
pub use watch::{ConnectionLimits, Tracked, Uploading};

/// How long a client has to start and finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The answer to a cleartext request on a TLS port (before any TLS: the
/// client cannot read anything else), OpenSearch-shaped.
const PLAINTEXT_ON_TLS: &str = "{\"error\":{\"root_cause\":[{\"type\":\"tls_required\",\"reason\":\"this port speaks TLS: send the request with https://\"}],\"type\":\"tls_required\",\"reason\":\"this port speaks TLS: send the request with https://\"},\"status\":400}";

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished its in-flight requests.
    Complete,
    /// The deadline passed with requests still running; they were cut.
    TimedOut,
}

/// Serves `listener` until `shutdown` resolves, then stops accepting (the
/// listening socket is closed, so new connections are refused), lets
/// in-flight requests finish for up to `drain`, and returns.
pub async fn serve<S, B, F>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    service: S,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    limits: ConnectionLimits,
) -> Drained
where
    S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The parsers read heads past `server.max_headers` and
    // `server.max_header_bytes`, so that the pipeline refuses them with an
    // OpenSearch-shaped 431; only a head past what they read is refused by
    // the parser itself (a bare 431 on HTTP/1, the stream reset on
    // HTTP/2). hyper keeps up to 100 fields on the stack: a larger count
    // costs an allocation per request, only for operators who ask for it.
    let head_bytes = limits
        .max_header_bytes
        .saturating_mul(2)
        .saturating_add(16 * 1024);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers.max(100))
        .max_buf_size(head_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(
            u32::try_from(head_bytes.saturating_add(32 * limits.max_headers)).unwrap_or(u32::MAX),
        )
        .max_concurrent_streams(256);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Some(open) = limits.admit() else {
                        limits.metrics.closed("max_connections");
                        refuse_connection(stream, tls.is_some(), limits.max_connections);
                        continue;
                    };
                    if let Err(e) = stream.set_nodelay(true) {
                        debug!(%peer, error = %e, "cannot set TCP_NODELAY");
                    }
                    let limits = limits.clone();
                    match &tls {
                        None => {
                            let activity = Activity::new();
                            let svc = tracked(service.clone(), activity.clone());
                            let io = Watched::new(stream, activity.clone());
                            let conn = builder.serve_connection(TokioIo::new(io), svc).into_owned();
                            let conn = graceful.watch(conn);
                            tokio::spawn(async move {
                                let _open = open;
                                tokio::select! {
                                    r = conn => if let Err(e) = r {
                                        ended_badly(&limits, &*e);
                                        debug!(%peer, error = %e, "connection ended with an error");
                                    },
                                    why = activity.expired(&limits) => debug!(%peer, why, "connection closed"),
                                }
                            });
                        }
                        Some(config) => {
                            // The handshake runs in the connection's own task,
                            // so a slow client never holds up the accept loop.
                            let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                            let builder = builder.clone();
                            let watcher = graceful.watcher();
                            let service = service.clone();
                            tokio::spawn(async move {
                                let _open = open;
                                let Some(stream) = handshake(acceptor, stream, peer).await else {
                                    return;
                                };
                                // The verified client certificate, if any,
                                // goes with every request of the connection.
                                let Ok(certificate) = client_certificate(stream.get_ref().1) else {
                                    debug!(%peer, "a client certificate that cannot be read: connection closed");
                                    return;
                                };
                                // rustls does not verify the certificate again
                                // when a session resumes: one that has expired
                                // since ends the connection here, as a full
                                // handshake with it would.
                                if let Some(c) = certificate.as_ref().filter(|c| !c.valid_at(unix_now())) {
                                    debug!(%peer, not_after = c.valid.1, "resumed TLS session with an out-of-date client certificate refused");
                                    return;
                                }
                                let activity = Activity::new();
                                let with_certificate = move |mut req: Request<Incoming>| {
                                    if let Some(c) = &certificate {
                                        req.extensions_mut().insert(c.clone());
                                    }
                                    service(req)
                                };
                                let svc = tracked(with_certificate, activity.clone());
                                let io = Watched::new(stream, activity.clone());
                                let conn = builder.serve_connection(TokioIo::new(io), svc).into_owned();
                                tokio::select! {
                                    r = watcher.watch(conn) => if let Err(e) = r {
                                        ended_badly(&limits, &*e);
                                        debug!(%peer, error = %e, "connection ended with an error");
                                    },
                                    why = activity.expired(&limits) => debug!(%peer, why, "connection closed"),
                                }
                            });
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off briefly
                    // instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => Drained::Complete,
        () = tokio::time::sleep(drain) => Drained::TimedOut,
    }
}

/// `service` with each request counted in flight on its connection until
/// its answer's body is done.
fn tracked<S, B, F>(
    service: S,
    activity: Arc<Activity>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Tracked<B>>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Tracked<B>>, Infallible>> + Send + 'static,
> + Clone
where
    S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: http_body::Body + Send + 'static,
{
    hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let busy = activity.busy();
        if !http_body::Body::is_end_stream(req.body()) {
            req.extensions_mut().insert(activity.uploading());
        }
        let answer = service(req);
        async move {
            answer
                .await
                .map(|resp| resp.map(|body| Tracked::new(body, busy)))
        }
    })
}

/// Counts a connection hyper ended with an error that is the client's:
/// its headers did not arrive within `server.header_read_timeout`, or it
/// spoke something other than HTTP (a head past what the parser reads
/// included).
fn ended_badly(limits: &ConnectionLimits, e: &(dyn std::error::Error + 'static)) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                limits.metrics.closed("header_read_timeout");
            } else if h.is_parse() || h.is_parse_too_large() {
                limits.metrics.closed("protocol_error");
            }
            return;
        }
        source = err.source();
    }
}

/// The answer to a connection past `server.max_connections`: a 503 (with
/// `Retry-After`) where it can be read, a close on a TLS port (before any
/// handshake, nothing else can be said).
fn refuse_connection(mut stream: TcpStream, tls: bool, max: usize) {
    debug!(max, "connection refused: server.max_connections reached");
    if tls {
        return;
    }
    tokio::spawn(async move {
        let body = format!(
            "{{\"error\":{{\"root_cause\":[{{\"type\":\"overloaded\",\"reason\":\"osproxy has {max} connections open, its limit (server.max_connections): retry shortly\"}}],\"type\":\"overloaded\",\"reason\":\"osproxy has {max} connections open, its limit (server.max_connections): retry shortly\"}},\"status\":503}}"
        );
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json; charset=UTF-8\r\nretry-after: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.shutdown().await;
        })
        .await;
    });
}

/// A TLS connection's client certificate, verified against the listener's
/// client CA during the handshake, as principals are matched against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The subject's attributes as `TYPE=value`, sorted (see
    /// `osproxy_config::subject_parts`); empty when the subject cannot be
    /// read unambiguously (then no `cert_subject` matches).
    pub subject: Vec<String>,
    /// Its subject alternative names, by kind.
    pub sans: Vec<SubjectAltName>,
    /// When it and every certificate of the chain the client presented are
    /// all valid (the latest notBefore, the earliest notAfter), in seconds
    /// since the Unix epoch. A resumed TLS session carries the chain it was
    /// first verified with, and a connection may outlive it: every use
    /// checks the clock.
    pub valid: (i64, i64),
}

impl ClientCertificate {
    /// Whether the certificate is within its validity at `now` (seconds
    /// since the Unix epoch).
    pub fn valid_at(&self, now: i64) -> bool {
        self.valid.0 <= now && now <= self.valid.1
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// One subject alternative name of a client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectAltName {
    /// A DNS name, lower-cased.
    Dns(String),
    /// An e-mail address.
    Email(String),
    /// A URI (a SPIFFE id, say).
    Uri(String),
}

/// The short names subjects are written with, by attribute OID.
const SUBJECT_TYPES: &[(&str, &str)] = &[
    ("2.5.4.3", "CN"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.5", "SERIALNUMBER"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
    ("1.2.840.113549.1.9.1", "EMAILADDRESS"),
];

/// The subject read attribute by attribute (never from its printed form):
/// every attribute of a known type, a string value with no `,`, `+` or `=`
/// and no surrounding spaces, one attribute per RDN. Anything else makes
/// the subject unreadable (empty), so that a value can never pose as
/// several attributes.
fn subject_of(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    let mut parts = Vec::new();
    for rdn in cert.subject().iter_rdn() {
        let mut attributes = rdn.iter();
        let (Some(attr), None) = (attributes.next(), attributes.next()) else {
            return Vec::new();
        };
        let oid = attr.attr_type().to_id_string();
        let Some((_, name)) = SUBJECT_TYPES.iter().find(|(id, _)| *id == oid) else {
            return Vec::new();
        };
        let Ok(value) = attr.as_str() else {
            return Vec::new();
        };
        let plain = !value.is_empty()
            && value.trim() == value
            && !value.contains([',', '+', '='])
            && !value.chars().any(char::is_control);
        if !plain {
            return Vec::new();
        }
        parts.push(format!("{name}={value}"));
    }
    parts.sort();
    parts
}

/// The leaf certificate the client presented (rustls verified it), if
/// any, valid while every certificate of the chain it presented is; `Err`
/// when one cannot be read (the connection is then closed, never taken as
/// one without a certificate).
fn client_certificate(
    conn: &rustls::ServerConnection,
) -> Result<Option<Arc<ClientCertificate>>, ()> {
    use x509_parser::extensions::GeneralName;
    let Some(chain) = conn.peer_certificates().filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    let mut valid = (i64::MIN, i64::MAX);
    let mut parsed = Vec::with_capacity(chain.len());
    for der in chain {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|_| ())?;
        let v = cert.validity();
        valid.0 = valid.0.max(v.not_before.timestamp());
        valid.1 = valid.1.min(v.not_after.timestamp());
        parsed.push(cert);
    }
    let cert = parsed.first().ok_or(())?;
    let sans = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(s) if !s.contains('*') => {
                    Some(SubjectAltName::Dns(s.to_ascii_lowercase()))
                }
                GeneralName::RFC822Name(s) => Some(SubjectAltName::Email((*s).to_string())),
                GeneralName::URI(s) => Some(SubjectAltName::Uri((*s).to_string())),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(Some(Arc::new(ClientCertificate {
        subject: subject_of(cert),
        sans,
        valid,
    })))
}

/// The TLS handshake of one accepted connection, within
/// [`HANDSHAKE_TIMEOUT`]. A client that speaks cleartext HTTP to the TLS
/// port (its first byte is not a TLS handshake record) is answered 400
/// naming the fix, instead of a handshake error it cannot read.
async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    mut stream: TcpStream,
    peer: std::net::SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] != 0x16 => {
            // Read what the client sent (briefly, a bounded amount) before
            // answering, so that closing does not reset the connection
            // under the answer.
            let mut request = [0u8; 8192];
            let _ = tokio::time::timeout(
                Duration::from_millis(100),
                tokio::io::AsyncReadExt::read(&mut stream, &mut request),
            )
            .await;
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json; charset=UTF-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{PLAINTEXT_ON_TLS}",
                PLAINTEXT_ON_TLS.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.shutdown().await;
            debug!(%peer, "cleartext request on the TLS port refused");
            return None;
        }
        Ok(Ok(_)) => {}
        _ => return None,
    }
    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// Binds `count` listening sockets to one address with `SO_REUSEPORT`, so
/// that each worker thread accepts on its own socket and the kernel spreads
/// connections between them. Port 0 is resolved by the first bind and
/// reused by the rest. The sockets are non-blocking, ready for
/// `tokio::net::TcpListener::from_std` inside each worker's runtime.
pub fn bind_reuseport(
    addr: std::net::SocketAddr,
    count: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Socket, Type};
    let mut addr = addr;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}
