//! Per-tenant limits and the request's account.
//!
//! The limits document (config `[limits]`, the control plane's `limits`
//! key) gives a partition budgets for the whole fleet: read and write
//! requests a second, documents a second, request body bytes a second,
//! requests at once. Each instance enforces its share: the budget divided
//! by the live instances in the fleet records (re-read as instances join
//! and leave), so the fleet admits about the budget with no per-request
//! network I/O.
//!
//! Rates are kept as GCRA buckets (one atomic per bucket, no lock): a
//! bucket holds one second of its share, so a partition that was idle may
//! burst that much at once. Request rates are strict (a request that does
//! not fit is refused); documents and bytes are charged as they are read
//! and may leave the bucket in debt, and a request is refused while its
//! partition is in debt. So a bulk is admitted or refused whole before any
//! item is written, never half-applied; what it wrote beyond the budget is
//! paid back by the requests after it.
//!
//! The account of one request ties it to its partitions: usage rows,
//! the concurrency slot (held until the response has been sent) and,
//! for diagnostics, the limit that refused it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use http::Method;
use osproxy_config::PartitionLimits;
use osproxy_control::ControlPlane;
use osproxy_core::{EndpointKind, ErrorCode, ProxyError};
use osproxy_observe::trace::{Name, Value};
use osproxy_observe::usage::{Usage, UsageRow};

/// Whether a request reads or writes, for the two request rates, and
/// whether it writes documents (held back while the documents bucket is
/// in debt; a refresh or a mapping change is not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Search, count, get, mget, msearch, scroll, PIT, metadata reads.
    Read,
    /// Index, update, delete, bulk, by-query.
    WriteDocuments,
    /// Index management (create, refresh, mapping and settings changes).
    Write,
}

impl Class {
    /// The class of a request on a logical index.
    pub fn of(kind: EndpointKind, method: &Method) -> Class {
        let reads = *method == Method::GET || *method == Method::HEAD;
        match kind {
            EndpointKind::Bulk | EndpointKind::Update | EndpointKind::ByQuery => {
                Class::WriteDocuments
            }
            EndpointKind::Document if !reads => Class::WriteDocuments,
            EndpointKind::IndexAdmin if !reads => Class::Write,
            _ => Class::Read,
        }
    }
}

/// Partitions whose bucket state is kept at most; past it the states are
/// dropped (and start full again): a bound on what a client naming many
/// partitions can make an instance hold.
const MAX_TRACKED: usize = 100_000;

/// The key of the bucket partitions past [`MAX_TRACKED`] share (a
/// partition id is at least one character).
const OVERFLOW: &str = "";

/// The state `partition` is limited by, made and kept in `states` (at most
/// `max` of them, besides partitions with limits of their own, `own`).
/// When the table is full of states that would lose something if
/// dropped, the rest share one bucket of the default limits: a client
/// naming ever more partitions is limited together, never let free.
fn track(
    states: &mut HashMap<String, Arc<Limited>>,
    partition: &str,
    own: bool,
    (l, built_for, now): (&PartitionLimits, (u64, u64), u64),
    max: usize,
    swept: &AtomicU64,
) -> Arc<Limited> {
    // Looked up again under the write lock: another request may have
    // made it since the read.
    let old = states.get(partition).cloned();
    if let Some(s) = old.as_ref().filter(|s| s.built_for == built_for) {
        return s.clone();
    }
    if old.is_none() && !own && states.len() >= max {
        // Only states that lose nothing are dropped, in one sweep a second
        // at most (a sweep reads every state, under the write lock).
        let last = swept.load(Ordering::Relaxed);
        if last == 0 || now.saturating_sub(last) >= 1_000_000_000 {
            swept.store(now.max(1), Ordering::Relaxed);
            states.retain(|_, s| !s.idle(now));
        }
        if states.len() >= max {
            if let Some(s) = states.get(OVERFLOW).filter(|s| s.built_for == built_for) {
                return s.clone();
            }
            let s = Arc::new(Limited::new(l, built_for, None, now));
            states.insert(OVERFLOW.to_string(), s.clone());
            return s;
        }
    }
    let s = Arc::new(Limited::new(l, built_for, old.as_deref(), now));
    states.insert(partition.to_string(), s.clone());
    s
}

