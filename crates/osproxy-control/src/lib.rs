//! The control plane's data: the catalogue of logical indices and the
//! placement table, as one immutable snapshot the request path reads without
//! locks or I/O.
//!
//! Today the snapshot is built from the config file (the embedded memory
//! backend); the etcd backend and the watch-and-cache loop replace the
//! source, not the shape.

pub mod directives;
pub mod etcd;
pub mod plane;
pub mod snapshot;
pub mod store;

pub use etcd::EtcdHandle;
pub use plane::{Conflict, ControlPlane, Counters, Member, WriteError};
pub use snapshot::{Entry, LogicalIndex, PartitionRule, Resolved, Snapshot};
