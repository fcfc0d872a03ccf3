//! Client request bodies, decoded when they arrive compressed
//! (`Content-Encoding: gzip` or `deflate`).
//!
//! Decoding streams: compressed input is taken frame by frame and inflated
//! into a fixed-size output buffer, so memory is bounded by that buffer and
//! not by the compression ratio; the decoded total is bounded by a limit
//! (a gzip bomb ends with [`DecodeError::TooLarge`] as soon as it passes
//! it). The gzip container (RFC 1952) is parsed here, its CRC-32 and length
//! checked; a stream that ends early, a bad checksum and data after the end
//! of the compressed stream are errors, never a silently shortened body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use flate2::{Crc, Decompress, FlushDecompress, Status};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::body::BodyError;

/// The decoded bytes one step produces at most.
const OUT_CHUNK: usize = 64 * 1024;
/// The longest gzip header accepted (a file name or comment in it; HTTP
/// clients send none). Small, since the header is re-scanned as it grows.
const MAX_HEADER: usize = 4 * 1024;
/// The output room one inflate call gets, at least: enough for a deflate
/// block's worth, small enough that zero-filling it per call stays cheap
/// however small the client's frames.
const MIN_ROOM: usize = 4 * 1024;
/// Decoded bytes a body produces in one go before it lets its task yield.
const YIELD_EVERY: usize = 1024 * 1024;
/// Bytes of a client's body still read (and dropped) after its request
/// was answered without reading it all (refused, or failed to decode), so
/// that a client still sending receives the answer instead of a connection
/// reset; past this the connection is closed on it. A body announced
/// larger is not read at all.
const DRAIN_AT_MOST: usize = crate::body::MAX_BUFFERED;
/// How long that reading may take in all.
const DRAIN_FOR: std::time::Duration = std::time::Duration::from_secs(10);
/// The longest pause in it: a client that stops sending is not waited for
/// (its request was answered already).
const DRAIN_PAUSE: std::time::Duration = std::time::Duration::from_secs(2);

/// A content coding osproxy decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// `gzip` (and its alias `x-gzip`).
    Gzip,
    /// `deflate`: the zlib format (RFC 1950), or a raw deflate stream,
    /// which some clients send under this name.
    Deflate,
}

impl Coding {
    /// The coding a `Content-Encoding` value names: `Ok(None)` for none
    /// (`identity` or empty), `Err` with the value for one osproxy does not
    /// decode (another coding, or several stacked).
    pub fn of(value: &str) -> Result<Option<Coding>, String> {
        let v = value.trim().to_ascii_lowercase();
        match v.as_str() {
            "" | "identity" => Ok(None),
            "gzip" | "x-gzip" => Ok(Some(Coding::Gzip)),
            "deflate" | "x-deflate" => Ok(Some(Coding::Deflate)),
            _ => Err(v),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
        }
    }
}