/// A rate, as a GCRA bucket on the limiter's clock (nanoseconds since its
/// origin): `tat` is when the bucket is full again.
#[derive(Debug)]
struct Bucket {
    /// Nanoseconds one unit costs (1e9 / this instance's share).
    interval: f64,
    /// How far ahead of now `tat` may run: one second, or one unit when a
    /// unit costs more.
    window: u64,
    tat: AtomicU64,
    /// The fleet's budget and this instance's share, for messages.
    budget: f64,
    share: f64,
}

impl Bucket {
    fn new(budget: f64, fleet: u64) -> Bucket {
        let share = budget / fleet as f64;
        // Rates are at least MIN_RATE, so this stays far below u64::MAX
        // (a saturated window would admit everything).
        let interval = (1e9 / share).min(1e18);
        Bucket {
            interval,
            window: interval.max(1e9) as u64,
            tat: AtomicU64::new(0),
            budget,
            share,
        }
    }

    /// A bucket for a new budget or fleet size that keeps what `old` had
    /// outstanding (the units not yet paid back), so a change forgives no
    /// debt and grants no fresh burst.
    fn carried(budget: f64, fleet: u64, old: Option<&Bucket>, now: u64) -> Bucket {
        let b = Bucket::new(budget, fleet);
        if let Some(old) = old {
            let ahead = old.tat.load(Ordering::Relaxed).saturating_sub(now);
            let units = ahead as f64 / old.interval;
            let tat = now as f64 + units * b.interval;
            b.tat
                .store(tat.min(u64::MAX as f64 / 4.0) as u64, Ordering::Relaxed);
        }
        b
    }

    /// Whether it is full (nothing outstanding).
    fn idle(&self, now: u64) -> bool {
        self.tat.load(Ordering::Relaxed) <= now
    }

    fn cost(&self, units: u64) -> u64 {
        (units as f64 * self.interval).min(u64::MAX as f64 / 4.0) as u64
    }

    /// Takes `units` if they fit; else how long until they would.
    fn take(&self, now: u64, units: u64) -> Result<(), u64> {
        let cost = self.cost(units);
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now).saturating_add(cost);
            let limit = now.saturating_add(self.window);
            if next > limit {
                return Err(next - limit);
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(seen) => tat = seen,
            }
        }
    }

    /// How long until one unit would fit again, when none does now.
    fn debt(&self, now: u64) -> Option<u64> {
        let next = self
            .tat
            .load(Ordering::Relaxed)
            .max(now)
            .saturating_add(self.cost(1));
        let limit = now.saturating_add(self.window);
        (next > limit).then(|| next - limit)
    }

    /// Charges `units`, into debt if need be.
    fn charge(&self, now: u64, units: u64) {
        let cost = self.cost(units);
        let _ = self
            .tat
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                Some(tat.max(now).saturating_add(cost))
            });
    }
}

/// One partition's buckets, built for one limits epoch and fleet size.
#[derive(Debug)]
struct Limited {
    built_for: (u64, u64),
    reads: Option<Bucket>,
    writes: Option<Bucket>,
    documents: Option<Bucket>,
    bytes: Option<Bucket>,
    /// The fleet's concurrent requests, this instance's share, and those
    /// in use (shared with the states this one replaces and is replaced
    /// by, so requests in flight across a change are still counted).
    concurrent: Option<(u32, u32, Arc<AtomicU32>)>,
    in_use: Arc<AtomicU32>,
}

impl Limited {
    /// The buckets for `l`, carrying over what `old` (the partition's
    /// previous state) had outstanding.
    fn new(l: &PartitionLimits, built_for: (u64, u64), old: Option<&Limited>, now: u64) -> Limited {
        let fleet = built_for.1;
        let bucket = |r: Option<f64>, was: Option<&Option<Bucket>>| {
            r.map(|r| Bucket::carried(r, fleet, was.and_then(Option::as_ref), now))
        };
        let in_use = old.map_or_else(|| Arc::new(AtomicU32::new(0)), |o| o.in_use.clone());
        Limited {
            built_for,
            reads: bucket(l.reads_per_second, old.map(|o| &o.reads)),
            writes: bucket(l.writes_per_second, old.map(|o| &o.writes)),
            documents: bucket(l.documents_per_second, old.map(|o| &o.documents)),
            bytes: bucket(
                l.bytes_per_second.map(|b| b.bytes() as f64),
                old.map(|o| &o.bytes),
            ),
            concurrent: l.concurrent_requests.map(|c| {
                let share = u32::try_from(u64::from(c).div_ceil(fleet))
                    .unwrap_or(c)
                    .max(1);
                (c, share, in_use.clone())
            }),
            in_use,
        }
    }

