//! Every migration has a driver: adopting the ones whose controller left the
//! fleet (or that name this instance but are not driven here), and starting
//! a run at most once per migration per process.

use std::sync::Arc;
use std::time::Duration;

use osproxy_core::PartitionId;
use tracing::info;

use super::*;

impl Controller {
    /// Takes over, every `every`, the running migrations whose controller
    /// has left the fleet (its lease expired: it crashed or was cut off),
    /// and drives them to the end. Runs until the process ends.
    pub async fn adopt_orphans(self: Arc<Self>, every: Duration) {
        let me = osproxy_control::Member::default();
        let mut round = 0u64;
        loop {
            tokio::time::sleep(every).await;
            round += 1;
            let live: std::collections::HashSet<String> = if self.plane.backend() == "etcd" {
                // Only an instance that holds its own place in the fleet
                // adopts (a process sharing another's instance id holds none).
                if !self.plane.lease_held() {
                    continue;
                }
                let Ok(fleet) = self.plane.fleet(&me).await else {
                    continue;
                };
                fleet
                    .iter()
                    .filter_map(|r| {
                        r.get("id")
                            .and_then(serde_json::Value::as_str)
                            .map(str::to_string)
                    })
                    .collect()
            } else {
                // One instance: only its own unfinished work is picked up
                // again (a clean-up that did not finish).
                std::iter::once(self.instance.clone()).collect()
            };
            let snap = self.plane.load();
            // A running migration, or an ended one whose destination is
            // still to be cleaned, whose controller left the fleet, or that
            // names this instance but is not driven here (an earlier process
            // with this instance id, a step whose outcome was learnt late, a
            // clean-up that failed).
            let orphans: Vec<(MigrationRecord, u64)> = snap
                .migrations()
                .filter(|(r, _)| {
                    // A clean-up only by an instance that can reach its
                    // destination.
                    let known =
                        |p: &osproxy_core::Placement| self.upstreams.by_id(p.cluster()).is_some();
                    let cleanable = r.reserved().is_some_and(known);
                    // A run only by one that reaches both sides (else it
                    // would fail at once and strand the clean-up).
                    let drivable = !r.phase.is_terminal() && known(&r.from) && known(&r.to);
                    (drivable || cleanable)
                        && (!live.contains(&r.controller)
                            || (r.controller == self.instance
                                && !self.is_running(&r.index, &r.partition)))
                })
                .map(|(r, e)| ((**r).clone(), *e))
                .collect();
            for (record, epoch) in orphans {
                if record.phase.is_terminal() && record.controller == self.instance {
                    // This instance's own clean-up that did not finish (its
                    // destination unreachable, say): tried again every
                    // tenth round, with no store write.
                    if round.is_multiple_of(10) {
                        self.spawn_drive(record.index, record.partition);
                    }
                    continue;
                }
                let Ok(pid) = PartitionId::new(&record.partition) else {
                    continue;
                };
                let entry_epoch = snap
                    .entry(&record.index, &pid)
                    .map(|e| e.epoch)
                    .unwrap_or(0);
                let mut mine = record.clone();
                mine.controller = self.instance.clone();
                mine.updated_ms = now_ms();
                // Compare-and-swap: of several instances adopting at once,
                // one wins.
                if self
                    .plane
                    .migration_step(None, entry_epoch, &mine, epoch, snap.revision())
                    .await
                    .is_ok()
                {
                    info!(index = %record.index, partition = %record.partition, previous = %record.controller, phase = ?record.phase, "adopted a migration (or the clean-up of an ended one) whose controller left the fleet or stopped");
                    self.spawn_drive(record.index, record.partition);
                }
            }
        }
    }

    pub(super) fn is_running(&self, index: &str, partition: &str) -> bool {
        self.running
            .lock()
            .map(|r| r.contains(&format!("{index}\u{0}{partition}")))
            .unwrap_or(true)
    }

    /// Marks the migration driven here (at once, so that adoption does not
    /// take it meanwhile) and drives it in the background; a migration
    /// already driven here is left to that run.
    pub(super) fn spawn_drive(self: &Arc<Self>, index: String, partition: String) {
        let key = format!("{index}\u{0}{partition}");
        if let Ok(mut r) = self.running.lock() {
            if !r.insert(key.clone()) {
                return;
            }
        }
        let me = self.clone();
        self.runtime
            .spawn(async move { me.drive(index, partition, key).await });
    }
}
