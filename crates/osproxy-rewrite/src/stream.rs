//! A search response reversed as it streams: `hits.hits` one hit at a time,
//! so the memory a response holds is bounded by its largest hit, not by
//! the response.
//!
//! The response is scanned as it arrives. Every byte outside the places
//! that are rewritten is copied through as it comes; each element of
//! `hits.hits` is held until it is complete and given to
//! [`Reverse::hit`]; a top-level member named by [`Reverse::whole`] (small
//! ones: `_shards`, `aggregations`, cursor ids) is held whole and given to
//! [`Reverse::member`], and so is a `hits` or `hits.hits` that is not
//! shaped as OpenSearch shapes it. The output is byte for byte what the
//! same rewrites applied to the whole response give (separators and
//! whitespace kept). A response that does not scan as a JSON object is an
//! error, never passed on unreversed.
//!
//! [`ElementStream`] is the same scan for answers whose list is the
//! response's own member (`docs` of an `_mget`, `responses` of an
//! `_msearch`): each element is handed on in parts as it comes, and what
//! the client gets is written by its [`Elements`].

/// A response reversed as it streams, whichever its shape.
pub trait Feed {
    /// Reverses the next chunk: what can be sent now is appended to `out`.
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError>;
    /// The end of the response: an error unless it was complete.
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), StreamError>;
    /// The bytes held now.
    fn holding(&self) -> usize;
}

/// The rewrites a streamed search response gets.
pub trait Reverse {
    /// Whether the top-level member `key` is held whole and rewritten.
    fn whole(&self, key: &str) -> bool;
    /// The rewrite of a member held whole: a top-level one named by
    /// [`Reverse::whole`], `"hits"` when it is not an object, or
    /// `"hits.hits"` when it is not an array. An error breaks the stream
    /// off: what could not be rewritten is never handed on.
    fn member(&mut self, key: &str, value: &[u8]) -> Result<Vec<u8>, StreamError>;
    /// The rewrite of one element of `hits.hits`, or the error that breaks
    /// the stream off.
    fn hit(&mut self, hit: &[u8]) -> Result<Vec<u8>, StreamError>;
}

/// Why a streamed response could not be reversed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError(pub String);

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StreamError {}

/// Where the scan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// The response object.
    Top,
    /// The object under the top-level `hits`.
    Hits,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Before the response's `{`.
    Start,
    /// After an object's `{` (`first`) or a `,`: a key, or `}` when first.
    Key(Level, bool),
    /// After a key: the `:`.
    Colon(Level, String),
    /// After the `:`: the value's first byte.
    Value(Level, String),
    /// A value copied through as it comes.
    Through(Level),
    /// A value held whole, for [`Reverse::member`] under this name.
    Held(Level, String),
    /// After a member: `,` or `}`.
    AfterMember(Level),
    /// In `hits.hits`, after `[` (`first`) or a `,`: a hit, or `]` when
    /// first.
    Hit(bool),
    /// A hit being held.
    HeldHit,
    /// After a hit: `,` or `]`.
    AfterHit,
    /// After the response's `}`: whitespace only.
    End,
}

/// The end of one JSON value being scanned, across chunks.
#[derive(Debug, Default, Clone)]
struct ValueEnd {
    started: bool,
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// A number, `true`, `false` or `null`: it ends before a delimiter.
    scalar: bool,
}

