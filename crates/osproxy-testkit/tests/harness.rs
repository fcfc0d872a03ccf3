//! The harness itself: etcd comes up on free ports, serves reads and writes,
//! and is gone (process and data dir) after its handle drops.

// Test code: failing loudly is the point.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use osproxy_testkit::{wait_until, Etcd, Http};

#[tokio::test(flavor = "multi_thread")]
async fn etcd_starts_serves_and_stops_on_drop() {
    let etcd = Etcd::start().unwrap_or_else(|e| panic!("{e}"));
    // The v3 JSON gateway: put then range-read one key (base64 "k" / "v").
    let http = Http::new();
    let put = http
        .send(
            http::Method::POST,
            &format!("{}/v3/kv/put", etcd.endpoint()),
            Some(r#"{"key":"aw==","value":"dg=="}"#),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(put.status, 200, "{}", put.text());
    let got = http
        .send(
            http::Method::POST,
            &format!("{}/v3/kv/range", etcd.endpoint()),
            Some(r#"{"key":"aw=="}"#),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.json()["kvs"][0]["value"], "dg==", "{}", got.text());

    let data = etcd.data_dir();
    let addr = etcd.addr();
    assert!(data.exists());
    drop(etcd);
    assert!(!data.exists(), "data dir left behind");
    wait_until(
        "etcd's port closing",
        Duration::from_secs(5),
        || match std::net::TcpStream::connect(&addr) {
            Ok(_) => Err("still listening".to_string()),
            Err(_) => Ok(()),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
}
