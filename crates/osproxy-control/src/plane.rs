//! The control plane as the rest of osproxy sees it: one atomically swapped
//! snapshot for the request path, compare-and-swap writes for the admin API,
//! and the instance's following (applied revision, freshness, rejected keys)
//! for the fleet list.
//!
//! Two backends sit behind it. `memory` changes the snapshot directly (one
//! instance; seeded from the config on every start). `etcd` writes to the
//! store with a transaction and lets the watch bring the change back, so
//! every instance, the writer included, applies the same revisions in the
//! same order.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{watch, Notify};

use crate::admission::{mono_ms, Admission, WriteTicket};
use crate::apply::EventOutcome;
use crate::etcd::client::EtcdStore;
use crate::snapshot::Snapshot;
use crate::store::Key;
use crate::write::now_ms;
pub use crate::write::{Conflict, Member, WriteError};

/// How far this instance has followed the store.
#[derive(Debug, Default)]
pub(crate) struct Following {
    /// The store revision every event up to which has been applied.
    pub applied: AtomicU64,
    /// When the snapshot was last confirmed current (an event or a progress
    /// answer), milliseconds since the Unix epoch.
    pub last_fresh_ms: AtomicU64,
    /// The same moment on the monotonic clock ([`mono_ms`]): freshness is
    /// judged by this one, so a wall-clock step cannot make a cut-off
    /// instance look fresh.
    pub fresh_at: AtomicU64,
    /// Keys whose latest value was refused, with a shape-only reason.
    pub rejected: Mutex<BTreeMap<String, String>>,
    /// Values refused since start.
    pub rejections: AtomicU64,
    /// Store events applied since start.
    pub events: AtomicU64,
    /// Watch streams re-established since start.
    pub reconnects: AtomicU64,
    /// Whole-prefix re-reads after a compaction.
    pub reloads: AtomicU64,
    /// The instances with a fleet record (lease-bound), as last seen.
    pub fleet: Mutex<std::collections::BTreeSet<String>>,
    /// How many there are (0 until the first is seen).
    pub fleet_size: AtomicU64,
}

/// Counters an operator scrapes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// Applied revision.
    pub applied_revision: u64,
    /// Milliseconds since the snapshot was last confirmed current.
    pub fresh_age_ms: u64,
    /// Keys currently rejected.
    pub rejected_keys: u64,
    /// Values refused since start.
    pub rejections: u64,
    /// Events applied since start.
    pub events: u64,
    /// Watch reconnects since start.
    pub reconnects: u64,
    /// Compaction re-reads since start.
    pub reloads: u64,
}

/// The control plane of one instance.
#[derive(Debug)]
pub struct ControlPlane {
    pub(crate) current: ArcSwap<Snapshot>,
    pub(crate) writer: Mutex<()>,
    pub(crate) clusters: Vec<String>,
    /// The passthrough cluster and its index prefixes: no placement may put
    /// a tenant's data under a name passthrough would forward.
    pub(crate) passthrough: OnceLock<(String, Option<Vec<String>>)>,
    pub(crate) following: Following,
    /// Woken when something the fleet record shows has changed.
    pub(crate) record_changed: Notify,
    pub(crate) revision_tx: watch::Sender<u64>,
    pub(crate) etcd: OnceLock<Arc<EtcdStore>>,
    /// Set while an etcd store is being connected: writes are refused
    /// until it is attached (they would otherwise land in memory and be
    /// replaced by the store's snapshot).
    pub(crate) store_pending: std::sync::atomic::AtomicBool,
    /// How long without an event or progress answer the snapshot still
    /// counts as fresh (etcd only).
    pub(crate) freshness_bound_ms: AtomicU64,
    /// Which writes may pass, and which are in flight.
    pub(crate) admission: Admission,
}

/// Why a write to a logical index was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotAdmitted {
    /// The instance cannot prove it still holds its fleet lease.
    #[error("this instance cannot prove it still holds its fleet lease (etcd unreachable or the instance was paused); writes to logical indices pause until it does")]
    NoLease,
    /// The snapshot is not proven current.
    #[error("this instance has not heard from the control store within its freshness bound; writes to logical indices pause until it does")]
    Stale,
}

