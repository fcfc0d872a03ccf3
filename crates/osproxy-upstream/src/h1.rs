//! HTTP/1.1 to a cluster, spoken by osproxy itself on connections driven by
//! the task of the request that uses them.
//!
//! hyper's pooled client hands every request to a separate connection task
//! through a channel, checks connections out of a pool keyed by a hashed
//! URI, and spawns a task per request to give the connection back; even
//! its unpooled connection sends each request through a channel to the
//! connection's state machine. Here a connection is a plain value: the
//! request's own task writes the request head (one write, with a small
//! body), reads and parses the answer's head (`httparse`, as hyper does)
//! and, through [`Answer`], streams its body out of the connection's read
//! buffer without copying; when the body has been read to its end the
//! connection goes back to its worker's idle list (a `Vec`, last in first
//! out). Nothing is spawned, hashed or sent across tasks per request. Each
//! worker thread has its own clusters (see decision 0002), so the list's
//! lock is never contended.
//!
//! The answer's framing decides whether another request may follow it on
//! the connection, and an answer read from the wrong place would be handed
//! to another request: so the framing is read strictly (RFC 9112 §6) and
//! anything ambiguous — a `Content-Length` beside a `Transfer-Encoding`,
//! two different lengths, a malformed chunk — fails the answer and closes
//! the connection instead of guessing.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::body::{BodyError, RequestBody};
use crate::client::TrackedConnection;

/// The most an answer's head may take (status line and fields).
const MAX_HEAD: usize = 64 * 1024;
/// The most header fields an answer's head may have.
const MAX_FIELDS: usize = 128;
/// A chunk-size line longer than this is not one.
const MAX_CHUNK_LINE: usize = 1024;
/// What one read asks the kernel for, at least.
const READ_AT_LEAST: usize = 8 * 1024;
/// What one read asks the kernel for, at most.
const READ_AT_MOST: usize = 64 * 1024;
/// A body this small goes out in the same write as the head.
const INLINE_BODY: usize = 16 * 1024;

fn broken(reason: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.into())
}

/// One connection and the bytes read from it that nothing has consumed.
pub(crate) struct Link {
    io: TrackedConnection,
    buf: BytesMut,
}

impl Link {
    /// A link over an established (and, for https, TLS) connection.
    pub(crate) fn open(io: TrackedConnection) -> Link {
        Link {
            io,
            buf: BytesMut::new(),
        }
    }

    /// Whether a new request can be sent on it now: nothing unread is
    /// waiting and the cluster has not closed it while it was idle (found
    /// out with one read that must not be ready).
    fn usable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        self.buf.reserve(1);
        let mut cx = Context::from_waker(Waker::noop());
        matches!(self.io.poll_read_buf(&mut cx, &mut self.buf), Poll::Pending)
    }

    /// Reads more of what the cluster sent; `Ok(0)` when it closed.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_AT_LEAST {
            self.buf.reserve(want.clamp(READ_AT_LEAST, READ_AT_MOST));
        }
        self.io.poll_read_buf(cx, &mut self.buf)
    }

    /// Sends `req` and reads the answer's head, writing the request's body
    /// meanwhile. A request of which nothing was written is handed back
    /// (`Err(Some(req))`): the connection was found closed first.
    pub(crate) async fn exchange(
        &mut self,
        req: Request<RequestBody>,
    ) -> Result<Started, (io::Error, Option<Request<RequestBody>>)> {
        let (parts, body) = req.into_parts();
        let head_only = parts.method == Method::HEAD;
        let mut upload = match Upload::new(&parts, body) {
            Ok(u) => u,
            Err(e) => return Err((e, None)),
        };
        let mut failed: Option<io::Error> = None;
        let polled = std::future::poll_fn(|cx| {
            if failed.is_none() && !upload.done() {
                if let Poll::Ready(Err(e)) = upload.poll(&mut self.io, cx) {
                    failed = Some(e);
                }
            }
            let head = self.poll_head(cx, head_only);
            if upload.untouched.is_some() && matches!(head, Poll::Ready(Ok(_))) {
                // An answer before a byte of the request was written is
                // not this request's (a late answer to an earlier one, a
                // balancer's timeout): the connection is dropped and the
                // request, untouched, is handed back.
                return Poll::Ready(Err(broken(
                    "the cluster answered before the request was sent",
                )));
            }
            if let Some(e) = failed.take() {
                return match head {
                    // The cluster answered before it took the whole body
                    // (an error, typically): the answer is what counts.
                    Poll::Ready(Ok(h)) => Poll::Ready(Ok((h, true))),
                    _ => Poll::Ready(Err(e)),
                };
            }
            head.map(|h| h.map(|h| (h, false)))
        })
        .await;
        match polled {
            // An answer that came before the whole request was written is
            // not followed by another request on the connection: a cluster
            // that answered without reading the rest of the body could
            // read that rest as a request of its own.
            Ok((head, upload_failed)) => Ok(Started {
                keep_alive: head.keep_alive && !upload_failed && upload.done(),
                head: head.response,
                framing: head.framing,
                upload: (!upload_failed && !upload.done()).then_some(upload),
            }),
            Err(e) => {
                let back = upload
                    .untouched()
                    .map(|body| Request::from_parts(parts, body));
                Err((e, back))
            }
        }
    }

    /// Reads until the answer's head is whole (informational answers
    /// skipped), and parses it.
    fn poll_head(&mut self, cx: &mut Context<'_>, head_only: bool) -> Poll<io::Result<Head>> {
        loop {
            if !self.buf.is_empty() {
                match parse_head(&mut self.buf, head_only)? {
                    Parsed::Head(h) => return Poll::Ready(Ok(h)),
                    Parsed::Informational => continue,
                    Parsed::Partial => {}
                }
            }
            let had = self.buf.len();
            match std::task::ready!(self.poll_fill(cx, READ_AT_LEAST))? {
                0 if had == 0 => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the cluster closed the connection without answering",
                    )))
                }
                0 => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the cluster closed the connection in the middle of its answer's head",
                    )))
                }
                _ => {}
            }
        }
    }
}

