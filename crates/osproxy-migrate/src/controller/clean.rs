//! What an ended move leaves behind. An aborted or failed migration's
//! destination may hold documents its copy wrote; the record keeps that
//! destination reserved (`cleaning`) until its controller has removed them,
//! so no other placement can take it and no new move of the partition can
//! start while the ended run may still be writing its last page. The
//! controller cleans once its own run has stopped (an abort is noticed at
//! the run's next fence check); an instance that adopts the record (its
//! controller left the fleet, so its lease, and with it every write it
//! could make, has lapsed) cleans in its place.

use osproxy_core::PartitionId;
use tracing::{info, warn};

use super::*;

impl Controller {
    /// Removes what the ended migration of `partition` copied into its
    /// destination, when the record still asks for that and names this
    /// controller; a failure is retried by the adoption loop.
    pub(super) async fn clean(&self, index: &str, partition: &str) {
        match self.try_clean(index, partition).await {
            Ok(false) => {}
            Ok(true) => info!(
                index,
                partition, "the ended migration's copy is removed; its destination is free again"
            ),
            Err(error) => warn!(
                index,
                partition,
                %error,
                "could not remove the ended migration's copy from its destination; retrying"
            ),
        }
    }

    async fn try_clean(&self, index: &str, partition: &str) -> Result<bool, String> {
        let (record, epoch) = match self.plane.read_migration(index, partition).await {
            Ok(Some((r, e))) if r.reserved().is_some() && r.controller == self.instance => (r, e),
            Ok(_) => return Ok(false),
            Err(e) => return Err(format!("cannot read the migration record: {e}")),
        };
        let pid = PartitionId::new(partition).map_err(|_| "not a partition id".to_string())?;
        let snap = self.plane.load();
        let t = self.timeout;
        let owner = self.owner(index, partition, record.phase, epoch);
        match (self.upstreams.by_id(record.to.cluster()), snap.index(index)) {
            (Some(cluster), Some(logical)) => {
                let to = Side {
                    cluster,
                    placement: &record.to,
                    logical,
                    partition: &pid,
                };
                // A dedicated destination was made new by the move: it holds
                // nothing but the copy. A shared one holds other tenants.
                let removed = if to.shared() {
                    migrate::purge(&to, t, &owner).await.map(|_| ())
                } else {
                    migrate::fresh_destination(&to, t, &owner).await
                };
                removed.map_err(|e| e.0)?;
            }
            (None, _) => {
                // Configs differ (or the cluster was removed here): another
                // instance that knows it cleans, or this one once it does.
                return Err(format!(
                    "the destination's cluster {:?} is not configured on this instance",
                    record.to.cluster()
                ));
            }
            (Some(_), None) => warn!(
                index,
                partition,
                "the logical index left the catalogue; its ended migration's copy is not removed by osproxy"
            ),
        }
        let mut clean = record.clone();
        clean.cleaning = false;
        clean.updated_ms = now_ms();
        let entry_epoch = snap.entry(index, &pid).map(|e| e.epoch).unwrap_or(0);
        self.plane
            .migration_step(None, entry_epoch, &clean, epoch, snap.revision())
            .await
            .map_err(|e| format!("the control store did not record the clean-up: {e:?}"))?;
        Ok(true)
    }
}
