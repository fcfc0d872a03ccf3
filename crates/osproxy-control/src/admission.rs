//! Write admission: which writes to logical indices this instance may let
//! through, and which it has let through and not yet seen answered.
//!
//! Two rules keep a migration from losing an acknowledged write (design:
//! invariants M5 and M6, docs/migrations.md "What a write must prove"):
//!
//! - **Admit only under a held lease and a fresh snapshot.** With etcd, a
//!   write is admitted only while this instance can prove it is in the
//!   fleet — its lease's last keep-alive, counted from when it was *sent*,
//!   is younger than the lease TTL minus a margin, on the monotonic clock —
//!   and its snapshot is fresh. A write is *acknowledged* only if the same
//!   lease still holds when the cluster has answered ([`WriteTicket::held`]):
//!   an instance that was paused or cut off past its lease answers "outcome
//!   unknown" instead of 200, since a barrier may have passed without it.
//! - **Count what is in flight, by the revision it was admitted under.**
//!   Each published snapshot opens a generation; an admitted write holds a
//!   ticket of the generation current when it was admitted until its answer
//!   is back. The fleet record shows the oldest generation with writes in
//!   flight ([`Admission::inflight_from`]); a migration's barrier waits
//!   until every instance's is at or past the cutover, instead of sleeping
//!   for a guessed settle time.
//!
//! The memory backend holds its "lease" for ever: one instance, no fleet.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

