//! The vocabulary shared by every osproxy crate: endpoint kinds, the typed
//! error taxonomy with stable codes, and request ids.
//!
//! This crate does no I/O and has no async code; it must stay cheap to depend on.

pub mod b64;
pub mod civil;
pub mod endpoint;
pub mod error;
pub mod partition;
pub mod placement;
pub mod request_id;

pub use endpoint::EndpointKind;
pub use error::{ErrorCode, ProxyError};
pub use partition::PartitionId;
pub use placement::Placement;
pub use request_id::RequestIdMinter;
