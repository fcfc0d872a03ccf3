//! Bodies stream: a 100 MiB request and a 100 MiB response pass through
//! while the proxy's resident memory grows by less than 64 MiB.

use http::Method;
use osproxy_testkit::Http;
use serde_json::json;

use crate::common::ready_proxy;

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn hundred_mib_each_way_stream_through_in_bounded_memory() {
    let _turn = crate::common::one_heavy_test_at_a_time().await;
    let proxy = ready_proxy("");
    let http = Http::new();
    let base = proxy.url();
    let create = http
        .send(
            Method::PUT,
            &format!("{base}/pt-stream"),
            Some(r#"{"settings":{"number_of_shards":1,"number_of_replicas":0,"refresh_interval":"-1"},"mappings":{"dynamic":false}}"#),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(create.status, 200, "{}", create.text());
    // Warm the path so the baseline includes the connection pools.
    let _ = http
        .send(Method::GET, &format!("{base}/pt-stream/_count"), None)
        .await;
    let (rss_before, _) = proxy.rss_kib().unwrap_or_else(|e| panic!("{e}"));

    // One bulk request of a little over 100 MiB: 1,050 docs of 100 KB.
    let filler = "x".repeat(100_000);
    let mut bulk = String::with_capacity(106 * MIB);
    let docs = 1050;
    for i in 0..docs {
        bulk.push_str(&json!({"index": {"_id": i.to_string()}}).to_string());
        bulk.push('\n');
        bulk.push_str(&json!({"n": i, "payload": filler}).to_string());
        bulk.push('\n');
    }
    assert!(
        bulk.len() >= 100 * MIB,
        "request body is {} bytes",
        bulk.len()
    );
    let sent = bulk.len();
    let resp = http
        .send_with(
            Method::POST,
            &format!("{base}/pt-stream/_bulk?refresh=true"),
            Some(bulk.into()),
            &[("content-type", "application/x-ndjson")],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        resp.status,
        200,
        "{}",
        resp.text().chars().take(500).collect::<String>()
    );
    let result = resp.json();
    assert_eq!(result["errors"], false, "bulk item errors");
    assert_eq!(result["items"].as_array().map(Vec::len), Some(docs));

    // All of it back in one response of a little over 100 MiB.
    let resp = http
        .send(
            Method::POST,
            &format!("{base}/pt-stream/_search"),
            Some(&format!(
                r#"{{"size":{docs},"query":{{"match_all":{{}}}}}}"#
            )),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status, 200);
    assert!(
        resp.body.len() >= 100 * MIB,
        "response body is {} bytes",
        resp.body.len()
    );
    assert_eq!(
        resp.json()["hits"]["hits"].as_array().map(Vec::len),
        Some(docs)
    );

    let (_, peak) = proxy.rss_kib().unwrap_or_else(|e| panic!("{e}"));
    let grown_mib = peak.saturating_sub(rss_before) / 1024;
    eprintln!(
        "sent {} MiB, received {} MiB; proxy RSS {} KiB before, peak {} KiB (+{grown_mib} MiB)",
        sent / MIB,
        resp.body.len() / MIB,
        rss_before,
        peak
    );
    assert!(
        grown_mib < 64,
        "proxy RSS grew by {grown_mib} MiB moving 100 MiB each way: bodies are being buffered"
    );
    let _ = http
        .send(Method::DELETE, &format!("{base}/pt-stream"), None)
        .await;
}