/// An exchange whose answer's head has been read.
pub(crate) struct Started {
    head: Response<()>,
    framing: Framing,
    /// The rest of the request's body, when the head came first.
    upload: Option<Upload>,
    keep_alive: bool,
}

/// How the request's body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    /// `Content-Length`: the bytes still owed.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// The request being written: what is queued for the socket, and the body
/// still to be read.
struct Upload {
    queue: VecDeque<Bytes>,
    body: Option<RequestBody>,
    framing: Out,
    /// Everything written has been flushed too (a TLS stream may hold the
    /// last bytes it took until it is flushed).
    flushed: bool,
    /// While nothing has been written: how the request's body can be
    /// handed back whole when the connection turns out closed.
    untouched: Option<BodyKept>,
}

impl Upload {
    /// The request's head (and, when small and at hand, its body) encoded
    /// for the wire. The framing is osproxy's: a body whose size is known
    /// is sent with that length (a rewritten one included), one that
    /// streams with the length the client declared, else chunked.
    fn new(parts: &http::request::Parts, body: RequestBody) -> io::Result<Upload> {
        let declared = declared_length(&parts.headers)?;
        let exact = body.size_hint().exact();
        let ended = body.is_end_stream();
        let framing = exact.or(declared).map_or(Out::Chunked, Out::Length);
        let mut head = Vec::with_capacity(256 + 48 * parts.headers.len());
        head.extend_from_slice(parts.method.as_str().as_bytes());
        head.push(b' ');
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        head.extend_from_slice(target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in &parts.headers {
            // The framing is osproxy's, and it never waits for a 100
            // Continue: the body follows the head at once.
            if name == CONTENT_LENGTH
                || name == TRANSFER_ENCODING
                || name == CONNECTION
                || name == EXPECT
            {
                continue;
            }
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        match framing {
            Out::Length(0)
                if ended
                    && declared.is_none()
                    && matches!(
                        parts.method,
                        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS
                    ) => {}
            Out::Length(n) => {
                head.extend_from_slice(b"content-length: ");
                head.extend_from_slice(itoa(n, &mut [0u8; 20]));
                head.extend_from_slice(b"\r\n");
            }
            Out::Chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        }
        head.extend_from_slice(b"\r\n");
        let mut queue = VecDeque::with_capacity(2);
        let (body, kept) = match body {
            RequestBody::Full(Some(b)) if framing == Out::Length(b.len() as u64) => {
                if b.len() <= INLINE_BODY {
                    head.extend_from_slice(&b);
                    queue.push_back(Bytes::from(head));
                } else {
                    queue.push_back(Bytes::from(head));
                    queue.push_back(b.clone());
                }
                (None, BodyKept::Full(b))
            }
            // A body with nothing to read is never polled; one that claims
            // a length it does not have would leave the cluster waiting
            // for bytes the next request would supply.
            _ if ended && matches!(framing, Out::Length(n) if n > 0) => {
                return Err(broken("the request declares a body length but has no body"))
            }
            b if ended => {
                queue.push_back(Bytes::from(head));
                if framing == Out::Chunked {
                    queue.push_back(Bytes::from_static(b"0\r\n\r\n"));
                }
                (None, BodyKept::Ended(b))
            }
            b => {
                queue.push_back(Bytes::from(head));
                (Some(b), BodyKept::Pending)
            }
        };
        let framing = match framing {
            Out::Length(_) if body.is_none() => Out::Length(0),
            f => f,
        };
        Ok(Upload {
            queue,
            body,
            framing,
            flushed: false,
            untouched: Some(kept),
        })
    }

    fn done(&self) -> bool {
        self.flushed
    }

    /// The request's body as it was, when nothing of the request has been
    /// written.
    fn untouched(&mut self) -> Option<RequestBody> {
        match self.untouched.take()? {
            BodyKept::Full(b) => Some(RequestBody::Full(Some(b))),
            BodyKept::Ended(b) => Some(b),
            BodyKept::Pending => self.body.take(),
        }
    }

    /// Writes what is queued, reading more of the body as the queue
    /// empties; ready once the whole request has been written and flushed.
    fn poll(&mut self, io: &mut TrackedConnection, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.queue.is_empty() {
                let mut slices = [io::IoSlice::new(&[]); 8];
                let mut count = 0;
                for (slot, b) in slices.iter_mut().zip(self.queue.iter()) {
                    *slot = io::IoSlice::new(b);
                    count += 1;
                }
                let written = match std::task::ready!(hyper::rt::Write::poll_write_vectored(
                    Pin::new(&mut *io),
                    cx,
                    &slices[..count]
                )) {
                    Ok(n) => n,
                    Err(e) => {
                        // A TLS stream can fail a write after part of it
                        // went out: the request is no longer untouched.
                        if io.is_tls() {
                            self.untouched = None;
                        }
                        return Poll::Ready(Err(e));
                    }
                };
                if written == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.untouched = None;
                let mut left = written;
                while left > 0 {
                    let Some(front) = self.queue.front_mut() else {
                        break;
                    };
                    if front.len() <= left {
                        left -= front.len();
                        self.queue.pop_front();
                    } else {
                        front.advance(left);
                        left = 0;
                    }
                }
                continue;
            }
            let Some(body) = &mut self.body else {
                std::task::ready!(hyper::rt::Write::poll_flush(Pin::new(&mut *io), cx))?;
                self.flushed = true;
                return Poll::Ready(Ok(()));
            };
            match Pin::new(body).poll_frame(cx) {
                Poll::Pending => {
                    // What was written may sit in a TLS buffer: it goes
                    // out before the body is waited for.
                    std::task::ready!(hyper::rt::Write::poll_flush(Pin::new(&mut *io), cx))?;
                    return Poll::Pending;
                }
                Poll::Ready(None) => {
                    self.body = None;
                    match self.framing {
                        Out::Length(0) => {}
                        Out::Length(n) => {
                            return Poll::Ready(Err(broken(format!(
                                "the request's body ended {n} bytes short of its length"
                            ))))
                        }
                        Out::Chunked => self.queue.push_back(Bytes::from_static(b"0\r\n\r\n")),
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.body = None;
                    return Poll::Ready(Err(io::Error::other(e)));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers: not relayed
                    };
                    if data.is_empty() {
                        continue;
                    }
                    match &mut self.framing {
                        Out::Length(left) => {
                            let n = data.len() as u64;
                            if n > *left {
                                self.body = None;
                                return Poll::Ready(Err(broken(
                                    "the request's body is longer than its length",
                                )));
                            }
                            *left -= n;
                            self.queue.push_back(data);
                        }
                        Out::Chunked => {
                            let size = format!("{:x}\r\n", data.len());
                            self.queue.push_back(Bytes::from(size));
                            self.queue.push_back(data);
                            self.queue.push_back(Bytes::from_static(b"\r\n"));
                        }
                    }
                }
            }
        }
    }
}

/// What a request that failed before its first byte was written gets back.
enum BodyKept {
    /// A whole body, read into the queue.
    Full(Bytes),
    /// A body with nothing to read.
    Ended(RequestBody),
    /// The body not read yet (it is still in `Upload::body`).
    Pending,
}

/// The declared `Content-Length` of a request, read strictly: digits
/// only, and every field of it the same.
fn declared_length(headers: &HeaderMap) -> io::Result<Option<u64>> {
    let mut found = None;
    for v in headers.get_all(CONTENT_LENGTH) {
        let n = digits(v.as_bytes())
            .ok_or_else(|| broken("the request's content-length is not a number"))?;
        if found.is_some_and(|f| f != n) {
            return Err(broken("the request has two different content-lengths"));
        }
        found = Some(n);
    }
    Ok(found)
}

/// A decimal number of digits only, that fits in a `u64`.
fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

/// `n` in decimal, in `buf`.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// How an answer's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (HEAD, 204, 304, or a length of 0).
    Empty,
    /// `Content-Length`: the bytes still to come.
    Length(u64),
    /// `Transfer-Encoding: chunked`, where in it.
    Chunked(Chunk),
    /// Neither: the body runs until the cluster closes the connection.
    Close,
}