/// Why a compressed body could not be decoded.
#[derive(Debug)]
pub enum DecodeError {
    /// It decodes to more than the limit (bytes).
    TooLarge(u64),
    /// It is not a valid stream of its coding, or ends early.
    Corrupt(&'static str, String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::TooLarge(limit) => write!(
                f,
                "the request body decompresses to more than {limit} bytes (server.max_decompressed_body)"
            ),
            DecodeError::Corrupt(coding, why) => {
                write!(f, "the {coding} request body cannot be decoded: {why}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Where a gzip or deflate stream is.
#[derive(Debug)]
enum Stage {
    /// Collecting the gzip header.
    GzipHeader(Vec<u8>),
    /// Waiting for two bytes to tell a zlib stream from a raw one.
    DeflateStart(Vec<u8>),
    /// Inflating.
    Inflate,
    /// The gzip trailer (CRC-32, length), collected.
    GzipTrailer(Vec<u8>),
    /// The stream ended; nothing may follow.
    Ended,
}

/// A decoder of one compressed stream, fed slices, producing decoded
/// chunks; sans-IO so that it can be tested alone.
#[derive(Debug)]
pub struct Decoder {
    coding: Coding,
    stage: Stage,
    inflate: Decompress,
    crc: Crc,
    produced: u64,
    limit: u64,
    /// The last inflate call filled all the room it had: the inflater may
    /// hold more output (up to its 32 KiB window) without more input.
    more: bool,
}

impl Decoder {
    /// A decoder of `coding` that refuses to produce more than `limit`
    /// bytes.
    pub fn new(coding: Coding, limit: u64) -> Decoder {
        let stage = match coding {
            Coding::Gzip => Stage::GzipHeader(Vec::new()),
            Coding::Deflate => Stage::DeflateStart(Vec::new()),
        };
        Decoder {
            coding,
            stage,
            inflate: Decompress::new(false),
            crc: Crc::new(),
            produced: 0,
            limit,
            more: false,
        }
    }

    /// Whether decoded output may be waiting without more input: call
    /// [`Decoder::feed`] (with an empty input) until it is not.
    pub fn has_more(&self) -> bool {
        self.more
    }

    fn corrupt(&self, why: impl Into<String>) -> DecodeError {
        DecodeError::Corrupt(self.coding.name(), why.into())
    }

    /// Consumes from `input` and appends at most [`OUT_CHUNK`] decoded
    /// bytes to `out`. Returns once `input` is used up (and the inflater
    /// has nothing more to give) or the chunk is full; call again while
    /// `input` has bytes left or [`Decoder::has_more`].
    pub fn feed(&mut self, input: &mut Bytes, out: &mut BytesMut) -> Result<(), DecodeError> {
        while (!input.is_empty() || self.more) && out.len() < OUT_CHUNK {
            match &mut self.stage {
                Stage::GzipHeader(header) => {
                    let take = input.len().min(MAX_HEADER + 1 - header.len().min(MAX_HEADER));
                    header.extend_from_slice(&input[..take]);
                    match gzip_header_len(header) {
                        Err(why) => return Err(self.corrupt(why)),
                        Ok(None) if header.len() > MAX_HEADER => {
                            return Err(self.corrupt("the gzip header is longer than 4 KiB"))
                        }
                        Ok(None) => input.advance(take),
                        Ok(Some(len)) => {
                            // What followed the header in this slice is
                            // deflate data: give it back.
                            let already = header.len() - take;
                            input.advance(len - already);
                            self.stage = Stage::Inflate;
                        }
                    }
                }
                Stage::DeflateStart(start) => {
                    let take = input.len().min(2 - start.len());
                    start.extend_from_slice(&input[..take]);
                    input.advance(take);
                    if start.len() == 2 {
                        let zlib = is_zlib_header(start[0], start[1]);
                        self.inflate = Decompress::new(zlib);
                        let start = std::mem::take(start);
                        self.stage = Stage::Inflate;
                        let mut head = Bytes::from(start);
                        while !head.is_empty() {
                            self.inflate_step(&mut head, out)?;
                        }
                    }
                }
                Stage::Inflate => self.inflate_step(input, out)?,
                Stage::GzipTrailer(trailer) => {
                    let take = input.len().min(8 - trailer.len());
                    trailer.extend_from_slice(&input[..take]);
                    input.advance(take);
                    if trailer.len() == 8 {
                        let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
                        let size = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
                        if crc != self.crc.sum() {
                            return Err(self.corrupt("its CRC-32 does not match its data"));
                        }
                        if size != self.crc.amount() {
                            return Err(self.corrupt("its length does not match its data"));
                        }
                        self.stage = Stage::Ended;
                    }
                }
                Stage::Ended => {
                    return Err(self.corrupt(
                        "data follows the end of the compressed stream (concatenated streams are not accepted)",
                    ))
                }
            }
        }
        Ok(())
    }

    /// One call into the inflater: some of `input` in, some output out.
    fn inflate_step(&mut self, input: &mut Bytes, out: &mut BytesMut) -> Result<(), DecodeError> {
        let start = out.len();
        // Room for what this input can make (a deflate byte makes at most
        // 258 bytes... bounded by the chunk) and what the inflater holds.
        let room = OUT_CHUNK
            .saturating_sub(start)
            .min(MIN_ROOM.max(input.len().saturating_mul(16)))
            .max(1);
        out.resize(start + room, 0);
        let (before_in, before_out) = (self.inflate.total_in(), self.inflate.total_out());
        let status = self
            .inflate
            .decompress(&input[..], &mut out[start..], FlushDecompress::None);
        let used = usize::try_from(self.inflate.total_in() - before_in).unwrap_or(usize::MAX);
        let made = usize::try_from(self.inflate.total_out() - before_out).unwrap_or(usize::MAX);
        out.truncate(start + made.min(room));
        input.advance(used.min(input.len()));
        let status = status.map_err(|e| self.corrupt(e.to_string()))?;
        if self.coding == Coding::Gzip {
            self.crc.update(&out[start..]);
        }
        self.produced += made as u64;
        if self.produced > self.limit {
            return Err(DecodeError::TooLarge(self.limit));
        }
        self.more = made >= room && status != Status::StreamEnd;
        if status == Status::StreamEnd {
            self.stage = match self.coding {
                Coding::Gzip => Stage::GzipTrailer(Vec::new()),
                Coding::Deflate => Stage::Ended,
            };
        } else if used == 0 && made == 0 && !input.is_empty() {
            return Err(self.corrupt("the compressed data makes no progress"));
        }
        Ok(())
    }

    /// The input has ended: Ok only if the stream is complete.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match &self.stage {
            Stage::Ended => Ok(()),
            Stage::DeflateStart(s) if s.is_empty() => Ok(()), // an empty body
            Stage::GzipHeader(h) if h.is_empty() => Ok(()),
            _ => Err(self.corrupt("the compressed stream ends early (truncated)")),
        }
    }
}

/// Whether two bytes begin a zlib stream (RFC 1950: deflate, a window of
/// at most 32 KiB, a header checksum).
pub fn is_zlib_header(cmf: u8, flg: u8) -> bool {
    cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0
}

/// The length of the gzip header at the start of `h` (RFC 1952), `None`
/// while it is incomplete.
fn gzip_header_len(h: &[u8]) -> Result<Option<usize>, &'static str> {
    if h.len() >= 2 && (h[0], h[1]) != (0x1f, 0x8b) {
        return Err("it does not begin with the gzip magic bytes");
    }
    if h.len() >= 3 && h[2] != 8 {
        return Err("its compression method is not deflate");
    }
    if h.len() < 10 {
        return Ok(None);
    }
    let flags = h[3];
    if flags & 0xe0 != 0 {
        return Err("its header sets reserved flags");
    }
    let mut at = 10;
    if flags & 0x04 != 0 {
        if h.len() < at + 2 {
            return Ok(None);
        }
        at += 2 + usize::from(u16::from_le_bytes([h[at], h[at + 1]]));
    }
    for flag in [0x08, 0x10] {
        if flags & flag != 0 {
            match h
                .get(at..)
                .and_then(|rest| rest.iter().position(|&b| b == 0))
            {
                Some(nul) => at += nul + 1,
                None => return Ok(None),
            }
        }
    }
    if flags & 0x02 != 0 {
        at += 2;
    }
    Ok((h.len() >= at).then_some(at))
}