impl ValueEnd {
    /// Scans `bytes`; `Some(n)` when the value ends after its first `n`
    /// bytes (a scalar ends before the delimiter that follows it).
    fn scan(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut i = 0;
        if !self.started {
            let &b = bytes.first()?;
            self.started = true;
            match b {
                b'{' | b'[' => self.depth = 1,
                b'"' => self.in_string = true,
                _ => self.scalar = true,
            }
            i = 1;
        }
        if self.scalar {
            let rest = bytes.get(i..).unwrap_or_default();
            return rest
                .iter()
                .position(|&b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n'))
                .map(|p| i + p);
        }
        // Jumps from one byte that matters to the next: a quote or
        // backslash in a string (hits are mostly long strings), a quote or
        // bracket outside one.
        loop {
            let rest = bytes.get(i..).unwrap_or_default();
            if self.in_string {
                if self.escaped {
                    if rest.is_empty() {
                        return None;
                    }
                    self.escaped = false;
                    i += 1;
                    continue;
                }
                let p = memchr::memchr2(b'"', b'\\', rest)?;
                i += p + 1;
                if rest[p] == b'\\' {
                    self.escaped = true;
                    continue;
                }
                self.in_string = false;
                if self.depth == 0 {
                    return Some(i);
                }
            } else {
                let p = rest
                    .iter()
                    .position(|&c| matches!(c, b'"' | b'{' | b'[' | b'}' | b']'))?;
                i += p + 1;
                match rest[p] {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    _ => {
                        self.depth = self.depth.saturating_sub(1);
                        if self.depth == 0 {
                            return Some(i);
                        }
                    }
                }
            }
        }
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// A search response being reversed as it streams.
pub struct SearchStream<R> {
    reverse: R,
    state: State,
    /// Input not yet consumed (at most a key, or a scalar's start).
    pending: Vec<u8>,
    /// The value or hit being held.
    held: Vec<u8>,
    value: ValueEnd,
    /// The most bytes held at once.
    max_held: usize,
}

impl<R: Reverse> SearchStream<R> {
    /// A stream holding at most `max_held` bytes of one value or hit.
    pub fn new(reverse: R, max_held: usize) -> Self {
        SearchStream {
            reverse,
            state: State::Start,
            pending: Vec::new(),
            held: Vec::new(),
            value: ValueEnd::default(),
            max_held,
        }
    }

    /// The bytes held now (a partial hit or member, and unconsumed input).
    pub fn holding(&self) -> usize {
        self.held.capacity() + self.pending.capacity()
    }

    /// Reverses the next chunk: what can be sent now is appended to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        let mut pending = std::mem::take(&mut self.pending);
        let r = fed(&mut pending, chunk, |input| self.run(input, out));
        self.pending = pending;
        r
    }

    /// The end of the response: an error unless it was complete.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), StreamError> {
        let pending = std::mem::take(&mut self.pending);
        let used = self.run(&pending, out)?;
        ended(self.state == State::End, used, &pending)
    }

    fn unexpected(&self, b: u8) -> StreamError {
        StreamError(format!(
            "the cluster's search answer is not the JSON expected: {:?} where {}",
            char::from(b),
            match self.state {
                State::Start => "an object was to start",
                State::Key(..) => "a key was expected",
                State::Colon(..) => "`:` was expected",
                State::AfterMember(_) => "`,` or `}` was expected",
                State::Hit(_) | State::AfterHit => "a hit, `,` or `]` was expected",
                _ => "nothing more was expected",
            }
        ))
    }

    fn too_large(&self) -> StreamError {
        StreamError(format!(
            "a hit or member of the cluster's search answer is larger than {} bytes",
            self.max_held
        ))
    }

    fn hold(&mut self, bytes: &[u8]) -> Result<(), StreamError> {
        if self.held.len() + bytes.len() > self.max_held {
            return Err(self.too_large());
        }
        self.held.extend_from_slice(bytes);
        Ok(())
    }

    /// Consumes what it can of `input`; returns how much.
    fn run(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, StreamError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match std::mem::replace(&mut self.state, State::End) {
                State::Start => {
                    if is_ws(b) {
                        out.push(b);
                        i += 1;
                        self.state = State::Start;
                    } else if b == b'{' {
                        out.push(b);
                        i += 1;
                        self.state = State::Key(Level::Top, true);
                    } else {
                        self.state = State::Start;
                        return Err(self.unexpected(b));
                    }
                }
                State::Key(level, first) => {
                    if is_ws(b) {
                        out.push(b);
                        i += 1;
                        self.state = State::Key(level, first);
                    } else if b == b'}' && first {
                        out.push(b);
                        i += 1;
                        self.state = Self::closed(level);
                    } else if b == b'"' {
                        let Some(len) = string_end(&input[i..]) else {
                            self.state = State::Key(level, first);
                            return Ok(i);
                        };
                        let raw = &input[i..i + len];
                        let key: String = serde_json::from_slice(raw).map_err(|e| {
                            StreamError(format!("a key of the cluster's search answer: {e}"))
                        })?;
                        out.extend_from_slice(raw);
                        i += len;
                        self.state = State::Colon(level, key);
                    } else {
                        self.state = State::Key(level, first);
                        return Err(self.unexpected(b));
                    }
                }
                State::Colon(level, key) => {
                    if is_ws(b) || b == b':' {
                        out.push(b);
                        i += 1;
                        self.state = if b == b':' {
                            State::Value(level, key)
                        } else {
                            State::Colon(level, key)
                        };
                    } else {
                        self.state = State::Colon(level, key);
                        return Err(self.unexpected(b));
                    }
                }
                State::Value(level, key) => {
                    if is_ws(b) {
                        out.push(b);
                        i += 1;
                        self.state = State::Value(level, key);
                        continue;
                    }
                    self.value = ValueEnd::default();
                    self.state = match (level, key.as_str(), b) {
                        (Level::Top, "hits", b'{') => {
                            out.push(b);
                            i += 1;
                            State::Key(Level::Hits, true)
                        }
                        (Level::Hits, "hits", b'[') => {
                            out.push(b);
                            i += 1;
                            State::Hit(true)
                        }
                        (Level::Top, "hits", _) => State::Held(level, key),
                        (Level::Hits, "hits", _) => State::Held(level, "hits.hits".into()),
                        (Level::Top, k, _) if self.reverse.whole(k) => State::Held(level, key),
                        _ => State::Through(level),
                    };
                }
                State::Through(level) => match self.value.scan(&input[i..]) {
                    Some(n) => {
                        out.extend_from_slice(&input[i..i + n]);
                        i += n;
                        self.state = State::AfterMember(level);
                    }
                    None if self.value.scalar => {
                        // A scalar's end is its delimiter: what is seen of
                        // it is kept until that comes.
                        self.value = ValueEnd::default();
                        self.state = State::Through(level);
                        return Ok(i);
                    }
                    None => {
                        out.extend_from_slice(&input[i..]);
                        i = input.len();
                        self.state = State::Through(level);
                    }
                },
                State::Held(level, key) => match self.value.scan(&input[i..]) {
                    // All of it in this input: rewritten where it lies.
                    Some(n) if self.held.is_empty() => {
                        if n > self.max_held {
                            return Err(self.too_large());
                        }
                        out.extend_from_slice(&self.reverse.member(&key, &input[i..i + n])?);
                        i += n;
                        self.state = State::AfterMember(level);
                    }
                    Some(n) => {
                        self.hold(&input[i..i + n])?;
                        i += n;
                        let held = std::mem::take(&mut self.held);
                        out.extend_from_slice(&self.reverse.member(&key, &held)?);
                        self.state = State::AfterMember(level);
                    }
                    None if self.value.scalar => {
                        self.value = ValueEnd::default();
                        self.state = State::Held(level, key);
                        return Ok(i);
                    }
                    None => {
                        self.hold(&input[i..])?;
                        i = input.len();
                        self.state = State::Held(level, key);
                    }
                },
                State::AfterMember(level) => {
                    if is_ws(b) {
                        out.push(b);
                        i += 1;
                        self.state = State::AfterMember(level);
                    } else if b == b',' {
                        out.push(b);
                        i += 1;
                        self.state = State::Key(level, false);
                    } else if b == b'}' {
                        out.push(b);
                        i += 1;
                        self.state = Self::closed(level);
                    } else {
                        self.state = State::AfterMember(level);
                        return Err(self.unexpected(b));
                    }
                }
                State::Hit(first) => {
                    if is_ws(b) {
                        out.push(b);
                        i += 1;
                        self.state = State::Hit(first);
                    } else if b == b']' && first {
                        out.push(b);
                        i += 1;
                        self.state = State::AfterMember(Level::Hits);
                    } else if b == b']' || b == b',' {
                        self.state = State::Hit(first);
                        return Err(self.unexpected(b));
                    } else {
                        self.value = ValueEnd::default();
                        self.state = State::HeldHit;
                    }
                }
                State::HeldHit => match self.value.scan(&input[i..]) {
                    Some(n) if self.held.is_empty() => {
                        if n > self.max_held {
                            return Err(self.too_large());
                        }
                        out.extend_from_slice(&self.reverse.hit(&input[i..i + n])?);
                        i += n;
                        self.state = State::AfterHit;
                    }
                    Some(n) => {
                        self.hold(&input[i..i + n])?;
                        i += n;
                        let hit = std::mem::take(&mut self.held);
                        out.extend_from_slice(&self.reverse.hit(&hit)?);
                        // The buffer is reused for the next hit unless
                        // this one was unusually large.
                        self.held = hit;
                        self.held.clear();
                        if self.held.capacity() > 1024 * 1024 {
                            self.held = Vec::new();
                        }
                        self.state = State::AfterHit;
                    }
                    None if self.value.scalar => {
                        self.value = ValueEnd::default();
                        self.state = State::HeldHit;
                        return Ok(i);
                    }
                    None => {
                        self.hold(&input[i..])?;
                        i = input.len();
                        self.state = State::HeldHit;
                    }
                },
                State::AfterHit => {
                    if is_ws(b) {
                        out.push(b);
                        i += 1;
                        self.state = State::AfterHit;
                    } else if b == b',' {
                        out.push(b);
                        i += 1;
                        self.state = State::Hit(false);
                    } else if b == b']' {
                        out.push(b);
                        i += 1;
                        self.state = State::AfterMember(Level::Hits);
                    } else {
                        self.state = State::AfterHit;
                        return Err(self.unexpected(b));
                    }
                }
                State::End => {
                    if is_ws(b) {
                        out.push(b);
                        i += 1;
                        self.state = State::End;
                    } else {
                        self.state = State::End;
                        return Err(self.unexpected(b));
                    }
                }
            }
        }
        Ok(i)
    }

