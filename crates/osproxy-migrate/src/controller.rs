//! The migration controller: drives one partition's move from its placement
//! to another through the phases of the design, each a compare-and-swap
//! step on the placement entry and the migration record together.
//!
//! ```text
//! active(A) --start--> migrating{to B, copying}   writes still go to A; full copy A → B
//!           --cutover--> migrating{to B, cutover} writes refused (409, retryable)
//!                          barrier: every live instance applied the cutover,
//!                          then in-flight writes settle; catch-up copy,
//!                          deletions, count (and id) check
//!           --flip--> active(B)                   optional: delete the partition from A
//! abort or failure before the flip --> active(A)
//! ```
//!
//! A step whose compare-and-swap fails (an operator aborted, another
//! controller took over) ends this controller's run without touching
//! anything else.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use osproxy_control::store::{MigrationPhase, MigrationRecord, Phase, PlacementValue, State};
use osproxy_control::{ControlPlane, WriteError};
use osproxy_core::{PartitionId, Placement};
use tracing::{info, warn};

use crate::copy::{self as migrate, Side};

mod adopt;
mod barrier;
mod clean;
mod fence;
mod steps;
use fence::Owner;
use osproxy_upstream::Upstreams;

/// How long the barrier waits for every instance to apply the cutover and
/// drain the writes it admitted before (at least the upstream deadline).
const BARRIER_TIMEOUT: Duration = Duration::from_secs(30);
/// Partitions up to this size are verified id by id, not only by count.
const VERIFY_IDS_UP_TO: u64 = 10_000;

/// Drives migrations from this instance.
pub struct Controller {
    plane: Arc<ControlPlane>,
    upstreams: Arc<Upstreams>,
    instance: String,
    timeout: Duration,
    running: Mutex<std::collections::HashSet<String>>,
    /// The runtime migrations are driven on (not the control thread's).
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why a migration could not start or stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationError {
    /// The request is wrong (unknown index, same placement, ...).
    Invalid(String),
    /// A migration of this partition is running, or the state moved.
    Conflict(String),
    /// The control store did not take the write.
    Unavailable(String),
    /// Nothing to stop.
    NotFound(String),
}

impl From<WriteError> for MigrationError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Invalid(m) => MigrationError::Invalid(m),
            WriteError::Conflict(_) => MigrationError::Conflict(
                "the partition's placement or migration changed meanwhile; read it and retry"
                    .into(),
            ),
            WriteError::Unavailable(m) => MigrationError::Unavailable(m),
            WriteError::Unknown(m) => MigrationError::Unavailable(format!(
                "the control store did not confirm the step ({m}); it may have been applied: read the migration's status"
            )),
        }
    }
}

impl Controller {
    /// A controller over this instance's control plane and upstreams; the
    /// migrations it drives run on `runtime` (their copy pages and JSON
    /// work stay off the thread that keeps the lease and follows the store).
    pub fn new(
        plane: Arc<ControlPlane>,
        upstreams: Arc<Upstreams>,
        instance: String,
        timeout: Duration,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Controller {
            plane,
            upstreams,
            instance,
            timeout,
            running: Mutex::new(std::collections::HashSet::new()),
            runtime,
        }
    }

