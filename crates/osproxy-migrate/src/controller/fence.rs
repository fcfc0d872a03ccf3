//! The fence a controller's every write to a side checks: a linearizable
//! read of the migration record proving the move is still this one's.

use osproxy_control::store::MigrationPhase;
use osproxy_control::ControlPlane;

use super::{migrate, Controller, Stop};

impl Controller {
    pub(super) fn owner<'c>(
        &'c self,
        index: &'c str,
        partition: &'c str,
        phase: MigrationPhase,
        epoch: u64,
    ) -> Owner<'c> {
        Owner {
            plane: &self.plane,
            instance: &self.instance,
            index,
            partition,
            phase,
            epoch: std::sync::atomic::AtomicU64::new(epoch),
            lost: std::sync::atomic::AtomicBool::new(false),
            halted: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// How long a fence check may take and still count: a check that spans a
/// pause (the process stopped mid-read) is made again.
const FENCE_WINDOW_MS: u64 = 1000;

/// This controller's claim on one migration in one phase: the fence every
/// write to a side checks with a linearizable read of the record.
pub(super) struct Owner<'c> {
    plane: &'c ControlPlane,
    instance: &'c str,
    index: &'c str,
    partition: &'c str,
    phase: MigrationPhase,
    /// The record's epoch as this controller last wrote it.
    epoch: std::sync::atomic::AtomicU64,
    lost: std::sync::atomic::AtomicBool,
    /// The run stops: the next check fails without a store read.
    halted: std::sync::atomic::AtomicBool,
}

impl Owner<'_> {
    /// The record was rewritten by this controller (progress).
    pub(super) fn moved_to(&self, epoch: u64) {
        self.epoch
            .store(epoch, std::sync::atomic::Ordering::Release);
    }

    /// Stops every write after the ones in flight.
    pub(super) fn halt(&self) {
        self.halted
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// What a failed step means: superseded when the fence found the
    /// migration someone else's, else a failure.
    pub(super) fn stop(&self, e: migrate::MoveError) -> Stop {
        if self.lost.load(std::sync::atomic::Ordering::Acquire) {
            Stop::Superseded
        } else {
            Stop::Failed(e.0)
        }
    }
}

impl migrate::Fence for Owner<'_> {
    fn halted(&self) -> bool {
        self.halted.load(std::sync::atomic::Ordering::Acquire)
    }

    async fn check(&self) -> Result<(), migrate::MoveError> {
        use std::sync::atomic::Ordering;
        if self.halted.load(Ordering::Acquire) {
            return Err(migrate::MoveError("the run is stopping".into()));
        }
        loop {
            let expected = self.epoch.load(Ordering::Acquire);
            let started = osproxy_control::admission::mono_ms();
            let read = self.plane.read_migration(self.index, self.partition).await;
            let mine = match read {
                Ok(Some((r, e))) => {
                    r.controller == self.instance
                        && r.phase == self.phase
                        && (e == expected || e == self.epoch.load(Ordering::Acquire))
                }
                Ok(None) => false,
                Err(e) => {
                    return Err(migrate::MoveError(format!(
                        "cannot confirm the migration is still this controller's: {e}"
                    )))
                }
            };
            if !mine {
                self.lost.store(true, Ordering::Release);
                return Err(migrate::MoveError(
                    "the migration is no longer this controller's (adopted or aborted meanwhile)"
                        .into(),
                ));
            }
            // Adoption waits for this instance's lease to lapse: while it is
            // held, no one else can have taken the move since the read.
            if !self.plane.lease_held() {
                return Err(migrate::MoveError(
                    "this controller cannot prove it holds its fleet lease; it stops writing"
                        .into(),
                ));
            }
            if osproxy_control::admission::mono_ms().saturating_sub(started) < FENCE_WINDOW_MS {
                return Ok(());
            }
        }
    }
}
