//! Control-plane writes: every change is a compare-and-swap, committed to
//! etcd as one transaction (then applied by the watch, on every instance
//! alike) or, with the memory backend, applied to the snapshot through the
//! same decode-and-apply step.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use osproxy_core::{PartitionId, Placement};

use crate::directives::DirectiveSet;
use crate::plane::ControlPlane;
use crate::snapshot::{Entry, Snapshot};
use crate::store::{self, PlacementValue};
use crate::write::{Conflict, WriteError};

impl ControlPlane {
    fn writable(&self) -> Result<(), WriteError> {
        if self.store_pending.load(Ordering::Acquire) && self.etcd.get().is_none() {
            return Err(WriteError::Unavailable(
                "the control store is still being connected".into(),
            ));
        }
        Ok(())
    }

    /// After a store write at `revision` to `key`: waits until this
    /// instance has applied it, and reports a value the instances refuse.
    async fn applied_or_refused(&self, key: &str, revision: u64) -> Result<(), WriteError> {
        self.wait_applied(revision).await;
        match self.rejected_keys().into_iter().find(|(k, _)| k == key) {
            Some((_, reason)) => Err(WriteError::Invalid(format!(
                "the store took the write but this instance refuses the value ({reason}); correct it"
            ))),
            None => Ok(()),
        }
    }