/// Where a chunked body's reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data: the bytes left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields (read and dropped) until a
    /// blank line, with the bytes seen so far.
    Trailer(usize),
}

/// An answer's head, parsed.
struct Head {
    response: Response<()>,
    framing: Framing,
    keep_alive: bool,
}

enum Parsed {
    Head(Head),
    /// A 1xx answer (100 Continue, 103 Early Hints): skipped.
    Informational,
    Partial,
}

/// Parses the answer's head at the front of `buf` (and consumes it).
fn parse_head(buf: &mut BytesMut, head_only: bool) -> io::Result<Parsed> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut parsed = httparse::Response::new(&mut fields);
    let used = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(broken(format!(
                "the cluster's answer has a head longer than {MAX_HEAD} bytes"
            )))
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(e) => return Err(broken(format!("the cluster's answer is not HTTP/1.1: {e}"))),
    };
    let code = parsed.code.unwrap_or(0);
    let status = StatusCode::from_u16(code)
        .map_err(|_| broken(format!("the cluster answered status {code}")))?;
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(broken(
                "the cluster switched protocols, which osproxy never asks for",
            ));
        }
        buf.advance(used);
        return Ok(Parsed::Informational);
    }
    let version = match parsed.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    let mut length: Option<u64> = None;
    let mut chunked = None::<bool>;
    let (mut said_close, mut said_keep_alive, mut coded) = (false, false, false);
    for f in parsed.headers.iter() {
        let name = HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| {
            broken(format!(
                "the cluster's answer has a field named {:?}",
                f.name
            ))
        })?;
        let value = HeaderValue::from_bytes(f.value).map_err(|_| {
            broken(format!(
                "the cluster's answer has a bad value for {}",
                f.name
            ))
        })?;
        if name == CONTENT_LENGTH {
            // `1, 1` is one length said twice; anything else is two.
            for part in f.value.split(|&b| b == b',') {
                let n = digits(part.trim_ascii()).ok_or_else(|| {
                    broken("the cluster's answer has a content-length that is not a number")
                })?;
                if length.is_some_and(|l| l != n) {
                    return Err(broken(
                        "the cluster's answer has two different content-lengths",
                    ));
                }
                length = Some(n);
            }
        } else if name == TRANSFER_ENCODING {
            // Chunked only when it is the last coding applied.
            let last = f
                .value
                .split(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .rfind(|c| !c.is_empty());
            chunked = Some(last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")));
            coded = true;
        } else if name == CONNECTION {
            for token in f.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                said_close |= token.eq_ignore_ascii_case(b"close");
                said_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        headers.append(name, value);
    }
    // `close` anywhere wins; HTTP/1.0 keeps the connection only when it
    // asks to, and never with a transfer coding (RFC 9112 §6.1: faulty
    // framing), whatever order the fields come in.
    let close = said_close || (version == Version::HTTP_10 && (!said_keep_alive || coded));
    let framing =
        if head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            Framing::Empty
        } else {
            match (chunked, length) {
                (Some(_), Some(_)) => {
                    return Err(broken(
                        "the cluster's answer has both a transfer-encoding and a content-length",
                    ))
                }
                (Some(true), None) => Framing::Chunked(Chunk::Size),
                (Some(false), None) | (None, None) => Framing::Close,
                (None, Some(0)) => Framing::Empty,
                (None, Some(n)) => Framing::Length(n),
            }
        };
    buf.advance(used);
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Parsed::Head(Head {
        response,
        keep_alive: !close && framing != Framing::Close,
        framing,
    }))
}