    fn closed(level: Level) -> State {
        match level {
            Level::Top => State::End,
            Level::Hits => State::AfterMember(Level::Top),
        }
    }
}

impl<R: Reverse> Feed for SearchStream<R> {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        SearchStream::feed(self, chunk, out)
    }
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), StreamError> {
        SearchStream::finish(self, out)
    }
    fn holding(&self) -> usize {
        SearchStream::holding(self)
    }
}

/// Runs a scan over what was pending and `chunk`; what it did not consume
/// (at most a key, or a scalar's start) stays pending.
fn fed(
    pending: &mut Vec<u8>,
    chunk: &[u8],
    mut run: impl FnMut(&[u8]) -> Result<usize, StreamError>,
) -> Result<(), StreamError> {
    if pending.is_empty() {
        let used = run(chunk)?;
        pending.extend_from_slice(&chunk[used..]);
    } else {
        pending.extend_from_slice(chunk);
        let used = run(pending)?;
        pending.drain(..used);
    }
    if pending.len() > 64 * 1024 {
        return Err(StreamError(
            "the cluster's answer has a key or number longer than 64 KiB".into(),
        ));
    }
    if pending.is_empty() && pending.capacity() > 4096 {
        *pending = Vec::new();
    }
    Ok(())
}

/// Whether a scan that reached `end` consumed all of what was left.
fn ended(end: bool, used: usize, left: &[u8]) -> Result<(), StreamError> {
    if end && used == left.len() {
        Ok(())
    } else {
        Err(StreamError(
            "the cluster's answer ended before it was complete".into(),
        ))
    }
}

