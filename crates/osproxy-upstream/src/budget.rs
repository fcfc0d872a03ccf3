//! The process-wide budget of request bytes held in memory.
//!
//! Each request's body is bounded on its own (`MAX_BUFFERED`,
//! `server.max_decompressed_body`), but their sum is not: many requests at
//! once (an HTTP/2 connection carries 256 streams), or compressed bodies
//! that decode a hundredfold, could hold gigabytes. Every body osproxy reads
//! whole, and every bulk's buffered lines and batches, is charged here as
//! it grows (before it grows, where the growth is known); past
//! `server.max_buffered_total` the request is refused `503 overloaded`
//! (retryable, `Retry-After`), never queued, so a client that holds memory
//! cannot make others wait for it either.
//!
//! Each byte held counts twice ([`PARSE_FACTOR`]): what osproxy holds it
//! also parses (a search body into its confinement's tree, a bulk line into
//! its metadata), and the parse can be as large as the bytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use prometheus_client::metrics::gauge::Gauge;

use osproxy_core::{ErrorCode, ProxyError};

/// What each byte held counts for: itself and its parse.
pub const PARSE_FACTOR: u64 = 2;

/// The default budget: 512 MiB (a body of the largest size read whole,
/// 100 MiB, counts 400 MiB while its frames are joined).
pub const DEFAULT_LIMIT: u64 = 512 * 1024 * 1024;

static LIMIT: AtomicU64 = AtomicU64::new(DEFAULT_LIMIT);
static HELD: AtomicU64 = AtomicU64::new(0);
static GAUGE: OnceLock<Gauge> = OnceLock::new();

/// Keeps `gauge` (`osproxy_buffered_request_bytes`) at what is held; the
/// first gauge given is the one kept.
pub fn report_to(gauge: Gauge) {
    let _ = GAUGE.set(gauge);
    report();
}

fn report() {
    if let Some(g) = GAUGE.get() {
        g.set(i64::try_from(held()).unwrap_or(i64::MAX));
    }
}

/// Sets the budget (`server.max_buffered_total`); charges already held are
/// kept.
pub fn set_limit(bytes: u64) {
    LIMIT.store(bytes, Ordering::Relaxed);
}

/// The bytes charged now, across all requests.
pub fn held() -> u64 {
    HELD.load(Ordering::Relaxed)
}

/// Refuses (`503 overloaded`, retryable) when the budget is already spent:
/// asked before a request whose answer must not be broken off (a scroll
/// page, once asked for, has advanced the scroll) is sent, so that such
/// answers are charged past the limit only by those admitted while it had
/// room, never by a stream of new ones.
pub fn admit_unbreakable(what: &str) -> Result<(), ProxyError> {
    admit_unbreakable_freeing(what, 0)
}

/// [`admit_unbreakable`] for a request whose sending gives back `freed`
/// bytes already charged (a bulk batch's own body): those do not count
/// against it, so that sending batches to relieve a full budget is not
/// refused by their own share of it.
pub fn admit_unbreakable_freeing(what: &str, freed: u64) -> Result<(), ProxyError> {
    let limit = LIMIT.load(Ordering::Relaxed);
    let held = held().saturating_sub(freed.saturating_mul(PARSE_FACTOR));
    if held < limit {
        return Ok(());
    }
    Err(ProxyError::new(
        ErrorCode::Overloaded,
        format!(
            "osproxy is holding {} MiB for request bodies and answers (each byte counted with its parse), its limit (server.max_buffered_total) is {} MiB; {what} was not sent to the cluster (nothing changed): retry shortly",
            held / (1024 * 1024),
            limit / (1024 * 1024)
        ),
    )
    .retryable(true))
}

/// What a cluster's answer answers, for the budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answering {
    /// A read: an answer the budget cannot cover is not read further and
    /// the request is refused `503 overloaded` (retryable: nothing changed).
    Read,
    /// A request that may have changed something (a write, an index's
    /// creation, a page that advanced a scroll): its answer is always read
    /// and told, charged past the budget if need be (later requests are
    /// refused until it is given back).
    Change,
}

