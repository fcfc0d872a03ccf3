//! The compatibility subset on OpenSearch 3.x (3.9.0, one node for this
//! binary): the tenancy tests (every endpoint kind osproxy serves for
//! logical indices, on every placement kind: shared, index, cluster;
//! refusals, compressed bodies, limits), passthrough, and the official
//! clients' two-tenant applications. The whole live suite runs on 2.19
//! (`tests/live`); this binary reuses the same test files, so a difference
//! between the versions in anything osproxy reads or rewrites fails here.

// Test code: failing loudly is the point.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

/// This binary's shared node is OpenSearch 3.x.
pub(crate) const OPENSEARCH3: bool = true;

#[path = "live/clients.rs"]
mod clients;
#[path = "live/common.rs"]
#[allow(dead_code)] // some helpers serve only tests of the full suite
mod common;
#[path = "live/passthrough.rs"]
mod passthrough;
#[path = "live/tenancy/mod.rs"]
mod tenancy;