/// A worker's idle connections to one cluster.
pub(crate) struct Pool {
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    /// Whether a task is closing connections idle past the timeout.
    reaping: AtomicBool,
}

struct Idle {
    link: Link,
    since: Instant,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self.idle.try_lock().map_or(0, |i| i.len());
        f.debug_struct("Pool")
            .field("idle", &idle)
            .field("max_idle", &self.max_idle)
            .finish_non_exhaustive()
    }
}

impl Pool {
    pub(crate) fn new(max_idle: usize, idle_timeout: Duration) -> Arc<Pool> {
        Arc::new(Pool {
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
            reaping: AtomicBool::new(false),
        })
    }

    /// The most recently used idle connection that is still usable.
    pub(crate) fn checkout(&self) -> Option<Link> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(mut c) = idle.pop() {
            if now.saturating_duration_since(c.since) < self.idle_timeout && c.link.usable() {
                return Some(c.link);
            }
        }
        None
    }

    /// Keeps a connection whose answer was read to its end for the next
    /// request.
    fn checkin(self: &Arc<Self>, link: Link) {
        if self.max_idle == 0 || !link.buf.is_empty() {
            return;
        }
        let now = Instant::now();
        {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() >= self.max_idle {
                idle.remove(0);
            }
            idle.push(Idle { link, since: now });
        }
        self.reap_later();
    }

    /// Closes connections idle past the timeout even when no request comes
    /// to find them: one task per pool while it holds any.
    fn reap_later(self: &Arc<Self>) {
        if self.reaping.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.reaping.store(false, Ordering::Release);
            return;
        };
        let pool = Arc::downgrade(self);
        let every = self.idle_timeout.max(Duration::from_millis(100));
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(pool) = pool.upgrade() else { return };
                let now = Instant::now();
                let mut idle = pool.idle.lock().unwrap_or_else(PoisonError::into_inner);
                idle.retain(|c| now.saturating_duration_since(c.since) < pool.idle_timeout);
                if idle.is_empty() {
                    pool.reaping.store(false, Ordering::Release);
                    return;
                }
            }
        });
    }
}