/// What is made of the elements of an [`ElementStream`]'s list.
pub trait Elements {
    /// The next part of an element (all of it when it is small), `end`
    /// when it completes the element. What the client gets is written to
    /// `out`.
    fn part(&mut self, bytes: &[u8], end: bool, out: &mut Vec<u8>) -> Result<(), StreamError>;
    /// The response ended, complete: the client's answer is finished.
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), StreamError>;
    /// The bytes held now.
    fn holding(&self) -> usize;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    Start,
    /// After the response's `{` (`first`) or a `,`.
    Key(bool),
    /// After a key; whether it names the list.
    Colon(bool),
    Value(bool),
    /// A member that is not the list, read past.
    Skipped,
    AfterMember,
    /// In the list, after `[` (`first`) or a `,`.
    Element(bool),
    InElement,
    AfterElement,
    End,
}

/// A response object whose member `list` is an array of elements: each
/// element is given to the [`Elements`] as it arrives, every other member
/// is read past (the client's answer is written by the [`Elements`]).
pub struct ElementStream<E> {
    elements: E,
    list: &'static str,
    listed: bool,
    scan: Scan,
    pending: Vec<u8>,
    value: ValueEnd,
}

impl<E: Elements> ElementStream<E> {
    /// A scan of the elements of the response's member `list`.
    pub fn new(elements: E, list: &'static str) -> Self {
        ElementStream {
            elements,
            list,
            listed: false,
            scan: Scan::Start,
            pending: Vec::new(),
            value: ValueEnd::default(),
        }
    }

