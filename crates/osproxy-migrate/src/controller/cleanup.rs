//! After a move that ended without its flip (failed, or aborted while this
//! controller drove it): the destination is given back clean, so a partition
//! placed there later cannot read what was copied for this one.

use osproxy_control::store::MigrationPhase;
use osproxy_core::PartitionId;
use tracing::{info, warn};

use super::*;

impl Controller {
    /// Removes what the ended run copied: a dedicated destination is
    /// dropped, a shared one purged of the partition. Only while the record
    /// still shows that ending (the fence), and only when no placement or
    /// other move uses the destination now.
    pub(super) async fn clean_up(&self, index: &str, partition: &str) {
        let Ok(Some((record, epoch))) = self.plane.read_migration(index, partition).await else {
            return;
        };
        if !matches!(
            record.phase,
            MigrationPhase::Failed | MigrationPhase::Aborted
        ) || record.controller != self.instance
        {
            return;
        }
        let (Ok(pid), snap) = (PartitionId::new(partition), self.plane.load()) else {
            return;
        };
        let Some(logical) = snap.index(index).cloned() else {
            return;
        };
        let slot = |p: &Placement| (p.cluster().to_string(), p.physical_index(index).to_string());
        let dest = slot(&record.to);
        let used = snap.entries(index).iter().any(|(p, e)| {
            (*p == partition || !record.to.is_shared())
                && (slot(&e.placement) == dest
                    || e.migrating.as_ref().is_some_and(|m| slot(&m.to) == dest))
        }) || (!record.to.is_shared() && slot(&logical.default) == dest);
        let Some(cluster) = self.upstreams.by_id(record.to.cluster()) else {
            return;
        };
        if used {
            return;
        }
        let to = Side {
            cluster,
            placement: &record.to,
            logical: &logical,
            partition: &pid,
        };
        let fence = self.owner(index, partition, record.phase, epoch);
        let cleaned = if record.to.is_shared() {
            migrate::purge(&to, self.timeout, &fence).await.map(|_| ())
        } else {
            migrate::fresh_destination(&to, self.timeout, &fence).await
        };
        match cleaned {
            Ok(()) => info!(
                index,
                partition, "the ended move's copies were removed from its destination"
            ),
            Err(e) => {
                warn!(index, partition, error = %e, "the ended move's copies could not be removed from its destination; the next move there removes them")
            }
        }
    }
}
