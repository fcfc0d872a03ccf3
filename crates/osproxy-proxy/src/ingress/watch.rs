//! What a listener admits and how long a connection may sit still: a cap
//! on open connections, and per connection an idle deadline (no request in
//! flight and no bytes either way) and a send deadline (the client stopped
//! reading the answer). A connection past either is closed; its in-flight
//! work is dropped with it.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The connection limits of one listener, shared by its workers.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Closed after this long with nothing in flight and no bytes.
    pub idle_timeout: Duration,
    /// Closed after the client has not taken any bytes for this long.
    pub send_timeout: Duration,
    /// A request's headers must arrive within this long.
    pub header_read_timeout: Duration,
    /// `server.max_headers`: the HTTP/1 parser reads at least this many
    /// header fields (the pipeline refuses a request with more).
    pub max_headers: usize,
    /// `server.max_header_bytes`: the parsers read heads of at least twice
    /// this (the pipeline refuses a request whose fields add up to more).
    pub max_header_bytes: usize,
    /// Where connections opened, closed and refused are counted.
    pub metrics: osproxy_observe::ConnectionMetrics,
    open: Arc<AtomicUsize>,
}

impl ConnectionLimits {
    /// Limits for one listener (clone it into each worker).
    pub fn new(max_connections: usize, idle_timeout: Duration, send_timeout: Duration) -> Self {
        ConnectionLimits {
            max_connections,
            idle_timeout,
            send_timeout,
            header_read_timeout: Duration::from_secs(30),
            max_headers: 100,
            max_header_bytes: 64 * 1024,
            metrics: osproxy_observe::ConnectionMetrics::default(),
            open: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Counting connections on `metrics` (the instance's own).
    pub fn with_metrics(mut self, metrics: osproxy_observe::ConnectionMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// With header limits other than the defaults (100 fields, 64 KiB).
    pub fn with_header_limits(mut self, max_headers: usize, max_header_bytes: usize) -> Self {
        self.max_headers = max_headers;
        self.max_header_bytes = max_header_bytes;
        self
    }

    /// With a header-read deadline other than the default 30 s.
    pub fn with_header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Counts a new connection in, or `None` when the listener is full.
    pub(crate) fn admit(&self) -> Option<Open> {
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_connections).then_some(n + 1)
            })
            .is_ok();
        admitted.then(|| {
            self.metrics.opened();
            Open(self.open.clone(), self.metrics.clone())
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

impl Default for ConnectionLimits {
    /// Generous limits, for listeners no configuration sets.
    fn default() -> Self {
        ConnectionLimits::new(10_000, Duration::from_secs(60), Duration::from_secs(60))
    }
}

/// One admitted connection; counted out when dropped.
#[derive(Debug)]
pub(crate) struct Open(Arc<AtomicUsize>, osproxy_observe::ConnectionMetrics);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        self.1.ended();
    }
}

/// Milliseconds since the process first asked (a monotonic clock).
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What a connection is doing, as its watchdog sees it.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// When a byte last moved either way (ms, [`now_ms`]).
    last: AtomicU64,
    /// Requests whose bodies are still being read, by handlers that say so
    /// (see [`Uploading`]).
    uploading: AtomicUsize,
    /// When the last request body being read ended (ms; 0: none yet):
    /// the send deadlines count from there, not from before it.
    upload_ended: AtomicU64,
    /// Since when a write has been waiting for the client (0: none).
    blocked_since: AtomicU64,
    /// Requests whose answers are not finished.
    in_flight: AtomicUsize,
    /// Bytes written to the client so far.
    written: AtomicU64,
    /// Each unfinished answer's clock (see [`Tracked`]).
    answers: std::sync::Mutex<Vec<std::sync::Weak<AnswerClock>>>,
}

/// When an answer last gave the connection a frame that has not been
/// asked for again (ms; 0: waiting on its own source, or not started), and
/// how many bytes the connection had written then.
#[derive(Debug, Default)]
struct AnswerClock {
    handed: AtomicU64,
    written: AtomicU64,
}

/// The least a client must take of its answers within `send_timeout` not
/// to count as stuck: more than HTTP/2 PING acknowledgements alone add up
/// to, less than any client that is really reading.
const MIN_PROGRESS: u64 = 64 * 1024;

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        let a = Activity::default();
        a.last.store(now_ms(), Ordering::Relaxed);
        Arc::new(a)
    }

    fn touch(&self) {
        self.last.store(now_ms(), Ordering::Relaxed);
    }

