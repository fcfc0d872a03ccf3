//! An immutable snapshot of the catalogue and placement table.

use std::collections::HashMap;
use std::sync::Arc;

use osproxy_config::{Config, PartitionSource};
use osproxy_core::{PartitionId, Placement};
use osproxy_rewrite::IdTemplate;

use crate::directives::DirectiveSet;

/// Why a catalogue entry or placement is not acceptable to the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogueError {
    /// The logical index's `id` template does not parse.
    #[error("id: {0}")]
    IdTemplate(#[source] osproxy_rewrite::TemplateError),
    /// One `[[indices]]` entry of the config is not acceptable.
    #[error("indices {index}: {source}")]
    Index {
        /// The logical index's name.
        index: String,
        /// Why.
        #[source]
        source: Box<CatalogueError>,
    },
    /// A placement names an index that is not one concrete index.
    #[error("{0:?} is not a valid concrete index name (lower-case; no wildcards, commas, spaces or path characters)")]
    NotConcrete(String),
    /// A physical index would hold two owners' data.
    #[error("index {index:?} on cluster {cluster:?} is already used by another placement; each physical index serves one logical index, and a dedicated one serves one partition")]
    Owned {
        /// The cluster.
        cluster: String,
        /// The physical index.
        index: String,
    },
    /// The physical index still holds what an ended move of a partition
    /// copied into it (see `MigrationRecord::cleaning`).
    #[error("index {index:?} on cluster {cluster:?} still holds documents an ended migration of partition {partition:?} of {logical:?} copied into it; it is reserved until its controller has removed them (see `ctl migrate status {logical} {partition}`), then retry")]
    Reserved {
        /// The cluster.
        cluster: String,
        /// The physical index.
        index: String,
        /// The logical index of the ended migration.
        logical: String,
        /// Its partition.
        partition: String,
    },
    /// A logical index is removed while partitions are still placed in it.
    #[error("{0:?} still has explicit placements; remove the logical index only when none remain")]
    StillPlaced(String),
}

/// Where a logical index finds a request's partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionRule {
    /// The principal's grant (or the one it names in `x-osproxy-partition`).
    Principal,
    /// A header set by a trusted gateway.
    Header(String),
    /// A top-level string field of each written document (other requests:
    /// the principal's grant or `x-osproxy-partition`).
    Body(String),
}

/// One logical index of the catalogue.
#[derive(Debug, Clone)]
pub struct LogicalIndex {
    /// The name clients use.
    pub name: String,
    /// Where the partition comes from.
    pub partition: PartitionRule,
    /// Physical `_id` template for shared placements.
    pub id_template: IdTemplate,
    /// The injected isolation field for shared placements.
    pub field: String,
    /// Placement of partitions without an explicit entry.
    pub default: Arc<Placement>,
    /// Whether scripts are allowed in shared placements.
    pub allow_scripts: bool,
    /// The operator's declared mappings of its shared indices, if any.
    pub mappings: Option<Arc<serde_json::Value>>,
    /// The operator's declared settings of its shared indices, if any.
    pub settings: Option<Arc<serde_json::Value>>,
    /// The control-plane revision of its last change.
    pub epoch: u64,
}

impl LogicalIndex {
    /// From a catalogue entry as written in config or sent to the admin API.
    pub fn from_config(
        idx: &osproxy_config::IndexConfig,
        epoch: u64,
    ) -> Result<Self, CatalogueError> {
        let id_template = IdTemplate::parse(&idx.id).map_err(CatalogueError::IdTemplate)?;
        let partition = match &idx.partition {
            PartitionSource::From(_) => PartitionRule::Principal,
            PartitionSource::Header(h) => PartitionRule::Header(h.to_ascii_lowercase()),
            PartitionSource::Body(f) => PartitionRule::Body(f.clone()),
        };
        Ok(LogicalIndex {
            name: idx.name.clone(),
            partition,
            id_template,
            field: idx.field.clone(),
            default: Arc::new(idx.default.clone()),
            allow_scripts: idx.allow_scripts,
            mappings: idx.mappings.clone().map(Arc::new),
            settings: idx.settings.clone().map(Arc::new),
            epoch,
        })
    }
}

/// A placement entry with the epoch it was last changed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where the data lives (the source while migrating).
    pub placement: Arc<Placement>,
    /// The control-plane revision of its last change.
    pub epoch: u64,
    /// Set while the partition is being moved.
    pub migrating: Option<Arc<Migrating>>,
}

