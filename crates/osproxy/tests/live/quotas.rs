//! Per-tenant limits across a real fleet: three instances on one etcd,
//! each enforcing its share of the fleet's budget. A tenant driven at ten
//! times its limit through all three gets about its limit in total; a
//! quiet tenant's throughput and latency stay within a bound of what they
//! are without the noise; a change through `ctl limits` applies on every
//! instance without a restart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use osproxy_testkit::{eventually, Http};
use serde_json::Value;

use crate::control::{EtcdFleet, ACME, GLOBEX};

/// The fleet's read budget for acme.
const BUDGET: f64 = 30.0;

async fn search(http: &Http, base: &str, token: &str) -> u16 {
    let auth = format!("Bearer {token}");
    http.send_with(
        Method::GET,
        &format!("{base}/orders/_search?size=1"),
        None,
        &[("authorization", auth.as_str())],
    )
    .await
    .map(|r| r.status.as_u16())
    .unwrap_or(0)
}

/// A quiet tenant's closed loop: 2 clients, `secs` seconds, round-robin
/// over the instances. Returns (requests a second, p99 latency).
async fn quiet(bases: &[String], secs: u64) -> (f64, Duration) {
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..2 {
        let bases = bases.to_vec();
        let latencies = latencies.clone();
        tasks.push(tokio::spawn(async move {
            let http = Http::new();
            let mut i = c;
            while Instant::now() < deadline {
                let t = Instant::now();
                let status = search(&http, &bases[i % bases.len()], GLOBEX).await;
                assert_eq!(status, 200, "the quiet tenant was refused");
                latencies.lock().unwrap().push(t.elapsed());
                i += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut l = latencies.lock().unwrap().clone();
    l.sort();
    let p99 = l[(l.len() * 99 / 100).min(l.len() - 1)];
    (l.len() as f64 / secs as f64, p99)
}

/// Drives acme open-loop at `rate` requests a second over the instances
/// for `secs` seconds; returns (answered 200, answered 429, other).
async fn noisy(bases: &[String], rate: u64, secs: u64) -> (u64, u64, u64) {
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let http = Http::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    let per_tick = rate / 100;
    let mut sent = Vec::new();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut n = 0usize;
    while Instant::now() < end {
        ticker.tick().await;
        for _ in 0..per_tick {
            let (http, base, counts) =
                (http.clone(), bases[n % bases.len()].clone(), counts.clone());
            n += 1;
            sent.push(tokio::spawn(async move {
                let slot = match search(&http, &base, ACME).await {
                    200 => 0,
                    429 => 1,
                    _ => 2,
                };
                counts[slot].fetch_add(1, Ordering::Relaxed);
            }));
        }
    }
    for s in sent {
        s.await.unwrap();
    }
    (
        counts[0].load(Ordering::Relaxed),
        counts[1].load(Ordering::Relaxed),
        counts[2].load(Ordering::Relaxed),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_at_ten_times_its_limit_through_three_instances_gets_its_limit() {
    let fleet = EtcdFleet::start_with(
        "fq",
        3,
        false,
        &format!("[limits.partitions.acme]\nreads_per_second = {BUDGET}\n"),
    );
    let bases: Vec<String> = fleet.instances.iter().map(|p| p.url()).collect();
    for i in 0..3 {
        eventually(
            "every instance counts three in the fleet",
            Duration::from_secs(15),
            || async { fleet.admin(i, "/v1/limits").await.json()["fleet_size"] == 3 },
        )
        .await;
    }
    // The shared index exists before anything is measured.
    let http = Http::new();
    assert_eq!(search(&http, &bases[0], GLOBEX).await, 200);

    let (alone_rate, alone_p99) = quiet(&bases, 4).await;
    let secs = 6;
    let (noise, with_noise) = tokio::join!(
        noisy(&bases, (BUDGET as u64) * 10, secs),
        quiet(&bases, secs)
    );
    let (ok, refused, other) = noise;
    let (noisy_rate, noisy_p99) = with_noise;
    // The budget over the run, plus one second of burst on each instance
    // (each bucket starts full with a second of its share).
    let expected = BUDGET * secs as f64 + BUDGET;
    println!(
        "acme at 10x its budget of {BUDGET}/s for {secs} s over 3 instances: {ok} admitted (expected {expected}), {refused} refused, {other} other; \
         globex alone {alone_rate:.0} req/s p99 {alone_p99:?}, beside the noise {noisy_rate:.0} req/s p99 {noisy_p99:?}"
    );
    assert_eq!(other, 0, "every answer is 200 or 429");
    assert!(
        (ok as f64) >= 0.8 * BUDGET * secs as f64 && (ok as f64) <= 1.15 * expected,
        "{ok} admitted; the budget allows about {expected}"
    );
    assert!(
        refused as f64 >= 0.8 * (BUDGET * 10.0 * secs as f64 - expected),
        "{refused} refused"
    );
    // The stated bound: the quiet tenant keeps at least half its
    // throughput and its p99 stays under 4x (+25 ms) of what it was alone
    // (two cores run the node, three instances and both loads).
    assert!(
        noisy_rate >= 0.5 * alone_rate,
        "{noisy_rate} vs {alone_rate} req/s"
    );
    assert!(
        noisy_p99 <= alone_p99 * 4 + Duration::from_millis(25),
        "{noisy_p99:?} vs {alone_p99:?}"
    );

    // A change through ctl on one instance applies on every instance.
    let out = fleet.ctl(
        0,
        &[
            "limits",
            "set",
            "acme",
            "--reads-per-second",
            "3",
            "--concurrent-requests",
            "6",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let epoch = fleet.ctl_json(0, &["limits", "get"])["epoch"]
        .as_u64()
        .unwrap();
    for (i, base) in bases.iter().enumerate() {
        eventually(
            "the new limits reach every instance",
            Duration::from_secs(5),
            || async {
                let v: Value = fleet.admin(i, "/v1/limits").await.json();
                v["epoch"] == epoch && v["partitions"]["acme"]["reads_per_second"] == 3.0
            },
        )
        .await;
        // Its share here is 1 a second: a second read at once is refused.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let statuses = [
            search(&http, base, ACME).await,
            search(&http, base, ACME).await,
        ];
        assert_eq!(statuses, [200, 429], "instance {i}");
    }
    let table = fleet.ctl(1, &["limits", "get"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("shared by 3 instance(s)")
            && text
                .lines()
                .any(|l| l.starts_with("acme") && l.contains(" 3 ") && l.contains(" 6")),
        "{text}"
    );
    let usage = fleet.ctl(0, &["usage"]);
    let text = String::from_utf8_lossy(&usage.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("acme")) && text.contains("LIMITED"),
        "{text}"
    );
    // Removing the entry lifts the limit everywhere.
    let out = fleet.ctl(2, &["limits", "remove", "acme"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 0..3 {
        eventually(
            "the limit is lifted on every instance",
            Duration::from_secs(5),
            || async { fleet.admin(i, "/v1/limits").await.json()["partitions"]["acme"].is_null() },
        )
        .await;
    }
    for _ in 0..5 {
        assert_eq!(search(&http, &bases[1], ACME).await, 200);
    }
}
