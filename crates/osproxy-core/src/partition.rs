//! Partition ids: the unit of isolation. Validated once, at the edge.

use std::fmt;

/// A validated partition id: 1 to 128 of `[A-Za-z0-9_.-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId(String);

/// Why a string is not a partition id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidPartition;

impl fmt::Display for InvalidPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a partition id is 1 to 128 characters of [A-Za-z0-9_.-]")
    }
}

impl std::error::Error for InvalidPartition {}

/// Whether `s` is a valid partition id.
///
/// ```
/// use osproxy_core::partition::is_valid_partition;
/// assert!(is_valid_partition("acme-eu.1_b"));
/// assert!(!is_valid_partition("acme eu"));
/// assert!(!is_valid_partition(""));
/// ```
pub fn is_valid_partition(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl PartitionId {
    /// Validates and wraps.
    pub fn new(s: &str) -> Result<Self, InvalidPartition> {
        if is_valid_partition(s) {
            Ok(PartitionId(s.to_string()))
        } else {
            Err(InvalidPartition)
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