pub use crate::store::Migrating;

/// A routing decision: the logical index, its partition's placement, and
/// the epoch it was made at.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The logical index.
    pub index: Arc<LogicalIndex>,
    /// The placement.
    pub placement: Arc<Placement>,
    /// The epoch of the placement entry (0 for the default placement).
    pub epoch: u64,
    /// Set while the partition is being moved.
    pub migrating: Option<Arc<Migrating>>,
}

/// The catalogue and placement table at one revision.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    indices: HashMap<String, Arc<LogicalIndex>>,
    /// Explicit entries by logical index, then partition (looked up by
    /// borrowed names: no allocation on the request path).
    placements: HashMap<String, HashMap<String, Entry>>,
    /// The published directive set and its epoch.
    directives: Option<(Arc<DirectiveSet>, u64)>,
    /// The per-tenant limits and their epoch (none: nothing is limited).
    limits: Option<(Arc<osproxy_config::Limits>, u64)>,
    /// Migration records and their epochs, by `index\0partition`.
    migrations: HashMap<String, (Arc<crate::store::MigrationRecord>, u64)>,
    revision: u64,
    /// While a whole table is loaded, ownership is checked once at the end
    /// (`check`) instead of after every value.
    deferred: bool,
}

impl Snapshot {
    /// The snapshot a memory-backed instance starts from: the config's
    /// `[[indices]]` and `[[placements]]` at revision 1.
    pub fn from_config(config: &Config) -> Result<Self, CatalogueError> {
        let revision = 1;
        let mut indices = HashMap::new();
        for idx in &config.indices {
            let logical =
                LogicalIndex::from_config(idx, revision).map_err(|e| CatalogueError::Index {
                    index: idx.name.clone(),
                    source: Box::new(e),
                })?;
            indices.insert(idx.name.clone(), Arc::new(logical));
        }
        let mut placements: HashMap<String, HashMap<String, Entry>> = HashMap::new();
        for p in &config.placements {
            let entry = Entry {
                placement: Arc::new(p.placement.clone()),
                epoch: revision,
                migrating: None,
            };
            placements
                .entry(p.index.clone())
                .or_default()
                .insert(p.partition.clone(), entry);
        }
        Ok(Snapshot {
            indices,
            placements,
            directives: None,
            limits: (!config.limits.is_empty())
                .then(|| (Arc::new(config.limits.clone()), revision)),
            migrations: HashMap::new(),
            revision,
            deferred: false,
        })
    }

    /// The logical index called `name`.
    pub fn index(&self, name: &str) -> Option<&Arc<LogicalIndex>> {
        self.indices.get(name)
    }

    /// Whether the catalogue has any logical index.
    pub fn has_indices(&self) -> bool {
        !self.indices.is_empty()
    }

    /// Whether `name` is a logical index.
    pub fn is_logical(&self, name: &str) -> bool {
        self.indices.contains_key(name)
    }

    /// Where `partition`'s data of `index` lives.
    pub fn resolve(&self, index: &str, partition: &PartitionId) -> Option<Resolved> {
        let logical = self.indices.get(index)?;
        match self.entry(index, partition) {
            Some(e) => Some(Resolved {
                index: logical.clone(),
                placement: e.placement.clone(),
                epoch: e.epoch,
                migrating: e.migrating.clone(),
            }),
            None => Some(Resolved {
                index: logical.clone(),
                placement: logical.default.clone(),
                epoch: 0,
                migrating: None,
            }),
        }
    }

    /// The explicit entry of `partition` of `index`, if any.
    pub fn entry(&self, index: &str, partition: &PartitionId) -> Option<&Entry> {
        self.placements.get(index)?.get(partition.as_str())
    }

    /// Every explicit entry of `index`, by partition.
    pub fn entries(&self, index: &str) -> Vec<(&str, &Entry)> {
        let mut out: Vec<(&str, &Entry)> = self
            .placements
            .get(index)
            .into_iter()
            .flatten()
            .map(|(p, e)| (p.as_str(), e))
            .collect();
        out.sort_by(|a, b| a.0.cmp(b.0));
        out
    }

