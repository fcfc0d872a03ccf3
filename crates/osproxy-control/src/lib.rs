//! The control plane's data: the catalogue of logical indices and the
//! placement table, as one immutable snapshot the request path reads without
//! locks or I/O.
//!
//! The snapshot is built from the config file (the embedded memory backend)
//! or followed from etcd ([`etcd`]); writes go through [`plane`] to either.

pub mod admission;
mod apply;
mod commit;
pub mod directives;
pub mod etcd;
pub mod limits;
pub mod plane;
pub mod snapshot;
pub mod store;
mod write;

pub use admission::WriteTicket;
pub use etcd::{EtcdHandle, StoreError};
pub use plane::{ControlPlane, Counters, NotAdmitted};
pub use snapshot::{CatalogueError, Entry, LogicalIndex, PartitionRule, Resolved, Snapshot};
pub use write::{Conflict, Member, WriteError};
