//! Bodies sent upstream, and bounded reads of bodies.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use osproxy_core::{ErrorCode, ProxyError};

pub use crate::budget::Answering;
use crate::budget::Charge;
use crate::decode::ClientBody;

/// Errors of bodies sent upstream.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A body that streams to the upstream under a check of the data path's
/// (a prefix-confined `_bulk` whose action lines are checked as they pass).
pub type CheckedBody = Pin<Box<dyn Body<Data = Bytes, Error = BodyError> + Send>>;

/// A body sent upstream: the client's, streamed, or nothing (probes).
pub enum RequestBody {
    /// The client's body, relayed frame by frame (decoded, when it came
    /// compressed to a route that reads it).
    Client(ClientBody),
    /// The client's body relayed frame by frame through a check; the check
    /// ends the body with an error (the cluster then never sees a complete
    /// request) when it finds a violation.
    Checked(CheckedBody),
    /// A body osproxy made or rewrote (a document with its partition injected).
    Full(Option<Bytes>),
    /// No body.
    Empty,
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestBody::Client(_) => f.write_str("RequestBody::Client"),
            RequestBody::Checked(_) => f.write_str("RequestBody::Checked"),
            RequestBody::Full(b) => write!(
                f,
                "RequestBody::Full({:?} bytes)",
                b.as_ref().map(Bytes::len)
            ),
            RequestBody::Empty => f.write_str("RequestBody::Empty"),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            RequestBody::Client(b) => Pin::new(b).poll_frame(cx),
            RequestBody::Checked(c) => c.as_mut().poll_frame(cx),
            RequestBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client(b) => b.is_end_stream(),
            RequestBody::Checked(c) => c.is_end_stream(),
            RequestBody::Full(b) => b.is_none(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Client(b) => b.size_hint(),
            RequestBody::Checked(c) => c.size_hint(),
            RequestBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            RequestBody::Full(None) | RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// How far a streamed request body has been sent upstream: bytes so far,
/// and when it ended. The exchange's deadline reads it: the cluster's time
/// to answer counts from the end of the body, not while the client is
/// still sending it.
#[derive(Debug)]
pub(crate) struct UploadProgress {
    started: std::time::Instant,
    bytes: std::sync::atomic::AtomicU64,
    /// Milliseconds after `started` that the body ended; `u64::MAX` while
    /// it has not.
    ended_ms: std::sync::atomic::AtomicU64,
}

impl UploadProgress {
    pub(crate) fn new(started: std::time::Instant) -> Self {
        UploadProgress {
            started,
            bytes: std::sync::atomic::AtomicU64::new(0),
            ended_ms: std::sync::atomic::AtomicU64::new(u64::MAX),
        }
    }

    /// The bytes sent so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// When the body ended (was sent whole, failed, or was given up).
    pub(crate) fn ended(&self) -> Option<std::time::Instant> {
        match self.ended_ms.load(std::sync::atomic::Ordering::Relaxed) {
            u64::MAX => None,
            ms => Some(self.started + std::time::Duration::from_millis(ms)),
        }
    }

    fn end(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let _ = self.ended_ms.compare_exchange(
            u64::MAX,
            ms.min(u64::MAX - 1),
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// A streamed body sent upstream, reporting its progress.
pub(crate) struct Reported {
    pub(crate) inner: RequestBody,
    pub(crate) progress: std::sync::Arc<UploadProgress>,
}

impl Body for Reported {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, Bytes::len) as u64;
                this.progress
                    .bytes
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                if this.inner.is_end_stream() {
                    this.progress.end();
                }
            }
            Poll::Ready(_) => this.progress.end(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Reported {
    fn drop(&mut self) {
        // Given up on by the exchange: nothing more of it will be sent.
        self.progress.end();
    }
}

/// Largest body osproxy reads whole (documents, search bodies and answers,
/// copy pages); OpenSearch's own default limit.
pub const MAX_BUFFERED: usize = 100 * 1024 * 1024;

/// Largest answer to a change osproxy reads whole. The cluster has applied
/// the change: refusing its answer would hide that from the client, and a
/// bulk batch of small updates that ask for `_source` back answers far more
/// than its request. Past this the answer is still refused (memory must
/// stay bounded), saying the change may hold.
pub const MAX_CHANGE_ANSWER: usize = 4 * MAX_BUFFERED;

/// A process-wide deadline, set once from the configuration, in ms.
struct Deadline(std::sync::atomic::AtomicU64);

impl Deadline {
    const fn new(ms: u64) -> Self {
        Deadline(std::sync::atomic::AtomicU64::new(ms))
    }

    fn set(&self, timeout: std::time::Duration) {
        let ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.0.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn get(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }
}

static BODY_READ_TIMEOUT: Deadline = Deadline::new(60_000);

static ANSWER_PAUSE: Deadline = Deadline::new(60_000);

/// Sets the longest pause between a cluster's answer's bytes once its
/// head has come (`upstream.request_timeout`): past it the answer is
/// broken off, so a cluster that stalls mid-answer does not hold the
/// client, its slots and the upstream connection forever.
pub fn set_answer_pause(timeout: std::time::Duration) {
    ANSWER_PAUSE.set(timeout);
}

/// The longest pause between a cluster's answer's bytes.
pub fn answer_pause() -> std::time::Duration {
    ANSWER_PAUSE.get()
}

/// Sets `server.body_read_timeout`: the longest pause between a request
/// body's bytes.
pub fn set_body_read_timeout(timeout: std::time::Duration) {
    BODY_READ_TIMEOUT.set(timeout);
}

/// `server.body_read_timeout`.
pub fn body_read_timeout() -> std::time::Duration {
    BODY_READ_TIMEOUT.get()
}

/// The next frame of a client's body, or 408 when none comes within
/// `server.body_read_timeout`.
pub async fn next_frame<B: Body + Unpin>(
    body: &mut B,
) -> Result<Option<Result<Frame<B::Data>, B::Error>>, ProxyError> {
    let pause = body_read_timeout();
    tokio::time::timeout(pause, body.frame())
        .await
        .map_err(|_| {
            ProxyError::new(
                ErrorCode::RequestTimeout,
                format!(
                    "the request body paused for more than {} s (server.body_read_timeout); nothing of what it had not yet sent was applied",
                    pause.as_secs()
                ),
            )
        })
}

/// Reads a client's request body whole, up to [`MAX_BUFFERED`] bytes. A
/// body announced larger (its `Content-Length`) is refused with 413 before
/// any of it is read, one that grows larger with 413 as soon as it does,
/// and one that breaks off with 400.
pub async fn read_limited<B>(body: B) -> Result<Bytes, ProxyError>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display + Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || {
        ProxyError::new(
            ErrorCode::RequestTooLarge,
            format!("the request body is larger than {MAX_BUFFERED} bytes, the most osproxy reads whole"),
        )
    };
    if body.size_hint().lower() > MAX_BUFFERED as u64 {
        return Err(too_large());
    }
    // A client's body is refused (503) when the budget cannot cover it.
    let mut whole = Whole::new(&body.size_hint(), Answering::Read);
    let mut body = std::pin::pin!(body);
    while let Some(frame) = next_frame(&mut body).await? {
        let frame = frame.map_err(|e| crate::decode::body_error(&*e.into()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if whole.total.saturating_add(data.len()) > MAX_BUFFERED {
            return Err(too_large());
        }
        whole.push(data)?;
    }
    whole.finish()
}

/// A body being read whole. Every byte held is charged to the
/// process-wide budget as it arrives, and the charge goes with the bytes
/// returned: it is given back when the last reference to them is dropped.
/// A body of known length is copied once into a buffer of that size; one
/// of unknown length (a chunked or decoded body) is kept frame by frame and
/// joined once at the end, so it is never held more than twice (no buffer
/// doubling).
struct Whole {
    charge: Charge,
    admit: Answering,
    exact: bool,
    joined: Vec<u8>,
    frames: Vec<Bytes>,
    total: usize,
}

impl Whole {
    fn new(hint: &SizeHint, admit: Answering) -> Self {
        let exact = hint
            .exact()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n > 0 && n <= MAX_BUFFERED);
        // Reserved, not charged: the pages are only used as bytes arrive,
        // and charged then, so announcing a length and sending nothing
        // holds no share of the budget.
        let mut joined: Vec<u8> = Vec::new();
        if let Some(n) = exact {
            joined.reserve_exact(n);
        }
        Whole {
            charge: Charge::default(),
            admit,
            exact: exact.is_some(),
            joined,
            frames: Vec::new(),
            total: 0,
        }
    }

    fn charge(&mut self, held: usize) -> Result<(), ProxyError> {
        self.charge.take(held as u64, self.admit)
    }

    fn push(&mut self, data: Bytes) -> Result<(), ProxyError> {
        if data.is_empty() {
            return Ok(());
        }
        self.total += data.len();
        self.charge(self.total)?;
        if self.exact && self.total <= self.joined.capacity() {
            self.joined.extend_from_slice(&data);
        } else {
            self.frames.push(data);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Bytes, ProxyError> {
        if self.frames.is_empty() {
            if self.joined.is_empty() {
                return Ok(Bytes::new());
            }
            let joined = std::mem::take(&mut self.joined);
            return Ok(self.held(Held::Joined(joined)));
        }
        if self.joined.is_empty() && self.frames.len() == 1 {
            if let Some(only) = self.frames.pop() {
                return Ok(self.held(Held::Frame(only)));
            }
        }
        // The join: both copies are held until it is done.
        let total = self.total;
        self.charge(2 * total)?;
        let mut whole = Vec::with_capacity(total);
        whole.extend_from_slice(&self.joined);
        self.joined = Vec::new();
        for f in self.frames.drain(..) {
            whole.extend_from_slice(&f);
        }
        self.charge(total)?;
        Ok(self.held(Held::Joined(whole)))
    }

    fn held(self, bytes: Held) -> Bytes {
        Bytes::from_owner(Charged {
            bytes,
            _charge: self.charge,
        })
    }
}

/// Bytes read whole, with their charge on the budget.
struct Charged {
    bytes: Held,
    _charge: Charge,
}

enum Held {
    Frame(Bytes),
    Joined(Vec<u8>),
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        match &self.bytes {
            Held::Frame(b) => b,
            Held::Joined(v) => v,
        }
    }
}

/// Reads a cluster's answer whole, up to [`MAX_BUFFERED`] bytes (a change's
/// up to [`MAX_CHANGE_ANSWER`]), charged to
/// the process-wide budget as it arrives (the charge goes with the bytes
/// returned); an answer that breaks off or grows larger is the cluster's
/// failure (502), never the client's.
pub async fn read_answer<B>(
    body: B,
    cluster: &str,
    answering: Answering,
) -> Result<Bytes, ProxyError>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let failed = |why: String| {
        ProxyError::new(
            ErrorCode::UpstreamUnavailable,
            format!("cluster {cluster} {why}"),
        )
    };
    let cap = match answering {
        Answering::Read => MAX_BUFFERED,
        Answering::Change => MAX_CHANGE_ANSWER,
    };
    let mut whole = Whole::new(&body.size_hint(), answering);
    let mut body = std::pin::pin!(body);
    let pause = answer_pause();
    loop {
        let Ok(next) = tokio::time::timeout(pause, body.frame()).await else {
            return Err(ProxyError::new(
                ErrorCode::UpstreamTimeout,
                format!(
                    "cluster {cluster} paused its answer for more than {} s (upstream.request_timeout){}",
                    pause.as_secs(),
                    match answering {
                        Answering::Read => "",
                        Answering::Change => "; it has processed the request and its changes may hold: read back what it changed",
                    }
                ),
            ));
        };
        let Some(frame) = next else {
            break;
        };
        let frame = frame.map_err(|e| failed(format!("broke off its answer: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if whole.total.saturating_add(data.len()) > cap {
            return Err(match answering {
                Answering::Read => failed(format!("answered more than {MAX_BUFFERED} bytes")),
                Answering::Change => failed(format!(
                    "answered more than {MAX_CHANGE_ANSWER} bytes, more than osproxy reads whole; the cluster has processed the request and its changes may hold: read back what it changed, and ask for less in its answer (no _source in an update's answer)"
                )),
            });
        }
        whole.push(data).map_err(|e| ProxyError {
            reason: format!(
                "osproxy is holding its limit of bodies read whole (server.max_buffered_total); the cluster's answer to this read was not read further (nothing was changed): retry shortly ({})",
                e.reason
            ),
            ..e
        })?;
    }
    whole.finish()
}