    /// A copy at the next revision with `partition`'s placement set, refused
    /// when it would put two owners' data in one physical index.
    pub fn with_placement(
        &self,
        index: &str,
        partition: &PartitionId,
        placement: Placement,
    ) -> Result<Snapshot, CatalogueError> {
        self.not_reserved(index, partition, &placement)?;
        let mut next = self.successor();
        next.put_placement_at(index, partition.as_str(), placement, next.revision, None)?;
        Ok(next)
    }

    /// Refuses a placement of `partition` of `index` that would expose what
    /// an ended move left in its destination: a dedicated destination is
    /// reserved from everyone, a shared one from the moved partition (whose
    /// leftovers its filter would select). Other partitions of a shared
    /// index never see them. Checked when a placement is written, not when a
    /// store value is applied (a reservation never makes a value refused).
    pub(crate) fn not_reserved(
        &self,
        index: &str,
        partition: &PartitionId,
        placement: &Placement,
    ) -> Result<(), CatalogueError> {
        self.reservation_of(index, Some(partition.as_str()), placement)
    }

    /// Like [`Snapshot::not_reserved`] for a logical index's default
    /// placement (`partition`: none, every partition without an entry).
    pub(crate) fn reservation_of(
        &self,
        index: &str,
        partition: Option<&str>,
        placement: &Placement,
    ) -> Result<(), CatalogueError> {
        let slot = (placement.cluster(), placement.physical_index(index));
        for (record, _) in self.migrations.values() {
            let Some(reserved) = record.reserved() else {
                continue;
            };
            if (reserved.cluster(), reserved.physical_index(&record.index)) != slot {
                continue;
            }
            // The moved partition keeps an explicit entry after an abort
            // or failure, so a shared default of its own index never
            // serves it the leftovers.
            let harmless = reserved.is_shared()
                && placement.is_shared()
                && record.index == index
                && partition != Some(record.partition.as_str());
            if !harmless {
                return Err(CatalogueError::Reserved {
                    cluster: slot.0.to_string(),
                    index: slot.1.to_string(),
                    logical: record.index.clone(),
                    partition: record.partition.clone(),
                });
            }
        }
        Ok(())
    }

    /// Sets one partition's entry at `epoch`, in place; on an ownership
    /// conflict nothing changes.
    pub(crate) fn put_placement_at(
        &mut self,
        index: &str,
        partition: &str,
        placement: Placement,
        epoch: u64,
        migrating: Option<Arc<Migrating>>,
    ) -> Result<(), CatalogueError> {
        let entry = Entry {
            placement: Arc::new(placement),
            epoch,
            migrating,
        };
        let previous = self
            .placements
            .entry(index.to_string())
            .or_default()
            .insert(partition.to_string(), entry);
        if let Err(e) = self.checked() {
            self.restore_placement(index, partition, previous);
            return Err(e);
        }
        Ok(())
    }

    fn restore_placement(&mut self, index: &str, partition: &str, previous: Option<Entry>) {
        if let Some(by_partition) = self.placements.get_mut(index) {
            match previous {
                Some(p) => {
                    by_partition.insert(partition.to_string(), p);
                }
                None => {
                    by_partition.remove(partition);
                }
            }
            if by_partition.is_empty() {
                self.placements.remove(index);
            }
        }
    }

    /// Removes one partition's entry (it falls back to the default).
    pub(crate) fn remove_placement(&mut self, index: &str, partition: &str) {
        self.restore_placement(index, partition, None);
    }

    /// Adds or replaces a logical index at `epoch`, in place; on an invalid
    /// rule or an ownership conflict nothing changes.
    pub(crate) fn put_index_at(
        &mut self,
        idx: &osproxy_config::IndexConfig,
        epoch: u64,
    ) -> Result<(), CatalogueError> {
        let logical = LogicalIndex::from_config(idx, epoch)?;
        let previous = self.indices.insert(idx.name.clone(), Arc::new(logical));
        if let Err(e) = self.checked() {
            match previous {
                Some(p) => self.indices.insert(idx.name.clone(), p),
                None => self.indices.remove(&idx.name),
            };
            return Err(e);
        }
        Ok(())
    }

    /// Removes a logical index (its explicit entries stay until removed,
    /// but nothing resolves through an index that is not in the catalogue).
    pub(crate) fn remove_index(&mut self, name: &str) {
        self.indices.remove(name);
    }