    fn unexpected(&self, b: u8) -> StreamError {
        StreamError(format!(
            "the cluster's answer is not the JSON expected: {:?} in {:?}",
            char::from(b),
            self.scan
        ))
    }

    /// Consumes what it can of `input`; returns how much.
    fn run(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, StreamError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            let next = match self.scan {
                Scan::InElement | Scan::Skipped => None,
                _ if is_ws(b) => {
                    i += 1;
                    continue;
                }
                Scan::Start if b == b'{' => Some(Scan::Key(true)),
                Scan::Key(true) if b == b'}' => Some(Scan::End),
                Scan::Key(_) if b == b'"' => {
                    let Some(len) = string_end(&input[i..]) else {
                        return Ok(i);
                    };
                    let key: String = serde_json::from_slice(&input[i..i + len])
                        .map_err(|e| StreamError(format!("a key of the cluster's answer: {e}")))?;
                    i += len;
                    // Only the first list is read: a second would not be
                    // OpenSearch's answer.
                    let list = key == self.list && !self.listed;
                    self.listed |= list;
                    self.scan = Scan::Colon(list);
                    continue;
                }
                Scan::Colon(list) if b == b':' => Some(Scan::Value(list)),
                Scan::Value(true) if b == b'[' => Some(Scan::Element(true)),
                Scan::Value(_) => {
                    self.value = ValueEnd::default();
                    self.scan = Scan::Skipped;
                    continue;
                }
                Scan::AfterMember if b == b',' => Some(Scan::Key(false)),
                Scan::AfterMember if b == b'}' => Some(Scan::End),
                Scan::Element(true) if b == b']' => Some(Scan::AfterMember),
                Scan::Element(_) if b != b']' && b != b',' => {
                    self.value = ValueEnd::default();
                    self.scan = Scan::InElement;
                    continue;
                }
                Scan::AfterElement if b == b',' => Some(Scan::Element(false)),
                Scan::AfterElement if b == b']' => Some(Scan::AfterMember),
                _ => return Err(self.unexpected(b)),
            };
            if let Some(next) = next {
                i += 1;
                self.scan = next;
                continue;
            }
            let skipping = self.scan == Scan::Skipped;
            match self.value.scan(&input[i..]) {
                Some(n) => {
                    if !skipping {
                        self.elements.part(&input[i..i + n], true, out)?;
                    }
                    i += n;
                    self.scan = if skipping {
                        Scan::AfterMember
                    } else {
                        Scan::AfterElement
                    };
                }
                // A scalar's end is its delimiter: what is seen of it is
                // kept until that comes.
                None if self.value.scalar => {
                    self.value = ValueEnd::default();
                    return Ok(i);
                }
                None => {
                    if !skipping {
                        self.elements.part(&input[i..], false, out)?;
                    }
                    i = input.len();
                }
            }
        }
        Ok(i)
    }
}

impl<E: Elements> Feed for ElementStream<E> {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        let mut pending = std::mem::take(&mut self.pending);
        let r = fed(&mut pending, chunk, |input| self.run(input, out));
        self.pending = pending;
        r
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), StreamError> {
        let pending = std::mem::take(&mut self.pending);
        let used = self.run(&pending, out)?;
        ended(self.scan == Scan::End, used, &pending)?;
        self.elements.finish(out)
    }

    fn holding(&self) -> usize {
        self.pending.capacity() + self.elements.holding()
    }
}

