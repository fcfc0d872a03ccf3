//! The control plane an instance serves from: the current snapshot, swapped
//! atomically when the catalogue or placements change, and compare-and-swap
//! writes. This is the memory backend (the embedded default); the etcd
//! backend feeds the same swap from its watch.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use osproxy_core::{PartitionId, Placement};

use crate::snapshot::{Entry, Snapshot};

/// A lost compare-and-swap: the entry as it is now (absent when `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict(pub Option<Entry>);

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// Someone else changed the entry since it was read.
    Conflict(Conflict),
    /// The write is invalid (unknown index or cluster, or it would mix
    /// tenants' data); the message says why.
    Invalid(String),
}

/// The current snapshot and its writer.
#[derive(Debug)]
pub struct ControlPlane {
    current: ArcSwap<Snapshot>,
    /// Writers are serialised; readers never wait.
    writer: Mutex<()>,
    /// Cluster ids placements may name.
    clusters: Vec<String>,
}

impl ControlPlane {
    /// Serves `initial` until something changes.
    pub fn new(initial: Snapshot, clusters: Vec<String>) -> Self {
        ControlPlane {
            current: ArcSwap::from_pointee(initial),
            writer: Mutex::new(()),
            clusters,
        }
    }

    /// The current snapshot: one atomic load, no lock, no I/O.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Sets the placement of `partition` of `index`, only if its entry is at
    /// `expected_epoch` (`None`: the entry must not exist yet).
    pub fn set_placement(
        &self,
        index: &str,
        partition: &PartitionId,
        placement: Placement,
        expected_epoch: Option<u64>,
    ) -> Result<Entry, WriteError> {
        let _guard = self
            .writer
            .lock()
            .map_err(|_| WriteError::Invalid("control plane writer poisoned".into()))?;
        let current = self.current.load_full();
        if current.index(index).is_none() {
            return Err(WriteError::Invalid(format!(
                "{index:?} is not a logical index of the catalogue"
            )));
        }
        if !self.clusters.iter().any(|c| c == placement.cluster()) {
            return Err(WriteError::Invalid(format!(
                "unknown cluster {:?}; configured clusters: {:?}",
                placement.cluster(),
                self.clusters
            )));
        }
        let existing = current.entry(index, partition).cloned();
        if existing.as_ref().map(|e| e.epoch) != expected_epoch {
            return Err(WriteError::Conflict(Conflict(existing)));
        }
        let next = current
            .with_placement(index, partition, placement)
            .map_err(WriteError::Invalid)?;
        let entry = next
            .entry(index, partition)
            .cloned()
            .ok_or_else(|| WriteError::Invalid("entry vanished".into()))?;
        self.current.store(Arc::new(next));
        Ok(entry)
    }
}

impl ControlPlane {
    /// Adds or replaces a logical index, only if it is at `expected_epoch`
    /// (`None`: it must not exist yet). Returns the new epoch.
    pub fn put_index(
        &self,
        idx: &osproxy_config::IndexConfig,
        expected_epoch: Option<u64>,
    ) -> Result<u64, WriteError> {
        osproxy_config::check_index(idx).map_err(WriteError::Invalid)?;
        if !self.clusters.iter().any(|c| c == idx.default.cluster()) {
            return Err(WriteError::Invalid(format!(
                "unknown cluster {:?}; configured clusters: {:?}",
                idx.default.cluster(),
                self.clusters
            )));
        }
        let _guard = self
            .writer
            .lock()
            .map_err(|_| WriteError::Invalid("control plane writer poisoned".into()))?;
        let current = self.current.load_full();
        let epoch = current.index(&idx.name).map(|l| l.epoch);
        if epoch != expected_epoch {
            return Err(WriteError::Conflict(Conflict(None)));
        }
        let next = current.with_index(idx).map_err(WriteError::Invalid)?;
        let revision = next.revision();
        self.current.store(Arc::new(next));
        Ok(revision)
    }

    /// Removes a logical index at `expected_epoch`.
    pub fn delete_index(&self, name: &str, expected_epoch: u64) -> Result<(), WriteError> {
        let _guard = self
            .writer
            .lock()
            .map_err(|_| WriteError::Invalid("control plane writer poisoned".into()))?;
        let current = self.current.load_full();
        match current.index(name).map(|l| l.epoch) {
            None => {
                return Err(WriteError::Invalid(format!(
                    "{name:?} is not a logical index"
                )))
            }
            Some(e) if e != expected_epoch => return Err(WriteError::Conflict(Conflict(None))),
            Some(_) => {}
        }
        let next = current.without_index(name).map_err(WriteError::Invalid)?;
        self.current.store(Arc::new(next));
        Ok(())
    }
}
