//! Live tests of osproxy against a real OpenSearch node (one per test
//! binary, shared) and the real binary. Fault-injection tests use small
//! hand-written TCP peers where a real server cannot produce the fault;
//! each says so.

// Test code: failing loudly is the point.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

/// This binary's shared node is OpenSearch 2.19 (compat3.rs runs a subset on 3.x).
pub(crate) const OPENSEARCH3: bool = false;

mod auth;
mod checker;
mod clients;
mod common;
mod control;
mod diagnostics;
mod etcd_tls;
mod faults;
mod gate;
mod hygiene;
mod isolation;
mod lifecycle;
mod migrate;
mod passthrough;
mod quotas;
mod secured;
mod streaming;
mod tenancy;
mod tls;
