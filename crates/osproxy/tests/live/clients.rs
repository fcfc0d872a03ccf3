//! Official clients, unchanged, through osproxy (installed by
//! `scripts/setup` into `target/clients-venv`).

use std::process::Command;

use osproxy_testkit::{free_port, repo_root};

use crate::common::{proxy_to, ready_proxy};

#[test]
fn opensearch_py_works_unchanged_through_passthrough() {
    let python = repo_root().join("target/clients-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup",
        python.display()
    );
    let proxy = ready_proxy("");
    let dead = proxy_to(&format!("http://127.0.0.1:{}", free_port().unwrap()), "");
    let out = Command::new(&python)
        .arg(repo_root().join("tests/clients/opensearch_py_passthrough.py"))
        .args([proxy.url(), dead.url(), "pt-python".to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "opensearch-py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
