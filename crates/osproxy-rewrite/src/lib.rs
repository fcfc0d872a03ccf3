//! Pure, byte-level transforms of client requests and upstream responses.
//!
//! Nothing here does I/O or allocates a JSON tree on the hot path; every
//! function is deterministic and fuzzable. Today it classifies request paths;
//! the tenancy rewrites (inject, id templates, query confinement) join it.

pub mod classify;

pub use classify::{classify, Classified, ClassifyError};