impl ControlPlane {
    /// A memory-backed plane starting from `initial`.
    pub fn new(initial: Snapshot, clusters: Vec<String>) -> Self {
        let revision = initial.revision();
        let plane = ControlPlane {
            current: ArcSwap::from_pointee(initial),
            writer: Mutex::new(()),
            clusters,
            passthrough: OnceLock::new(),
            following: Following::default(),
            record_changed: Notify::new(),
            revision_tx: watch::Sender::new(revision),
            etcd: OnceLock::new(),
            store_pending: std::sync::atomic::AtomicBool::new(false),
            freshness_bound_ms: AtomicU64::new(u64::MAX),
            admission: Admission::new(revision, false),
        };
        plane.following.applied.store(revision, Ordering::Release);
        plane
            .following
            .last_fresh_ms
            .store(now_ms(), Ordering::Release);
        plane.following.fresh_at.store(mono_ms(), Ordering::Release);
        plane
    }

    /// Admits one write to a logical index, or says why not: with etcd, only
    /// under a held lease and a fresh snapshot. The ticket counts the write
    /// in flight until dropped; take it *before* checking the write against
    /// the snapshot (the snapshot then is the ticket's revision or newer).
    pub fn admit_write(self: &Arc<Self>) -> Result<WriteTicket, NotAdmitted> {
        let ticket = WriteTicket::new(self.clone(), self.admission.join());
        if !self.admission.lease_held() {
            return Err(NotAdmitted::NoLease);
        }
        if !self.is_fresh() {
            return Err(NotAdmitted::Stale);
        }
        Ok(ticket)
    }

    /// The oldest revision a write still in flight here was admitted under
    /// (the applied revision when none is in flight).
    pub fn inflight_from(&self) -> u64 {
        self.admission
            .inflight_from()
            .unwrap_or_else(|| self.applied_revision())
    }

    /// How many instances share the fleet's budgets (at least 1: this
    /// one, with the memory backend or before its own record is seen).
    /// Read on the request path: one atomic load.
    pub fn fleet_size(&self) -> u64 {
        self.following.fleet_size.load(Ordering::Relaxed).max(1)
    }

    /// A fleet record appeared (`present`) or went (its lease ended).
    pub(crate) fn fleet_member(&self, id: &str, present: bool) {
        if let Ok(mut fleet) = self.following.fleet.lock() {
            let changed = if present {
                fleet.insert(id.to_string())
            } else {
                fleet.remove(id)
            };
            if changed {
                self.following
                    .fleet_size
                    .store(fleet.len() as u64, Ordering::Relaxed);
            }
        }
    }

