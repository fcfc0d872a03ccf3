//! Migration benchmark (not a test; not part of scripts/test): a real
//! OpenSearch node, a real etcd and two osproxy instances. A partition of
//! 100,000 documents moves from the shared index to its own index while 8
//! writers keep writing through both instances; the report gives the copy
//! throughput (documents/s, MB/s) and the write-refusal window each writer
//! saw (from its first refused write to its next acknowledged one).
//!
//! Run: `scripts/bench --migration` (or `cargo bench -p osproxy --bench migration`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use osproxy_testkit::{Etcd, Http, OpenSearchNode, ProxyInstance};
use serde_json::{json, Value};

const ACME: &str = "acme-bench-token-0123456789";
const OPS: &str = "ops-bench-token-0123456789";
/// Documents in the moving partition (`OSPROXY_BENCH_MIGRATION_DOCS`, a
/// multiple of 5,000; default 100,000).
fn docs() -> usize {
    std::env::var("OSPROXY_BENCH_MIGRATION_DOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}
const WRITERS: usize = 8;

fn config(dir: &std::path::Path, os: &str, etcd: &str, i: usize) -> String {
    std::fs::write(dir.join("acme"), ACME).unwrap();
    std::fs::write(dir.join("ops"), OPS).unwrap();
    format!(
        "[server]\nworkers = 1\ninstance_id = \"bench-{i}\"\n[log]\nlevel = \"warn\"\n\
         [[clusters]]\nid = \"main\"\nurl = \"{os}\"\n\
         [[principals]]\nname = \"acme-svc\"\ntoken_file = \"{}\"\npartitions = [\"acme\"]\n\
         [[principals]]\nname = \"ops\"\ntoken_file = \"{}\"\noperator = true\nany_partition = true\n\
         [control]\nbackend = \"etcd\"\netcd = {{ endpoints = [\"{etcd}\"], prefix = \"/osproxy/bench-mig/\", lease_ttl = \"3s\", progress_interval = \"200ms\" }}\n\
         [[indices]]\nname = \"orders\"\ndefault = {{ kind = \"shared\", cluster = \"main\", index = \"bench-mig-shared\" }}\n",
        dir.join("acme").display(),
        dir.join("ops").display()
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Writes until `stop`; returns every refusal window it went through.
async fn writer(http: Http, base: [String; 2], w: usize, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let auth = format!("Bearer {ACME}");
    let mut windows = Vec::new();
    let mut refused_since: Option<Instant> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let url = format!("{}/orders/_doc/w{w}-{}", base[(n % 2) as usize], n % 100);
        let r = http
            .send_with(
                Method::PUT,
                &url,
                Some(json!({"n": n}).to_string().into()),
                &[("authorization", auth.as_str())],
            )
            .await
            .unwrap();
        match r.status.as_u16() {
            200 | 201 => {
                if let Some(at) = refused_since.take() {
                    windows.push(at.elapsed());
                }
            }
            409 | 503 => {
                refused_since.get_or_insert_with(Instant::now);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    windows
}

fn main() {
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_osproxy"));
    let node = OpenSearchNode::start().unwrap();
    let etcd = Etcd::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let instances: Vec<ProxyInstance> = (0..2)
        .map(|i| {
            let p = ProxyInstance::start(
                binary,
                &config(dir.path(), &node.url(), &etcd.endpoint(), i),
            )
            .unwrap();
            p.wait_ready(Duration::from_secs(60)).unwrap();
            p
        })
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = Http::new();
        let auth = format!("Bearer {ACME}");
        for chunk in 0..(docs() / 5000) {
            let mut bulk = String::new();
            for i in chunk * 5000..(chunk + 1) * 5000 {
                bulk.push_str(&format!(
                    "{{\"index\":{{\"_index\":\"orders\",\"_id\":\"d{i}\"}}}}\n{{\"n\":{i},\"title\":\"document number {i}\",\"pad\":\"{}\"}}\n",
                    "x".repeat(64)
                ));
            }
            let r = http
                .send_with(Method::POST, &format!("{}/_bulk", instances[0].url()), Some(bulk.into()),
                           &[("authorization", auth.as_str()), ("content-type", "application/x-ndjson")])
                .await
                .unwrap();
            assert_eq!(r.json()["errors"], false);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let base = [instances[0].url(), instances[1].url()];
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| tokio::spawn(writer(Http::new(), base.clone(), w, stop.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ops = format!("Bearer {OPS}");
        let body = json!({"index": "orders", "partition": "acme", "to": {"kind": "index", "cluster": "main", "index": "bench-mig-acme"}});
        let started = Instant::now();
        let r = http
            .send_with(Method::POST, &format!("{}/v1/migrations", instances[0].admin_url()), Some(body.to_string().into()), &[("authorization", ops.as_str())])
            .await
            .unwrap();
        assert_eq!(r.status, 202, "{}", r.text());
        let record: Value = loop {
            let r = http
                .send_with(Method::GET, &format!("{}/v1/migrations/orders/acme", instances[1].admin_url()), None, &[("authorization", ops.as_str())])
                .await
                .unwrap()
                .json();
            if r["phase"] == "done" || r["phase"] == "failed" {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let total = started.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Relaxed);
        let mut windows = Vec::new();
        for w in writers {
            windows.extend(w.await.unwrap());
        }
        windows.sort();
        assert_eq!(record["phase"], "done", "{record}");
        let copied = record["copied"].as_u64().unwrap_or(0);
        let bytes = record["copied_bytes"].as_u64().unwrap_or(0);
        let copy_ms = record["copy_ms"].as_u64().unwrap_or(1).max(1);
        let peak = instances[0].rss_kib().map(|(_, peak)| peak).unwrap_or(0);
        println!("\nmigration of a {}-document partition, shared index → its own index, {WRITERS} writers through 2 instances\n", docs());
        println!("| measure | value |");
        println!("| --- | --- |");
        println!("| documents copied (full copy) | {copied} |");
        println!("| full copy time | {:.1} s |", copy_ms as f64 / 1000.0);
        println!("| copy throughput | {:.0} documents/s, {:.1} MB/s |", copied as f64 * 1000.0 / copy_ms as f64, bytes as f64 / 1e6 * 1000.0 / copy_ms as f64);
        println!("| caught up in cutover / removed | {} / {} |", record["caught_up"], record["removed"]);
        println!("| cutover (controller's view) | {} ms |", record["cutover_ms"]);
        println!("| whole migration | {:.1} s |", total.as_secs_f64());
        println!("| peak RSS of the controlling instance (VmHWM, whole process) | {} MiB |", peak / 1024);
        println!(
            "| write-refusal window seen by writers ({} windows) | p50 {} ms, p99 {} ms, max {} ms |",
            windows.len(),
            percentile(&windows, 0.5).as_millis(),
            percentile(&windows, 0.99).as_millis(),
            windows.last().copied().unwrap_or_default().as_millis()
        );
    });
}