/// A client's request body: as received, decoded as it streams, or read
/// (and decoded) already.
pub enum ClientBody {
    /// The body as the client sent it.
    Plain(Upload),
    /// A compressed body, decoded as it streams.
    Decoded(Box<Decoding>),
    /// A body read whole already.
    Full(Option<Bytes>),
}

impl ClientBody {
    /// The body read whole ([`crate::read_limited`]); one read whole
    /// already is returned as it is (and keeps its charge on the budget,
    /// not charged twice).
    pub async fn read_whole(self) -> Result<Bytes, osproxy_core::ProxyError> {
        match self {
            ClientBody::Full(Some(bytes)) => Ok(bytes),
            ClientBody::Full(None) => Ok(Bytes::new()),
            other => crate::read_limited(other).await,
        }
    }
}

impl std::fmt::Debug for ClientBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientBody::Plain(_) => f.write_str("ClientBody::Plain"),
            ClientBody::Decoded(_) => f.write_str("ClientBody::Decoded"),
            ClientBody::Full(b) => write!(f, "ClientBody::Full({:?})", b.as_ref().map(Bytes::len)),
        }
    }
}

impl From<Upload> for ClientBody {
    fn from(b: Upload) -> Self {
        ClientBody::Plain(b)
    }
}

impl From<Incoming> for Upload {
    fn from(b: Incoming) -> Self {
        Upload(Some(b))
    }
}