    /// The fleet as one whole read found it.
    pub(crate) fn fleet_reset<'a>(&self, ids: impl Iterator<Item = &'a str>) {
        if let Ok(mut fleet) = self.following.fleet.lock() {
            *fleet = ids.map(str::to_string).collect();
            self.following
                .fleet_size
                .store(fleet.len() as u64, Ordering::Relaxed);
        }
    }

    /// Whether this instance proves it holds its fleet lease (always, in
    /// memory).
    pub fn lease_held(&self) -> bool {
        self.admission.lease_held()
    }

    /// The current snapshot (one atomic load; the caller keeps its view
    /// for the whole request).
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Runs `f` on the current snapshot without taking a reference to it
    /// (no shared counter touched): for quick checks on the request path.
    pub fn with_snapshot<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        f(&self.current.load())
    }

    /// The configured cluster ids.
    pub fn clusters(&self) -> &[String] {
        &self.clusters
    }

    /// `"etcd"` or `"memory"`.
    pub fn backend(&self) -> &'static str {
        if self.etcd.get().is_some() {
            "etcd"
        } else {
            "memory"
        }
    }

    pub(crate) fn attach_etcd(&self, store: Arc<EtcdStore>) {
        let _ = self.etcd.set(store);
        self.store_pending.store(false, Ordering::Release);
    }

    pub(crate) fn set_freshness_bound(&self, bound: Duration) {
        self.freshness_bound_ms
            .store(bound.as_millis() as u64, Ordering::Release);
    }

    /// Whether this instance can prove its snapshot is current: an event or
    /// progress answer within the freshness bound (always, in memory).
    /// Writes to migrating partitions need it (invariant M5).
    pub fn is_fresh(&self) -> bool {
        if self.etcd.get().is_none() {
            return true;
        }
        let bound = self.freshness_bound_ms.load(Ordering::Acquire);
        mono_ms().saturating_sub(self.following.fresh_at.load(Ordering::Acquire)) <= bound
    }

    /// Reserves passthrough's names: placements written at runtime may not
    /// put a partition's data in an index of `cluster` that starts with one
    /// of `prefixes` (config validation checks the same for the file).
    pub fn reserve_passthrough(&self, cluster: String, prefixes: Option<Vec<String>>) {
        let _ = self.passthrough.set((cluster, prefixes));
    }

    /// Marks that an external store is being connected: writes answer
    /// "unavailable" until it is attached.
    pub fn expect_store(&self) {
        self.store_pending.store(true, Ordering::Release);
        self.admission.require_lease();
    }

    pub(crate) fn publish(&self, next: Snapshot, applied: u64) {
        let revision = next.revision();
        self.current.store(Arc::new(next));
        self.admission.advance(revision.max(applied));
        self.mark_applied(applied);
    }

    pub(crate) fn mark_applied(&self, applied: u64) {
        self.following.applied.fetch_max(applied, Ordering::AcqRel);
        self.revision_tx.send_if_modified(|r| {
            if applied > *r {
                *r = applied;
                true
            } else {
                false
            }
        });
    }

    pub(crate) fn mark_fresh(&self) {
        self.following
            .last_fresh_ms
            .store(now_ms(), Ordering::Release);
        self.following.fresh_at.store(mono_ms(), Ordering::Release);
    }

    pub(crate) fn reject(&self, key: &str, reason: String) {
        self.following.rejections.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut r) = self.following.rejected.lock() {
            r.insert(key.to_string(), reason);
        }
        self.record_changed.notify_one();
    }

    pub(crate) fn accept(&self, key: &str) {
        if let Ok(mut r) = self.following.rejected.lock() {
            if r.remove(key).is_some() {
                self.record_changed.notify_one();
            }
        }
    }

    /// Keys whose latest value this instance refused, with shape-only
    /// reasons.
    pub fn rejected_keys(&self) -> Vec<(String, String)> {
        self.following
            .rejected
            .lock()
            .map(|r| r.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// The revision through which every store event has been applied.
    pub fn applied_revision(&self) -> u64 {
        self.following.applied.load(Ordering::Acquire)
    }

    /// When the snapshot was last confirmed current (ms since the epoch).
    /// The memory backend is always current.
    pub fn last_fresh_ms(&self) -> u64 {
        if self.etcd.get().is_none() {
            return now_ms();
        }
        self.following.last_fresh_ms.load(Ordering::Acquire)
    }

    /// Scrape-time counters.
    pub fn counters(&self) -> Counters {
        let s = &self.following;
        Counters {
            applied_revision: self.applied_revision(),
            fresh_age_ms: now_ms().saturating_sub(self.last_fresh_ms()),
            rejected_keys: s.rejected.lock().map(|r| r.len() as u64).unwrap_or(0),
            rejections: s.rejections.load(Ordering::Relaxed),
            events: s.events.load(Ordering::Relaxed),
            reconnects: s.reconnects.load(Ordering::Relaxed),
            reloads: s.reloads.load(Ordering::Relaxed),
        }
    }

    /// This instance's fleet record.
    pub fn record(&self, member: &Member) -> serde_json::Value {
        let rejected: Vec<serde_json::Value> = self
            .rejected_keys()
            .into_iter()
            .map(|(key, reason)| serde_json::json!({"key": key, "reason": reason}))
            .collect();
        serde_json::json!({
            "id": member.id, "address": member.address, "admin": member.admin,
            "version": member.version, "started": member.started,
            "backend": self.backend(),
            "applied_revision": self.applied_revision(),
            "inflight_from": self.inflight_from(),
            "last_fresh_ms": self.last_fresh_ms(),
            "rejected_keys": rejected,
        })
    }

    /// One partition's migration record and its epoch as the store holds it
    /// now: with etcd a linearizable read (not this instance's snapshot,
    /// which may lag — a controller resumed after a pause must not act on
    /// what it last saw); in memory, the snapshot.
    pub async fn read_migration(
        &self,
        index: &str,
        partition: &str,
    ) -> Result<Option<(crate::store::MigrationRecord, u64)>, crate::etcd::StoreError> {
        match self.etcd.get() {
            Some(store) => {
                let key = crate::store::migration_key(&store.prefix, index, partition);
                Ok(store.get_one(&key).await?.and_then(|(bytes, epoch)| {
                    serde_json::from_slice(&bytes).ok().map(|r| (r, epoch))
                }))
            }
            None => Ok(self
                .load()
                .migration(index, partition)
                .map(|(r, e)| ((**r).clone(), *e))),
        }
    }

    /// The live fleet: with etcd, every record under `fleet/`; with the
    /// memory backend, this instance alone.
    pub async fn fleet(
        &self,
        me: &Member,
    ) -> Result<Vec<serde_json::Value>, crate::etcd::StoreError> {
        match self.etcd.get() {
            Some(store) => store.fleet().await,
            None => Ok(vec![self.record(me)]),
        }
    }

    /// Applies one store event to `snap`, recording a rejection (or
    /// clearing an earlier one) for its key.
    pub(crate) fn apply_event(
        &self,
        snap: &mut Snapshot,
        prefix: &str,
        key: &[u8],
        value: Option<&[u8]>,
        revision: u64,
    ) -> EventOutcome {
        let Some(parsed) = Key::parse(prefix, key) else {
            return EventOutcome::Ignored;
        };
        let name = String::from_utf8_lossy(key);
        match crate::apply::apply(snap, parsed, value, revision, &self.clusters) {
            Ok(crate::apply::Applied::Changed) => {
                self.following.events.fetch_add(1, Ordering::Relaxed);
                self.accept(&name);
                EventOutcome::Changed
            }
            Ok(crate::apply::Applied::Ignored) => EventOutcome::Ignored,
            Err(reason) => {
                let reason = reason.to_string();
                tracing::warn!(key = %name, revision, %reason, "control-plane value refused; the last good value stays");
                self.reject(&name, reason);
                EventOutcome::Rejected
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use osproxy_core::{PartitionId, Placement};

    fn plane() -> ControlPlane {
        plane_of(&["main"])
    }

    fn plane_of(clusters: &[&str]) -> ControlPlane {
        let clusters: Vec<String> = clusters.iter().map(|c| c.to_string()).collect();
        let mut snap = Snapshot::default();
        let cat = br#"{"default":{"kind":"shared","cluster":"main","index":"orders-shared"}}"#;
        crate::apply::apply(&mut snap, Key::Catalogue("orders"), Some(cat), 1, &clusters).unwrap();
        snap.set_revision(1);
        ControlPlane::new(snap, clusters)
    }

    #[tokio::test]
    async fn memory_compare_and_swap() {
        let p = plane();
        let acme = PartitionId::new("acme").unwrap();
        let pl = Placement::Index {
            cluster: "main".into(),
            index: "orders-acme".into(),
        };
        let e = p
            .set_placement("orders", &acme, pl.clone(), None)
            .await
            .unwrap();
        assert_eq!(e.epoch, 2);
        // A second creation loses and sees the winner.
        match p.set_placement("orders", &acme, pl.clone(), None).await {
            Err(WriteError::Conflict(c)) => assert_eq!(c.epoch, Some(2)),
            other => panic!("{other:?}"),
        }
        assert!(p.set_placement("orders", &acme, pl, Some(2)).await.is_ok());
        assert!(matches!(
            p.put_directives(b"{\"directives\":[{\"id\":\"x\",\"level\":\"loud\",\"expires_at\":\"2030-01-01T00:00:00Z\"}]}", None).await,
            Err(WriteError::Invalid(_))
        ));
        let ep = p
            .put_directives(b"{\"directives\":[]}", None)
            .await
            .unwrap();
        assert!(p.clear_directives(ep + 1).await.is_err());
        p.clear_directives(ep).await.unwrap();
        assert!(p.load().directives().is_none());
    }

    /// Found by review: next to a passthrough of everything, a placement
    /// on its cluster would be open to every caller; one on another is
    /// refused too, as the configuration refuses any catalogue beside it
    /// (two cluster ids may name the same cluster).
    #[tokio::test]
    async fn a_placement_on_a_cluster_passed_through_whole_is_refused() {
        let p = plane_of(&["main", "other"]);
        p.reserve_passthrough("main".into(), None);
        let acme = PartitionId::new("acme").unwrap();
        let on = |cluster: &str| Placement::Index {
            cluster: cluster.into(),
            index: "orders-acme".into(),
        };
        match p.set_placement("orders", &acme, on("main"), None).await {
            Err(WriteError::Invalid(reason)) => {
                assert!(reason.contains("passthrough.indices"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(p
            .set_placement("orders", &acme, on("other"), None)
            .await
            .is_err());
        let prefixed = plane_of(&["main", "other"]);
        prefixed.reserve_passthrough("main".into(), Some(vec!["legacy-".into()]));
        assert!(prefixed
            .set_placement("orders", &acme, on("main"), None)
            .await
            .is_ok());
    }
}