/// A cluster's answer body. Reading it reads its connection (and writes
/// what is left of the request, when the answer came first); read to its
/// end, it gives the connection back to its pool. Dropped before its end,
/// it closes the connection (what is left of the answer is never read).
pub struct Answer {
    inner: Inner,
}

enum Inner {
    /// From hyper's pooled client (HTTP/2), which drives it itself.
    Pooled(Incoming),
    /// From a connection of this worker's own.
    Driven(Driven),
}

struct Driven {
    /// `None` once the answer has ended (or failed).
    link: Option<Link>,
    pool: Arc<Pool>,
    framing: Framing,
    upload: Option<Upload>,
    keep_alive: bool,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("pooled", &matches!(self.inner, Inner::Pooled(_)))
            .finish_non_exhaustive()
    }
}

impl Answer {
    /// An answer read from a connection of hyper's pooled client (HTTP/2).
    pub(crate) fn pooled(body: Incoming) -> Answer {
        Answer {
            inner: Inner::Pooled(body),
        }
    }

    /// The answer of an exchange on `link`, whose body this reads and whose
    /// connection it gives back.
    pub(crate) fn driven(started: Started, link: Link, pool: Arc<Pool>) -> Response<Answer> {
        let Started {
            head,
            framing,
            upload,
            keep_alive,
        } = started;
        head.map(|()| Answer {
            inner: Inner::Driven(Driven {
                link: Some(link),
                pool,
                framing,
                upload,
                keep_alive,
            }),
        })
    }
}

impl Driven {
    /// The answer has ended: its connection goes back to the pool when the
    /// whole request was written and the cluster keeps it open.
    fn finish(&mut self) {
        if let Some(link) = self.link.take() {
            if self.keep_alive && self.upload.is_none() {
                self.pool.checkin(link);
            }
        }
    }