/// One request's share of the budget; given back when dropped.
#[derive(Debug, Default)]
pub struct Charge {
    bytes: u64,
}

impl Charge {
    /// Makes the charge `total` bytes: more is taken from the budget
    /// (refused, with nothing taken, when the budget cannot cover it), less
    /// is given back.
    pub fn set(&mut self, held: u64) -> Result<(), ProxyError> {
        let total = held.saturating_mul(PARSE_FACTOR);
        if total <= self.bytes {
            HELD.fetch_sub(self.bytes - total, Ordering::Relaxed);
            self.bytes = total;
            report();
            return Ok(());
        }
        let extra = total - self.bytes;
        let limit = LIMIT.load(Ordering::Relaxed);
        HELD.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            held.checked_add(extra).filter(|&n| n <= limit)
        })
        .map_err(|held| overloaded(held, limit))?;
        self.bytes = total;
        report();
        Ok(())
    }

    /// Makes the charge `held` bytes whatever the budget: for what must be
    /// held anyway (the answer to a write, which must be told). Past the
    /// limit, later requests are refused until it is given back.
    pub fn force(&mut self, held: u64) {
        let total = held.saturating_mul(PARSE_FACTOR);
        if total <= self.bytes {
            HELD.fetch_sub(self.bytes - total, Ordering::Relaxed);
        } else {
            HELD.fetch_add(total - self.bytes, Ordering::Relaxed);
        }
        self.bytes = total;
        report();
    }

    /// Makes the charge `held` bytes as `answering` allows: refused when
    /// the budget cannot cover a read, forced for an answer to a change.
    pub fn take(&mut self, held: u64, answering: Answering) -> Result<(), ProxyError> {
        match answering {
            Answering::Read => self.set(held),
            Answering::Change => {
                self.force(held);
                Ok(())
            }
        }
    }

    /// What this charge counts for on the budget (twice the bytes held).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.bytes > 0 {
            HELD.fetch_sub(self.bytes, Ordering::Relaxed);
            report();
        }
    }
}

fn overloaded(held: u64, limit: u64) -> ProxyError {
    ProxyError::new(
        ErrorCode::Overloaded,
        format!(
            "osproxy is holding {} MiB for request bodies (each byte counted with its parse), its limit (server.max_buffered_total) is {} MiB; this request was not read further and what it had not yet sent was not applied: retry shortly",
            held / (1024 * 1024),
            limit / (1024 * 1024)
        ),
    )
    .retryable(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the budget is process-wide.
    #[test]
    fn charges_are_bounded_by_the_limit_and_given_back() {
        set_limit(1000);
        let base = held();
        let mut a = Charge::default();
        a.set(300).unwrap();
        assert_eq!(a.bytes(), 600);
        let mut b = Charge::default();
        let e = b.set(250).unwrap_err();
        assert_eq!(e.code, ErrorCode::Overloaded);
        assert!(e.retryable);
        assert_eq!(b.bytes(), 0);
        b.set(200).unwrap();
        a.set(50).unwrap();
        assert_eq!(held(), base + 500);
        b.set(450).unwrap();
        // Forced past the limit, and later charges refused until it is
        // given back.
        let mut c = Charge::default();
        c.force(400);
        assert_eq!(held(), base + 1800);
        assert!(Charge::default().set(1).is_err());
        // Nor is an answer that must not be broken off asked for.
        let e = admit_unbreakable("this scroll's page").unwrap_err();
        assert_eq!(e.code, ErrorCode::Overloaded);
        assert!(
            e.retryable && e.reason.contains("was not sent"),
            "{}",
            e.reason
        );
        c.force(10);
        assert_eq!(held(), base + 1020);
        drop(c);
        drop(a);
        drop(b);
        assert_eq!(held(), base);
        admit_unbreakable("this scroll's page").unwrap();
        set_limit(DEFAULT_LIMIT);
    }
}
