//! The controller's writes to the record: one compare-and-swap step, what a
//! step whose outcome is unknown came to, and a run's failure.

use super::*;

/// The migration as this controller last read it, still its own.
pub(super) struct Held {
    pub(super) record: MigrationRecord,
    pub(super) record_epoch: u64,
    pub(super) entry_epoch: u64,
    /// The revision of the snapshot it was read from.
    pub(super) revision: u64,
    /// The logical index's catalogue epoch in that snapshot.
    pub(super) catalogue_epoch: Option<u64>,
}

/// How often a step refused only by the tables guard (an unrelated
/// catalogue or placement change this instance had not applied yet) is
/// made again.
const GUARD_RETRIES: u32 = 5;

impl Controller {
    /// Marks the migration failed, the partition active at its source, and
    /// its destination to be cleaned (see [`Controller::clean`]).
    pub(super) async fn fail(&self, index: &str, partition: &str, reason: &str) {
        let snap = self.plane.load();
        let (Some((record, record_epoch)), Ok(pid)) = (
            snap.migration(index, partition).cloned(),
            PartitionId::new(partition),
        ) else {
            return;
        };
        if record.phase.is_terminal() || record.controller != self.instance {
            // Someone else drives it now (this controller was paused and
            // adopted from): theirs to finish or fail.
            return;
        }
        let entry_epoch = snap.entry(index, &pid).map(|e| e.epoch).unwrap_or(0);
        let mut failed = (*record).clone();
        failed.phase = MigrationPhase::Failed;
        failed.error = Some(reason.to_string());
        failed.updated_ms = now_ms();
        failed.cleaning = true;
        if let Err(e) = self
            .plane
            .migration_step(
                Some(PlacementValue::active(record.from.clone())),
                entry_epoch,
                &failed,
                record_epoch,
                snap.revision(),
            )
            .await
        {
            warn!(index, partition, error = ?e, "could not record the failed migration");
        }
    }

    /// The current record and epochs, if this controller still owns the
    /// migration in `phase`.
    pub(super) fn current(
        &self,
        index: &str,
        partition: &PartitionId,
        phase: MigrationPhase,
    ) -> Result<Held, Stop> {
        let snap = self.plane.load();
        let (record, record_epoch) = snap
            .migration(index, partition.as_str())
            .cloned()
            .ok_or(Stop::Superseded)?;
        if record.phase != phase || record.controller != self.instance {
            return Err(Stop::Superseded);
        }
        Ok(Held {
            record: (*record).clone(),
            record_epoch,
            entry_epoch: snap.entry(index, partition).map(|e| e.epoch).unwrap_or(0),
            revision: snap.revision(),
            catalogue_epoch: snap.index(index).map(|l| l.epoch),
        })
    }

    /// Writes `record` (and `entry`, when given) over what `held` read. A
    /// refusal that leaves the record as it was is the tables guard (a
    /// change to another key this instance had not applied yet): made again
    /// once the snapshot has caught up, not taken for a takeover.
    pub(super) async fn step(
        &self,
        entry: Option<PlacementValue>,
        held: &Held,
        record: &MigrationRecord,
    ) -> Result<u64, Stop> {
        let (mut entry_epoch, mut checked) = (held.entry_epoch, held.revision);
        let mut attempt = 0;
        loop {
            match self
                .plane
                .migration_step(
                    entry.clone(),
                    entry_epoch,
                    record,
                    held.record_epoch,
                    checked,
                )
                .await
            {
                Ok(epoch) => return Ok(epoch),
                Err(WriteError::Conflict(_)) if attempt < GUARD_RETRIES && entry.is_some() => {
                    attempt += 1;
                    match self
                        .plane
                        .read_migration(&record.index, &record.partition)
                        .await
                    {
                        Ok(Some((_, e))) if e == held.record_epoch => {}
                        _ => return Err(Stop::Superseded),
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let snap = self.plane.load();
                    let pid = PartitionId::new(&record.partition)
                        .map_err(|_| Stop::Failed("bad partition".into()))?;
                    entry_epoch = snap
                        .entry(&record.index, &pid)
                        .map(|e| e.epoch)
                        .unwrap_or(0);
                    checked = snap.revision();
                    // A change of the logical index itself is not retried
                    // over (its copy was made under the old definition).
                    if snap.index(&record.index).map(|l| l.epoch) != held.catalogue_epoch {
                        return Err(super::logical_changed());
                    }
                }
                Err(WriteError::Conflict(_)) => return Err(Stop::Superseded),
                Err(WriteError::Unknown(_)) => {
                    return self.learn_outcome(record, held.record_epoch).await
                }
                Err(other) => {
                    return Err(Stop::Failed(format!(
                        "the control store refused a step: {other:?}"
                    )))
                }
            }
        }
    }

    /// A step the store did not confirm: read the record until the store
    /// answers. It holds exactly what this step wrote (committed: go on),
    /// or is unchanged (not committed: the migration fails back to its
    /// source), or changed otherwise (someone else acted: stop).
    pub(super) async fn learn_outcome(
        &self,
        wrote: &MigrationRecord,
        before: u64,
    ) -> Result<u64, Stop> {
        let deadline = tokio::time::Instant::now() + BARRIER_TIMEOUT;
        loop {
            match self
                .plane
                .read_migration(&wrote.index, &wrote.partition)
                .await
            {
                Ok(Some((now, epoch))) if now == *wrote => return Ok(epoch),
                Ok(Some((_, epoch))) if epoch == before => {
                    return Err(Stop::Failed(
                        "the control store did not commit a step".into(),
                    ))
                }
                Ok(_) => return Err(Stop::Superseded),
                Err(e) if tokio::time::Instant::now() > deadline => {
                    return Err(Stop::Failed(format!(
                        "a step's outcome is unknown and the store did not answer: {e}"
                    )))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}
