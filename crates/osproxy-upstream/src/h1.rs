//! HTTP/1.1 connections to a cluster, driven by the task of the request
//! that uses them.
//!
//! hyper's pooled client hands every request to a separate connection task
//! through a channel, checks connections out of a pool keyed by a hashed
//! URI, and spawns a task per request to give the connection back. Here a
//! connection is a plain value: the request's own task writes the request,
//! reads the answer's head and, through [`Answer`], its body; when the body
//! has been read to its end the connection goes back to its worker's idle
//! list (a `Vec`, last in first out). Nothing is spawned, hashed or sent
//! across tasks per request. Each worker thread has its own clusters (see
//! decision 0002), so the list's lock is never contended.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;

use crate::body::RequestBody;
use crate::client::TrackedConnection;

type Connection = http1::Connection<TrackedConnection, RequestBody>;

/// One connection: the handle requests are sent on, and the connection
/// itself, polled by whoever holds it (`None` once it has finished).
pub(crate) struct Link {
    sender: http1::SendRequest<RequestBody>,
    conn: Option<Pin<Box<Connection>>>,
}

impl Link {
    /// Opens a link over an established (and, for https, TLS) connection.
    pub(crate) async fn open(io: TrackedConnection) -> Result<Link, hyper::Error> {
        let (sender, conn) = http1::Builder::new().handshake(io).await?;
        Ok(Link {
            sender,
            conn: Some(Box::pin(conn)),
        })
    }

    /// Polls the connection; true while it is open.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(conn) = &mut self.conn {
            if conn.as_mut().poll(cx).is_ready() {
                self.conn = None;
            }
        }
        self.conn.is_some()
    }

    /// Whether a new request can be sent on it now. Polled once first, so
    /// that a connection the cluster closed while idle is found out, and
    /// one that has just read its last answer is ready.
    fn usable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.drive(&mut cx) && self.sender.is_ready()
    }

    /// Sends `req` and waits for the answer's head, driving the
    /// connection meanwhile. A request the connection never started to
    /// write is handed back (`Err(Some(req))`).
    pub(crate) async fn exchange(
        &mut self,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, (hyper::Error, Option<Request<RequestBody>>)> {
        let sent = self.sender.try_send_request(req);
        let mut sent = std::pin::pin!(sent);
        std::future::poll_fn(|cx| {
            self.drive(cx);
            sent.as_mut().poll(cx)
        })
        .await
        .map_err(|mut e| {
            let req = e.take_message();
            (e.into_error(), req)
        })
    }
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
    /// request, if it can carry one.
    fn checkin(self: &Arc<Self>, mut link: Link) {
        if self.max_idle == 0 || !link.usable() {
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

/// A cluster's answer body. Reading it drives its connection; read to its
/// end, it gives the connection back to its pool. Dropped before its end,
/// it closes the connection (what is left of the answer is never read).
pub struct Answer {
    body: Incoming,
    link: Option<(Link, Arc<Pool>)>,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("pooled", &self.link.is_some())
            .finish_non_exhaustive()
    }
}

impl Answer {
    /// An answer read from a connection of hyper's pooled client (HTTP/2),
    /// which drives it itself.
    pub(crate) fn pooled(body: Incoming) -> Answer {
        Answer { body, link: None }
    }

    /// An answer whose connection this body drives and gives back.
    pub(crate) fn driven(body: Incoming, link: Link, pool: Arc<Pool>) -> Answer {
        Answer {
            body,
            link: Some((link, pool)),
        }
    }

    fn release(&mut self) {
        if let Some((link, pool)) = self.link.take() {
            pool.checkin(link);
        }
    }
}

impl Body for Answer {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some((link, _)) = &mut this.link {
            link.drive(cx);
        }
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.release();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        // An answer with no body (HEAD, 204, 304, `content-length: 0`) is
        // never polled: its connection is free as soon as it is dropped.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}