    fn fail(&mut self, e: io::Error) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.link = None;
        Poll::Ready(Some(Err(Box::new(e))))
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let Some(link) = self.link.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(up) = &mut self.upload {
            match up.poll(&mut link.io, cx) {
                Poll::Ready(Ok(())) => self.upload = None,
                // The answer is in; the connection is not reused.
                Poll::Ready(Err(_)) => {
                    self.upload = None;
                    self.keep_alive = false;
                }
                Poll::Pending => {}
            }
        }
        loop {
            let want = match &mut self.framing {
                Framing::Empty | Framing::Length(0) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(left) => {
                    if !link.buf.is_empty() {
                        let n = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(link.buf.len());
                        *left -= n as u64;
                        let data = link.buf.split_to(n).freeze();
                        if *left == 0 {
                            // The whole answer is read: the connection is
                            // free before the client has this last part.
                            self.framing = Framing::Empty;
                            self.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    usize::try_from(*left).unwrap_or(usize::MAX)
                }
                Framing::Chunked(state) => match dechunk(&mut link.buf, state) {
                    Ok(Dechunked::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Dechunked::End) => {
                        self.framing = Framing::Empty;
                        self.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Dechunked::More) => READ_AT_LEAST,
                    Err(e) => return self.fail(e),
                },
                Framing::Close => {
                    if !link.buf.is_empty() {
                        let data = link.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    READ_AT_MOST
                }
            };
            match link.poll_fill(cx, want) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return self.fail(e),
                Poll::Ready(Ok(0)) if self.framing == Framing::Close => {
                    self.link = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => {
                    return self.fail(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the cluster closed the connection in the middle of its answer",
                    ))
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }
}

/// What the chunked reader found in the buffer.
enum Dechunked {
    Data(Bytes),
    End,
    More,
}

/// Reads a chunked body out of `buf` (RFC 9112 §7.1), strictly: a size of
/// hex digits that fits, an optional extension, CRLF line ends.
fn dechunk(buf: &mut BytesMut, state: &mut Chunk) -> io::Result<Dechunked> {
    loop {
        match *state {
            Chunk::Size => {
                let end = memchr::memchr(b'\n', buf);
                if end.unwrap_or(0) > MAX_CHUNK_LINE {
                    return Err(broken(
                        "the cluster's answer has a chunk-size line too long",
                    ));
                }
                let Some(end) = end else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Err(broken(
                            "the cluster's answer has a chunk-size line too long",
                        ));
                    }
                    return Ok(Dechunked::More);
                };
                let line = buf
                    .get(..end)
                    .and_then(|l| l.strip_suffix(b"\r"))
                    .ok_or_else(|| {
                        broken("the cluster's answer has a chunk-size line without CRLF")
                    })?;
                let hex = line
                    .iter()
                    .position(|b| !b.is_ascii_hexdigit())
                    .unwrap_or(line.len());
                let zeros = line[..hex].iter().take_while(|&&b| b == b'0').count();
                let spaces = line[hex..]
                    .iter()
                    .take_while(|&&b| b == b' ' || b == b'\t')
                    .count();
                let rest = &line[hex + spaces..];
                let spaced = spaces > 0;
                if hex == 0
                    || hex - zeros > 15
                    || !(rest.starts_with(b";") || (rest.is_empty() && !spaced))
                {
                    return Err(broken("the cluster's answer has a malformed chunk size"));
                }
                let size = line[zeros..hex].iter().fold(0u64, |n, &b| {
                    (n << 4) | u64::from((b as char).to_digit(16).unwrap_or(0))
                });
                buf.advance(end + 1);
                *state = if size == 0 {
                    Chunk::Trailer(0)
                } else {
                    Chunk::Data(size)
                };
            }
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return Ok(Dechunked::More);
                }
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let data = buf.split_to(n).freeze();
                let left = left - n as u64;
                *state = if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                };
                return Ok(Dechunked::Data(data));
            }
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return Ok(Dechunked::More);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(broken("the cluster's answer has a chunk not ended by CRLF"));
                }
                buf.advance(2);
                *state = Chunk::Size;
            }
            Chunk::Trailer(seen) => {
                let Some(end) = memchr::memchr(b'\n', buf) else {
                    if seen + buf.len() > MAX_HEAD {
                        return Err(broken("the cluster's answer has trailers too long"));
                    }
                    return Ok(Dechunked::More);
                };
                let blank = end == 1 && buf[0] == b'\r';
                if end == 0 || (buf[end - 1] != b'\r') {
                    return Err(broken(
                        "the cluster's answer has a trailer line without CRLF",
                    ));
                }
                buf.advance(end + 1);
                if blank {
                    return Ok(Dechunked::End);
                }
                *state = Chunk::Trailer(seen + end + 1);
            }
        }
    }
}