    /// A request begins; it ends when the guard is dropped (with its
    /// answer's body).
    pub(crate) fn busy(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// A request body begins to be read.
    pub(crate) fn uploading(self: &Arc<Self>) -> Uploading {
        self.uploading.fetch_add(1, Ordering::AcqRel);
        Uploading(Some(self.clone()))
    }

    /// Registers an answer's clock.
    fn answer(&self) -> Arc<AnswerClock> {
        let clock = Arc::new(AnswerClock::default());
        if let Ok(mut answers) = self.answers.lock() {
            answers.retain(|w| w.strong_count() > 0);
            answers.push(Arc::downgrade(&clock));
        }
        clock
    }

    /// Whether an unfinished answer handed over a frame more than `send`
    /// ms ago that the connection has not asked for again, while the
    /// client took less than [`MIN_PROGRESS`] bytes since. An HTTP/2
    /// client that never opens its flow-control window stops the
    /// connection asking without any write waiting on the socket; a slow
    /// reader of one large frame still takes bytes.
    fn answer_stuck(&self, now: u64, send: u64) -> bool {
        let written = self.written.load(Ordering::Relaxed);
        let ended = self.upload_ended.load(Ordering::Relaxed);
        self.answers
            .lock()
            .map(|answers| {
                answers
                    .iter()
                    .filter_map(std::sync::Weak::upgrade)
                    .any(|c| {
                        let handed = c.handed.load(Ordering::Relaxed);
                        handed != 0
                            && now.saturating_sub(handed.max(ended)) > send
                            && written.saturating_sub(c.written.load(Ordering::Relaxed))
                                < MIN_PROGRESS
                    })
            })
            .unwrap_or(false)
    }

    /// Resolves when the connection should be closed: idle past
    /// `limits.idle_timeout`, or unable to write past `limits.send_timeout`.
    pub(crate) async fn expired(&self, limits: &ConnectionLimits) -> &'static str {
        let tick = (limits.idle_timeout.min(limits.send_timeout) / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        let idle = u64::try_from(limits.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let send = u64::try_from(limits.send_timeout.as_millis()).unwrap_or(u64::MAX);
        loop {
            tokio::time::sleep(tick).await;
            let now = now_ms();
            // A client whose request body is still being read (one it
            // sends whole before it reads the answer, while osproxy is
            // paced by the cluster) is not stuck.
            let sending = self.uploading.load(Ordering::Acquire) > 0;
            let blocked = self.blocked_since.load(Ordering::Relaxed);
            if blocked != 0 && now.saturating_sub(blocked) > send && !sending {
                limits.metrics.closed("send_timeout");
                return "the client did not read its answer within server.send_timeout";
            }
            if !sending && self.answer_stuck(now, send) {
                limits.metrics.closed("send_timeout");
                return "the client took no more of an answer within server.send_timeout (its flow-control window stayed shut)";
            }
            if self.in_flight.load(Ordering::Acquire) == 0
                && now.saturating_sub(self.last.load(Ordering::Relaxed)) > idle
            {
                limits.metrics.closed("idle_timeout");
                return "idle past server.idle_timeout";
            }
        }
    }
}

/// A request body that is still being read. It is in the request's
/// extensions from the start; a handler that answers while it still reads
/// the body (a tenancy bulk) keeps it until the body has ended, so that a
/// client sending its whole body before it reads the answer is not taken
/// for one that stopped reading. Anywhere else it ends with the request.
#[derive(Debug)]
pub struct Uploading(Option<Arc<Activity>>);

impl Clone for Uploading {
    /// A clone is inert (extensions must be cloneable; only the original
    /// counts).
    fn clone(&self) -> Self {
        Uploading(None)
    }
}

impl Drop for Uploading {
    fn drop(&mut self) {
        if let Some(a) = self.0.take() {
            if a.uploading.fetch_sub(1, Ordering::AcqRel) == 1 {
                // The client may only now begin to read: a write that has
                // waited while it was sending waits from now.
                let now = now_ms().max(1);
                a.upload_ended.store(now, Ordering::Relaxed);
                let _ = a
                    .blocked_since
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                        (b != 0).then_some(now)
                    });
            }
        }
    }
}

/// One request in flight on a connection.
#[derive(Debug)]
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
}

pin_project_lite::pin_project! {
    /// A connection's stream, noting when bytes move and when writes wait.
    pub(crate) struct Watched<T> {
        #[pin]
        inner: T,
        activity: Arc<Activity>,
    }
}

impl<T> Watched<T> {
    pub(crate) fn new(inner: T, activity: Arc<Activity>) -> Self {
        Watched { inner, activity }
    }
}

impl<T: AsyncRead> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite> Watched<T> {
    fn count(activity: &Activity, r: &Poll<std::io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = r {
            activity.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
    }

    fn note<R>(activity: &Activity, r: &Poll<std::io::Result<R>>) {
        match r {
            Poll::Ready(_) => {
                activity.blocked_since.store(0, Ordering::Relaxed);
                activity.touch();
            }
            Poll::Pending => {
                let _ = activity.blocked_since.compare_exchange(
                    0,
                    now_ms().max(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
        }
    }
}

impl<T: AsyncWrite> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write(cx, buf);
        Self::note(this.activity, &r);
        Self::count(this.activity, &r);
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write_vectored(cx, bufs);
        Self::note(this.activity, &r);
        Self::count(this.activity, &r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let r = this.inner.poll_flush(cx);
        Self::note(this.activity, &r);
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

pin_project_lite::pin_project! {
    /// An answer's body, holding its request's [`Busy`] until it is done.
    pub struct Tracked<B> {
        #[pin]
        inner: B,
        busy: Option<Busy>,
        // When it last handed over a frame not asked for again.
        clock: Arc<AnswerClock>,
        activity: Arc<Activity>,
    }
}

impl<B> Tracked<B> {
    pub(crate) fn new(inner: B, busy: Busy) -> Self {
        let clock = busy.0.answer();
        let activity = busy.0.clone();
        Tracked {
            inner,
            busy: Some(busy),
            clock,
            activity,
        }
    }
}

impl<B: http_body::Body> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        match &r {
            Poll::Ready(Some(_)) => {
                let written = this.activity.written.load(Ordering::Relaxed);
                this.clock.written.store(written, Ordering::Relaxed);
                this.clock.handed.store(now_ms().max(1), Ordering::Relaxed);
            }
            Poll::Ready(None) => {
                this.clock.handed.store(0, Ordering::Relaxed);
                this.busy.take();
            }
            // Waiting on the answer's source (the cluster), not the client.
            Poll::Pending => this.clock.handed.store(0, Ordering::Relaxed),
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
