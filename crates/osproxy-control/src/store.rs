//! The store's key layout and value decoding, shared by both backends: a
//! key under the fleet prefix and its JSON value become one change to a
//! snapshot, or a rejection for that key alone.
//!
//! | key (under the prefix)              | value                                   |
//! | ----------------------------------- | --------------------------------------- |
//! | `catalogue/<index>`                 | an `[[indices]]` entry as JSON          |
//! | `placements/<index>/<partition>`    | `{"placement": {...}, "state": "active"}` |
//! | `directives`                        | `{"directives": [...]}`                 |
//! | `limits`                            | `{"default": {...}, "partitions": {...}}` |
//! | `fleet/<instance id>`               | an instance's record (lease-bound)      |
//! | `migrations/<index>/<partition>`    | a migration record                      |

use osproxy_config::IndexConfig;
use osproxy_core::Placement;
use serde::{Deserialize, Serialize};

/// What a key under the prefix names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key<'a> {
    /// `catalogue/<index>`
    Catalogue(&'a str),
    /// `placements/<index>/<partition>`
    Placement(&'a str, &'a str),
    /// `directives`
    Directives,
    /// `limits`
    Limits,
    /// `fleet/<instance id>`
    Fleet(&'a str),
    /// `migrations/<index>/<partition>`
    Migration(&'a str, &'a str),
    /// Anything else under the prefix (ignored, never an error).
    Other,
}

impl<'a> Key<'a> {
    /// Classifies a key relative to the prefix (`None` when the key is not
    /// under it or not UTF-8).
    pub fn parse(prefix: &str, key: &'a [u8]) -> Option<Key<'a>> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(prefix)?;
        Some(if let Some(name) = rest.strip_prefix("catalogue/") {
            Key::Catalogue(name)
        } else if let Some(rest) = rest.strip_prefix("placements/") {
            match rest.split_once('/') {
                Some((i, p)) => Key::Placement(i, p),
                None => Key::Other,
            }
        } else if rest == "directives" {
            Key::Directives
        } else if rest == "limits" {
            Key::Limits
        } else if let Some(id) = rest.strip_prefix("fleet/") {
            Key::Fleet(id)
        } else if let Some(rest) = rest.strip_prefix("migrations/") {
            match rest.split_once('/') {
                Some((i, p)) => Key::Migration(i, p),
                None => Key::Other,
            }
        } else {
            Key::Other
        })
    }
}

/// The key of a logical index's rules.
pub fn catalogue_key(prefix: &str, index: &str) -> String {
    format!("{prefix}catalogue/{index}")
}

/// The key of one partition's placement entry.
pub fn placement_key(prefix: &str, index: &str, partition: &str) -> String {
    format!("{prefix}placements/{index}/{partition}")
}

/// A migration record's key.
pub fn migration_key(prefix: &str, index: &str, partition: &str) -> String {
    format!("{prefix}migrations/{index}/{partition}")
}

/// Where a migration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationPhase {
    /// Copying documents; writes go to the source.
    Copying,
    /// Writes refused; the last changes are copied and checked.
    Cutover,
    /// The partition is active at the destination.
    Done,
    /// Stopped by an operator; the partition is active at the source.
    Aborted,
    /// Stopped by an error; the partition is active at the source.
    Failed,
}

impl MigrationPhase {
    /// Whether the migration is over.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            MigrationPhase::Done | MigrationPhase::Aborted | MigrationPhase::Failed
        )
    }
}