impl Body for Answer {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.inner {
            Inner::Pooled(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Inner::Driven(d) => d.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Pooled(b) => b.is_end_stream(),
            Inner::Driven(d) => {
                d.link.is_none() || matches!(d.framing, Framing::Empty | Framing::Length(0))
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Pooled(b) => b.size_hint(),
            Inner::Driven(d) => match d.framing {
                Framing::Empty => SizeHint::with_exact(0),
                Framing::Length(n) => SizeHint::with_exact(n),
                Framing::Chunked(_) | Framing::Close => SizeHint::default(),
            },
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        // An answer with no body (HEAD, 204, 304, `content-length: 0`) is
        // never polled: its connection is free as soon as it is dropped,
        // once the request has been written whole.
        if let Inner::Driven(d) = &mut self.inner {
            if matches!(d.framing, Framing::Empty | Framing::Length(0)) {
                d.finish();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> io::Result<Parsed> {
        parse_head(&mut BytesMut::from(text.as_bytes()), false)
    }

    fn framing(text: &str) -> Framing {
        match head(text) {
            Ok(Parsed::Head(h)) => h.framing,
            _ => Framing::Close,
        }
    }

    #[test]
    fn an_answer_is_framed_by_its_length_or_its_chunks() {
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n"),
            Framing::Length(12)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n"),
            Framing::Length(3)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\n\r\n"),
            Framing::Chunked(Chunk::Size)
        );
        assert_eq!(
            framing("HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n"),
            Framing::Empty
        );
        // Neither: until the cluster closes, and never reused.
        let Ok(Parsed::Head(h)) = head("HTTP/1.1 200 OK\r\n\r\n") else {
            unreachable!("a head")
        };
        assert_eq!(h.framing, Framing::Close);
        assert!(!h.keep_alive);
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n"[..]);
        let Ok(Parsed::Head(h)) = parse_head(&mut buf, true) else {
            unreachable!("a head")
        };
        assert_eq!(
            h.framing,
            Framing::Empty,
            "the answer to a HEAD has no body"
        );
    }

    #[test]
    fn an_ambiguous_framing_fails_the_answer() {
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 3, 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +3\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n",
        ] {
            assert!(head(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn informational_answers_are_skipped_and_close_is_kept() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"[..],
        );
        assert!(matches!(
            parse_head(&mut buf, false),
            Ok(Parsed::Informational)
        ));
        let Ok(Parsed::Head(h)) = parse_head(&mut buf, false) else {
            unreachable!("a head")
        };
        assert_eq!(h.framing, Framing::Length(2));
        assert!(!h.keep_alive);
        assert_eq!(&buf[..], b"ok");
        // A transfer coding in HTTP/1.0 is faulty framing, and `close`
        // wins over `keep-alive`: never reused, in any order.
        for fields in [
            "connection: keep-alive\r\ntransfer-encoding: chunked",
            "transfer-encoding: chunked\r\nconnection: keep-alive",
            "connection: close, keep-alive\r\ncontent-length: 0",
        ] {
            let Ok(Parsed::Head(h)) = head(&format!("HTTP/1.0 200 OK\r\n{fields}\r\n\r\n")) else {
                unreachable!("a head")
            };
            assert!(!h.keep_alive, "{fields}");
        }
        let Ok(Parsed::Head(h)) =
            head("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n")
        else {
            unreachable!("a head")
        };
        assert!(h.keep_alive);
        // HTTP/1.0 keeps the connection only when it says so.
        let Ok(Parsed::Head(h)) = head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n") else {
            unreachable!("a head")
        };
        assert!(!h.keep_alive);
    }

    #[test]
    fn a_head_past_the_limit_fails_and_a_partial_one_waits() {
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\ncontent-le"),
            Ok(Parsed::Partial)
        ));
        let long = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD + 1));
        assert!(head(&long).is_err());
    }

    /// Every split of a chunked body into reads gives the same bytes.
    #[test]
    fn a_chunked_body_reads_the_same_however_it_arrives() {
        let wire = b"5\r\nhello\r\n1;ext=1\r\n \r\nB\r\nworld, and \r\n0\r\nx-trailer: 1\r\n\r\n";
        for split in 1..wire.len() {
            let mut buf = BytesMut::new();
            let mut state = Chunk::Size;
            let mut out = Vec::new();
            let mut fed = 0;
            let ended = loop {
                match dechunk(&mut buf, &mut state) {
                    Ok(Dechunked::Data(d)) => out.extend_from_slice(&d),
                    Ok(Dechunked::End) => break true,
                    Ok(Dechunked::More) if fed < wire.len() => {
                        let to = (fed + split).min(wire.len());
                        buf.extend_from_slice(&wire[fed..to]);
                        fed = to;
                    }
                    Ok(Dechunked::More) => break false,
                    Err(e) => unreachable!("split {split}: {e}"),
                }
            };
            assert!(ended, "split {split}");
            assert_eq!(out, b"hello world, and ", "split {split}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn chunk_sizes_may_have_leading_zeros_and_space_before_an_extension() {
        let mut buf = BytesMut::from(&b"00000000000000000005 ;x=y\r\nhello\r\n0\r\n\r\n"[..]);
        let mut state = Chunk::Size;
        assert!(
            matches!(dechunk(&mut buf, &mut state), Ok(Dechunked::Data(d)) if &d[..] == b"hello")
        );
        assert!(matches!(dechunk(&mut buf, &mut state), Ok(Dechunked::End)));
    }

    #[test]
    fn a_malformed_chunk_fails() {
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello\r\n",
            b"5\r\nhelloXX",
            b"10000000000000000\r\n",
            b"5 \r\nhello\r\n",
            b"0\r\ntrailer\n",
            b"5\r;x\r\nhello\r\n",
            b"5\x0c;x\r\nhello\r\n",
        ] {
            let mut buf = BytesMut::from(bad);
            let mut state = Chunk::Size;
            let failed = loop {
                match dechunk(&mut buf, &mut state) {
                    Ok(Dechunked::Data(_)) => {}
                    Ok(_) => break false,
                    Err(_) => break true,
                }
            };
            assert!(failed, "{:?} was read", String::from_utf8_lossy(bad));
        }
    }

    /// A body that has ended without saying its size.
    struct EndedUnsized;

    impl Body for EndedUnsized {
        type Data = Bytes;
        type Error = BodyError;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
            Poll::Ready(None)
        }

        fn is_end_stream(&self) -> bool {
            true
        }
    }

