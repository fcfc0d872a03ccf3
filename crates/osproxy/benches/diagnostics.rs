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
use osproxy_testkit::{wrk_rps, Http, OpenSearchNode, ProxyInstance};

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
    let seconds: u64 = std::env::var("OSPROXY_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rounds: usize = std::env::var("OSPROXY_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
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
    let script = dir.path().join("search.lua");
    std::fs::write(
        &script,
        "wrk.method = \"POST\"\nwrk.body = '{\"query\":{\"match_all\":{}},\"size\":1}'\nwrk.headers[\"content-type\"] = \"application/json\"\n",
    )
    .unwrap();

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
        let mut sums = [0.0f64; 3];
        for _ in 0..rounds {
            for (i, p) in [&off, &idle, &all].iter().enumerate() {
                sums[i] += wrk_rps(&format!("{}{path}", p.url()), seconds, ACME, script).unwrap();
            }
        }
        let m = sums.map(|s| s / rounds as f64);
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
