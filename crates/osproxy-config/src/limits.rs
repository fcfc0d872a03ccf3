//! Per-tenant limits: `[limits.default]` and `[limits.partitions.<id>]` in
//! the config file, and the same document (as JSON) under the control
//! plane's `limits` key, changed at run time.
//!
//! A partition with an entry of its own is limited by that entry alone
//! (a rate it leaves out is not limited); a partition without one by
//! `default` (none: not limited). Every value is the budget of the whole
//! fleet; each instance enforces its share.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ByteSize;

/// One partition's budget; an absent field is not limited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionLimits {
    /// Read requests a second (search, count, get, mget, msearch, scroll,
    /// PIT, index metadata reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reads_per_second: Option<f64>,
    /// Write requests a second (index, update, delete, bulk, by-query,
    /// index management).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes_per_second: Option<f64>,
    /// Bulk items a second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents_per_second: Option<f64>,
    /// Request body bytes a second (`"10mb"` or a number of bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_second: Option<ByteSize>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_requests: Option<u32>,
}

/// `[limits]`: the default and the partitions' own budgets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// For partitions without an entry of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<PartitionLimits>,
    /// By partition id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub partitions: BTreeMap<String, PartitionLimits>,
}

/// The largest rate a limit may name (a second), and the most partitions
/// one document may list: bounds that keep a published set cheap.
pub const MAX_RATE: f64 = 1e9;
/// The smallest rate a limit may name: one an hour, about (to block a
/// partition, take its grant away instead).
pub const MIN_RATE: f64 = 0.000_25;
/// See [`MAX_RATE`].
pub const MAX_LIMITED_PARTITIONS: usize = 100_000;

impl PartitionLimits {
    /// Whether nothing is limited.
    pub fn is_unlimited(&self) -> bool {
        self == &PartitionLimits::default()
    }

    /// Every problem, as (field, message).
    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let rates = [
            ("reads_per_second", self.reads_per_second),
            ("writes_per_second", self.writes_per_second),
            ("documents_per_second", self.documents_per_second),
        ];
        for (name, rate) in rates {
            if let Some(r) = rate {
                if !r.is_finite() || !(MIN_RATE..=MAX_RATE).contains(&r) {
                    out.push((
                        name,
                        format!("{r} is not a rate: give a number from {MIN_RATE} (about one an hour) to {MAX_RATE}"),
                    ));
                }
            }
        }
        if self.bytes_per_second.is_some_and(|b| b.bytes() == 0) {
            out.push((
                "bytes_per_second",
                "0 is not a rate: give a size above 0, like \"10mb\"".to_string(),
            ));
        }
        if self.concurrent_requests == Some(0) {
            out.push((
                "concurrent_requests",
                "0 would refuse every request: give 1 or more, or leave it out".to_string(),
            ));
        }
        out
    }
}

impl Limits {
    /// Whether no partition is limited.
    pub fn is_empty(&self) -> bool {
        self.default
            .as_ref()
            .is_none_or(PartitionLimits::is_unlimited)
            && self.partitions.values().all(PartitionLimits::is_unlimited)
    }

    /// The budget `partition` is held to, if any.
    pub fn of(&self, partition: &str) -> Option<&PartitionLimits> {
        self.partitions
            .get(partition)
            .or(self.default.as_ref())
            .filter(|l| !l.is_unlimited())
    }

    /// Every problem, as (dotted key under `limits`, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(d) = &self.default {
            for (field, m) in d.problems() {
                out.push((format!("default.{field}"), m));
            }
        }
        if self.partitions.len() > MAX_LIMITED_PARTITIONS {
            out.push((
                "partitions".to_string(),
                format!(
                    "{} partitions; at most {MAX_LIMITED_PARTITIONS} may have limits of their own",
                    self.partitions.len()
                ),
            ));
        }
        for (id, l) in &self.partitions {
            if osproxy_core::PartitionId::new(id).is_err() {
                out.push((
                    format!("partitions.{id}"),
                    "not a partition id: 1 to 128 of [A-Za-z0-9_.-]".to_string(),
                ));
            }
            for (field, m) in l.problems() {
                out.push((format!("partitions.{id}.{field}"), m));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_entry_replaces_the_default() {
        let l: Limits = toml::from_str(
            r#"
            [default]
            reads_per_second = 100
            [partitions.acme]
            writes_per_second = 5
            bytes_per_second = "1mb"
            "#,
        )
        .unwrap();
        assert!(l.problems().is_empty());
        let acme = l.of("acme").unwrap();
        assert_eq!(acme.reads_per_second, None);
        assert_eq!(acme.bytes_per_second.unwrap().bytes(), 1 << 20);
        assert_eq!(l.of("globex").unwrap().reads_per_second, Some(100.0));
        assert!(Limits::default().of("acme").is_none());
        assert!(Limits::default().is_empty());
    }

    #[test]
    fn bad_values_are_named() {
        let l: Limits = serde_json::from_str(
            r#"{"default":{"reads_per_second":0},"partitions":{"a b":{"concurrent_requests":0,"writes_per_second":-1}}}"#,
        )
        .unwrap();
        let keys: Vec<String> = l.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "default.reads_per_second",
                "partitions.a b",
                "partitions.a b.writes_per_second",
                "partitions.a b.concurrent_requests"
            ]
        );
        assert!(serde_json::from_str::<Limits>(r#"{"default":{"rps":1}}"#).is_err());
        // So small a bucket could not hold one unit: refused, not unlimited.
        let tiny: Limits =
            serde_json::from_str(r#"{"default":{"reads_per_second":1e-11}}"#).unwrap();
        assert_eq!(tiny.problems().len(), 1);
    }
}