impl ClientBody {
    /// `inner` decoded from `coding`, at most `limit` bytes.
    pub fn decoded(inner: Upload, coding: Coding, limit: u64) -> ClientBody {
        ClientBody::Decoded(Box::new(Decoding {
            inner,
            decoder: Decoder::new(coding, limit),
            pending: Bytes::new(),
            scratch: BytesMut::new(),
            input_done: false,
            ended: false,
            since_yield: 0,
        }))
    }
}

/// A client's body as hyper hands it over. Dropped before its end (its
/// request answered without reading it all: refused by a limit, its
/// principal or its index, or its body failed to decode), the rest is read
/// and dropped in the background, up to [`DRAIN_AT_MOST`] bytes for at
/// most [`DRAIN_FOR`]. An HTTP/1.1 connection closed with unread bytes is
/// reset, and the reset destroys the answer before a client that sends its
/// whole body before it reads (most do) can read it: it would see a broken
/// connection where it was sent a 4xx it could act on (a 429 to retry).
pub struct Upload(Option<Incoming>);

impl Body for Upload {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().0 {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let Some(rest) = self.0.take() else {
            return;
        };
        if rest.is_end_stream() || rest.size_hint().lower() > DRAIN_AT_MOST as u64 {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(discard(rest));
        }
    }
}

/// Reads what is left of an answered request's body, and drops it.
async fn discard(mut rest: Incoming) {
    use http_body_util::BodyExt;
    let until = tokio::time::Instant::now() + DRAIN_FOR;
    let mut read = 0usize;
    while read <= DRAIN_AT_MOST {
        let pause = until.min(tokio::time::Instant::now() + DRAIN_PAUSE);
        match tokio::time::timeout_at(pause, rest.frame()).await {
            Ok(Some(Ok(frame))) => read += frame.data_ref().map_or(0, Bytes::len),
            _ => return,
        }
    }
}

/// A compressed client body and its decoder.
pub struct Decoding {
    inner: Upload,
    decoder: Decoder,
    pending: Bytes,
    /// Decoded bytes are written here and split off as frames, so frames
    /// share a few allocations instead of each holding a chunk's worth.
    scratch: BytesMut,
    input_done: bool,
    ended: bool,
    since_yield: usize,
}

