//! Official clients, unchanged, through osproxy (installed by
//! `scripts/setup` into `target/clients-venv`).

use std::process::Command;

use osproxy_testkit::{free_port, repo_root};

use crate::common::{proxy_to, ready_proxy};

/// Runs one of `tests/clients/*.py` with the project's venv; fails the test
/// with the script's output unless it exits 0.
pub(crate) fn run_python(script: &str, args: &[&str]) {
    let python = repo_root().join("target/clients-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup",
        python.display()
    );
    let out = Command::new(&python)
        .arg(repo_root().join("tests/clients").join(script))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn opensearch_py_works_unchanged_through_passthrough() {
    let proxy = ready_proxy("");
    let dead = proxy_to(&format!("http://127.0.0.1:{}", free_port().unwrap()), "");
    run_python(
        "opensearch_py_passthrough.py",
        &[&proxy.url(), &dead.url(), "pt-python"],
    );
}

/// A proxy where tenants `acme` and `globex` share the logical index
/// `orders` (shared placement `<tag>-orders-shared`); returns it with the two
/// tokens (the temp dir holds the token files).
fn two_tenants(
    tag: &str,
) -> (
    osproxy_testkit::ProxyInstance,
    tempfile::TempDir,
    String,
    String,
) {
    let dir = tempfile::tempdir().unwrap();
    let (acme, globex) = (
        format!("{tag}-acme-token-0123456789"),
        format!("{tag}-globex-token-0123456789"),
    );
    std::fs::write(dir.path().join("acme"), &acme).unwrap();
    std::fs::write(dir.path().join("globex"), &globex).unwrap();
    let extra = format!(
        "indices = [\"{tag}-legacy-\"]\n\n\
         [[principals]]\nname = \"acme\"\ntoken_file = \"{}\"\npartitions = [\"acme\"]\n\n\
         [[principals]]\nname = \"globex\"\ntoken_file = \"{}\"\npartitions = [\"globex\"]\n\n\
         [[indices]]\nname = \"orders\"\ndefault = {{ kind = \"shared\", cluster = \"main\", index = \"{tag}-orders-shared\" }}\n",
        dir.path().join("acme").display(),
        dir.path().join("globex").display()
    );
    (ready_proxy(&extra), dir, acme, globex)
}

#[test]
fn opensearch_py_works_unchanged_against_tenancy() {
    let (proxy, _dir, acme, globex) = two_tenants("py");
    run_python("opensearch_py_tenancy.py", &[&proxy.url(), &acme, &globex]);
}

#[test]
fn opensearch_py_works_unchanged_against_tenancy_with_compression() {
    let (proxy, _dir, acme, globex) = two_tenants("pyz");
    run_python(
        "opensearch_py_tenancy.py",
        &[&proxy.url(), &acme, &globex, "compress"],
    );
}

#[test]
fn opensearch_js_works_unchanged_against_tenancy() {
    run_js("js", None);
}

#[test]
fn opensearch_js_works_unchanged_against_tenancy_with_compression() {
    run_js("jsz", Some("compress"));
}

#[test]
fn opensearch_go_works_unchanged_against_tenancy() {
    let (proxy, _dir, acme, globex) = two_tenants("go");
    let out = Command::new("go")
        .args(["run", "."])
        .args([proxy.url().as_str(), &acme, &globex])
        .current_dir(repo_root().join("tests/clients/go"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "opensearch-go failed (scripts/setup fetches its module):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn opensearch_java_works_unchanged_against_tenancy() {
    let project = repo_root().join("tests/clients/java");
    assert!(
        project.join("target/lib").exists(),
        "{} is not built: run scripts/setup",
        project.display()
    );
    let (proxy, _dir, acme, globex) = two_tenants("java");
    let out = Command::new("java")
        .arg("-cp")
        .arg(format!(
            "{}:{}/*",
            project.join("target/classes").display(),
            project.join("target/lib").display()
        ))
        .arg("dev.osproxy.clients.Tenancy")
        .args([proxy.url().as_str(), &acme, &globex])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "opensearch-java failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The JavaScript client's two-tenant application, against a fleet tagged
/// `tag`, with an optional mode argument.
fn run_js(tag: &str, mode: Option<&str>) {
    let modules = repo_root().join("target/clients-node/node_modules");
    assert!(
        modules.join("@opensearch-project/opensearch").exists(),
        "{} is missing: run scripts/setup",
        modules.display()
    );
    let (proxy, _dir, acme, globex) = two_tenants(tag);
    let out = Command::new("node")
        .arg(repo_root().join("tests/clients/opensearch_js_tenancy.js"))
        .args([proxy.url().as_str(), &acme, &globex])
        .args(mode)
        .env("OSPROXY_NODE_MODULES", &modules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "opensearch-js failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