    /// Whether dropping it loses nothing: every bucket full, no request in
    /// flight.
    fn idle(&self, now: u64) -> bool {
        [&self.reads, &self.writes, &self.documents, &self.bytes]
            .into_iter()
            .flatten()
            .all(|b| b.idle(now))
            && self.in_use.load(Ordering::Acquire) == 0
    }
}

/// The per-tenant limits of this instance.
#[derive(Debug)]
pub struct Limiter {
    control: Arc<ControlPlane>,
    states: RwLock<HashMap<String, Arc<Limited>>>,
    /// When the states were last swept for idle ones (see [`track`]).
    swept: AtomicU64,
    origin: Instant,
}

/// Which limit refused a request, for the error and the explanation.
struct Over {
    limit: &'static str,
    /// The fleet's budget and this instance's share, as numbers.
    budget: String,
    share: String,
    /// `/s` for a rate, empty for a count.
    unit: &'static str,
    wait: Duration,
}

impl Over {
    fn rate(name: &'static str, b: &Bucket, wait: u64) -> Over {
        Over {
            limit: name,
            budget: trim(b.budget),
            share: trim(b.share),
            unit: "/s",
            wait: Duration::from_nanos(wait),
        }
    }
}

impl Limiter {
    /// Limits as the control plane's snapshot says.
    pub fn new(control: Arc<ControlPlane>) -> Self {
        Limiter {
            control,
            states: RwLock::new(HashMap::new()),
            swept: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The buckets of `partition`, when it is limited (one snapshot load
    /// and nothing else when no limits are published).
    fn state(&self, partition: &str) -> Option<Arc<Limited>> {
        let snap = self.control.load();
        let (limits, epoch) = snap.limits()?;
        let l = limits.of(partition)?;
        let built_for = (*epoch, self.control.fleet_size());
        if let Some(s) = self
            .states
            .read()
            .ok()
            .and_then(|m| m.get(partition).cloned())
            .filter(|s| s.built_for == built_for)
        {
            return Some(s);
        }
        let mut states = self.states.write().ok()?;
        let now = self.now();
        // Partitions with limits of their own are few (the catalogue
        // bounds them) and always tracked.
        let own = limits.partitions.contains_key(partition);
        Some(track(
            &mut states,
            partition,
            own,
            (l, built_for, now),
            MAX_TRACKED,
            &self.swept,
        ))
    }

    /// Admits one request of `class` for a limited partition, or says which
    /// limit it is over. `bytes`: its body's declared length, charged now.
    fn admit(&self, s: &Arc<Limited>, class: Class, bytes: Option<u64>) -> Result<bool, Over> {
        let now = self.now();
        let rate = Over::rate;
        // Debts first: nothing is taken from a bucket for a request that is
        // then refused by another.
        if let Some(b) = &s.documents {
            if class == Class::WriteDocuments {
                if let Some(w) = b.debt(now) {
                    return Err(rate("documents_per_second", b, w));
                }
            }
        }
        if let Some(b) = &s.bytes {
            if let Some(w) = b.debt(now) {
                return Err(rate("bytes_per_second", b, w));
            }
        }
        let (name, bucket) = match class {
            Class::Read => ("reads_per_second", &s.reads),
            Class::Write | Class::WriteDocuments => ("writes_per_second", &s.writes),
        };
        if let Some((budget, share, used)) = &s.concurrent {
            let taken = used
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                    (u < *share).then_some(u + 1)
                })
                .is_ok();
            if !taken {
                return Err(Over {
                    limit: "concurrent_requests",
                    budget: budget.to_string(),
                    share: share.to_string(),
                    unit: "",
                    wait: Duration::from_secs(1),
                });
            }
        }
        if let Some(b) = bucket {
            if let Err(w) = b.take(now, 1) {
                if let Some((_, _, used)) = &s.concurrent {
                    used.fetch_sub(1, Ordering::AcqRel);
                }
                return Err(rate(name, b, w));
            }
        }
        if let (Some(b), Some(n)) = (&s.bytes, bytes) {
            b.charge(now, n);
        }
        Ok(s.concurrent.is_some())
    }
}

/// A rate without a trailing `.0`, to at most two decimals.
fn trim(r: f64) -> String {
    let s = format!("{r:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

tokio::task_local! {
    static ACCOUNT: Arc<Account>;
}

/// One partition a request acts for.
struct Seat {
    row: Arc<UsageRow>,
    limited: Option<Arc<Limited>>,
    /// Holds a concurrency slot of `limited`.
    slot: bool,
}

impl Drop for Seat {
    fn drop(&mut self) {
        if let (true, Some(l)) = (self.slot, &self.limited) {
            if let Some((_, _, used)) = &l.concurrent {
                used.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// The partitions one request acts for, the first one apart (what is not
/// an item's own is charged to it: the body of a plain request, response
/// bytes, upstream time).
#[derive(Default)]
struct Seats {
    by_partition: HashMap<String, Seat>,
    first: Option<String>,
}

impl Seats {
    fn first(&self) -> Option<&Seat> {
        self.first.as_ref().and_then(|p| self.by_partition.get(p))
    }
}

/// The most partitions one request may act for (a gateway's bulk or
/// multi-search): a bound on what one request makes an instance track.
pub const MAX_PARTITIONS_PER_REQUEST: usize = 10_000;

/// What one request is charged to: its partitions (usually one).
pub struct Account {
    limiter: Arc<Limiter>,
    metrics: Arc<osproxy_observe::Metrics>,
    class: Class,
    /// The body's declared length (charged on admission), if any.
    declared: Option<u64>,
    /// Body bytes read before the request had a partition (a body that
    /// declared no length), charged with its first one.
    read_early: AtomicU64,
    seats: Mutex<Seats>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("class", &self.class)
            .finish()
    }
}

impl Account {
    /// The account of a request of `class` whose body declares `declared`
    /// bytes (`Content-Length`).
    pub fn new(
        limiter: Arc<Limiter>,
        metrics: Arc<osproxy_observe::Metrics>,
        class: Class,
        declared: Option<u64>,
    ) -> Arc<Account> {
        Arc::new(Account {
            limiter,
            metrics,
            class,
            declared,
            read_early: AtomicU64::new(0),
            seats: Mutex::new(Seats::default()),
        })
    }

    /// Runs `f` with this account as the current one.
    pub async fn scope<F: std::future::Future>(self: Arc<Self>, f: F) -> F::Output {
        ACCOUNT.scope(self, f).await
    }

    fn usage(&self) -> &Usage {
        self.metrics.usage()
    }

    /// Charges the request to `partition` (once per partition): counted in
    /// its usage, admitted by its limits or refused with 429.
    fn seat(&self, partition: &str) -> Result<(), ProxyError> {
        let Ok(mut seats) = self.seats.lock() else {
            return Ok(());
        };
        if seats.by_partition.contains_key(partition) {
            return Ok(());
        }
        if seats.by_partition.len() >= MAX_PARTITIONS_PER_REQUEST {
            return Err(ProxyError::new(
                ErrorCode::BadRequest,
                format!("a request may act for at most {MAX_PARTITIONS_PER_REQUEST} partitions; split it"),
            ));
        }
        let row = self.usage().request(partition);
        // The body of a plain request is charged to its first partition.
        let body = seats.first.is_none().then(|| {
            self.declared
                .unwrap_or_else(|| self.read_early.load(Ordering::Relaxed))
        });
        if let Some(n) = body {
            row.request_bytes(n);
        }
        let limited = self.limiter.state(partition);
        let mut slot = false;
        if let Some(l) = &limited {
            match self.limiter.admit(l, self.class, body) {
                Ok(s) => slot = s,
                Err(over) => {
                    row.limited.fetch_add(1, Ordering::Relaxed);
                    self.metrics.limited(over.limit);
                    return Err(refusal(partition, &over));
                }
            }
        }
        if seats.first.is_none() {
            seats.first = Some(partition.to_string());
        }
        seats
            .by_partition
            .insert(partition.to_string(), Seat { row, limited, slot });
        Ok(())
    }

    /// One more request of this request's class for a partition it acts
    /// for already (a multi-search's second search of it).
    fn again(&self, partition: &str) -> Result<(), ProxyError> {
        let Ok(seats) = self.seats.lock() else {
            return Ok(());
        };
        let Some(seat) = seats.by_partition.get(partition) else {
            return Ok(());
        };
        seat.row.requests.fetch_add(1, Ordering::Relaxed);
        let Some(l) = &seat.limited else {
            return Ok(());
        };
        let (name, bucket) = match self.class {
            Class::Read => ("reads_per_second", &l.reads),
            Class::Write | Class::WriteDocuments => ("writes_per_second", &l.writes),
        };
        let Some(b) = bucket else {
            return Ok(());
        };
        b.take(self.limiter.now(), 1).map_err(|wait| {
            seat.row.limited.fetch_add(1, Ordering::Relaxed);
            self.metrics.limited(name);
            refusal(partition, &Over::rate(name, b, wait))
        })
    }

    /// Adds body bytes read (a body that declared no length), charged to
    /// the first partition.
    fn body_read(&self, n: u64) {
        if self.declared.is_some() {
            return;
        }
        let Ok(seats) = self.seats.lock() else { return };
        match seats.first() {
            Some(s) => {
                s.row.request_bytes(n);
                if let Some(b) = s.limited.as_ref().and_then(|l| l.bytes.as_ref()) {
                    b.charge(self.limiter.now(), n);
                }
            }
            None => {
                self.read_early.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Documents written, and their bytes, for `partition` (one the
    /// request acts for).
    fn item(&self, partition: &str, documents: u64, bytes: u64) {
        let Ok(seats) = self.seats.lock() else { return };
        let Some(s) = seats.by_partition.get(partition) else {
            return;
        };
        let now = self.limiter.now();
        s.row.documents(documents);
        s.row.request_bytes(bytes);
        if let Some(l) = &s.limited {
            if let Some(b) = &l.documents {
                b.charge(now, documents);
            }
            if let Some(b) = &l.bytes {
                b.charge(now, bytes);
            }
        }
    }

    fn upstream(&self, d: Duration) {
        if let Some(s) = self.seats.lock().ok().as_ref().and_then(|s| s.first()) {
            s.row.upstream(d);
        }
    }

    /// Adds response bytes sent, to the first partition.
    pub fn response_bytes(&self, n: u64) {
        if let Some(s) = self.seats.lock().ok().as_ref().and_then(|s| s.first()) {
            s.row.response_bytes(n);
        }
    }
}

/// The 429 of a request over `over`, as OpenSearch shapes a rejection.
fn refusal(partition: &str, over: &Over) -> ProxyError {
    let wait = over.wait.as_secs() + u64::from(over.wait.subsec_nanos() > 0);
    let wait = wait.max(1);
    crate::diagnostics::with(|t| {
        t.record("limit", Value::Name(Name::fixed(over.limit)));
        t.record("limit_fleet", Value::Name(Name::ident(&over.budget)));
        t.record("limit_instance", Value::Name(Name::ident(&over.share)));
        t.record("retry_after_s", Value::Count(wait));
    });
    ProxyError::new(
        ErrorCode::TooManyRequests,
        format!(
            "partition {partition:?} is over its {} limit ({}{unit} for the fleet, {}{unit} on this instance); nothing was applied: retry after {wait} s",
            over.limit,
            over.budget,
            over.share,
            unit = over.unit
        ),
    )
    .retryable(true)
    .retry_after(wait)
}

/// Charges the current request to `partition` (see [`Account::seat`]);
/// a request outside any account (a migration's, a probe's) is not
/// limited.
pub fn seat(partition: &str) -> Result<(), ProxyError> {
    ACCOUNT.try_with(|a| a.seat(partition)).unwrap_or(Ok(()))
}

/// Body bytes read by the current request (see [`Account::body_read`]).
pub fn body_read(n: usize) {
    let _ = ACCOUNT.try_with(|a| a.body_read(n as u64));
}

/// Documents written by the current request for `partition`, and the
/// bytes of their lines (bulk items; 0 for a body charged as a whole).
pub fn item(partition: &str, documents: u64, bytes: u64) {
    let _ = ACCOUNT.try_with(|a| a.item(partition, documents, bytes));
}

/// One more read or write of the current request for `partition` (see
/// [`Account::again`]).
pub fn again(partition: &str) -> Result<(), ProxyError> {
    ACCOUNT.try_with(|a| a.again(partition)).unwrap_or(Ok(()))
}

/// Time the current request waited on a cluster.
pub fn upstream(d: Duration) {
    let _ = ACCOUNT.try_with(|a| a.upstream(d));
}

/// The current account, to carry into a task the request spawns.
pub fn current() -> Option<Arc<Account>> {
    ACCOUNT.try_with(Arc::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_holds_one_second_of_its_share() {
        let b = Bucket::new(10.0, 2); // 5 a second here
        let t = 10_000_000_000;
        for _ in 0..5 {
            assert!(b.take(t, 1).is_ok());
        }
        let wait = b.take(t, 1).unwrap_err();
        assert!((199_000_000..=201_000_000).contains(&wait), "{wait}");
        assert!(b.take(t + 200_000_000, 1).is_ok());
        // Debt: charged past the window, refused until paid back.
        b.charge(t + 200_000_000, 50);
        assert!(b.debt(t + 200_000_000).is_some());
        assert!(b.debt(t + 11_000_000_000).is_none());
    }

    #[test]
    fn a_share_below_one_a_second_still_passes_one() {
        let b = Bucket::new(1.0, 3);
        assert!(b.take(5_000_000_000, 1).is_ok());
        assert!(b.take(5_000_000_000, 1).is_err());
        assert!(b.take(8_000_000_001, 1).is_ok());
    }

    #[test]
    fn a_rebuilt_state_keeps_its_debt_and_its_slots() {
        // Found by review: a limits change or a fleet change rebuilt the
        // buckets full, forgiving every debt and every slot in use.
        let l = PartitionLimits {
            documents_per_second: Some(10.0),
            concurrent_requests: Some(2),
            ..Default::default()
        };
        let now = 5_000_000_000;
        let old = Limited::new(&l, (1, 1), None, now);
        old.documents.as_ref().unwrap().charge(now, 50);
        old.in_use.fetch_add(1, Ordering::AcqRel);
        // Two instances now: 5 a second here, so 50 documents are 10 s.
        let new = Limited::new(&l, (2, 2), Some(&old), now);
        let b = new.documents.as_ref().unwrap();
        assert!(b.debt(now + 8_000_000_000).is_some());
        assert!(b.debt(now + 10_000_000_000).is_none());
        assert_eq!(new.in_use.load(Ordering::Acquire), 1);
        assert!(!new.idle(now + 20_000_000_000));
        new.in_use.fetch_sub(1, Ordering::AcqRel);
        assert!(new.idle(now + 20_000_000_000));
        assert_eq!(old.in_use.load(Ordering::Acquire), 0, "one count, shared");
    }

    /// Found by review: past the tracked partitions, a new partition's
    /// state was made afresh for each request and never kept: unlimited.
    #[test]
    fn partitions_past_the_table_share_a_bucket_and_are_limited() {
        let l = PartitionLimits {
            concurrent_requests: Some(1),
            ..Default::default()
        };
        let now = 1_000_000_000;
        let mut states = HashMap::new();
        let swept = AtomicU64::new(0);
        for p in ["a", "b"] {
            let s = track(&mut states, p, false, (&l, (1, 1), now), 2, &swept);
            s.in_use.fetch_add(1, Ordering::AcqRel); // busy: not idle
        }
        let c1 = track(&mut states, "c", false, (&l, (1, 1), now), 2, &swept);
        c1.in_use.fetch_add(1, Ordering::AcqRel); // its one slot taken
        let d1 = track(&mut states, "d", false, (&l, (1, 1), now), 2, &swept);
        assert!(Arc::ptr_eq(&c1, &d1), "one shared bucket past the table");
        // ... so d is refused while c holds the shared slot.
        assert_eq!(d1.in_use.load(Ordering::Acquire), 1);
        let again = track(&mut states, "c", false, (&l, (1, 1), now), 2, &swept);
        assert!(Arc::ptr_eq(&c1, &again), "kept, not made afresh");
        // A partition with limits of its own is always tracked.
        let own = track(&mut states, "e", true, (&l, (1, 1), now), 2, &swept);
        assert!(!Arc::ptr_eq(&own, &c1));
        assert!(Arc::ptr_eq(
            &own,
            &track(&mut states, "e", true, (&l, (1, 1), now), 2, &swept)
        ));
    }

    #[test]
    fn classes() {
        assert_eq!(Class::of(EndpointKind::Search, &Method::POST), Class::Read);
        assert_eq!(Class::of(EndpointKind::Document, &Method::GET), Class::Read);
        assert_eq!(
            Class::of(EndpointKind::Document, &Method::PUT),
            Class::WriteDocuments
        );
        assert_eq!(
            Class::of(EndpointKind::Bulk, &Method::POST),
            Class::WriteDocuments
        );
        assert_eq!(
            Class::of(EndpointKind::IndexAdmin, &Method::POST),
            Class::Write
        );
        assert_eq!(
            Class::of(EndpointKind::IndexAdmin, &Method::HEAD),
            Class::Read
        );
    }
}
