//! Real parts for tests and benchmarks: OpenSearch nodes (from Maven Central
//! jars via `scripts/opensearch-node`), etcd (Debian's `etcd-server`) and
//! osproxy instances (the real binary with a generated config).
//!
//! Every process is stopped when its handle drops — also when a test panics —
//! and, as a safety net, receives SIGTERM if the test process dies
//! (`PR_SET_PDEATHSIG`), so no orphan outlives the suite. Waits are bounded
//! and say what did not come up.

mod etcd;
mod http;
mod load;
mod opensearch;
mod process;
mod proxy;
mod relay;

pub use etcd::Etcd;
pub use http::{Http, HttpResponse};
pub use load::wrk_rps;
pub use opensearch::{shared_opensearch, OpenSearchNode};
pub use process::{free_port, repo_root, wait_until};
pub use proxy::ProxyInstance;
pub use relay::Relay;

/// Errors of the harness: what did not come up, and why.
pub type Error = String;
