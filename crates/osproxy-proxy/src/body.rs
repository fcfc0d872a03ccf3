//! Body types of the data path. Both stream: a client body is handed to the
//! upstream frame by frame, an upstream body to the client frame by frame.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use osproxy_observe::InFlight;

/// A body sent upstream: the client's, streamed, or nothing (probes).
#[derive(Debug)]
pub enum RequestBody {
    /// The client's body, relayed frame by frame.
    Client(Incoming),
    /// A body osproxy rewrote (a document with its partition injected).
    Full(Option<Bytes>),
    /// No body.
    Empty,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Client(b) => Pin::new(b).poll_frame(cx),
            RequestBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client(b) => b.is_end_stream(),
            RequestBody::Full(b) => b.is_none(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Client(b) => b.size_hint(),
            RequestBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            RequestBody::Full(None) | RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// A body sent to the client: the upstream's, streamed, or one osproxy made.
/// It holds the request's in-flight slot until it is finished or dropped
/// (a client that goes away mid-stream drops it, which also drops the
/// upstream connection instead of returning it half-read to the pool).
#[derive(Debug)]
pub struct ResponseBody {
    inner: Inner,
    _in_flight: Option<InFlight>,
}

#[derive(Debug)]
enum Inner {
    Upstream(Incoming),
    Full(Option<Bytes>),
    /// Chunks produced while the request is still being processed (the
    /// response of a tenancy bulk).
    Channel(tokio::sync::mpsc::Receiver<Bytes>),
}

impl ResponseBody {
    /// Streams an upstream body.
    pub fn upstream(body: Incoming, in_flight: InFlight) -> Self {
        ResponseBody {
            inner: Inner::Upstream(body),
            _in_flight: Some(in_flight),
        }
    }

    /// A body whose chunks arrive on `rx` until its sender is dropped.
    pub fn channel(rx: tokio::sync::mpsc::Receiver<Bytes>, in_flight: InFlight) -> Self {
        ResponseBody {
            inner: Inner::Channel(rx),
            _in_flight: Some(in_flight),
        }
    }

    /// A complete body made here.
    pub fn full(bytes: Bytes) -> Self {
        ResponseBody {
            inner: Inner::Full(Some(bytes)),
            _in_flight: None,
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        ResponseBody {
            inner: Inner::Full(None),
            _in_flight: None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        match &mut this.inner {
            Inner::Upstream(b) => {
                let polled = Pin::new(b).poll_frame(cx);
                if let Poll::Ready(None) = polled {
                    // Finished: free the in-flight slot now rather than when
                    // the connection gets around to dropping the body.
                    this._in_flight = None;
                }
                polled
            }
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Channel(rx) => rx
                .poll_recv(cx)
                .map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Full(b) => b.is_none(),
            Inner::Channel(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Channel(_) => SizeHint::default(),
        }
    }
}
