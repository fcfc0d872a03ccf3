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
            open: Arc::new(AtomicUsize::new(0)),
        }
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
        admitted.then(|| Open(self.open.clone()))
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
pub(crate) struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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
    /// Since when a write has been waiting for the client (0: none).
    blocked_since: AtomicU64,
    /// Requests whose answers are not finished.
    in_flight: AtomicUsize,
    /// Each unfinished answer's "handed over at" (see [`Tracked`]): when
    /// it last gave the connection a frame that has not been asked for
    /// again (0: waiting on its own source, or not started).
    answers: std::sync::Mutex<Vec<std::sync::Weak<AtomicU64>>>,
}

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

    /// Registers an answer's "handed over at" clock.
    fn answer(&self) -> Arc<AtomicU64> {
        let clock = Arc::new(AtomicU64::new(0));
        if let Ok(mut answers) = self.answers.lock() {
            answers.retain(|w| w.strong_count() > 0);
            answers.push(Arc::downgrade(&clock));
        }
        clock
    }

    /// The oldest moment an unfinished answer handed over a frame that the
    /// connection has not asked for again (0: none). An HTTP/2 client that
    /// never opens its flow-control window stops the connection asking
    /// without any write waiting on the socket.
    fn oldest_handed(&self) -> u64 {
        self.answers
            .lock()
            .map(|answers| {
                answers
                    .iter()
                    .filter_map(std::sync::Weak::upgrade)
                    .map(|c| c.load(Ordering::Relaxed))
                    .filter(|t| *t != 0)
                    .min()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
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
            let blocked = self.blocked_since.load(Ordering::Relaxed);
            if blocked != 0 && now.saturating_sub(blocked) > send {
                return "the client did not read its answer within server.send_timeout";
            }
            let handed = self.oldest_handed();
            if handed != 0 && now.saturating_sub(handed) > send {
                return "the client took no more of an answer within server.send_timeout (its flow-control window stayed shut)";
            }
            if self.in_flight.load(Ordering::Acquire) == 0
                && now.saturating_sub(self.last.load(Ordering::Relaxed)) > idle
            {
                return "idle past server.idle_timeout";
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
        // When it last handed over a frame not asked for again (ms; 0:
        // waiting on its own source).
        handed: Arc<AtomicU64>,
    }
}

impl<B> Tracked<B> {
    pub(crate) fn new(inner: B, busy: Busy) -> Self {
        let handed = busy.0.answer();
        Tracked {
            inner,
            busy: Some(busy),
            handed,
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
            Poll::Ready(Some(_)) => this.handed.store(now_ms().max(1), Ordering::Relaxed),
            Poll::Ready(None) => {
                this.handed.store(0, Ordering::Relaxed);
                this.busy.take();
            }
            // Waiting on the answer's source (the cluster), not the client.
            Poll::Pending => this.handed.store(0, Ordering::Relaxed),
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