    fn encoded(req: Request<RequestBody>) -> (String, Out) {
        let (parts, body) = req.into_parts();
        let up = match Upload::new(&parts, body) {
            Ok(u) => u,
            Err(e) => unreachable!("{e}"),
        };
        let wire: Vec<u8> = up.queue.iter().flat_map(|b| b.to_vec()).collect();
        (String::from_utf8_lossy(&wire).into_owned(), up.framing)
    }

    #[test]
    fn a_request_is_framed_by_osproxy() {
        // A rewritten body's own length wins over the one the client declared.
        let req = Request::post("/i/_doc?refresh=true")
            .header("content-length", "2")
            .header("transfer-encoding", "chunked")
            .header("connection", "x-private")
            .header("x-opaque-id", "a")
            .body(RequestBody::Full(Some(Bytes::from_static(b"{\"a\":1}"))))
            .unwrap_or_else(|e| unreachable!("{e}"));
        let (wire, _) = encoded(req);
        assert_eq!(
            wire,
            "POST /i/_doc?refresh=true HTTP/1.1\r\nx-opaque-id: a\r\ncontent-length: 7\r\n\r\n{\"a\":1}"
        );
        let (wire, _) = encoded(
            Request::get("/")
                .body(RequestBody::Empty)
                .unwrap_or_else(|e| unreachable!("{e}")),
        );
        assert_eq!(wire, "GET / HTTP/1.1\r\n\r\n");
        let (wire, _) = encoded(
            Request::put("/i")
                .body(RequestBody::Empty)
                .unwrap_or_else(|e| unreachable!("{e}")),
        );
        assert_eq!(wire, "PUT /i HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
        // `Expect` is not passed on: the body follows at once.
        let (wire, _) = encoded(
            Request::put("/i/_doc/1")
                .header("expect", "100-continue")
                .body(RequestBody::Full(Some(Bytes::from_static(b"{}"))))
                .unwrap_or_else(|e| unreachable!("{e}")),
        );
        assert_eq!(
            wire,
            "PUT /i/_doc/1 HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}"
        );
        // A length declared for a body that has none would leave the
        // cluster waiting for the next request's bytes: refused.
        let (parts, body) = Request::post("/")
            .header("content-length", "5")
            .body(RequestBody::Checked(Box::pin(EndedUnsized)))
            .unwrap_or_else(|e| unreachable!("{e}"))
            .into_parts();
        assert!(Upload::new(&parts, body).is_err());
        // A declared length that is not a number is refused, not passed on.
        let (parts, body) = Request::post("/")
            .header("content-length", "1e3")
            .body(RequestBody::Empty)
            .unwrap_or_else(|e| unreachable!("{e}"))
            .into_parts();
        assert!(Upload::new(&parts, body).is_err());
    }

    #[test]
    fn numbers_are_written_and_read_exactly() {
        for n in [0u64, 7, 10, 12345, u64::MAX] {
            assert_eq!(itoa(n, &mut [0u8; 20]), n.to_string().as_bytes());
            let text = n.to_string();
            assert_eq!(digits(text.as_bytes()), (text.len() <= 19).then_some(n));
        }
        assert_eq!(digits(b""), None);
        assert_eq!(digits(b"1 "), None);
    }
}
