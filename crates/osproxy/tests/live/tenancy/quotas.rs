//! Per-tenant limits on one instance against a real node: a partition
//! over a rate gets 429 `too_many_requests` with `Retry-After` and nothing
//! applied, others are untouched, a bulk over its document budget is
//! refused whole, a change through the admin API applies without a
//! restart, and the usage table, the metrics and the explanation say who
//! used what and which limit refused.

use std::time::{Duration, Instant};

use http::Method;
use serde_json::{json, Value};

use super::{ndjson, on_node, token, Fleet};
use crate::common::{metric, node};

const LIMITS: &str =
    "[limits.partitions.acme]\nreads_per_second = 4\ndocuments_per_second = 20\n\n\
                      [limits.default]\nconcurrent_requests = 64\n";

async fn admin(
    f: &Fleet,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> osproxy_testkit::HttpResponse {
    let auth = format!("Bearer {}", token("ops"));
    f.http
        .send_with(
            method,
            &format!("{}{path}", f.proxy.admin_url()),
            body.map(|b| b.to_string().into()),
            &[("authorization", auth.as_str())],
        )
        .await
        .unwrap()
}

async fn search(f: &Fleet, who: &str) -> osproxy_testkit::HttpResponse {
    f.call(who, Method::GET, "/orders/_search", None, &[]).await
}

async fn bulk(f: &Fleet, first: usize, n: usize) -> osproxy_testkit::HttpResponse {
    let mut lines = Vec::new();
    for i in first..first + n {
        lines.push(json!({"index": {"_index": "orders", "_id": format!("q{i}")}}));
        lines.push(json!({"title": "quota"}));
    }
    f.bulk_as("acme-svc", ndjson(&lines)).await
}

async fn acme_quota_docs() -> u64 {
    let r = on_node("/t-quota-shared/_count?q=title:quota%20AND%20_tenant:acme").await;
    r.json()["count"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_over_its_limits_gets_429_and_the_others_do_not() {
    let f = Fleet::start_with(&node().url(), "quota", LIMITS);
    let directive = json!({"directives": [{"id": "quota", "match": {"partition": "acme"}, "level": "shape", "expires_at": "2030-01-01T00:00:00Z", "capture": true}]});
    let put = admin(&f, Method::PUT, "/v1/directives", Some(directive)).await;
    assert_eq!(put.status, 200, "{}", put.text());

    // Reads: a burst of one second's budget (4) passes, then 429s.
    let started = Instant::now();
    let mut answers = Vec::new();
    for _ in 0..12 {
        answers.push(search(&f, "acme-svc").await);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ok = answers.iter().filter(|r| r.status == 200).count();
    let refused: Vec<_> = answers.iter().filter(|r| r.status == 429).collect();
    assert_eq!(ok + refused.len(), 12, "only 200 or 429");
    assert!(
        ok >= 4 && (ok as f64) <= 4.0 + 4.0 * elapsed + 1.0,
        "{ok} passed in {elapsed} s"
    );
    let r = refused.first().expect("some reads are refused");
    let v = r.json();
    assert_eq!(v["status"], 429);
    assert_eq!(v["error"]["type"], "too_many_requests");
    assert_eq!(v["error"]["osproxy"]["retryable"], true);
    let reason = v["error"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("reads_per_second") && reason.contains("4/s"),
        "{reason}"
    );
    let retry_after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");

    // Its explanation names the limit and its value.
    let rid = r.header("x-request-id").unwrap().to_string();
    let e = admin(&f, Method::GET, &format!("/v1/explain/{rid}"), None).await;
    assert_eq!(e.status, 200, "{}", e.text());
    let text = e.text();
    assert!(
        text.contains(r#""limit":"reads_per_second","limit_fleet":"4","limit_instance":"4""#),
        "{text}"
    );

    // Another tenant is not limited by acme's budget.
    for _ in 0..12 {
        let r = search(&f, "globex-svc").await;
        assert_eq!(r.status, 200, "{}", r.text());
    }

    // Documents: a bulk of 50 is admitted whole (the bucket was not in
    // debt) and leaves it 30 documents in debt; the next bulk is refused
    // whole, nothing of it written, until the debt is paid back.
    let r = bulk(&f, 0, 50).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["errors"], false, "{}", r.text());
    let r = bulk(&f, 50, 5).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("documents_per_second"), "{}", r.text());
    assert_eq!(acme_quota_docs().await, 50);
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3).contains(&wait), "{wait}");
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let r = bulk(&f, 50, 5).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(acme_quota_docs().await, 55);

    // A change through the admin API applies at once, without a restart:
    // globex now has a limit of its own.
    let current = admin(&f, Method::GET, "/v1/limits", None).await.json();
    let epoch = current["epoch"].as_u64().unwrap();
    assert_eq!(current["fleet_size"], 1);
    assert_eq!(current["partitions"]["acme"]["reads_per_second"], 4.0);
    let doc =
        json!({"partitions": {"acme": {"reads_per_second": 4}, "globex": {"reads_per_second": 2}}});
    let put = admin(
        &f,
        Method::PUT,
        &format!("/v1/limits?epoch={epoch}"),
        Some(doc.clone()),
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.text());
    let stale = admin(
        &f,
        Method::PUT,
        &format!("/v1/limits?epoch={epoch}"),
        Some(doc),
    )
    .await;
    assert_eq!(stale.status, 409, "{}", stale.text());
    let bad = admin(
        &f,
        Method::PUT,
        "/v1/limits",
        Some(json!({"default": {"reads": 1}})),
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    let mut globex_refused = 0;
    for _ in 0..8 {
        if search(&f, "globex-svc").await.status == 429 {
            globex_refused += 1;
        }
    }
    assert!(globex_refused >= 4, "{globex_refused} of 8 refused at 2/s");

    // Each search of a multi-search is a read: past the budget, a search
    // is answered with its own 429 and the others run.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut lines = Vec::new();
    for _ in 0..8 {
        lines.push(json!({"index": "orders"}));
        lines.push(json!({"query": {"match_all": {}}}));
    }
    let r = f
        .client("acme-svc")
        .raw(
            Method::POST,
            "/_msearch",
            Some(ndjson(&lines).into()),
            &[("content-type", "application/x-ndjson")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let statuses: Vec<u64> = r.json()["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_u64().unwrap_or(0))
        .collect();
    let passed = statuses.iter().filter(|s| **s == 200).count();
    assert!((4..=5).contains(&passed), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );

    // Usage: who used what, and how often they were refused.
    let u = admin(&f, Method::GET, "/v1/usage", None).await.json();
    let row = |p: &str| {
        u["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["partition"] == p)
            .cloned()
            .unwrap_or_else(|| panic!("no usage row for {p}: {u}"))
    };
    let acme = row("acme");
    assert_eq!(acme["documents"], 55, "{acme}");
    assert!(acme["limited"].as_u64().unwrap() >= 2, "{acme}");
    assert!(acme["request_bytes"].as_u64().unwrap() > 55 * 40, "{acme}");
    assert!(acme["response_bytes"].as_u64().unwrap() > 0, "{acme}");
    assert!(acme["requests"].as_u64().unwrap() >= 15, "{acme}");
    assert!(row("globex")["limited"].as_u64().unwrap() >= 4);
    let docs = metric(
        &f.proxy,
        "osproxy_usage_documents_total{partition=\"acme\"}",
    )
    .await;
    assert_eq!(docs, Some(55.0));
    let limited = metric(
        &f.proxy,
        "osproxy_limited_total{limit=\"documents_per_second\"}",
    )
    .await;
    assert_eq!(limited, Some(1.0));

    // Cleared, the limits stay published (empty) with an epoch to name.
    let epoch = admin(&f, Method::GET, "/v1/limits", None).await.json()["epoch"]
        .as_u64()
        .unwrap();
    let cleared = admin(
        &f,
        Method::DELETE,
        &format!("/v1/limits?epoch={epoch}"),
        None,
    )
    .await;
    assert_eq!(cleared.status, 200, "{}", cleared.text());
    let now = admin(&f, Method::GET, "/v1/limits", None).await.json();
    assert!(
        now["epoch"].as_u64().unwrap() > epoch && now["partitions"].is_null(),
        "{now}"
    );
    for _ in 0..8 {
        assert_eq!(search(&f, "globex-svc").await.status, 200);
    }
}

/// Usage rows are bounded but go to the busiest: with room for two, a
/// partition that becomes noisy after two quiet ones have taken the rows
/// gets a row of its own (the least busy row retires into `_other`), and
/// every request is still counted exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_noisy_late_gets_a_usage_row() {
    let f = Fleet::start_with(&node().url(), "usagetop", "[usage]\nmax_partitions = 2\n");
    for p in ["quiet1", "quiet2"] {
        for _ in 0..2 {
            let r = f.gateway_for(p).get("/orders/_search").await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
    }
    for _ in 0..20 {
        let r = f.gateway_for("noisy").get("/orders/_search").await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let u = admin(&f, Method::GET, "/v1/usage", None).await.json();
    let rows = u["partitions"].as_array().unwrap();
    assert_eq!(rows[0]["partition"], "noisy", "{u}");
    // Promoted once its estimate passed the least busy row's 2 requests.
    let noisy = rows[0]["requests"].as_u64().unwrap();
    assert!(noisy >= 17, "{u}");
    let total: u64 = rows.iter().map(|r| r["requests"].as_u64().unwrap()).sum();
    assert_eq!(total, 24, "each request counted once: {u}");
    assert_eq!(rows.len(), 3, "two rows and _other: {u}");
    assert_eq!(rows[2]["partition"], "_other", "{u}");
    let m = metric(
        &f.proxy,
        "osproxy_usage_requests_total{partition=\"noisy\"}",
    )
    .await;
    assert_eq!(m, Some(noisy as f64));
}
