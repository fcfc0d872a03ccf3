//! Real parts for tests and benchmarks: OpenSearch nodes (from Maven Central
//! jars via `scripts/opensearch-node`), etcd (Debian's `etcd-server`) and
//! osproxy instances (the real binary with a generated config).
//!
//! Every process is stopped when its handle drops — also when a test panics —
//! and, as a safety net, receives SIGTERM if the test process dies
//! (`PR_SET_PDEATHSIG`), so no orphan outlives the suite. Waits are bounded
//! and say what did not come up.

mod etcd;
mod fixture;
mod http;
mod load;
mod opensearch;
mod process;
mod proxy;
mod relay;
mod tls;

pub use etcd::{Etcd, EtcdTls};
pub use fixture::{eventually, As, ConfigBuilder, Grant};
pub use http::{Http, HttpResponse};
pub use load::{alternating, bench_settings, search_script, wrk_rps};
pub use opensearch::{
    shared_opensearch, shared_opensearch3, OpenSearchNode, SECURED_PASSWORD, SECURED_USER,
};
pub use process::{free_port, repo_root, wait_until};
pub use proxy::ProxyInstance;
pub use relay::Relay;
pub use tls::{Admission, GzipProxy, Issued, TestCa, TlsTerminator};

/// How long one test binary may run before the watchdog ends it, unless
/// `OSPROXY_TEST_BINARY_LIMIT_SECS` says otherwise.
pub const DEFAULT_BINARY_LIMIT_SECS: u64 = 900;

/// Starts (once per process) a watchdog that ends the test binary when it
/// runs past its bound, saying so; a hung test then fails the suite in
/// minutes instead of stalling CI. Every harness start calls it, so any
/// binary that starts a real part is bounded.
pub fn bound_test_binary() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let limit = std::env::var("OSPROXY_TEST_BINARY_LIMIT_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_BINARY_LIMIT_SECS);
        let started = std::time::Instant::now();
        let spawned = std::thread::Builder::new()
            .name("test-watchdog".into())
            .spawn(move || {
                std::thread::sleep(std::time::Duration::from_secs(limit));
                let binary = std::env::args().next().unwrap_or_default();
                eprintln!(
                    "\ntest watchdog: {binary} has run for {} s, past its bound of {limit} s \
                     (OSPROXY_TEST_BINARY_LIMIT_SECS); a test hung — the tests still running are the \
                     ones above without a result. Exiting.",
                    started.elapsed().as_secs()
                );
                // Exit hooks stop the shared OpenSearch node.
                std::process::exit(101);
            });
        if let Err(e) = spawned {
            eprintln!("test watchdog: could not start: {e}");
        }
    });
}

/// Errors of the harness: what did not come up, and why.
pub type Error = String;