    /// Starts moving `partition` of `index` to `to`; the copy runs in the
    /// background. Answers the record as started.
    pub async fn start(
        self: &Arc<Self>,
        index: &str,
        partition: &str,
        to: Placement,
        delete_source: bool,
        max_docs_per_second: Option<u64>,
    ) -> Result<MigrationRecord, MigrationError> {
        let pid = PartitionId::new(partition).map_err(|_| {
            MigrationError::Invalid("a partition id is 1 to 128 of [A-Za-z0-9_.-]".into())
        })?;
        let snap = self.plane.load();
        let resolved = snap.resolve(index, &pid).ok_or_else(|| {
            MigrationError::Invalid(format!("{index:?} is not a logical index of the catalogue"))
        })?;
        if !self.plane.clusters().iter().any(|c| c == to.cluster()) {
            return Err(MigrationError::Invalid(format!(
                "unknown cluster {:?}; configured clusters: {:?}",
                to.cluster(),
                self.plane.clusters()
            )));
        }
        let from = (*resolved.placement).clone();
        if from == to {
            return Err(MigrationError::Invalid(
                "the partition is already at that placement; nothing to move".into(),
            ));
        }
        if resolved.migrating.is_some() {
            return Err(MigrationError::Conflict(
                "a migration of this partition is running; see its status, or abort it".into(),
            ));
        }
        // A move within one physical index (its kind changed only) would
        // copy the partition onto itself, and its two sides would claim
        // one index.
        if (from.cluster(), from.physical_index(index)) == (to.cluster(), to.physical_index(index))
        {
            return Err(MigrationError::Invalid(format!(
                "the destination is the partition's current physical index {:?} on {:?}; a migration needs another index (to change only the placement kind, move it elsewhere and back)",
                to.physical_index(index),
                to.cluster()
            )));
        }
        // The destination may not belong to anyone else.
        snap.with_placement(index, &pid, to.clone())
            .map_err(|e| MigrationError::Invalid(e.to_string()))?;
        let record_epoch = match snap.migration(index, partition) {
            Some((r, _)) if !r.phase.is_terminal() => {
                return Err(MigrationError::Conflict(
                    "a migration of this partition is running; see its status, or abort it".into(),
                ))
            }
            // The ended run may still be writing its last page there; the
            // destination is emptied once it has stopped.
            Some((r, _)) if r.reserved().is_some() => {
                return Err(MigrationError::Conflict(format!(
                    "the previous migration of this partition ({:?}) is still removing what it copied to {:?}; retry when `ctl migrate status {index} {partition}` no longer shows \"cleaning\"",
                    r.phase, r.to
                )))
            }
            Some((_, e)) => *e,
            None => 0,
        };
        let now = now_ms();
        let record = MigrationRecord {
            index: index.to_string(),
            partition: partition.to_string(),
            from: from.clone(),
            to: to.clone(),
            phase: MigrationPhase::Copying,
            started_ms: now,
            updated_ms: now,
            controller: self.instance.clone(),
            copied: 0,
            copied_bytes: 0,
            copy_ms: None,
            caught_up: 0,
            removed: 0,
            verified_count: None,
            delete_source,
            error: None,
            cutover_ms: None,
            total: None,
            max_docs_per_second,
            cleaning: false,
            later: Default::default(),
        };
        let entry = migrating(&from, &to, Phase::Copying);
        match self
            .plane
            .migration_step(
                Some(entry),
                resolved.epoch,
                &record,
                record_epoch,
                snap.revision(),
            )
            .await
        {
            Ok(_) => {}
            // Committed after all? Then it is this controller's to drive.
            Err(WriteError::Unknown(m)) => {
                if self.learn_outcome(&record, record_epoch).await.is_err() {
                    return Err(MigrationError::from(WriteError::Unknown(m)));
                }
            }
            Err(e) => return Err(e.into()),
        }
        info!(index, partition, ?from, ?to, "migration started");
        self.spawn_drive(index.to_string(), partition.to_string());
        Ok(record)
    }

    /// Stops a running migration before its flip: the partition stays (or
    /// is put back) active at its source.
    pub async fn abort(
        &self,
        index: &str,
        partition: &str,
    ) -> Result<MigrationRecord, MigrationError> {
        let snap = self.plane.load();
        let Some((record, record_epoch)) = snap.migration(index, partition).cloned() else {
            return Err(MigrationError::NotFound(format!(
                "no migration of partition {partition:?} of {index:?}"
            )));
        };
        if record.phase.is_terminal() {
            let cleaning = if record.reserved().is_some() {
                " (what it copied is being removed from its destination)"
            } else {
                ""
            };
            return Err(MigrationError::Conflict(format!(
                "the migration is already {:?}{cleaning}; nothing to abort",
                record.phase
            )));
        }
        let pid = PartitionId::new(partition)
            .map_err(|_| MigrationError::Invalid("not a partition id".into()))?;
        let entry_epoch = snap.entry(index, &pid).map(|e| e.epoch).unwrap_or(0);
        let mut done = (*record).clone();
        done.phase = MigrationPhase::Aborted;
        done.updated_ms = now_ms();
        // The controller removes what it copied once its run has stopped.
        done.cleaning = true;
        self.plane
            .migration_step(
                Some(PlacementValue::active(record.from.clone())),
                entry_epoch,
                &done,
                record_epoch,
                snap.revision(),
            )
            .await?;
        info!(
            index,
            partition, "migration aborted; the partition is active at its source"
        );
        Ok(done)
    }