impl Decoding {
    fn poll_decoded(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            if !self.pending.is_empty() || self.decoder.has_more() {
                if self.since_yield >= YIELD_EVERY {
                    // A body that decodes without ever waiting for input
                    // would hold the worker's event loop: let others run.
                    self.since_yield = 0;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                if self.scratch.capacity() - self.scratch.len() < OUT_CHUNK {
                    self.scratch.reserve(OUT_CHUNK);
                }
                if let Err(e) = self.decoder.feed(&mut self.pending, &mut self.scratch) {
                    // The rest of the client's body is read once it is
                    // dropped ([`Upload`]), after the error is answered.
                    self.pending = Bytes::new();
                    self.scratch.clear();
                    self.ended = true;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                if !self.scratch.is_empty() {
                    let frame = self.scratch.split().freeze();
                    self.since_yield += frame.len();
                    return Poll::Ready(Some(Ok(Frame::data(frame))));
                }
                continue;
            }
            if self.input_done {
                self.ended = true;
                return match self.decoder.finish() {
                    Ok(()) => Poll::Ready(None),
                    Err(e) => Poll::Ready(Some(Err(Box::new(e)))),
                };
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.pending = data;
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.ended = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(None) => self.input_done = true,
                Poll::Pending => {
                    self.since_yield = 0;
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ClientBody::Plain(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ClientBody::Decoded(d) => d.poll_decoded(cx),
            ClientBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Plain(b) => b.is_end_stream(),
            ClientBody::Decoded(d) => d.ended,
            ClientBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Plain(b) => b.size_hint(),
            // The compressed length says nothing of the decoded one.
            ClientBody::Decoded(_) => SizeHint::default(),
            ClientBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ClientBody::Full(None) => SizeHint::with_exact(0),
        }
    }
}

/// The 4xx a body that could not be read gets: 413 when it decoded past
/// the limit, 400 otherwise, naming why.
pub fn body_error(e: &(dyn std::error::Error + 'static)) -> osproxy_core::ProxyError {
    use osproxy_core::{ErrorCode, ProxyError};
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(d) = err.downcast_ref::<DecodeError>() {
            let code = match d {
                DecodeError::TooLarge(_) => ErrorCode::RequestTooLarge,
                DecodeError::Corrupt(..) => ErrorCode::BadRequest,
            };
            return ProxyError::new(code, d.to_string());
        }
        cur = err.source();
    }
    ProxyError::new(
        ErrorCode::BadRequest,
        format!("the request body could not be read: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Decodes `input` fed in slices of `step` bytes.
    fn decode(
        coding: Coding,
        input: &[u8],
        step: usize,
        limit: u64,
    ) -> Result<Vec<u8>, DecodeError> {
        let mut d = Decoder::new(coding, limit);
        let mut all = Vec::new();
        for slice in input.chunks(step.max(1)) {
            let mut slice = Bytes::copy_from_slice(slice);
            while !slice.is_empty() || d.has_more() {
                let mut out = BytesMut::new();
                d.feed(&mut slice, &mut out)?;
                assert!(out.len() <= OUT_CHUNK);
                all.extend_from_slice(&out);
            }
        }
        d.finish()?;
        Ok(all)
    }

    fn sample() -> Vec<u8> {
        (0..20_000)
            .map(|i| format!("{{\"index\":{{}}}}\n{{\"n\":{i}}}\n"))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn gzip_zlib_and_raw_deflate_decode_whatever_the_slicing() {
        let data = sample();
        for step in [1, 2, 7, 10, 11, 4096, usize::MAX] {
            assert_eq!(
                decode(Coding::Gzip, &gzip(&data), step, u64::MAX).unwrap(),
                data,
                "{step}"
            );
            assert_eq!(
                decode(Coding::Deflate, &zlib(&data), step, u64::MAX).unwrap(),
                data,
                "{step}"
            );
            assert_eq!(
                decode(Coding::Deflate, &raw(&data), step, u64::MAX).unwrap(),
                data,
                "{step}"
            );
        }
        assert_eq!(decode(Coding::Gzip, b"", 1, 10).unwrap(), b"");
        assert_eq!(decode(Coding::Gzip, &gzip(b""), 3, 10).unwrap(), b"");
    }

    /// Split in two anywhere: the inflater may hold decoded bytes after its
    /// input is used up (its window), which must still come out.
    #[test]
    fn a_stream_split_at_any_point_decodes_whole() {
        let data: Vec<u8> = (0..6000u32)
            .map(|i| {
                format!(
                    "{{\"n\":{},\"h\":\"{:x}\"}}\n",
                    i,
                    i.wrapping_mul(2_654_435_761)
                )
            })
            .collect::<String>()
            .into_bytes();
        assert!(data.len() > 2 * OUT_CHUNK);
        for (coding, bytes) in [
            (Coding::Deflate, zlib(&data)),
            (Coding::Deflate, raw(&data)),
            (Coding::Gzip, gzip(&data)),
        ] {
            for cut in (1..bytes.len()).step_by(89) {
                let mut d = Decoder::new(coding, u64::MAX);
                let mut all = Vec::new();
                for part in [&bytes[..cut], &bytes[cut..]] {
                    let mut part = Bytes::copy_from_slice(part);
                    while !part.is_empty() || d.has_more() {
                        let mut out = BytesMut::new();
                        d.feed(&mut part, &mut out).unwrap();
                        all.extend_from_slice(&out);
                    }
                }
                d.finish()
                    .unwrap_or_else(|e| panic!("{coding:?} cut at {cut}: {e}"));
                assert!(all == data, "{coding:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn a_gzip_header_with_name_comment_extra_and_crc_is_read() {
        let data = b"{\"a\":1}";
        let mut e = flate2::GzBuilder::new()
            .filename("body.json")
            .comment("a comment")
            .extra(vec![1, 2, 3])
            .write(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        let bytes = e.finish().unwrap();
        for step in [1, 5, 100] {
            assert_eq!(decode(Coding::Gzip, &bytes, step, 100).unwrap(), data);
        }
    }

    #[test]
    fn a_bomb_stops_at_the_limit_with_bounded_chunks() {
        let zeros = vec![0u8; 8 * 1024 * 1024];
        let bomb = gzip(&zeros);
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        match decode(Coding::Gzip, &bomb, usize::MAX, 1024 * 1024) {
            Err(DecodeError::TooLarge(l)) => assert_eq!(l, 1024 * 1024),
            other => panic!("{other:?}"),
        }
        // Exactly at the limit is fine.
        assert_eq!(
            decode(Coding::Gzip, &gzip(&zeros[..1000]), 64, 1000)
                .unwrap()
                .len(),
            1000
        );
    }

    #[test]
    fn truncated_corrupt_and_trailing_streams_are_refused() {
        let data = sample();
        let good = gzip(&data);
        let cases: Vec<(Coding, Vec<u8>)> = vec![
            (Coding::Gzip, good[..good.len() - 1].to_vec()),
            (Coding::Gzip, good[..good.len() / 2].to_vec()),
            (Coding::Gzip, good[..5].to_vec()),
            (Coding::Gzip, [good.clone(), good.clone()].concat()),
            (Coding::Gzip, [good.clone(), b"x".to_vec()].concat()),
            (Coding::Gzip, b"{\"not\":\"gzip\"}".to_vec()),
            (Coding::Deflate, zlib(&data)[..100].to_vec()),
            (Coding::Deflate, raw(&data)[..100].to_vec()),
            (Coding::Deflate, [zlib(b"{}"), b"{}".to_vec()].concat()),
            (Coding::Deflate, vec![0xff; 64]),
        ];
        for (i, (coding, bytes)) in cases.into_iter().enumerate() {
            match decode(coding, &bytes, 13, u64::MAX) {
                Err(DecodeError::Corrupt(..)) => {}
                other => panic!("case {i}: {:?}", other.map(|v| v.len())),
            }
        }
        // A flipped bit in the CRC.
        let mut bad = good.clone();
        let n = bad.len();
        bad[n - 8] ^= 1;
        assert!(matches!(
            decode(Coding::Gzip, &bad, 100, u64::MAX),
            Err(DecodeError::Corrupt(..))
        ));
    }

    #[test]
    fn codings_are_named_as_http_names_them() {
        assert_eq!(Coding::of("GZIP"), Ok(Some(Coding::Gzip)));
        assert_eq!(Coding::of(" x-gzip "), Ok(Some(Coding::Gzip)));
        assert_eq!(Coding::of("deflate"), Ok(Some(Coding::Deflate)));
        assert_eq!(Coding::of("identity"), Ok(None));
        assert_eq!(Coding::of("br"), Err("br".into()));
        assert_eq!(Coding::of("gzip, gzip"), Err("gzip, gzip".into()));
    }
}