/// The length of the JSON string at the start of `b` (with its quotes), if
/// it is all there.
fn string_end(b: &[u8]) -> Option<usize> {
    let mut escaped = false;
    for (i, &c) in b.iter().enumerate().skip(1) {
        if escaped {
            escaped = false;
        } else if c == b'\\' {
            escaped = true;
        } else if c == b'"' {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Marks what it rewrites, so a test sees each rewrite applied once.
    struct Mark;

    impl Reverse for Mark {
        fn whole(&self, key: &str) -> bool {
            key == "_shards" || key == "aggregations"
        }
        fn member(&mut self, key: &str, value: &[u8]) -> Result<Vec<u8>, StreamError> {
            Ok(format!("<{key}:{}>", String::from_utf8_lossy(value)).into_bytes())
        }
        fn hit(&mut self, hit: &[u8]) -> Result<Vec<u8>, StreamError> {
            if hit == b"\"refuse\"" {
                return Err(StreamError("refused".into()));
            }
            Ok(format!("<hit:{}>", String::from_utf8_lossy(hit)).into_bytes())
        }
    }

    fn whole(input: &str) -> Result<String, StreamError> {
        chunked(input, input.len().max(1))
    }

    fn chunked(input: &str, size: usize) -> Result<String, StreamError> {
        let mut s = SearchStream::new(Mark, 1 << 20);
        let mut out = Vec::new();
        for c in input.as_bytes().chunks(size) {
            s.feed(c, &mut out)?;
        }
        s.finish(&mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn hits_and_held_members_are_rewritten_the_rest_copied() {
        let input = r#"{"took":5,"timed_out":false,"_shards":{"total":1},"hits":{"total":{"value":2},"max_score":1.0,"hits":[{"_id":"a","_source":{"s":"]}\"{"}},{"_id":"b"}]},"aggregations":{"x":{"value":1}}}"#;
        let want = r#"{"took":5,"timed_out":false,"_shards":<_shards:{"total":1}>,"hits":{"total":{"value":2},"max_score":1.0,"hits":[<hit:{"_id":"a","_source":{"s":"]}\"{"}}>,<hit:{"_id":"b"}>]},"aggregations":<aggregations:{"x":{"value":1}}>}"#;
        for size in [1, 2, 3, 7, 16, 1000] {
            assert_eq!(chunked(input, size).unwrap(), want, "chunks of {size}");
        }
    }

    #[test]
    fn whitespace_and_empty_containers_are_kept() {
        let input = "{\n  \"hits\" : {\n    \"hits\" : [ ]\n  },\n  \"e\" : { } ,\"n\":-1.5e3 }\n";
        assert_eq!(whole(input).unwrap(), input);
        for size in [1, 2, 5] {
            assert_eq!(chunked(input, size).unwrap(), input);
        }
        let input = "{ \"hits\" : { \"hits\" : [ {\"a\":1} , 2 ] } }";
        assert_eq!(
            whole(input).unwrap(),
            "{ \"hits\" : { \"hits\" : [ <hit:{\"a\":1}> , <hit:2> ] } }"
        );
        assert_eq!(whole("{}").unwrap(), "{}");
    }

    #[test]
    fn hits_not_shaped_as_expected_are_held_whole() {
        assert_eq!(
            whole(r#"{"hits":[1,2],"x":1}"#).unwrap(),
            r#"{"hits":<hits:[1,2]>,"x":1}"#
        );
        assert_eq!(
            whole(r#"{"hits":{"hits":{"a":1}}}"#).unwrap(),
            r#"{"hits":{"hits":<hits.hits:{"a":1}>}}"#
        );
        // `hits` deeper than the response's own is not a hit list.
        assert_eq!(
            whole(r#"{"other":{"hits":{"hits":[1]}}}"#).unwrap(),
            r#"{"other":{"hits":{"hits":[1]}}}"#
        );
    }

    /// A hit the reversal refuses breaks the stream off, wherever the
    /// chunks fall: nothing after it, and not the hit itself, is written.
    #[test]
    fn a_refused_hit_breaks_the_stream_off() {
        let input = r#"{"hits":{"hits":[{"_id":"a"},"refuse",{"_id":"b"}]}}"#;
        for size in [1, 2, 5, 1000] {
            let mut s = SearchStream::new(Mark, 1 << 20);
            let mut out = Vec::new();
            let failed = input
                .as_bytes()
                .chunks(size)
                .try_for_each(|c| s.feed(c, &mut out))
                .and_then(|()| s.finish(&mut out));
            assert_eq!(
                failed,
                Err(StreamError("refused".into())),
                "chunks of {size}"
            );
            let text = String::from_utf8(out).unwrap();
            assert!(
                !text.contains("refuse") && !text.contains("\"b\""),
                "{text}"
            );
        }
    }

    #[test]
    fn what_is_not_a_complete_object_is_an_error() {
        for bad in [
            "[1]",
            "{\"a\":1",
            "{\"hits\":{\"hits\":[{\"a\":1}",
            "{\"a\" 1}",
            "{\"a\":1,}",
            "{\"a\":1}x",
            "{\"hits\":{\"hits\":[,]}}",
            "",
        ] {
            assert!(whole(bad).is_err(), "{bad:?}");
            assert!(chunked(bad, 1).is_err(), "{bad:?} byte by byte");
        }
    }

    #[test]
    fn a_hit_larger_than_the_bound_is_an_error() {
        let mut s = SearchStream::new(Mark, 10);
        let mut out = Vec::new();
        let r = s.feed(br#"{"hits":{"hits":[{"a":"0123456789"}]}}"#, &mut out);
        assert!(r.is_err());
        // Nothing of the hit was sent.
        assert!(!String::from_utf8_lossy(&out).contains("0123"));
    }

    #[test]
    fn keys_are_read_with_their_escapes() {
        // `h\u0069ts` is `hits`.
        assert_eq!(
            whole(r#"{"h\u0069ts":{"hits":[1]}}"#).unwrap(),
            r#"{"h\u0069ts":{"hits":[<hit:1>]}}"#
        );
    }
    /// Writes each element whole, marked, and `!` at the end.
    #[derive(Default)]
    struct Listed {
        held: Vec<u8>,
        parts: usize,
    }

    impl Elements for Listed {
        fn part(&mut self, bytes: &[u8], end: bool, out: &mut Vec<u8>) -> Result<(), StreamError> {
            self.held.extend_from_slice(bytes);
            self.parts += 1;
            if end {
                out.extend_from_slice(b"<");
                out.append(&mut self.held);
                out.extend_from_slice(b">");
            }
            Ok(())
        }
        fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), StreamError> {
            out.push(b'!');
            Ok(())
        }
        fn holding(&self) -> usize {
            self.held.capacity()
        }
    }

    fn elements(input: &str, size: usize) -> Result<String, StreamError> {
        let mut s = ElementStream::new(Listed::default(), "docs");
        let mut out = Vec::new();
        for c in input.as_bytes().chunks(size.max(1)) {
            s.feed(c, &mut out)?;
        }
        s.finish(&mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn the_elements_of_the_list_are_handed_on_and_the_rest_read_past() {
        let input = r#"{"took":3,"x":{"docs":[9]}, "docs" : [ {"_id":"a","s":"],\"{"} , null,-1.5e3,"t",[1,{"b":2}] ],"docs":[7],"z":true}"#;
        let want = r#"<{"_id":"a","s":"],\"{"}><null><-1.5e3><"t"><[1,{"b":2}]>!"#;
        for size in [1, 2, 3, 7, 16, 1000] {
            assert_eq!(elements(input, size).unwrap(), want, "chunks of {size}");
        }
        assert_eq!(elements(r#"{"docs":[]}"#, 1).unwrap(), "!");
        assert_eq!(elements("{}", 1).unwrap(), "!");
        assert_eq!(elements(r#" {"docs":{"a":[1]}} "#, 1).unwrap(), "!");
    }

    #[test]
    fn a_large_element_is_handed_on_in_parts() {
        let big = format!(r#"{{"docs":[{{"s":"{}"}}]}}"#, "x".repeat(10_000));
        let mut s = ElementStream::new(Listed::default(), "docs");
        let mut out = Vec::new();
        for c in big.as_bytes().chunks(1000) {
            s.feed(c, &mut out).unwrap();
        }
        s.finish(&mut out).unwrap();
        assert!(s.elements.parts >= 10, "{} parts", s.elements.parts);
        assert_eq!(out.len(), big.len() - r#"{"docs":[]}"#.len() + 3);
    }

    #[test]
    fn a_list_answer_that_is_not_complete_is_an_error() {
        for bad in [
            "[1]",
            r#"{"docs":[1"#,
            r#"{"docs":[{"a":1}"#,
            r#"{"docs":[1,]}"#,
            r#"{"docs":[,]}"#,
            r#"{"docs" 1}"#,
            r#"{"a":1,}"#,
            r#"{"docs":[]}x"#,
            r#"{"docs":[1 2]}"#,
            "",
        ] {
            assert!(elements(bad, 1000).is_err(), "{bad:?}");
            assert!(elements(bad, 1).is_err(), "{bad:?} byte by byte");
        }
    }
}