    /// Runs the migration's remaining phases.
    async fn drive(self: Arc<Self>, index: String, partition: String, key: String) {
        let ended = self
            .plane
            .load()
            .migration(&index, &partition)
            .is_some_and(|(r, _)| r.phase.is_terminal());
        let outcome = if ended {
            Ok(())
        } else {
            self.run(&index, &partition).await
        };
        match outcome {
            Ok(()) => {}
            Err(Stop::Superseded) => {
                info!(
                    index,
                    partition,
                    "migration changed by someone else (aborted?); this controller stops"
                );
            }
            Err(Stop::Failed(reason)) => {
                warn!(index, partition, %reason, "migration failed; putting the partition back at its source");
                self.fail(&index, &partition, &reason).await;
            }
        }
        // An aborted or failed run has stopped writing: empty what it
        // copied (a later adoption retries when this does not finish).
        self.clean(&index, &partition).await;
        if let Ok(mut r) = self.running.lock() {
            r.remove(&key);
        }
    }

    async fn run(&self, index: &str, partition: &str) -> Result<(), Stop> {
        let pid = PartitionId::new(partition).map_err(|_| Stop::Failed("bad partition".into()))?;
        let resumed_in_cutover = self.current(index, &pid, MigrationPhase::Cutover).ok();
        let record = match &resumed_in_cutover {
            Some(held) => held.record.clone(),
            None => self.current(index, &pid, MigrationPhase::Copying)?.record,
        };
        let snap = self.plane.load();
        let logical = snap
            .index(index)
            .cloned()
            .ok_or_else(|| Stop::Failed("the logical index left the catalogue".into()))?;
        let cluster = |p: &Placement| {
            self.upstreams
                .by_id(p.cluster())
                .ok_or_else(|| Stop::Failed(format!("unknown cluster {:?}", p.cluster())))
        };
        let from = Side {
            cluster: cluster(&record.from)?,
            placement: &record.from,
            logical: &logical,
            partition: &pid,
        };
        let to = Side {
            cluster: cluster(&record.to)?,
            placement: &record.to,
            logical: &logical,
            partition: &pid,
        };
        let t = self.timeout;
        let failed = |e: migrate::MoveError| Stop::Failed(e.0);
        // The store's record, not the snapshot's (which may lag after an
        // adoption or a pause): its epoch is what the fence holds on to.
        let owned = match self.plane.read_migration(index, partition).await {
            Ok(Some((r, e))) if r.controller == self.instance && r.phase == record.phase => e,
            Ok(_) => return Err(Stop::Superseded),
            Err(e) => return Err(Stop::Failed(format!("cannot read the record: {e}"))),
        };

        let mut cut_started = std::time::Instant::now();
        let (caught, cut) = if resumed_in_cutover.is_some() {
            // Adopted in cutover: writes are already refused everywhere, so
            // a full copy is complete; the checks below do the rest.
            let cut = self.owner(index, partition, MigrationPhase::Cutover, owned);
            migrate::fresh_destination(&to, t, &cut)
                .await
                .map_err(|e| cut.stop(e))?;
            migrate::prepare(&from, &to, t).await.map_err(failed)?;
            self.barrier(owned, index, partition).await?;
            migrate::wait_for_tasks(&from, t).await.map_err(failed)?;
            let caught = migrate::copy(
                &from,
                &to,
                None,
                t,
                |_| {},
                &cut,
                record.max_docs_per_second,
            )
            .await
            .map_err(|e| cut.stop(e))?;
            migrate::restore_refresh(&to, t, &cut)
                .await
                .map_err(|e| cut.stop(e))?;
            (caught, cut)
        } else {
            // Copying: a clean destination, a checkpoint, the full copy.
            let copying = self.owner(index, partition, MigrationPhase::Copying, owned);
            migrate::fresh_destination(&to, t, &copying)
                .await
                .map_err(|e| copying.stop(e))?;
            migrate::prepare(&from, &to, t).await.map_err(failed)?;
            migrate::purge(&to, t, &copying)
                .await
                .map_err(|e| copying.stop(e))?;
            let checkpoint = migrate::checkpoint(&from, t).await.map_err(failed)?;
            let copy_started = std::time::Instant::now();
            // A dedicated destination has no readers before the flip: it is
            // created without periodic refresh (see `prepare`), and
            // refreshed once after the copy, before writes are refused (so
            // the cutover's counts do not wait for a large refresh).
            let copied = self
                .copy_reporting(
                    index,
                    &pid,
                    &from,
                    &to,
                    &copying,
                    record.max_docs_per_second,
                )
                .await?;
            let copy_ms = copy_started.elapsed().as_millis() as u64;
            let refresh_started = std::time::Instant::now();
            migrate::restore_refresh(&to, t, &copying)
                .await
                .map_err(|e| copying.stop(e))?;
            info!(
                index,
                partition,
                copy_ms,
                refresh_ms = refresh_started.elapsed().as_millis() as u64,
                "full copy done; destination refreshed, cutover next"
            );

            // Cutover: writes refused from here on.
            let held = self.current(index, &pid, MigrationPhase::Copying)?;
            if held.catalogue_epoch != Some(logical.epoch) {
                return Err(logical_changed());
            }
            let mut rec = held.record.clone();
            rec.copied = copied.written;
            rec.total = rec.total.or(Some(copied.written));
            rec.copied_bytes = copied.bytes;
            rec.copy_ms = Some(copy_ms);
            rec.phase = MigrationPhase::Cutover;
            rec.updated_ms = now_ms();
            cut_started = std::time::Instant::now();
            let cut_revision = self
                .step(
                    Some(migrating(&record.from, &record.to, Phase::Cutover)),
                    &held,
                    &rec,
                )
                .await?;
            self.barrier(cut_revision, index, partition).await?;
            // By-query tasks still running on the source (a synchronous one
            // whose caller gave up keeps running there) would change it
            // after the catch-up: wait for them.
            migrate::wait_for_tasks(&from, t).await.map_err(failed)?;

            // Catch-up.
            let cut = self.owner(index, partition, MigrationPhase::Cutover, cut_revision);
            let caught = migrate::copy(&from, &to, Some(checkpoint), t, |_| {}, &cut, None)
                .await
                .map_err(|e| cut.stop(e))?;
            (caught, cut)
        };
        let source = migrate::count(&from, t).await.map_err(failed)?;
        let mut dest = migrate::count(&to, t).await.map_err(failed)?;
        let mut removed = 0;
        if dest != source {
            removed = migrate::remove_extra(&from, &to, t, &cut)
                .await
                .map_err(|e| cut.stop(e))?;
            dest = migrate::count(&to, t).await.map_err(failed)?;
        }
        if dest != source {
            return Err(Stop::Failed(format!(
                "verification failed: the source holds {source} documents, the destination {dest}"
            )));
        }
        if source <= VERIFY_IDS_UP_TO {
            let (a, b) = (
                migrate::ids(&from, t).await.map_err(failed)?,
                migrate::ids(&to, t).await.map_err(failed)?,
            );
            if a != b {
                return Err(Stop::Failed(
                    "verification failed: the source and destination hold different ids".into(),
                ));
            }
        }

        // Flip.
        let held = self.current(index, &pid, MigrationPhase::Cutover)?;
        if held.catalogue_epoch != Some(logical.epoch) {
            return Err(logical_changed());
        }
        let mut rec = held.record.clone();
        rec.caught_up = caught.written;
        rec.removed = removed;
        rec.verified_count = Some(source);
        rec.phase = MigrationPhase::Done;
        rec.updated_ms = now_ms();
        rec.cutover_ms = Some(cut_started.elapsed().as_millis() as u64);
        let flipped = self
            .step(Some(PlacementValue::active(record.to.clone())), &held, &rec)
            .await?;
        info!(
            index,
            partition,
            documents = source,
            cutover_ms = rec.cutover_ms,
            "migration done"
        );
        if rec.delete_source {
            // Only once every instance routes to the new placement (a
            // lagging one would otherwise read an emptied source), and only
            // while the record is still this flip (a later move back to the
            // old placement makes it live again).
            let done = self.owner(index, partition, MigrationPhase::Done, flipped);
            let purge = async {
                self.barrier(flipped, index, partition).await?;
                migrate::purge(&from, t, &done)
                    .await
                    .map_err(|e| done.stop(e))
            };
            match purge.await {
                Ok(_) => {}
                Err(Stop::Superseded) => {
                    info!(
                        index,
                        partition, "the record changed after the flip; the old placement is kept"
                    );
                }
                Err(Stop::Failed(e)) => {
                    warn!(index, partition, error = %e, "the partition's documents could not be deleted from the old placement");
                }
            }
        }
        Ok(())
    }

