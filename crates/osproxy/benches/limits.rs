//! The cost of per-tenant limits on the request path (not a test; not
//! part of scripts/test). Two instances in front of one real OpenSearch
//! node, identical but for `[limits]`:
//!
//! - `none`: no limits published (the default);
//! - `unhit`: acme limited on every rate and on concurrency, with budgets
//!   it never reaches (its buckets and slot are taken on every request).
//!
//! Each serves a passthrough `GET` of a stored document (no account: the
//! baseline of what limits may not touch) and a tenancy `_search` on a
//! shared placement; wrk `-c16`, rounds alternating, ratios against `none`.
//!
//! Run: `scripts/bench --limits` (or `cargo bench -p osproxy --bench limits`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use http::Method;
use osproxy_testkit::{
    alternating, bench_settings, search_script, Http, OpenSearchNode, ProxyInstance,
};

const ACME: &str = "acme-bench-token-0123456789";

fn config(dir: &std::path::Path, os: &str, limited: bool) -> String {
    std::fs::write(dir.join("acme"), ACME).unwrap();
    let limits = if limited {
        "[limits.partitions.acme]\nreads_per_second = 1000000000\nwrites_per_second = 1000000000\n\
         documents_per_second = 1000000000\nbytes_per_second = \"1000gb\"\nconcurrent_requests = 100000\n"
    } else {
        ""
    };
    format!(
        "[server]\nworkers = 1\n[log]\nlevel = \"warn\"\n\
         [[clusters]]\nid = \"main\"\nurl = \"{os}\"\n\
         [passthrough]\ncluster = \"main\"\nindices = [\"bench-legacy\"]\n\
         [[principals]]\nname = \"acme-svc\"\ntoken_file = \"{}\"\npartitions = [\"acme\"]\n\
         [[indices]]\nname = \"orders\"\ndefault = {{ kind = \"shared\", cluster = \"main\", index = \"bench-limits-shared\" }}\n{limits}",
        dir.join("acme").display()
    )
}

fn main() {
    let (seconds, rounds) = bench_settings(5);
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_osproxy"));
    let node = OpenSearchNode::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let start = |limited: bool| {
        let p = ProxyInstance::start(binary, &config(dir.path(), &node.url(), limited)).unwrap();
        p.wait_ready(Duration::from_secs(60)).unwrap();
        p
    };
    let none = start(false);
    let unhit = start(true);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = Http::new();
    rt.block_on(async {
        let auth = format!("Bearer {ACME}");
        for (path, body) in [
            ("/orders/_doc/1?refresh=true", r#"{"title":"bench"}"#),
            ("/bench-legacy/_doc/1?refresh=true", r#"{"title":"bench"}"#),
        ] {
            let r = http
                .send_with(
                    Method::PUT,
                    &format!("{}{path}", none.url()),
                    Some(body.into()),
                    &[("authorization", auth.as_str())],
                )
                .await
                .unwrap();
            assert!(r.status.is_success(), "{}", r.text());
        }
    });
    let script = search_script(dir.path());

    println!("\nlimits cost: wrk -c16, {seconds}s per cell, {rounds} rounds alternating (rps)\n");
    println!("| request | no limits | limits never hit | unhit/none |");
    println!("| --- | --- | --- | --- |");
    for (name, path, script) in [
        (
            "passthrough GET /bench-legacy/_doc/1",
            "/bench-legacy/_doc/1",
            None,
        ),
        (
            "tenancy _search, shared placement",
            "/orders/_search",
            Some(script.as_path()),
        ),
    ] {
        let bases: Vec<String> = [&none, &unhit].iter().map(|p| p.url()).collect();
        let m = alternating(&bases, path, seconds, rounds, ACME, script).unwrap();
        println!(
            "| {name} | {:.0} | {:.0} | {:.3} |",
            m[0],
            m[1],
            m[1] / m[0]
        );
    }
    // Every request of the limited instance was admitted.
    let refused = rt.block_on(async {
        let r = Http::new()
            .send(Method::GET, &format!("{}/metrics", unhit.admin_url()), None)
            .await
            .unwrap();
        r.text()
            .lines()
            .filter(|l| l.starts_with("osproxy_limited_total"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    });
    assert!(refused.is_empty(), "the limits were hit: {refused:?}");
}
