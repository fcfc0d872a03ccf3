//! The etcd backend: [`client`] (connection, seeding, reads and
//! compare-and-swap transactions) and [`follow`] (watch-and-cache and the
//! fleet record), following the design's recipe: one consistent range read
//! of the prefix at revision R, a snapshot swapped in, then a watch from
//! R+1 with progress requests, applied revision by revision. A dropped
//! stream resumes from the last applied revision after a jittered, capped
//! backoff; a compacted start revision means re-reading everything. A value
//! that does not decode is refused for its key alone.

pub mod client;
pub mod follow;

pub use client::{EtcdStore, StoreError};
pub use follow::EtcdHandle;