    /// The full copy, with its progress written to the record every
    /// second (visible in `ctl migrate status`); a record changed by
    /// someone else (an abort) stops it.
    async fn copy_reporting(
        &self,
        index: &str,
        pid: &PartitionId,
        from: &Side<'_>,
        to: &Side<'_>,
        owner: &Owner<'_>,
        pace: Option<u64>,
    ) -> Result<migrate::Copied, Stop> {
        let done = std::sync::atomic::AtomicU64::new(0);
        let bytes = std::sync::atomic::AtomicU64::new(0);
        // The partition's size, for progress (`copied` of `total`).
        let total = migrate::count(from, self.timeout).await.ok();
        let copy = migrate::copy(
            from,
            to,
            None,
            self.timeout,
            |c| {
                done.store(c.written, std::sync::atomic::Ordering::Relaxed);
                bytes.store(c.bytes, std::sync::atomic::Ordering::Relaxed);
            },
            owner,
            pace,
        );
        tokio::pin!(copy);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tokio::select! {
                r = &mut copy => return r.map_err(|e| owner.stop(e)),
                _ = tick.tick() => {
                    let progress = async {
                        let held = self.current(index, pid, MigrationPhase::Copying)?;
                        let mut rec = held.record.clone();
                        rec.copied = done.load(std::sync::atomic::Ordering::Relaxed);
                        rec.copied_bytes = bytes.load(std::sync::atomic::Ordering::Relaxed);
                        rec.total = total.or(rec.total);
                        rec.updated_ms = now_ms();
                        self.step(None, &held, &rec).await
                    };
                    match progress.await {
                        Ok(epoch) => owner.moved_to(epoch),
                        Err(stop) => {
                            // The copy may have a page on its way to the
                            // destination: let it stop at its next fence
                            // check (the record is no longer this run's),
                            // so nothing it sent lands after a clean-up.
                            owner.halt();
                            let _ = (&mut copy).await;
                            return Err(stop);
                        }
                    }
                }
            }
        }
    }
}

/// The logical index was changed during the move: what was copied may
/// follow its old definition, so the move fails back to its source (and is
/// started again by the operator) rather than going on or copying again
/// with writes refused.
fn logical_changed() -> Stop {
    Stop::Failed("the logical index was changed during the move; start the migration again".into())
}

fn migrating(from: &Placement, to: &Placement, phase: Phase) -> PlacementValue {
    PlacementValue {
        placement: from.clone(),
        state: State::Migrating,
        to: Some(to.clone()),
        phase: Some(phase),
    }
}

enum Stop {
    /// Someone else changed the migration (aborted it, took it over).
    Superseded,
    /// An error: the migration fails and the partition goes back to its
    /// source.
    Failed(String),
}