    /// Sets (or removes) one migration record.
    pub(crate) fn set_migration(
        &mut self,
        index: &str,
        partition: &str,
        record: Option<(Arc<crate::store::MigrationRecord>, u64)>,
    ) {
        let k = migration_slot(index, partition);
        match record {
            Some(r) => {
                self.migrations.insert(k, r);
            }
            None => {
                self.migrations.remove(&k);
            }
        }
    }

    /// One partition's migration record and its epoch.
    pub fn migration(
        &self,
        index: &str,
        partition: &str,
    ) -> Option<&(Arc<crate::store::MigrationRecord>, u64)> {
        self.migrations.get(&migration_slot(index, partition))
    }

    /// Every migration record.
    pub fn migrations(&self) -> impl Iterator<Item = &(Arc<crate::store::MigrationRecord>, u64)> {
        self.migrations.values()
    }

    /// Replaces the directive set.
    pub(crate) fn set_directives(&mut self, set: Option<(Arc<DirectiveSet>, u64)>) {
        self.directives = set;
    }

    /// The published directive set and its epoch, if any.
    pub fn directives(&self) -> Option<&(Arc<DirectiveSet>, u64)> {
        self.directives.as_ref()
    }

    /// Replaces the per-tenant limits.
    pub(crate) fn set_limits(&mut self, limits: Option<(Arc<osproxy_config::Limits>, u64)>) {
        self.limits = limits;
    }

    /// The published per-tenant limits and their epoch, if any.
    pub fn limits(&self) -> Option<&(Arc<osproxy_config::Limits>, u64)> {
        self.limits.as_ref()
    }

    /// A copy at the next revision, to change and publish.
    pub(crate) fn successor(&self) -> Snapshot {
        let mut next = self.clone();
        next.revision += 1;
        next
    }

    pub(crate) fn defer_checks(&mut self, deferred: bool) {
        self.deferred = deferred;
    }

    fn checked(&self) -> Result<(), CatalogueError> {
        if self.deferred {
            Ok(())
        } else {
            self.check_ownership()
        }
    }

    /// The whole table's consistency (after a deferred load).
    pub(crate) fn check(&self) -> Result<(), CatalogueError> {
        self.check_ownership()
    }

    /// Drops `key`'s value again (a carried value that breaks ownership).
    pub(crate) fn uncarry(&mut self, key: crate::store::Key<'_>) {
        use crate::store::Key;
        match key {
            Key::Catalogue(name) => self.remove_index(name),
            Key::Placement(index, partition) => self.remove_placement(index, partition),
            Key::Directives => self.directives = None,
            Key::Limits => self.limits = None,
            Key::Migration(index, partition) => self.set_migration(index, partition, None),
            Key::Fleet(_) | Key::Other => {}
        }
    }

    /// Copies `key`'s value from `previous` (the last good one).
    pub(crate) fn carry(&mut self, previous: &Snapshot, key: crate::store::Key<'_>) {
        use crate::store::Key;
        match key {
            Key::Catalogue(name) => {
                if let Some(l) = previous.indices.get(name) {
                    self.indices.insert(name.to_string(), l.clone());
                }
            }
            Key::Placement(index, partition) => {
                if let Some(e) = previous
                    .placements
                    .get(index)
                    .and_then(|m| m.get(partition))
                {
                    self.placements
                        .entry(index.to_string())
                        .or_default()
                        .insert(partition.to_string(), e.clone());
                }
            }
            Key::Directives => self.directives = previous.directives.clone(),
            Key::Limits => self.limits = previous.limits.clone(),
            Key::Migration(index, partition) => {
                let k = migration_slot(index, partition);
                match previous.migrations.get(&k) {
                    Some(m) => {
                        self.migrations.insert(k, m.clone());
                    }
                    None => {
                        self.migrations.remove(&k);
                    }
                }
            }
            Key::Fleet(_) | Key::Other => {}
        }
    }

    /// Every logical index, in no particular order.
    pub fn indices(&self) -> impl Iterator<Item = &Arc<LogicalIndex>> {
        self.indices.values()
    }

    /// How many logical indices the catalogue holds.
    pub fn index_count(&self) -> usize {
        self.indices.len()
    }

    pub(crate) fn set_revision(&mut self, revision: u64) {
        self.revision = revision;
    }