/// The record of one partition's move (`migrations/<index>/<partition>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Unknown fields are kept out of the refusal on purpose: records are written
// by controllers, and one of a newer version may add a field (as `cleaning`
// was added); an instance of this version must still read its record
// instead of refusing the key during a rolling upgrade.
pub struct MigrationRecord {
    /// Logical index.
    pub index: String,
    /// Partition.
    pub partition: String,
    /// Where the data was.
    pub from: Placement,
    /// Where it goes.
    pub to: Placement,
    /// Where the move is.
    pub phase: MigrationPhase,
    /// Started, ms since the epoch.
    pub started_ms: u64,
    /// Last changed, ms since the epoch.
    pub updated_ms: u64,
    /// The instance driving it.
    #[serde(default)]
    pub controller: String,
    /// Documents copied by the full copy.
    #[serde(default)]
    pub copied: u64,
    /// Source bytes the full copy read.
    #[serde(default)]
    pub copied_bytes: u64,
    /// How long the full copy took, ms.
    #[serde(default)]
    pub copy_ms: Option<u64>,
    /// Documents copied by the catch-up in cutover.
    #[serde(default)]
    pub caught_up: u64,
    /// Documents deleted from the destination because the source no
    /// longer had them.
    #[serde(default)]
    pub removed: u64,
    /// The partition's document count at the source when verified.
    #[serde(default)]
    pub verified_count: Option<u64>,
    /// Delete the partition's documents from the source after the flip.
    #[serde(default)]
    pub delete_source: bool,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// How long writes were refused, ms (set at the flip).
    #[serde(default)]
    pub cutover_ms: Option<u64>,
    /// The partition's document count at the source when the full copy
    /// began (progress: `copied` of `total`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// The copy's pace limit, documents per second (none: as fast as the
    /// clusters take it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_docs_per_second: Option<u64>,
    /// An aborted or failed move whose destination may still hold what it
    /// copied: the destination stays reserved to this partition (no other
    /// placement may take it, no new move of the partition may start) until
    /// the controller has removed the copy and cleared this.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cleaning: bool,
    /// Fields of a later version, kept as read so that this version writing
    /// the record back (progress, abort, adoption) does not drop them.
    #[serde(flatten, default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub later: serde_json::Map<String, serde_json::Value>,
}

impl MigrationRecord {
    /// The destination this record still reserves: an ended move's, until
    /// its copy has been removed from it.
    pub fn reserved(&self) -> Option<&Placement> {
        (self.cleaning && matches!(self.phase, MigrationPhase::Aborted | MigrationPhase::Failed))
            .then_some(&self.to)
    }
}

/// The directive set's key.
pub fn directives_key(prefix: &str) -> String {
    format!("{prefix}directives")
}

/// The per-tenant limits' key.
pub fn limits_key(prefix: &str) -> String {
    format!("{prefix}limits")
}

/// A fleet record's key.
pub fn fleet_key(prefix: &str, instance: &str) -> String {
    format!("{prefix}fleet/{instance}")
}

/// The lifecycle state of a placement entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Reads and writes go to the placement.
    #[default]
    Active,
    /// Being moved to `to`: reads go to the placement; writes too while
    /// `copying`, and are refused (retryably) in `cutover`.
    Migrating,
}

/// The phase of a migrating entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Documents are being copied; writes still go to the old placement.
    Copying,
    /// Writes are refused while the last changes are copied and checked.
    Cutover,
}

/// A placement entry's stored value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementValue {
    /// Where the partition's data lives (the source while migrating).
    pub placement: Placement,
    /// Its state.
    #[serde(default)]
    pub state: State,
    /// While migrating: the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Placement>,
    /// While migrating: the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
}

impl PlacementValue {
    /// An active entry.
    pub fn active(placement: Placement) -> Self {
        PlacementValue {
            placement,
            state: State::Active,
            to: None,
            phase: None,
        }
    }

    /// The entry's migration, checked: a migrating entry names `to` (another
    /// placement) and `phase`; an active one names neither.
    pub fn migrating(&self) -> Result<Option<Migrating>, EntryShapeError> {
        match (self.state, &self.to, self.phase) {
            (State::Active, None, None) => Ok(None),
            (State::Migrating, Some(to), Some(phase)) if *to != self.placement => {
                Ok(Some(Migrating {
                    to: std::sync::Arc::new(to.clone()),
                    phase,
                }))
            }
            (State::Migrating, Some(_), Some(_)) => Err(EntryShapeError::MovesNowhere),
            _ => Err(EntryShapeError::Inconsistent),
        }
    }
}

/// Why a placement entry's migration fields do not fit together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EntryShapeError {
    /// A migrating entry's destination is its placement.
    #[error("a migrating entry's `to` must differ from its placement")]
    MovesNowhere,
    /// `state`, `to` and `phase` disagree.
    #[error("a migrating entry names `to` and `phase`; an active one neither")]
    Inconsistent,
}

