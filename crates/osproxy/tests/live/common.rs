//! Helpers shared by the live tests.

use std::time::Duration;

use osproxy_testkit::{shared_opensearch, shared_opensearch3, Http, OpenSearchNode, ProxyInstance};

/// The shared node (OpenSearch 3.x in the binary whose root sets
/// `OPENSEARCH3`), or a failing test that says why it did not come up.
pub fn node() -> &'static OpenSearchNode {
    let shared = if crate::OPENSEARCH3 {
        shared_opensearch3()
    } else {
        shared_opensearch()
    };
    match shared {
        Ok(n) => n,
        Err(e) => panic!("the OpenSearch node did not come up: {e}"),
    }
}

/// A passthrough proxy in front of `upstream_url` with extra TOML appended.
pub fn proxy_to(upstream_url: &str, extra: &str) -> ProxyInstance {
    let config = format!(
        "[[clusters]]\nid = \"main\"\nurl = \"{upstream_url}\"\n\n[passthrough]\ncluster = \"main\"\n{extra}\n"
    );
    ProxyInstance::start(std::path::Path::new(env!("CARGO_BIN_EXE_osproxy")), &config)
        .unwrap_or_else(|e| panic!("osproxy did not start: {e}"))
}

/// A ready passthrough proxy in front of the shared node.
pub fn ready_proxy(extra: &str) -> ProxyInstance {
    let p = proxy_to(&node().url(), extra);
    p.wait_ready(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", p.log()));
    p
}

/// Reads one metric sample's value from the admin listener.
pub async fn metric(proxy: &ProxyInstance, sample: &str) -> Option<f64> {
    let resp = Http::new()
        .send(
            http::Method::GET,
            &format!("{}/metrics", proxy.admin_url()),
            None,
        )
        .await
        .ok()?;
    resp.text().lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == sample).then(|| value.parse().ok()).flatten()
    })
}

/// Waits (bounded) until a metric sample has `value`.
pub async fn wait_metric(proxy: &ProxyInstance, sample: &str, value: f64, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        last = metric(proxy, sample).await;
        if last == Some(value) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{sample} did not reach {value} within {timeout:?}; last seen {last:?}");
}

/// Starts a migration through `proxy`'s admin API as the operator holding
/// `ops_token` (`body`: index, partition, to) and waits for it to be done;
/// a failed one fails the test.
pub async fn migrate_and_wait(
    proxy: &ProxyInstance,
    ops_token: &str,
    body: serde_json::Value,
    timeout: Duration,
) {
    let auth = format!("Bearer {ops_token}");
    let http = Http::new();
    let started = http
        .send_with(
            http::Method::POST,
            &format!("{}/v1/migrations", proxy.admin_url()),
            Some(body.to_string().into()),
            &[("authorization", auth.as_str())],
        )
        .await
        .unwrap();
    assert_eq!(started.status, 202, "{}", started.text());
    let status = format!(
        "{}/v1/migrations/{}/{}",
        proxy.admin_url(),
        body["index"].as_str().unwrap(),
        body["partition"].as_str().unwrap()
    );
    osproxy_testkit::eventually("the migration to be done", timeout, || async {
        let r = http
            .send_with(
                http::Method::GET,
                &status,
                None,
                &[("authorization", auth.as_str())],
            )
            .await
            .unwrap();
        let phase = r.json()["phase"].clone();
        assert_ne!(phase, "failed", "{}", r.text());
        phase == "done"
    })
    .await;
}

/// Held by the tests that each send or read a hundred MiB through the
/// shared node: run together, they took the node past its heap's circuit
/// breaker (429 `circuit_breaking_exception`, 400 MB of requests in
/// flight on a 512 MB heap), so they take turns.
pub async fn one_heavy_test_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    HEAVY.lock().await
}
