//! The cost of diagnostics on the request path (not a test; not part of
//! scripts/test). Three instances in front of one real OpenSearch node,
//! identical but for diagnostics:
//!
//! - `off`: `[diagnostics] enabled = false` — the trace machinery bypassed;
//! - `idle`: enabled, no directive published (the production default);
//! - `all`: a directive selecting every request at `timing`.
//!
//! Each serves a passthrough `GET` of a stored document and a tenancy
//! `_search` on a shared placement; wrk `-c16`, rounds alternating between
//! the three, and ratios against `off`.
//!
//! Run: `scripts/bench --diagnostics` (or `cargo bench -p osproxy --bench diagnostics`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use http::Method;
use osproxy_testkit::{
    alternating, bench_settings, search_script, Http, OpenSearchNode, ProxyInstance,
};

const ACME: &str = "acme-bench-token-0123456789";
const OPS: &str = "ops-bench-token-0123456789";

fn config(dir: &std::path::Path, os: &str, enabled: bool) -> String {
    std::fs::write(dir.join("acme"), ACME).unwrap();
    std::fs::write(dir.join("ops"), OPS).unwrap();
    format!(
        "[server]\nworkers = 1\n[log]\nlevel = \"warn\"\n[diagnostics]\nenabled = {enabled}\n\
         [[clusters]]\nid = \"main\"\nurl = \"{os}\"\n\
         [passthrough]\ncluster = \"main\"\nindices = [\"bench-legacy\"]\n\
         [[principals]]\nname = \"acme-svc\"\ntoken_file = \"{}\"\npartitions = [\"acme\"]\n\
         [[principals]]\nname = \"ops\"\ntoken_file = \"{}\"\noperator = true\nany_partition = true\n\
         [[indices]]\nname = \"orders\"\ndefault = {{ kind = \"shared\", cluster = \"main\", index = \"bench-diag-shared\" }}\n",
        dir.join("acme").display(),
        dir.join("ops").display()
    )
}

fn main() {
    let (seconds, rounds) = bench_settings(5);
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_osproxy"));
    let node = OpenSearchNode::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let start = |enabled: bool| {
        let p = ProxyInstance::start(binary, &config(dir.path(), &node.url(), enabled)).unwrap();
        p.wait_ready(Duration::from_secs(60)).unwrap();
        p
    };
    let off = start(false);
    let idle = start(true);
    let all = start(true);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = Http::new();
    rt.block_on(async {
        let auth = format!("Bearer {ACME}");
        let ops = format!("Bearer {OPS}");
        for (path, body) in [
            ("/orders/_doc/1?refresh=true", r#"{"title":"bench"}"#),
            ("/bench-legacy/_doc/1?refresh=true", r#"{"title":"bench"}"#),
        ] {
            let r = http
                .send_with(
                    Method::PUT,
                    &format!("{}{path}", off.url()),
                    Some(body.into()),
                    &[("authorization", auth.as_str())],
                )
                .await
                .unwrap();
            assert!(r.status.is_success(), "{}", r.text());
        }
        let set =
            r#"{"directives":[{"id":"all","level":"timing","expires_at":"2099-01-01T00:00:00Z"}]}"#;
        let r = http
            .send_with(
                Method::PUT,
                &format!("{}/v1/directives", all.admin_url()),
                Some(set.into()),
                &[("authorization", ops.as_str())],
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    });
    let script = search_script(dir.path());

    println!(
        "\ndiagnostics cost: wrk -c16, {seconds}s per cell, {rounds} rounds alternating (rps)\n"
    );
    println!(
        "| request | off (bypassed) | idle (no directive) | all at timing | idle/off | all/off |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
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
        let bases: Vec<String> = [&off, &idle, &all].iter().map(|p| p.url()).collect();
        let m = alternating(&bases, path, seconds, rounds, ACME, script).unwrap();
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.3} | {:.3} |",
            m[0],
            m[1],
            m[2],
            m[1] / m[0],
            m[2] / m[0]
        );
    }
}