/// Why a value was not applied. `Display` is shape-only: it never quotes
/// the value, so it is safe in logs and fleet records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not JSON at all.
    Syntax { line: usize, column: usize },
    /// JSON of the wrong shape; `path` is where, `what` the schema.
    Schema { what: &'static str, path: String },
    /// Well-formed but refused (an unknown cluster, a broken rule, an
    /// ownership conflict).
    Refused(String),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Syntax { line, column } => {
                write!(f, "not valid JSON (line {line}, column {column})")
            }
            Rejection::Schema { what, path } => {
                write!(f, "does not match the {what} schema at `{path}`")
            }
            Rejection::Refused(m) => f.write_str(m),
        }
    }
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, Rejection> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| schema(what, e))?;
    de.end().map_err(|e| Rejection::Syntax {
        line: e.line(),
        column: e.column(),
    })?;
    Ok(value)
}

fn schema(what: &'static str, e: serde_path_to_error::Error<serde_json::Error>) -> Rejection {
    let inner = e.inner();
    if inner.is_syntax() || inner.is_eof() {
        Rejection::Syntax {
            line: inner.line(),
            column: inner.column(),
        }
    } else {
        Rejection::Schema {
            what,
            path: e.path().to_string(),
        }
    }
}

/// Decodes a catalogue value for `name`: an `[[indices]]` entry as JSON;
/// its `name`, when present, must be the key's.
pub fn decode_index(name: &str, bytes: &[u8]) -> Result<IndexConfig, Rejection> {
    let mut value: serde_json::Value = decode("catalogue", bytes)?;
    let Some(obj) = value.as_object_mut() else {
        return Err(Rejection::Schema {
            what: "catalogue",
            path: ".".into(),
        });
    };
    match obj.get("name") {
        None => {
            obj.insert("name".into(), serde_json::Value::from(name));
        }
        Some(n) if n.as_str() == Some(name) => {}
        Some(_) => {
            return Err(Rejection::Refused(format!(
                "the value's name differs from the key's ({name:?})"
            )))
        }
    }
    let idx: IndexConfig =
        serde_path_to_error::deserialize(value).map_err(|e| schema("catalogue", e))?;
    osproxy_config::check_index(&idx).map_err(|e| Rejection::Refused(e.to_string()))?;
    Ok(idx)
}

/// A partition on its way to another placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrating {
    /// The destination.
    pub to: std::sync::Arc<Placement>,
    /// How far the move is.
    pub phase: Phase,
}

/// Decodes a placement entry's value.
pub fn decode_placement(bytes: &[u8]) -> Result<PlacementValue, Rejection> {
    decode("placement", bytes)
}

/// The part of a decoder message before any quoted value.
pub(crate) fn shape_of(message: &str) -> &str {
    message.split(['"', '`']).next().unwrap_or("").trim_end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_migration_record_from_a_newer_version_is_read() {
        let newer = serde_json::json!({
            "index": "orders", "partition": "acme",
            "from": {"kind": "shared", "cluster": "main", "index": "s"},
            "to": {"kind": "index", "cluster": "main", "index": "d"},
            "phase": "copying", "started_ms": 1, "updated_ms": 2,
            "controller": "i-0", "a_field_of_a_later_version": {"x": 1}
        });
        let r: MigrationRecord = decode("migration", newer.to_string().as_bytes()).unwrap();
        assert_eq!(r.phase, MigrationPhase::Copying);
        assert!(!r.cleaning);
        // Written back, the later field is still there.
        let again = serde_json::to_value(&r).unwrap();
        assert_eq!(again["a_field_of_a_later_version"]["x"], 1, "{again}");
    }

    #[test]
    fn keys_under_the_prefix() {
        let p = "/osproxy/t/";
        assert_eq!(
            Key::parse(p, b"/osproxy/t/catalogue/orders"),
            Some(Key::Catalogue("orders"))
        );
        assert_eq!(
            Key::parse(p, b"/osproxy/t/placements/orders/acme"),
            Some(Key::Placement("orders", "acme"))
        );
        assert_eq!(
            Key::parse(p, b"/osproxy/t/directives"),
            Some(Key::Directives)
        );
        assert_eq!(
            Key::parse(p, b"/osproxy/t/fleet/i1"),
            Some(Key::Fleet("i1"))
        );
        assert_eq!(
            Key::parse(p, b"/osproxy/t/placements/orders"),
            Some(Key::Other)
        );
        assert_eq!(Key::parse(p, b"/other/catalogue/x"), None);
    }
}
