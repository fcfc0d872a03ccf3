//! Body types of the data path. Both stream: a client body is handed to the
//! upstream frame by frame (a checked `_bulk` through [`CheckedBulk`]), an
//! upstream body to the client frame by frame.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use osproxy_observe::InFlight;
use osproxy_rewrite::bulk::LineSplitter;
use osproxy_upstream::ClientBody;
use std::sync::{Arc, Mutex};

use osproxy_rewrite::prefixes::BulkCheck;

pub use osproxy_upstream::{BodyError, RequestBody};

/// A streaming `_bulk` body under a [`BulkCheck`].
#[derive(Debug)]
pub struct CheckedBulk {
    inner: ClientBody,
    splitter: Option<LineSplitter>,
    check: BulkCheck,
    violation: Arc<Mutex<Option<String>>>,
}

impl CheckedBulk {
    /// Wraps `inner`; a violation is written to `violation`.
    pub fn new(inner: ClientBody, check: BulkCheck, violation: Arc<Mutex<Option<String>>>) -> Self {
        CheckedBulk {
            inner,
            splitter: Some(LineSplitter::keeping_blank(100 * 1024 * 1024)),
            check,
            violation,
        }
    }

    fn refuse(&self, reason: String) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Ok(mut v) = self.violation.lock() {
            *v = Some(reason.clone());
        }
        Poll::Ready(Some(Err(reason.into())))
    }

    fn poll_checked(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(splitter)) = (frame.data_ref(), self.splitter.as_mut()) {
                    let lines = match splitter.feed(data) {
                        Ok(l) => l,
                        Err(e) => return self.refuse(e.to_string()),
                    };
                    for line in lines {
                        if let Err(reason) = self.check.line(&line) {
                            return self.refuse(reason.to_string());
                        }
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                if let Some(last) = self.splitter.take().and_then(LineSplitter::finish) {
                    if let Err(reason) = self.check.line(&last) {
                        return self.refuse(reason.to_string());
                    }
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Body for CheckedBulk {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.get_mut().poll_checked(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream() && self.splitter.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How deeply JSON may nest in a body passed through: a document or query
/// nested thousands of levels deep can overflow the stack of the
/// cluster's parser (OpenSearch's own bool-query limit is 20 levels, its
/// default mapping depth limit 20).
pub const MAX_NESTING: u32 = 100;

/// How a nesting refusal's reason begins.
pub const NESTING_REFUSED: &str = "the body nests JSON deeper than";

/// How the reason begins for a body whose nesting cannot be checked.
pub const UNCHECKABLE: &str = "the body's nesting cannot be checked";

/// How the reason begins when a passed-through body paused too long.
pub const BODY_PAUSED: &str = "the request body paused for more than";

/// Counts how deeply JSON nests across a body's frames: brackets outside
/// strings and comments. OpenSearch's JSON parser allows `/* */` and `//`
/// comments, so they are skipped here as it skips them (a quote inside one
/// must not start a string); a `//` comment ends at a line feed or a
/// carriage return, as it ends there. A string cannot span a line in JSON,
/// so a line feed ends one. In an NDJSON body (`_bulk`, `_msearch`), which
/// the cluster parses line by line, each line starts afresh, so an
/// unclosed comment or string cannot hide the lines after it.
#[derive(Debug, Default, Clone)]
pub struct Nesting {
    depth: u32,
    state: Lexed,
    ndjson: bool,
}

/// Where the scanner is, outside the brackets it counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Lexed {
    #[default]
    Code,
    /// After a `/` outside strings and comments.
    Slash,
    String,
    /// After a `\` in a string.
    Escape,
    /// In `/* */`.
    Block,
    /// After a `*` in a block comment.
    BlockStar,
    /// In `// ...` to the end of the line.
    Line,
}

/// Why a passed-through body is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Nested past the limit (the depth seen).
    Deep(u32),
    /// A NUL byte: not UTF-8 JSON (a UTF-16 or UTF-32 body, which the
    /// cluster would read, and this scan could not).
    Nul,
    /// A compressed body the side decoder cannot read.
    Undecodable,
    /// A compressed body that inflates past `server.max_decompressed_body`.
    Inflated(u64),
}

impl Nesting {
    /// For an NDJSON body (each line its own document).
    pub fn ndjson() -> Self {
        Nesting {
            ndjson: true,
            ..Nesting::default()
        }
    }

    /// Scans `bytes`; `Err` with the depth when it goes past `max`.
    pub fn scan(&mut self, bytes: &[u8], max: u32) -> Result<(), u32> {
        for &b in bytes {
            if b == b'\n' && self.ndjson {
                self.depth = 0;
                self.state = Lexed::Code;
                continue;
            }
            self.state = match (self.state, b) {
                (Lexed::String | Lexed::Escape | Lexed::Line, b'\n') => Lexed::Code,
                (Lexed::Line, b'\r') => Lexed::Code,
                (Lexed::String, b'\\') => Lexed::Escape,
                (Lexed::String, b'"') => Lexed::Code,
                (Lexed::String, _) | (Lexed::Escape, _) => Lexed::String,
                (Lexed::Block | Lexed::BlockStar, b'*') => Lexed::BlockStar,
                (Lexed::BlockStar, b'/') => Lexed::Code,
                (Lexed::Block | Lexed::BlockStar, _) => Lexed::Block,
                (Lexed::Line, _) => Lexed::Line,
                (Lexed::Slash, b'*') => Lexed::Block,
                (Lexed::Slash, b'/') => Lexed::Line,
                (Lexed::Code, b'/') => Lexed::Slash,
                (Lexed::Code | Lexed::Slash, b'"') => Lexed::String,
                (Lexed::Code | Lexed::Slash, b'{' | b'[') => {
                    self.depth += 1;
                    if self.depth > max {
                        return Err(self.depth);
                    }
                    Lexed::Code
                }
                (Lexed::Code | Lexed::Slash, b'}' | b']') => {
                    self.depth = self.depth.saturating_sub(1);
                    Lexed::Code
                }
                (Lexed::Code | Lexed::Slash, _) => Lexed::Code,
            };
        }
        Ok(())
    }

    /// [`Nesting::scan`] at [`MAX_NESTING`], refusing a NUL byte too.
    fn check(&mut self, bytes: &[u8]) -> Result<(), Refusal> {
        if memchr::memchr(0, bytes).is_some() {
            return Err(Refusal::Nul);
        }
        self.scan(bytes, MAX_NESTING).map_err(Refusal::Deep)
    }
}

/// A [`Nesting`] fed decompressed bytes: the sink of a side decoder that
/// inflates a compressed body's copy, only to scan it.
#[derive(Debug)]
struct Scanned {
    nesting: Nesting,
    /// Bytes inflated so far, and the most allowed.
    inflated: u64,
    limit: u64,
    /// Why the body is refused, once known.
    refused: Option<Refusal>,
}

impl std::io::Write for Scanned {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.refused.is_none() {
            self.inflated = self.inflated.saturating_add(buf.len() as u64);
            self.refused = if self.inflated > self.limit {
                Some(Refusal::Inflated(self.limit))
            } else {
                self.nesting.check(buf).err()
            };
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How a passed-through body is read for its nesting: as it is, or through
/// a side decoder when it is compressed (the cluster inflates it, so the
/// depth that matters is the inflated one). `deflate` is the zlib format
/// or, as some clients send it and the cluster reads it too, a raw deflate
/// stream: told apart by its first two bytes.
enum Reader {
    Plain(Nesting),
    Gzip(Box<flate2::write::GzDecoder<Scanned>>),
    /// `deflate` before its first two bytes have come.
    DeflateStart(Vec<u8>, Box<Scanned>),
    Zlib(Box<flate2::write::ZlibDecoder<Scanned>>),
    Raw(Box<flate2::write::DeflateDecoder<Scanned>>),
}

impl Reader {
    fn new(coding: Option<osproxy_upstream::Coding>, ndjson: bool, limit: u64) -> Reader {
        let nesting = if ndjson {
            Nesting::ndjson()
        } else {
            Nesting::default()
        };
        let sink = Scanned {
            nesting: nesting.clone(),
            inflated: 0,
            limit,
            refused: None,
        };
        match coding {
            None => Reader::Plain(nesting),
            Some(osproxy_upstream::Coding::Gzip) => {
                Reader::Gzip(Box::new(flate2::write::GzDecoder::new(sink)))
            }
            Some(osproxy_upstream::Coding::Deflate) => {
                Reader::DeflateStart(Vec::new(), Box::new(sink))
            }
        }
    }

    /// Scans one frame.
    fn scan(&mut self, data: &[u8]) -> Result<(), Refusal> {
        use std::io::Write;
        // Each frame is inflated and flushed through at once: a decoder
        // keeps output back until asked, and the last frame of a body with
        // a length is not followed by another poll.
        fn feed<W: Write>(d: &mut W, data: &[u8]) -> Result<(), Refusal> {
            d.write_all(data)
                .and_then(|()| d.flush())
                .map_err(|_| Refusal::Undecodable)
        }
        let sink = match self {
            Reader::Plain(n) => return n.check(data),
            Reader::Gzip(d) => {
                feed(d.as_mut(), data)?;
                d.get_ref()
            }
            Reader::Zlib(d) => {
                feed(d.as_mut(), data)?;
                d.get_ref()
            }
            Reader::Raw(d) => {
                feed(d.as_mut(), data)?;
                d.get_ref()
            }
            Reader::DeflateStart(head, _) => {
                head.extend_from_slice(data);
                if head.len() < 2 {
                    return Ok(());
                }
                let taken = std::mem::replace(self, Reader::Plain(Nesting::default()));
                let Reader::DeflateStart(head, sink) = taken else {
                    return Ok(());
                };
                *self = if osproxy_upstream::is_zlib_header(head[0], head[1]) {
                    Reader::Zlib(Box::new(flate2::write::ZlibDecoder::new(*sink)))
                } else {
                    Reader::Raw(Box::new(flate2::write::DeflateDecoder::new(*sink)))
                };
                return self.scan(&head);
            }
        };
        match sink.refused {
            Some(r) => Err(r),
            None => Ok(()),
        }
    }
}

/// A body passed through with its JSON nesting bounded by [`MAX_NESTING`]
/// and its pauses by `server.body_read_timeout`; past either the body
/// ends with an error, so the cluster never gets a complete request, and
/// the reason is written to `violation`.
pub struct NestingChecked<B> {
    inner: B,
    reader: Reader,
    violation: Arc<Mutex<Option<String>>>,
    /// Armed while the client's next frame is awaited.
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// How a passed-through body is read: its `Content-Encoding`, whether it
/// is NDJSON (each line a document), and the most a compressed one may
/// inflate to.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    /// The body's coding.
    pub coding: Option<osproxy_upstream::Coding>,
    /// A `_bulk` or `_msearch` body.
    pub ndjson: bool,
    /// `server.max_decompressed_body`.
    pub limit: u64,
}

impl<B> NestingChecked<B> {
    /// Wraps `inner`, read as `reading` says.
    pub fn new(inner: B, reading: Reading, violation: Arc<Mutex<Option<String>>>) -> Self {
        NestingChecked {
            inner,
            reader: Reader::new(reading.coding, reading.ndjson, reading.limit),
            violation,
            pause: None,
        }
    }
}

impl<B> Body for NestingChecked<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BodyError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if polled.is_pending() {
            let timeout = osproxy_upstream::body_read_timeout();
            let pause = this
                .pause
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
            if pause.as_mut().poll(cx).is_ready() {
                let reason = format!(
                    "{BODY_PAUSED} {} s (server.body_read_timeout)",
                    timeout.as_secs()
                );
                if let Ok(mut v) = this.violation.lock() {
                    *v = Some(reason.clone());
                }
                return Poll::Ready(Some(Err(reason.into())));
            }
            return Poll::Pending;
        }
        this.pause = None;
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Err(refusal) = this.reader.scan(data) {
                        let reason = match refusal {
                            Refusal::Deep(depth) => format!(
                                "{NESTING_REFUSED} {MAX_NESTING} levels (at least {depth}); deeper documents and queries are refused, they can overflow the cluster's parser"
                            ),
                            Refusal::Nul => format!("{UNCHECKABLE}: it holds a NUL byte (a UTF-16 or UTF-32 body?); send UTF-8 JSON"),
                            Refusal::Undecodable => format!("{UNCHECKABLE}: its compressed stream does not decode"),
                            Refusal::Inflated(limit) => format!("{UNCHECKABLE}: it inflates past {limit} bytes (server.max_decompressed_body)"),
                        };
                        if let Ok(mut v) = this.violation.lock() {
                            *v = Some(reason.clone());
                        }
                        return Poll::Ready(Some(Err(reason.into())));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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
    /// The tenancy request's account: the bytes sent are its partition's,
    /// and its concurrency slot is held until the body ends.
    account: Option<std::sync::Arc<crate::limits::Account>>,
    /// While a cluster's answer has nothing to give: when its pause ends
    /// it (`upstream.request_timeout`; allocated at the first pause), and
    /// whether that clock runs now.
    stall: Option<(Pin<Box<tokio::time::Sleep>>, bool)>,
    /// Whether pauses of the cluster's answer are bounded (not for an
    /// answer that streams as its request does: `_bulk/stream`).
    watched: bool,
}

#[derive(Debug)]
enum Inner {
    Upstream(osproxy_upstream::Answer),
    Full(Option<Bytes>),
    /// Chunks produced while the request is still being processed (the
    /// response of a tenancy bulk).
    Channel(tokio::sync::mpsc::Receiver<Bytes>),
    /// Another body, gzip-compressed as it streams.
    Gzip(Box<Gzipped>),
    /// A search, `_mget` or `_msearch` answer reversed as it streams.
    Reversed(Box<Reversing>),
}

/// A cluster's answer reversed as it streams: memory is bounded by its
/// largest hit or document (charged to the process-wide budget), not by the
/// answer. An answer that cannot be reversed (or held within the budget)
/// ends the body with an error, so the client sees a broken response,
/// never one passed on unreversed or cut short as if complete.
pub struct Reversing {
    upstream: osproxy_upstream::Answer,
    stream: Box<dyn osproxy_rewrite::stream::Feed + Send>,
    charge: osproxy_upstream::budget::Charge,
    /// A change (an answer that opened or advanced a scroll: breaking it
    /// would orphan the cluster's context or lose a page) is charged past
    /// the budget rather than broken off.
    answering: osproxy_upstream::Answering,
    ended: bool,
    /// Whether the cluster gave a frame since the body last asked (its
    /// answer is moving even while a large hit gives no output yet).
    fed: bool,
}

impl std::fmt::Debug for Reversing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reversing(..)")
    }
}

impl Reversing {
    fn poll_reversed(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, osproxy_upstream::BodyError>>> {
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            let mut out = Vec::new();
            match Pin::new(&mut self.upstream).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    self.ended = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    self.fed = true;
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    out.reserve(data.len() + 64);
                    let fed = self.stream.feed(&data, &mut out).map_err(Into::into);
                    let held = self.stream.holding() as u64;
                    let charged = fed.and_then(|()| {
                        self.charge
                            .take(held, self.answering)
                            .map_err(|e| e.reason.into())
                    });
                    if let Err(e) = charged {
                        self.ended = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Poll::Ready(None) => {
                    self.ended = true;
                    if let Err(e) = self.stream.finish(&mut out) {
                        return Poll::Ready(Some(Err(e.into())));
                    }
                    self.charge = osproxy_upstream::budget::Charge::default();
                }
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
            }
        }
    }
}

/// A body compressed frame by frame: each frame is flushed (a sync flush),
/// so what has been produced reaches the client without waiting for the
/// rest; the gzip trailer follows the last frame.
struct Gzipped {
    inner: ResponseBody,
    encoder: Option<flate2::write::GzEncoder<Vec<u8>>>,
    /// Data taken from `inner`, compressed [`GZIP_STEP`] bytes per poll so
    /// a large answer does not hold the event loop.
    pending: Bytes,
}

/// Bytes compressed per poll of a gzip body.
const GZIP_STEP: usize = 256 * 1024;

impl std::fmt::Debug for Gzipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gzipped")
            .field("inner", &self.inner)
            .finish()
    }
}

/// gzip level 1: most of the size saving for a fraction of the CPU of the
/// default level, on JSON.
fn gzip_level() -> flate2::Compression {
    flate2::Compression::fast()
}

impl Gzipped {
    fn poll_compressed(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, osproxy_upstream::BodyError>>> {
        use std::io::Write;
        loop {
            let Some(encoder) = self.encoder.as_mut() else {
                return Poll::Ready(None);
            };
            if !self.pending.is_empty() {
                let step = self.pending.split_to(self.pending.len().min(GZIP_STEP));
                // Writing into a Vec cannot fail; a frame's end is flushed
                // so the client has everything sent so far.
                let written = encoder.write_all(&step).is_ok()
                    && (!self.pending.is_empty() || encoder.flush().is_ok());
                if !written {
                    self.encoder = None;
                    return Poll::Ready(None);
                }
                let out = std::mem::take(encoder.get_mut());
                if !out.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                }
                continue;
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.pending = data; // trailers: none are sent on these routes
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.encoder = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    let last = self.encoder.take().and_then(|e| e.finish().ok());
                    return Poll::Ready(last.map(|b| Ok(Frame::data(Bytes::from(b)))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl ResponseBody {
    /// `inner`, holding nothing, its cluster's pauses bounded.
    fn of(inner: Inner) -> Self {
        ResponseBody {
            inner,
            _in_flight: None,
            account: None,
            stall: None,
            watched: true,
        }
    }

    /// Streams an upstream body.
    pub fn upstream(body: osproxy_upstream::Answer, in_flight: InFlight) -> Self {
        ResponseBody::of(Inner::Upstream(body)).holding(in_flight)
    }

    /// This body with no bound on the cluster's pauses: for an answer that
    /// streams as its request body does (OpenSearch's `_bulk/stream`
    /// answers each batch as it comes, however slowly the client sends).
    pub fn unwatched(mut self) -> Self {
        self.watched = false;
        self
    }

    /// A body whose chunks arrive on `rx` until its sender is dropped.
    pub fn channel(rx: tokio::sync::mpsc::Receiver<Bytes>, in_flight: InFlight) -> Self {
        ResponseBody::of(Inner::Channel(rx)).holding(in_flight)
    }

    /// A cluster's answer, reversed by `stream` as it streams (a search's
    /// hits, an `_mget`'s documents, an `_msearch`'s searches). An answer to
    /// a change is charged past the budget rather than broken off.
    pub(crate) fn reversed(
        upstream: osproxy_upstream::Answer,
        stream: Box<dyn osproxy_rewrite::stream::Feed + Send>,
        answering: osproxy_upstream::Answering,
    ) -> Self {
        ResponseBody::of(Inner::Reversed(Box::new(Reversing {
            upstream,
            stream,
            charge: osproxy_upstream::budget::Charge::default(),
            answering,
            ended: false,
            fed: false,
        })))
    }

    /// A complete body made here.
    pub fn full(bytes: Bytes) -> Self {
        ResponseBody::of(Inner::Full(Some(bytes)))
    }

    /// This body gzip-compressed: a complete body at once, a streaming one
    /// frame by frame.
    pub fn gzip(self) -> Self {
        use std::io::Write;
        // A small complete body at once (its length stays known); a larger
        // one, or a stream, step by step.
        let at_once = match &self.inner {
            Inner::Full(Some(bytes)) if bytes.len() <= GZIP_STEP => {
                let mut e = flate2::write::GzEncoder::new(
                    Vec::with_capacity(bytes.len() / 4 + 64),
                    gzip_level(),
                );
                e.write_all(bytes).ok().and_then(|()| e.finish().ok())
            }
            _ => None,
        };
        if let Some(out) = at_once {
            return ResponseBody {
                _in_flight: self._in_flight,
                account: self.account,
                ..ResponseBody::of(Inner::Full(Some(Bytes::from(out))))
            };
        }
        ResponseBody::of(Inner::Gzip(Box::new(Gzipped {
            inner: self,
            encoder: Some(flate2::write::GzEncoder::new(Vec::new(), gzip_level())),
            pending: Bytes::new(),
        })))
    }

    /// This body, holding the request's `server.max_in_flight` slot until
    /// it is finished or dropped (an answer streamed or written to a slow
    /// client is still in flight).
    pub fn holding(mut self, in_flight: InFlight) -> Self {
        self._in_flight = Some(in_flight);
        self
    }

    /// This body, its bytes counted to `account` (which it holds until
    /// it ends).
    pub fn metered(mut self, account: std::sync::Arc<crate::limits::Account>) -> Self {
        self.account = Some(account);
        self
    }

    /// An empty body.
    pub fn empty() -> Self {
        ResponseBody::of(Inner::Full(None))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = osproxy_upstream::BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, osproxy_upstream::BodyError>>> {
        let this = self.get_mut();
        let mut polled = this.poll_inner(cx);
        if this.watched && matches!(this.inner, Inner::Upstream(_) | Inner::Reversed(_)) {
            polled = this.watch_stall(polled, cx);
        }
        if let Some(a) = &this.account {
            match &polled {
                Poll::Ready(Some(Ok(f))) => {
                    if let Some(d) = f.data_ref() {
                        a.response_bytes(d.len() as u64);
                    }
                }
                Poll::Ready(None | Some(Err(_))) => this.account = None,
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Full(b) => b.is_none(),
            Inner::Channel(_) => false,
            Inner::Gzip(g) => g.encoder.is_none(),
            Inner::Reversed(r) => r.ended,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Channel(_) | Inner::Gzip(_) | Inner::Reversed(_) => SizeHint::default(),
        }
    }
}

impl ResponseBody {
    /// A cluster's answer that has given nothing for longer than
    /// `upstream.request_timeout` is broken off (the upstream connection
    /// dropped, the slots given back), so a cluster that stalls after its
    /// head does not hold the client forever. Only a pause of the cluster
    /// counts: a client that does not read stops the body being polled.
    fn watch_stall(
        &mut self,
        polled: Poll<Option<Result<Frame<Bytes>, osproxy_upstream::BodyError>>>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, osproxy_upstream::BodyError>>> {
        // Found by review: a large hit reversed gives no output while its
        // frames come; the cluster's frames, not the output, are progress.
        let fed = match &mut self.inner {
            Inner::Reversed(r) => std::mem::take(&mut r.fed),
            _ => false,
        };
        if !polled.is_pending() || fed {
            // Disarmed: the next pause starts its own clock.
            if let Some((_, armed)) = self.stall.as_mut() {
                *armed = false;
            }
            if !polled.is_pending() {
                return polled;
            }
        }
        let pause = osproxy_upstream::answer_pause();
        let (sleep, armed) = self
            .stall
            .get_or_insert_with(|| (Box::pin(tokio::time::sleep(pause)), true));
        if !*armed {
            sleep.as_mut().reset(tokio::time::Instant::now() + pause);
            *armed = true;
        }
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.stall = None;
        self.inner = Inner::Full(None);
        self._in_flight = None;
        Poll::Ready(Some(Err(format!(
            "the cluster paused its answer for more than {} s (upstream.request_timeout): broken off",
            pause.as_secs()
        )
        .into())))
    }

    fn poll_inner(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, osproxy_upstream::BodyError>>> {
        let this = self;
        match &mut this.inner {
            Inner::Upstream(b) => {
                let polled = Pin::new(b).poll_frame(cx).map_err(Into::into);
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
            Inner::Gzip(g) => g.poll_compressed(cx),
            Inner::Reversed(r) => r.poll_reversed(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Nesting, Reader, Refusal, MAX_NESTING};

    #[test]
    fn nesting_counts_brackets_outside_strings_across_frames() {
        let mut n = Nesting::default();
        assert!(n.scan(br#"{"a":[{"b":"#, 3).is_ok());
        // A string split across frames, with an escaped quote and brackets.
        assert!(n.scan(br#""x\"{[{["#, 3).is_ok());
        assert!(n.scan(br#"[["}"#, 3).is_ok());
        assert_eq!(n.scan(b",\"c\":[[1]]", 3), Err(4));
        let mut lines = Nesting::default();
        for _ in 0..100 {
            assert!(lines.scan(b"{\"index\":{}}\n{\"f\":[1]}\n", 3).is_ok());
        }
    }

    #[test]
    fn comments_hide_no_brackets_and_a_newline_ends_a_string() {
        // Found by review: OpenSearch skips comments, so a quote in one
        // must not open a string that hides the brackets after it.
        let deep = format!("{{\"a\":/*\"*/{}/*\"*/}}", "[".repeat(10));
        assert_eq!(Nesting::default().scan(deep.as_bytes(), 5), Err(6));
        let line = format!("{{\"a\":1}} // \"\n{}", "[".repeat(10));
        assert_eq!(Nesting::default().scan(line.as_bytes(), 5), Err(6));
        // An NDJSON line with a stray quote does not hide the next lines.
        let ndjson = format!("{{\"a\":\"x\n{}", "[".repeat(10));
        assert_eq!(Nesting::default().scan(ndjson.as_bytes(), 5), Err(6));
        // Comment markers inside strings are text.
        assert!(Nesting::default()
            .scan(br#"{"a":"/*","b":[[1]],"c":"*/ //"}"#, 3)
            .is_ok());
        // Split across frames.
        let mut n = Nesting::default();
        assert!(n.scan(b"{\"a\":/", 5).is_ok());
        assert!(n.scan(b"* \" */ [[", 5).is_ok());
        assert_eq!(n.scan(b"[[[", 5), Err(6));
    }

    #[test]
    fn a_compressed_body_is_scanned_inflated() {
        use std::io::Write;
        let limit = 1 << 30;
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(5000), "]".repeat(5000));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(deep.as_bytes()).unwrap();
        let packed = gz.finish().unwrap();
        assert!(
            packed.iter().filter(|b| **b == b'[').count() < 100,
            "brackets hidden by gzip"
        );
        let mut r = Reader::new(Some(osproxy_upstream::Coding::Gzip), false, limit);
        let (a, b) = packed.split_at(packed.len() / 2);
        let first = r.scan(a);
        let result = first.and_then(|()| r.scan(b));
        assert!(
            matches!(result, Err(Refusal::Deep(d)) if d > MAX_NESTING),
            "{result:?}"
        );
        // Found by review: a small body in one frame stayed in the
        // decoder's buffer and was never scanned.
        let small = format!("{{\"a\":{}1{}}}", "[".repeat(500), "]".repeat(500));
        for coding in [
            osproxy_upstream::Coding::Gzip,
            osproxy_upstream::Coding::Deflate,
        ] {
            let packed = match coding {
                osproxy_upstream::Coding::Gzip => {
                    let mut e =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    e.write_all(small.as_bytes()).unwrap();
                    e.finish().unwrap()
                }
                osproxy_upstream::Coding::Deflate => {
                    let mut e =
                        flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
                    e.write_all(small.as_bytes()).unwrap();
                    e.finish().unwrap()
                }
            };
            let mut r = Reader::new(Some(coding), false, limit);
            assert!(
                matches!(r.scan(&packed), Err(Refusal::Deep(_))),
                "{coding:?}"
            );
        }
        // Raw deflate under `deflate`, as the cluster reads it too.
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(small.as_bytes()).unwrap();
        let raw = e.finish().unwrap();
        let mut r = Reader::new(Some(osproxy_upstream::Coding::Deflate), false, limit);
        let (a, b) = raw.split_at(1);
        assert!(r.scan(a).is_ok());
        assert!(matches!(r.scan(b), Err(Refusal::Deep(_))));
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(b"{\"a\":[[1]]}").unwrap();
        let mut r = Reader::new(Some(osproxy_upstream::Coding::Deflate), false, limit);
        assert!(r.scan(&z.finish().unwrap()).is_ok());
        // A stream the side decoder cannot read is refused, not forwarded
        // unscanned; so is one that inflates past the limit.
        let mut r = Reader::new(Some(osproxy_upstream::Coding::Gzip), false, limit);
        assert_eq!(r.scan(b"not gzip [[[[[[[[[[[["), Err(Refusal::Undecodable));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&vec![b' '; 1 << 20]).unwrap();
        let mut r = Reader::new(Some(osproxy_upstream::Coding::Gzip), false, 1000);
        assert_eq!(r.scan(&gz.finish().unwrap()), Err(Refusal::Inflated(1000)));
    }

    #[test]
    fn carriage_returns_nuls_and_ndjson_lines() {
        // A `//` comment ends at a carriage return, as Jackson ends it.
        let cr = format!(
            "{{\"a\":1 //x\r,\"b\":{}1{}}}",
            "[".repeat(10),
            "]".repeat(10)
        );
        assert_eq!(Nesting::default().scan(cr.as_bytes(), 5), Err(6));
        // A NUL byte: not UTF-8 JSON.
        let mut r = Reader::new(None, false, 1 << 20);
        assert_eq!(r.scan(b"{\0\"\0a\0\"\0}"), Err(Refusal::Nul));
        // NDJSON: an unclosed comment on one line hides nothing after it,
        // and depth starts afresh on each line.
        let lines = format!(
            "{{\"index\":\"x\"}}/*\n{}1{}\n",
            "[".repeat(10),
            "]".repeat(10)
        );
        assert_eq!(Nesting::ndjson().scan(lines.as_bytes(), 5), Err(6));
        let mut n = Nesting::ndjson();
        for _ in 0..10 {
            assert!(n.scan(b"[[[[\n", 5).is_ok());
        }
        // Not NDJSON: a pretty-printed document keeps its depth.
        let pretty = "[\n".repeat(10);
        assert_eq!(Nesting::default().scan(pretty.as_bytes(), 5), Err(6));
    }
}