/// Milliseconds on a clock that only moves forward and keeps counting
/// while the machine is suspended (Linux `CLOCK_BOOTTIME`): a wall-clock
/// step cannot move it, and a host that slept past the lease sees the time
/// pass (the plain monotonic clock stops during a suspend). Where the boot
/// clock cannot be read, the monotonic clock since the process first asked.
pub fn mono_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` only writes the `timespec` it is given, which
    // lives on this stack frame for the whole call.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } == 0;
    if ok {
        return (ts.tv_sec as u64).saturating_mul(1000) + (ts.tv_nsec as u64) / 1_000_000;
    }
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The writes admitted while one snapshot revision was current.
#[derive(Debug)]
pub struct Generation {
    revision: u64,
    writers: AtomicUsize,
}

/// Admission state of one instance.
#[derive(Debug)]
pub struct Admission {
    current: ArcSwap<Generation>,
    /// Generations that may still have writers, oldest first.
    open: Mutex<VecDeque<Arc<Generation>>>,
    /// Monotonic ms until which the lease is proven held (`u64::MAX`: no
    /// lease needed, memory backend; 0: not held).
    lease_until: AtomicU64,
    /// Bumped whenever a new lease is taken: a ticket of an older lease is
    /// not acknowledged (the instance was out of the fleet in between).
    lease_epoch: AtomicU64,
}

impl Admission {
    /// Admission for a plane at `revision`; `leased` when writes need a
    /// lease (etcd), none held yet.
    pub fn new(revision: u64, leased: bool) -> Self {
        let g = Arc::new(Generation {
            revision,
            writers: AtomicUsize::new(0),
        });
        Admission {
            current: ArcSwap::new(g.clone()),
            open: Mutex::new(VecDeque::from([g])),
            lease_until: AtomicU64::new(if leased { 0 } else { u64::MAX }),
            lease_epoch: AtomicU64::new(0),
        }
    }

    /// Opens the generation of a newly published revision (called after the
    /// snapshot is swapped in, so a write that joins this generation checks
    /// itself against that snapshot or a newer one).
    pub(crate) fn advance(&self, revision: u64) {
        if self.current.load().revision >= revision {
            return;
        }
        let g = Arc::new(Generation {
            revision,
            writers: AtomicUsize::new(0),
        });
        if let Ok(mut open) = self.open.lock() {
            open.push_back(g.clone());
        }
        self.current.store(g);
    }

    /// Joins the current generation; the returned guard leaves it when
    /// dropped. Taken *before* the snapshot a write is checked against is
    /// loaded.
    pub(crate) fn join(&self) -> (Arc<Generation>, u64) {
        let g = self.current.load_full();
        g.writers.fetch_add(1, Ordering::AcqRel);
        (g, self.lease_epoch.load(Ordering::Acquire))
    }

    /// The oldest revision under which a write still in flight was
    /// admitted; `None` when nothing is in flight.
    pub fn inflight_from(&self) -> Option<u64> {
        let current = self.current.load().revision;
        let mut open = self.open.lock().ok()?;
        while let Some(front) = open.front() {
            if front.writers.load(Ordering::Acquire) == 0 && front.revision < current {
                open.pop_front();
            } else {
                break;
            }
        }
        open.iter()
            .find(|g| g.writers.load(Ordering::Acquire) > 0)
            .map(|g| g.revision)
    }

    /// Whether the lease is proven held now.
    pub fn lease_held(&self) -> bool {
        mono_ms() < self.lease_until.load(Ordering::Acquire)
    }

    /// A new lease was granted: tickets of earlier leases are no longer
    /// acknowledged.
    pub(crate) fn lease_granted(&self) {
        self.lease_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// etcd confirmed the lease for a keep-alive (or grant) sent at
    /// `sent_ms` (monotonic): it lives at least its TTL from then; it is
    /// counted held for `held` (the TTL less a margin) from then.
    pub(crate) fn lease_confirmed(&self, sent_ms: u64, held: Duration) {
        let until = sent_ms.saturating_add(held.as_millis() as u64);
        self.lease_until.fetch_max(until, Ordering::AcqRel);
    }

    /// From now on writes need a confirmed lease (an etcd store is being
    /// attached).
    pub(crate) fn require_lease(&self) {
        self.lease_until.store(0, Ordering::Release);
    }

    /// The lease is lost (or its keep-alive failed): no more writes until a
    /// new one is confirmed.
    pub(crate) fn lease_lost(&self) {
        if self.lease_until.load(Ordering::Acquire) != u64::MAX {
            self.lease_until.store(0, Ordering::Release);
        }
    }

    fn lease_epoch(&self) -> u64 {
        self.lease_epoch.load(Ordering::Acquire)
    }
}

/// One admitted write, counted in flight until dropped.
#[derive(Debug)]
pub struct WriteTicket {
    plane: Arc<crate::ControlPlane>,
    generation: Arc<Generation>,
    lease_epoch: u64,
}

impl WriteTicket {
    pub(crate) fn new(plane: Arc<crate::ControlPlane>, joined: (Arc<Generation>, u64)) -> Self {
        WriteTicket {
            plane,
            generation: joined.0,
            lease_epoch: joined.1,
        }
    }

    /// The revision the write was admitted under.
    pub fn revision(&self) -> u64 {
        self.generation.revision
    }

    /// Whether the write may be acknowledged: the lease it was admitted
    /// under is still held (no pause or cut-off past the lease since).
    pub fn held(&self) -> bool {
        let a = &self.plane.admission;
        a.lease_held() && a.lease_epoch() == self.lease_epoch
    }
}

impl Drop for WriteTicket {
    fn drop(&mut self) {
        let last = self.generation.writers.fetch_sub(1, Ordering::AcqRel) == 1;
        if last && self.generation.revision < self.plane.admission.current.load().revision {
            // The oldest in-flight revision may have moved: the fleet
            // record shows it.
            self.plane.record_changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(a: &Admission) -> Arc<Generation> {
        a.join().0
    }

    fn leave(g: &Generation) {
        g.writers.fetch_sub(1, Ordering::AcqRel);
    }

    #[test]
    fn the_oldest_generation_with_writes_in_flight_is_reported() {
        let a = Admission::new(5, false);
        assert_eq!(a.inflight_from(), None);
        let w5 = join(&a);
        a.advance(6);
        let w6 = join(&a);
        a.advance(7);
        assert_eq!(a.inflight_from(), Some(5));
        leave(&w5);
        assert_eq!(a.inflight_from(), Some(6));
        leave(&w6);
        assert_eq!(a.inflight_from(), None);
        // Drained generations are forgotten, the current one kept.
        assert_eq!(a.open.lock().unwrap().len(), 1);
        let w7 = join(&a);
        assert_eq!(w7.revision, 7);
        assert_eq!(a.inflight_from(), Some(7));
    }

    #[test]
    fn an_older_revision_does_not_open_a_generation() {
        let a = Admission::new(5, false);
        a.advance(4);
        a.advance(5);
        assert_eq!(join(&a).revision, 5);
        assert_eq!(a.open.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_lease_is_held_from_its_confirmation_until_ttl_less_the_margin() {
        let a = Admission::new(1, true);
        assert!(!a.lease_held(), "no lease before the first confirmation");
        a.lease_granted();
        a.lease_confirmed(mono_ms(), Duration::from_secs(8));
        assert!(a.lease_held());
        // A confirmation held for nothing proves nothing now.
        let b = Admission::new(1, true);
        b.lease_confirmed(mono_ms(), Duration::ZERO);
        assert!(!b.lease_held());
        a.lease_lost();
        assert!(!a.lease_held());
        // The memory backend's "lease" cannot be lost.
        let m = Admission::new(1, false);
        m.lease_lost();
        assert!(m.lease_held());
    }
}