    /// The memory backend's commit of one write: under the writer lock,
    /// `compare` checks the epochs the writer read (the compare of the
    /// compare-and-swap), then every key's *encoded* value is applied to the
    /// next snapshot through [`crate::apply::apply`] — the very step the
    /// etcd watch applies store values with — and the snapshot is published.
    /// So the two backends cannot mean different things by one write.
    fn commit_memory(
        &self,
        compare: impl FnOnce(&Snapshot) -> Result<(), WriteError>,
        changes: &[(store::Key<'_>, Option<&[u8]>)],
    ) -> Result<Arc<Snapshot>, WriteError> {
        let _guard = self.memory_writer()?;
        let current = self.load();
        compare(&current)?;
        let mut next = current.successor();
        let revision = next.revision();
        for (key, value) in changes {
            crate::apply::apply(&mut next, *key, *value, revision, &self.clusters)
                .map_err(|r| WriteError::Invalid(r.to_string()))?;
        }
        let next = Arc::new(next);
        self.current.store(next.clone());
        self.admission.advance(revision);
        self.mark_applied(revision);
        Ok(next)
    }

    /// Waits (bounded) until the snapshot has applied `revision`, so that a
    /// writer reads its own write on this instance.
    async fn wait_applied(&self, revision: u64) -> bool {
        let mut rx = self.revision_tx.subscribe();
        tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|r| *r >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn memory_writer(&self) -> Result<std::sync::MutexGuard<'_, ()>, WriteError> {
        self.writer
            .lock()
            .map_err(|_| WriteError::Invalid("control plane writer poisoned".into()))
    }

    /// Refuses a placement whose physical index passthrough would forward.
    fn outside_passthrough(&self, placement: &Placement, logical: &str) -> Result<(), WriteError> {
        let Some((cluster, prefixes)) = self.passthrough.get() else {
            return Ok(());
        };
        let physical = placement.physical_index(logical);
        // Found by review: full passthrough forwards every name that is not
        // logical, the physical indices of a catalogue added at runtime
        // included (the configuration's own check sees only its file).
        // As the configuration's own check refuses any catalogue next to
        // it (two cluster ids may name one cluster), whatever the cluster.
        let Some(prefixes) = prefixes else {
            return Err(WriteError::Invalid(format!(
                "passthrough forwards every request to cluster {cluster:?} verbatim, so no logical index may stand beside it (index {physical:?} would be open to every caller if it lived there); set `passthrough.indices` (prefixes) or remove `[passthrough]`"
            )));
        };
        match prefixes.iter().find(|p| physical.starts_with(p.as_str())) {
            Some(prefix) if placement.cluster() == cluster => Err(WriteError::Invalid(format!(
                "index {physical:?} on cluster {cluster:?} starts with the passthrough prefix {prefix:?}: passthrough would forward every caller's requests to it; choose another name"
            ))),
            _ => Ok(()),
        }
    }

    fn known_cluster(&self, cluster: &str) -> Result<(), WriteError> {
        if self.clusters.iter().any(|c| c == cluster) {
            Ok(())
        } else {
            Err(WriteError::Invalid(format!(
                "unknown cluster {cluster:?}; configured clusters: {:?}",
                self.clusters
            )))
        }
    }

    /// Sets one partition's placement if its epoch is still
    /// `expected_epoch` (`None`: the entry must not exist yet).
    pub async fn set_placement(
        &self,
        index: &str,
        partition: &PartitionId,
        placement: Placement,
        expected_epoch: Option<u64>,
    ) -> Result<Entry, WriteError> {
        self.writable()?;
        let expected_epoch = expected_epoch.filter(|e| *e != 0);
        self.known_cluster(placement.cluster())?;
        self.outside_passthrough(&placement, index)?;
        let current = self.load();
        let Some(logical) = current.index(index) else {
            return Err(WriteError::Invalid(format!(
                "{index:?} is not a logical index of the catalogue"
            )));
        };
        if current
            .entry(index, partition)
            .is_some_and(|e| e.migrating.is_some())
        {
            return Err(WriteError::Invalid(
                "the partition is being migrated; abort or finish the migration first".into(),
            ));
        }
        // Refuse what the snapshot would refuse, before touching the store.
        current.with_placement(index, partition, placement.clone())?;
        let value = PlacementValue::active(placement.clone());
        let bytes = serde_json::to_vec(&value).map_err(|e| WriteError::Invalid(e.to_string()))?;
        let Some(store) = self.etcd.get() else {
            let next = self.commit_memory(
                |current| {
                    current.not_reserved(index, partition, &placement)?;
                    let existing = current.entry(index, partition).cloned();
                    if existing.as_ref().is_some_and(|e| e.migrating.is_some()) {
                        return Err(WriteError::Invalid(
                            "the partition is being migrated; abort or finish the migration first"
                                .into(),
                        ));
                    }
                    if existing.as_ref().map(|e| e.epoch) != expected_epoch {
                        let epoch = existing.as_ref().map(|e| e.epoch);
                        return Err(WriteError::Conflict(Conflict {
                            entry: existing,
                            epoch,
                        }));
                    }
                    Ok(())
                },
                &[(
                    store::Key::Placement(index, partition.as_str()),
                    Some(&bytes),
                )],
            )?;
            return next
                .entry(index, partition)
                .cloned()
                .ok_or_else(|| WriteError::Invalid("entry vanished".into()));
        };
        let key = store::placement_key(store.prefix(), index, partition.as_str());
        let guard = (store::catalogue_key(store.prefix(), index), logical.epoch);
        let revision = store
            .cas_put(
                &key,
                bytes,
                expected_epoch.unwrap_or(0),
                Some(guard),
                Some(current.revision()),
            )
            .await
            .map_err(|f| {
                f.into_write_error(|epoch, raw| {
                    store::decode_placement(raw).ok().map(|v| Entry {
                        migrating: v.migrating().ok().flatten().map(Arc::new),
                        placement: Arc::new(v.placement),
                        epoch,
                    })
                })
            })?;
        self.applied_or_refused(&key, revision).await?;
        Ok(match self.load().entry(index, partition) {
            Some(e) if e.epoch == revision => e.clone(),
            _ => Entry {
                placement: Arc::new(placement),
                epoch: revision,
                migrating: None,
            },
        })
    }

    /// Adds or replaces a logical index if its epoch is still
    /// `expected_epoch` (`None`: it must not exist yet). Returns the new
    /// epoch.
    pub async fn put_index(
        &self,
        idx: &osproxy_config::IndexConfig,
        expected_epoch: Option<u64>,
    ) -> Result<u64, WriteError> {
        self.writable()?;
        let expected_epoch = expected_epoch.filter(|e| *e != 0);
        osproxy_config::check_index(idx).map_err(|e| WriteError::Invalid(e.to_string()))?;
        self.known_cluster(idx.default.cluster())?;
        self.outside_passthrough(&idx.default, &idx.name)?;
        let current = self.load();
        current.with_index(idx)?;
        let bytes = serde_json::to_vec(idx).map_err(|e| WriteError::Invalid(e.to_string()))?;
        let Some(store) = self.etcd.get() else {
            let next = self.commit_memory(
                |current| {
                    current.reservation_of(&idx.name, None, &idx.default)?;
                    let epoch = current.index(&idx.name).map(|l| l.epoch);
                    if epoch != expected_epoch {
                        return Err(WriteError::Conflict(Conflict { entry: None, epoch }));
                    }
                    Ok(())
                },
                &[(store::Key::Catalogue(&idx.name), Some(&bytes))],
            )?;
            return Ok(next.revision());
        };
        let key = store::catalogue_key(store.prefix(), &idx.name);
        let revision = store
            .cas_put(
                &key,
                bytes,
                expected_epoch.unwrap_or(0),
                None,
                Some(current.revision()),
            )
            .await
            .map_err(|f| f.into_write_error(|_, _| None))?;
        self.applied_or_refused(&key, revision).await?;
        Ok(revision)
    }

    /// Removes a logical index whose epoch is still `expected_epoch`, and
    /// only while no partition has an explicit placement.
    pub async fn delete_index(&self, name: &str, expected_epoch: u64) -> Result<(), WriteError> {
        self.writable()?;
        let current = self.load();
        if current.index(name).is_none() {
            return Err(WriteError::Invalid(format!(
                "{name:?} is not a logical index"
            )));
        }
        current.without_index(name)?;
        let Some(store) = self.etcd.get() else {
            self.commit_memory(
                |current| {
                    let epoch = current.index(name).map(|l| l.epoch);
                    if epoch != Some(expected_epoch) {
                        return Err(WriteError::Conflict(Conflict { entry: None, epoch }));
                    }
                    // etcd's transaction guards the same: no entry left.
                    current
                        .without_index(name)
                        .map(|_| ())
                        .map_err(WriteError::from)
                },
                &[(store::Key::Catalogue(name), None)],
            )?;
            return Ok(());
        };
        let key = store::catalogue_key(store.prefix(), name);
        let entries = format!("{}placements/{name}/", store.prefix());
        let revision = store
            .cas_delete(&key, expected_epoch, &entries)
            .await
            .map_err(|f| f.into_write_error(|_, _| None))?;
        self.wait_applied(revision).await;
        Ok(())
    }

    /// Publishes a directive set (decoded strictly first) if its epoch is
    /// still `expected_epoch` (`None`: no set is published yet). Returns
    /// the new epoch.
    pub async fn put_directives(
        &self,
        bytes: &[u8],
        expected_epoch: Option<u64>,
    ) -> Result<u64, WriteError> {
        DirectiveSet::decode(bytes).map_err(|e| WriteError::Invalid(e.to_string()))?;
        self.put_document(Document::Directives, bytes, expected_epoch)
            .await
    }

    /// Removes the directive set if its epoch is still `expected_epoch`.
    pub async fn clear_directives(&self, expected_epoch: u64) -> Result<(), WriteError> {
        self.clear_document(Document::Directives, expected_epoch)
            .await
    }

    /// Publishes the per-tenant limits (decoded strictly first) if their
    /// epoch is still `expected_epoch` (`None`: none are published yet).
    /// Returns the new epoch.
    pub async fn put_limits(
        &self,
        bytes: &[u8],
        expected_epoch: Option<u64>,
    ) -> Result<u64, WriteError> {
        crate::limits::decode(bytes).map_err(WriteError::Invalid)?;
        self.put_document(Document::Limits, bytes, expected_epoch)
            .await
    }

    /// Removes every per-tenant limit if their epoch is still
    /// `expected_epoch`. Written as an empty document, not deleted: an
    /// absent key would be seeded again from a config file's `[limits]`
    /// by the next instance to start.
    pub async fn clear_limits(&self, expected_epoch: u64) -> Result<(), WriteError> {
        self.put_document(Document::Limits, b"{}", Some(expected_epoch))
            .await
            .map(|_| ())
    }

    /// Writes a whole-document key (already decoded by the caller) if its
    /// epoch is still `expected_epoch`.
    async fn put_document(
        &self,
        doc: Document,
        bytes: &[u8],
        expected_epoch: Option<u64>,
    ) -> Result<u64, WriteError> {
        self.writable()?;
        let expected_epoch = expected_epoch.filter(|e| *e != 0);
        let Some(store) = self.etcd.get() else {
            let next = self.commit_memory(
                |current| {
                    let epoch = doc.epoch(current);
                    if epoch != expected_epoch {
                        return Err(WriteError::Conflict(Conflict { entry: None, epoch }));
                    }
                    Ok(())
                },
                &[(doc.key(), Some(bytes))],
            )?;
            return Ok(next.revision());
        };
        let revision = store
            .cas_put(
                &doc.path(store.prefix()),
                bytes.to_vec(),
                expected_epoch.unwrap_or(0),
                None,
                None,
            )
            .await
            .map_err(|f| f.into_write_error(|_, _| None))?;
        self.wait_applied(revision).await;
        Ok(revision)
    }

    /// Deletes a whole-document key if its epoch is still `expected_epoch`.
    async fn clear_document(&self, doc: Document, expected_epoch: u64) -> Result<(), WriteError> {
        self.writable()?;
        let Some(store) = self.etcd.get() else {
            self.commit_memory(
                |current| {
                    let epoch = doc.epoch(current);
                    if epoch != Some(expected_epoch) {
                        return Err(WriteError::Conflict(Conflict { entry: None, epoch }));
                    }
                    Ok(())
                },
                &[(doc.key(), None)],
            )?;
            return Ok(());
        };
        let revision = store
            .cas_delete(&doc.path(store.prefix()), expected_epoch, "")
            .await
            .map_err(|f| f.into_write_error(|_, _| None))?;
        self.wait_applied(revision).await;
        Ok(())
    }

    /// One migration step (see `osproxy_migrate::controller`): writes the
    /// partition's placement entry (when given) and its migration record
    /// together, if the entry is still at `expect_entry` and the record at
    /// `expect_record` (0: absent) and, with an entry, if neither table
    /// changed after `checked` (the revision of the snapshot the step was
    /// validated against). Returns the revision of the step.
    pub async fn migration_step(
        &self,
        entry: Option<PlacementValue>,
        expect_entry: u64,
        record: &store::MigrationRecord,
        expect_record: u64,
        checked: u64,
    ) -> Result<u64, WriteError> {
        self.writable()?;
        let (index, partition) = (record.index.as_str(), record.partition.as_str());
        // Checked before either backend is touched (apply checks it again).
        if let Some(v) = &entry {
            self.known_cluster(v.placement.cluster())?;
            if let Some(m) = v
                .migrating()
                .map_err(|e| WriteError::Invalid(e.to_string()))?
            {
                self.known_cluster(m.to.cluster())?;
                self.outside_passthrough(&m.to, index)?;
            }
        }
        let entry_bytes = match &entry {
            Some(v) => Some(serde_json::to_vec(v).map_err(|e| WriteError::Invalid(e.to_string()))?),
            None => None,
        };
        let record_bytes =
            serde_json::to_vec(record).map_err(|e| WriteError::Invalid(e.to_string()))?;
        let Some(store) = self.etcd.get() else {
            let pid = PartitionId::new(partition)
                .map_err(|_| WriteError::Invalid("not a partition id".into()))?;
            let mut changes = Vec::with_capacity(2);
            if let Some(b) = &entry_bytes {
                changes.push((store::Key::Placement(index, partition), Some(b.as_slice())));
            }
            changes.push((
                store::Key::Migration(index, partition),
                Some(record_bytes.as_slice()),
            ));
            let next = self.commit_memory(
                |current| {
                    let entry_epoch = current.entry(index, &pid).map(|e| e.epoch).unwrap_or(0);
                    let record_epoch = current
                        .migration(index, partition)
                        .map(|m| m.1)
                        .unwrap_or(0);
                    if entry_epoch != expect_entry || record_epoch != expect_record {
                        return Err(WriteError::Conflict(Conflict {
                            entry: current.entry(index, &pid).cloned(),
                            epoch: Some(record_epoch),
                        }));
                    }
                    Ok(())
                },
                &changes,
            )?;
            return Ok(next.revision());
        };
        let entry_key = store::placement_key(store.prefix(), index, partition);
        let record_key = store::migration_key(store.prefix(), index, partition);
        let revision = store
            .cas_step(
                entry_bytes.map(|b| (entry_key.as_str(), b)),
                (&entry_key, expect_entry),
                (&record_key, record_bytes),
                expect_record,
                checked,
            )
            .await
            .map_err(|f| f.into_write_error(|_, _| None))?;
        self.applied_or_refused(&entry_key, revision).await?;
        self.applied_or_refused(&record_key, revision).await?;
        Ok(revision)
    }
}

/// A key holding one whole document, replaced and cleared whole.
#[derive(Debug, Clone, Copy)]
enum Document {
    Directives,
    Limits,
}

impl Document {
    fn key(self) -> store::Key<'static> {
        match self {
            Document::Directives => store::Key::Directives,
            Document::Limits => store::Key::Limits,
        }
    }

    fn path(self, prefix: &str) -> String {
        match self {
            Document::Directives => store::directives_key(prefix),
            Document::Limits => store::limits_key(prefix),
        }
    }

    /// The epoch of the published document in `snap`, if any.
    fn epoch(self, snap: &Snapshot) -> Option<u64> {
        match self {
            Document::Directives => snap.directives().map(|d| d.1),
            Document::Limits => snap.limits().map(|d| d.1),
        }
    }
}