    /// Each physical index serves one logical index, and a dedicated one a
    /// single partition; defaults are shared.
    fn check_ownership(&self) -> Result<(), CatalogueError> {
        let mut owners: HashMap<(String, String), String> = HashMap::new();
        let defaults = self
            .indices
            .values()
            .map(|l| (l.name.clone(), None::<String>, l.default.clone()));
        // A migrating entry holds its destination too.
        let entries = self.placements.iter().flat_map(|(i, by_partition)| {
            by_partition.iter().flat_map(move |(p, e)| {
                std::iter::once(e.placement.clone())
                    .chain(e.migrating.as_ref().map(|m| m.to.clone()))
                    .map(move |pl| (i.clone(), Some(p.clone()), pl))
            })
        });
        for (logical, partition, placement) in defaults.chain(entries) {
            let claim = match (&partition, placement.is_shared()) {
                (_, true) | (None, _) => format!("shared:{logical}"),
                (Some(p), false) => format!("own:{logical}/{p}"),
            };
            let slot = (
                placement.cluster().to_string(),
                placement.physical_index(&logical).to_string(),
            );
            // Runtime writes get the name check config validation gives: a
            // wildcard or comma would make one placement reach many indices.
            if !osproxy_config::is_valid_index_name(&slot.1) {
                return Err(CatalogueError::NotConcrete(slot.1));
            }
            match owners.get(&slot) {
                Some(existing) if *existing != claim => {
                    return Err(CatalogueError::Owned {
                        cluster: slot.0,
                        index: slot.1,
                    })
                }
                _ => {
                    owners.insert(slot, claim);
                }
            }
        }
        Ok(())
    }

    /// A copy at the next revision with `idx` added or replaced (its epoch
    /// the new revision), refused when it would mix owners' data.
    pub fn with_index(
        &self,
        idx: &osproxy_config::IndexConfig,
    ) -> Result<Snapshot, CatalogueError> {
        self.reservation_of(&idx.name, None, &idx.default)?;
        let mut next = self.successor();
        next.put_index_at(idx, next.revision)?;
        Ok(next)
    }

    /// A copy at the next revision without the logical index `name`; refused
    /// while partitions have explicit placements in it.
    pub fn without_index(&self, name: &str) -> Result<Snapshot, CatalogueError> {
        if !self.entries(name).is_empty() {
            return Err(CatalogueError::StillPlaced(name.to_string()));
        }
        let mut next = self.successor();
        next.indices.remove(name);
        next.placements.remove(name);
        Ok(next)
    }

    /// The revision this snapshot reflects.
    pub fn revision(&self) -> u64 {
        self.revision
    }
}

