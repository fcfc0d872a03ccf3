//! What a control-plane write can come to, and who writes: shared by the
//! plane and its backends.

use crate::snapshot::Entry;

/// A lost compare-and-swap: what the store holds now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Conflict {
    /// The placement entry now, when the write was a placement.
    pub entry: Option<Entry>,
    /// The key's current epoch (its revision), `None` when it does not exist.
    pub epoch: Option<u64>,
}

/// Why a write did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// Someone else changed the key since it was read.
    Conflict(Conflict),
    /// The change itself is not acceptable; the message says why.
    Invalid(String),
    /// The store could not be reached; nothing was written.
    Unavailable(String),
    /// The write was sent but the store did not confirm it (a timeout, a
    /// broken connection): it may or may not have been committed.
    Unknown(String),
}

impl From<crate::snapshot::CatalogueError> for WriteError {
    fn from(e: crate::snapshot::CatalogueError) -> Self {
        WriteError::Invalid(e.to_string())
    }
}

/// This instance, as the fleet list shows it.
#[derive(Debug, Clone, Default)]
pub struct Member {
    /// Instance id.
    pub id: String,
    /// The data listener's address.
    pub address: String,
    /// The admin listener's address.
    pub admin: String,
    /// osproxy's version.
    pub version: String,
    /// Start time, seconds since the Unix epoch.
    pub started: u64,
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
