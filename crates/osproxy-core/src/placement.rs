//! Placements: where one partition's data of one logical index lives.

use serde::{Deserialize, Serialize};

/// A placement, as written in config, the store and the admin API:
///
/// ```json
/// {"kind": "shared",  "cluster": "main", "index": "orders-shared"}
/// {"kind": "index",   "cluster": "main", "index": "orders-acme"}
/// {"kind": "cluster", "cluster": "acme-dedicated"}
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Placement {
    /// A shared physical index, isolated by an injected field, a
    /// partition-scoped `_id` and `_routing`.
    Shared {
        /// Cluster id.
        cluster: String,
        /// The shared physical index.
        index: String,
    },
    /// A physical index of the partition's own on a shared cluster.
    Index {
        /// Cluster id.
        cluster: String,
        /// The partition's physical index.
        index: String,
    },
    /// A cluster of the partition's own.
    Cluster {
        /// Cluster id.
        cluster: String,
        /// The physical index there; the logical name when absent.
        index: Option<String>,
    },
}

impl Placement {
    /// The cluster id.
    pub fn cluster(&self) -> &str {
        match self {
            Placement::Shared { cluster, .. }
            | Placement::Index { cluster, .. }
            | Placement::Cluster { cluster, .. } => cluster,
        }
    }

    /// The physical index, given the logical name (used by `cluster`
    /// placements without an explicit index).
    pub fn physical_index<'a>(&'a self, logical: &'a str) -> &'a str {
        match self {
            Placement::Shared { index, .. } | Placement::Index { index, .. } => index,
            Placement::Cluster { index, .. } => index.as_deref().unwrap_or(logical),
        }
    }

    /// Whether this is a shared placement (isolation by rewriting).
    pub fn is_shared(&self) -> bool {
        matches!(self, Placement::Shared { .. })
    }

    /// The kind's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Placement::Shared { .. } => "shared",
            Placement::Index { .. } => "index",
            Placement::Cluster { .. } => "cluster",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_documented_forms() {
        let p: Placement =
            serde_json::from_str(r#"{"kind":"cluster","cluster":"acme-dedicated"}"#).unwrap();
        assert_eq!(p.physical_index("orders"), "orders");
        let p: Placement =
            serde_json::from_str(r#"{"kind":"index","cluster":"main","index":"orders-acme"}"#)
                .unwrap();
        assert_eq!(
            (p.cluster(), p.physical_index("orders")),
            ("main", "orders-acme")
        );
        assert!(
            serde_json::from_str::<Placement>(r#"{"kind":"shared","cluster":"main"}"#).is_err()
        );
        assert!(serde_json::from_str::<Placement>(r#"{"kind":"moon","cluster":"main"}"#).is_err());
        assert!(serde_json::from_str::<Placement>(
            r#"{"kind":"index","cluster":"m","index":"i","x":1}"#
        )
        .is_err());
    }
}
