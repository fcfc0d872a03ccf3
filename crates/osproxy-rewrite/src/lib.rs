//! Pure, byte-level transforms of client requests and upstream responses.
//!
//! Nothing here does I/O; every function is deterministic and fuzzable. It
//! classifies request paths, builds partition-scoped document ids, injects
//! and strips the partition field of sources, and confines search bodies.

pub mod bulk;
pub mod classify;
pub mod id_template;
pub mod members;
pub mod prefixes;
pub mod query;
pub mod search;
pub mod source;
mod source_error;
pub mod stream;
pub mod strict;

pub use classify::{classify, Classified, ClassifyError};
pub use id_template::{IdTemplate, TemplateError};
pub use search::{confine_search, Refusal, SearchPolicy};
pub use source::{inject_field, strip_field, SourceError};