fn migration_slot(index: &str, partition: &str) -> String {
    format!("{index}\u{0}{partition}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MigrationPhase, MigrationRecord};

    fn orders() -> Snapshot {
        std::env::set_var("OSPROXY_CONTROL_TEST_TOKEN", "t0123456789abcdef");
        let cfg = osproxy_config::from_str(
            "[[clusters]]\nid = \"main\"\nurl = \"http://127.0.0.1:1\"\n\
             [[principals]]\nname = \"s\"\ntoken_env = \"OSPROXY_CONTROL_TEST_TOKEN\"\npartitions = [\"acme\"]\n\
             [[indices]]\nname = \"orders\"\ndefault = { kind = \"shared\", cluster = \"main\", index = \"orders-shared\" }\n",
            std::iter::empty(),
            &[],
        )
        .unwrap();
        Snapshot::from_config(&cfg).unwrap()
    }

    fn ended(to: Placement, phase: MigrationPhase, cleaning: bool) -> MigrationRecord {
        MigrationRecord {
            index: "orders".into(),
            partition: "acme".into(),
            from: shared("orders-shared"),
            to,
            phase,
            started_ms: 0,
            updated_ms: 0,
            controller: "i-0".into(),
            copied: 0,
            copied_bytes: 0,
            copy_ms: None,
            caught_up: 0,
            removed: 0,
            verified_count: None,
            delete_source: false,
            error: None,
            cutover_ms: None,
            total: None,
            max_docs_per_second: None,
            cleaning,
            later: Default::default(),
        }
    }

    fn shared(index: &str) -> Placement {
        Placement::Shared {
            cluster: "main".into(),
            index: index.into(),
        }
    }

    fn own(index: &str) -> Placement {
        Placement::Index {
            cluster: "main".into(),
            index: index.into(),
        }
    }

    fn pid(p: &str) -> PartitionId {
        PartitionId::new(p).unwrap()
    }

    #[test]
    fn an_uncleaned_dedicated_destination_is_reserved_from_every_placement() {
        let mut snap = orders();
        let record = ended(own("orders-left"), MigrationPhase::Aborted, true);
        snap.set_migration("orders", "acme", Some((Arc::new(record.clone()), 7)));
        for p in ["globex", "acme"] {
            let e = snap
                .with_placement("orders", &pid(p), own("orders-left"))
                .unwrap_err();
            assert!(
                matches!(&e, CatalogueError::Reserved { index, partition, .. } if index == "orders-left" && partition == "acme"),
                "{e}"
            );
            assert!(
                e.to_string().contains("ctl migrate status orders acme"),
                "{e}"
            );
        }
        // Another index, and the moved partition elsewhere, are unaffected.
        assert!(snap
            .with_placement("orders", &pid("globex"), own("orders-g"))
            .is_ok());
        assert!(snap
            .with_placement("orders", &pid("acme"), own("orders-a"))
            .is_ok());
        // Cleaned, or a finished move: free again (a done move's
        // destination is owned by its live entry instead).
        for (phase, cleaning) in [
            (MigrationPhase::Aborted, false),
            (MigrationPhase::Done, true),
        ] {
            let r = ended(own("orders-left"), phase, cleaning);
            snap.set_migration("orders", "acme", Some((Arc::new(r), 8)));
            assert!(snap
                .with_placement("orders", &pid("globex"), own("orders-left"))
                .is_ok());
        }
    }

    #[test]
    fn an_uncleaned_destination_cannot_become_another_logical_indexs_default() {
        let mut snap = orders();
        let record = ended(own("orders-left"), MigrationPhase::Aborted, true);
        snap.set_migration("orders", "acme", Some((Arc::new(record), 7)));
        let reports: osproxy_config::IndexConfig = serde_json::from_value(serde_json::json!({
            "name": "reports",
            "default": {"kind": "shared", "cluster": "main", "index": "orders-left"}
        }))
        .unwrap();
        assert!(matches!(
            snap.with_index(&reports),
            Err(CatalogueError::Reserved { .. })
        ));
    }

    #[test]
    fn an_uncleaned_shared_destination_is_reserved_from_the_moved_partition_only() {
        let mut snap = orders();
        let record = ended(shared("orders-s2"), MigrationPhase::Failed, true);
        snap.set_migration("orders", "acme", Some((Arc::new(record), 7)));
        // Its filter would select the leftovers.
        assert!(matches!(
            snap.with_placement("orders", &pid("acme"), shared("orders-s2")),
            Err(CatalogueError::Reserved { .. })
        ));
        // Another partition's filter never does.
        assert!(snap
            .with_placement("orders", &pid("globex"), shared("orders-s2"))
            .is_ok());
        // Nor can a dedicated placement take the index.
        assert!(matches!(
            snap.with_placement("orders", &pid("globex"), own("orders-s2")),
            Err(CatalogueError::Reserved { .. })
        ));
    }

    #[test]
    fn explicit_entries_win_over_the_default() {
        std::env::set_var("OSPROXY_CONTROL_TEST_TOKEN", "t0123456789abcdef");
        let cfg = osproxy_config::from_str(
            "[[clusters]]\nid = \"main\"\nurl = \"http://127.0.0.1:1\"\n\
             [[principals]]\nname = \"s\"\ntoken_env = \"OSPROXY_CONTROL_TEST_TOKEN\"\npartitions = [\"acme\"]\n\
             [[indices]]\nname = \"orders\"\ndefault = { kind = \"shared\", cluster = \"main\", index = \"orders-shared\" }\n\
             [[placements]]\nindex = \"orders\"\npartition = \"acme\"\nplacement = { kind = \"index\", cluster = \"main\", index = \"orders-acme\" }\n",
            std::iter::empty(),
            &[],
        )
        .unwrap();
        let snap = Snapshot::from_config(&cfg).unwrap();
        let acme = snap
            .resolve("orders", &PartitionId::new("acme").unwrap())
            .unwrap();
        assert_eq!(acme.placement.physical_index("orders"), "orders-acme");
        assert_eq!(acme.epoch, 1);
        let other = snap
            .resolve("orders", &PartitionId::new("globex").unwrap())
            .unwrap();
        assert!(other.placement.is_shared());
        assert_eq!(other.epoch, 0);
        assert!(snap
            .resolve("nope", &PartitionId::new("acme").unwrap())
            .is_none());
    }
}
