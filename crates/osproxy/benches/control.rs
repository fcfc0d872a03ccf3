//! The control plane's benchmark (not a test; not part of scripts/test):
//!
//! 1. Propagation: 100 placement changes published straight to etcd; for
//!    each, the time until every one of 3 instances serves it through its
//!    admin API, against the time until 3 plain etcd watchers receive the
//!    same put (the floor any watch-based design starts from). Also the
//!    time of the same change made with the admin API (compare-and-swap
//!    transaction included) until all 3 serve it.
//! 2. Request-path throughput with the etcd backend against the memory
//!    backend, same config, same run, alternating (wrk, tenancy GET of a
//!    document on a shared placement, real OpenSearch node).
//!
//! Run: `scripts/bench --control` (or `cargo bench -p osproxy --bench control`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, WatchOptions};
use http::Method;
use osproxy_testkit::{wrk_rps, Etcd, Http, OpenSearchNode, ProxyInstance};

const ACME: &str = "acme-bench-token-0123456789";
const OPS: &str = "ops-bench-token-0123456789";
const CHANGES: usize = 100;

fn config(dir: &std::path::Path, os: &str, backend: &str, etcd: &str, i: usize) -> String {
    std::fs::write(dir.join("acme"), ACME).unwrap();
    std::fs::write(dir.join("ops"), OPS).unwrap();
    let control = match backend {
        "etcd" => format!(
            "[control]\nbackend = \"etcd\"\netcd = {{ endpoints = [\"{etcd}\"], prefix = \"/osproxy/bench/\" }}\n"
        ),
        _ => String::new(),
    };
    format!(
        "[server]\nworkers = 1\ninstance_id = \"bench-{backend}-{i}\"\n[log]\nlevel = \"warn\"\n\
         [[clusters]]\nid = \"main\"\nurl = \"{os}\"\n\
         [[principals]]\nname = \"acme-svc\"\ntoken_file = \"{}\"\npartitions = [\"acme\"]\n\
         [[principals]]\nname = \"ops\"\ntoken_file = \"{}\"\noperator = true\nany_partition = true\n\
         {control}\
         [[indices]]\nname = \"orders\"\ndefault = {{ kind = \"shared\", cluster = \"main\", index = \"bench-shared\" }}\n",
        dir.join("acme").display(),
        dir.join("ops").display()
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Polls one instance's admin API until partition `p`'s entry is at `epoch`.
async fn served(http: &Http, admin: &str, p: &str, epoch: u64) {
    let url = format!("{admin}/v1/placements/orders/{p}");
    let auth = format!("Bearer {OPS}");
    loop {
        let r = http
            .send_with(Method::GET, &url, None, &[("authorization", auth.as_str())])
            .await
            .unwrap();
        if r.json()["epoch"].as_u64() == Some(epoch) {
            return;
        }
    }
}

async fn propagation(etcd: &Etcd, instances: &[ProxyInstance]) {
    let mut client = Client::connect([etcd.endpoint()], None).await.unwrap();
    // Three plain watchers: the floor.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    for _ in 0..3 {
        let mut c = client.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut w = c
                .watch(
                    "/osproxy/bench/placements/",
                    Some(WatchOptions::new().with_prefix()),
                )
                .await
                .unwrap();
            while let Ok(Some(resp)) = w.message().await {
                for ev in resp.events() {
                    if ev.event_type() == EventType::Put {
                        if let Some(kv) = ev.kv() {
                            let _ = tx.send((kv.key_str().unwrap().to_string(), Instant::now()));
                        }
                    }
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let admins: Vec<String> = instances.iter().map(|p| p.admin_url()).collect();
    let https: Vec<Arc<Http>> = (0..3).map(|_| Arc::new(Http::new())).collect();
    let mut through_proxy = Vec::new();
    let mut plain = Vec::new();
    for k in 0..CHANGES {
        let p = format!("p{k}");
        let key = format!("/osproxy/bench/placements/orders/{p}");
        let value =
            format!(r#"{{"placement":{{"kind":"index","cluster":"main","index":"bench-{p}"}}}}"#);
        let started = Instant::now();
        let put = client.put(key.as_str(), value, None).await.unwrap();
        let epoch = put.header().unwrap().revision() as u64;
        let waits = admins.iter().zip(&https).map(|(a, h)| {
            let (a, h, p) = (a.clone(), h.clone(), p.clone());
            tokio::spawn(async move { served(&h, &a, &p, epoch).await })
        });
        for w in waits.collect::<Vec<_>>() {
            w.await.unwrap();
        }
        through_proxy.push(started.elapsed());
        let mut got = 0;
        let mut last = started;
        while got < 3 {
            let (k2, at) = rx.recv().await.unwrap();
            if k2 == key {
                got += 1;
                last = last.max(at);
            }
        }
        plain.push(last - started);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The same change made through the admin API (what `osproxy ctl
    // placement set` does): CAS transaction, then all three serve it.
    let mut via_admin = Vec::new();
    let auth = format!("Bearer {OPS}");
    for k in 0..CHANGES {
        let p = format!("a{k}");
        let body = format!(r#"{{"kind":"index","cluster":"main","index":"bench-{p}"}}"#);
        let started = Instant::now();
        let r = https[0]
            .send_with(
                Method::PUT,
                &format!("{}/v1/placements/orders/{p}", admins[0]),
                Some(body.into()),
                &[("authorization", auth.as_str())],
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let epoch = r.json()["epoch"].as_u64().unwrap();
        let waits = admins.iter().zip(&https).map(|(a, h)| {
            let (a, h, p) = (a.clone(), h.clone(), p.clone());
            tokio::spawn(async move { served(&h, &a, &p, epoch).await })
        });
        for w in waits.collect::<Vec<_>>() {
            w.await.unwrap();
        }
        via_admin.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for v in [&mut through_proxy, &mut plain, &mut via_admin] {
        v.sort();
    }
    println!("\npropagation to 3 instances, {CHANGES} changes each (ms)\n");
    println!("| path | p50 | p99 | max |");
    println!("| --- | --- | --- | --- |");
    for (name, v) in [
        (
            "etcd put → 3 plain etcd watchers receive it (floor)",
            &plain,
        ),
        ("etcd put → 3 osproxy instances serve it", &through_proxy),
        (
            "admin API PUT (CAS) → 3 osproxy instances serve it",
            &via_admin,
        ),
    ] {
        println!(
            "| {name} | {} | {} | {} |",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.99)),
            ms(*v.last().unwrap())
        );
    }
}

fn main() {
    let seconds: u64 = std::env::var("OSPROXY_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_osproxy"));
    let node = OpenSearchNode::start().unwrap();
    let etcd = Etcd::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let start = |backend: &str, i: usize| {
        let p = ProxyInstance::start(
            binary,
            &config(dir.path(), &node.url(), backend, &etcd.endpoint(), i),
        )
        .unwrap();
        p.wait_ready(Duration::from_secs(60)).unwrap();
        p
    };
    let fleet: Vec<ProxyInstance> = (0..3).map(|i| start("etcd", i)).collect();
    let memory = start("memory", 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(propagation(&etcd, &fleet));

    // Request path: one document, GET through each backend, alternating.
    let http = Http::new();
    rt.block_on(async {
        let auth = format!("Bearer {ACME}");
        let r = http
            .send_with(
                Method::PUT,
                &format!("{}/orders/_doc/1?refresh=true", memory.url()),
                Some(r#"{"title":"bench"}"#.into()),
                &[("authorization", auth.as_str())],
            )
            .await
            .unwrap();
        assert!(r.status == 201 || r.status == 200, "{}", r.text());
    });
    let (mut m, mut e) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        m.push(
            wrk_rps(
                &format!("{}/orders/_doc/1", memory.url()),
                seconds,
                ACME,
                None,
            )
            .unwrap(),
        );
        e.push(
            wrk_rps(
                &format!("{}/orders/_doc/1", fleet[0].url()),
                seconds,
                ACME,
                None,
            )
            .unwrap(),
        );
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!("\nrequest path, tenancy GET /orders/_doc/1 (shared placement), wrk -c16, {seconds}s × 3 rounds alternating\n");
    println!("| backend | rounds (rps) | mean rps |");
    println!("| --- | --- | --- |");
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("| memory | {} | {:.0} |", fmt(&m), mean(&m));
    println!("| etcd | {} | {:.0} |", fmt(&e), mean(&e));
    println!("\netcd/memory: {:.3}", mean(&e) / mean(&m));
}
