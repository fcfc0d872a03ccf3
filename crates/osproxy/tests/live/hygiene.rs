//! What reaches the cluster: through a recording relay in front of the real
//! node, the caller's bearer token and the diagnostics header never go
//! upstream, the request id always does, and no trace context is invented
//! for a request no directive selected — on passthrough and tenancy alike.

use http::Method;
use osproxy_testkit::{As, ConfigBuilder, Grant, Relay};
use serde_json::json;

use crate::common::node;

const TOKEN: &str = "hygiene-token-0123456789";

/// The head of every request the relay saw, lower-cased.
fn heads(relay: &Relay) -> Vec<String> {
    relay
        .sent()
        .split("\r\n\r\n")
        .filter(|h| h.contains(" HTTP/1.1"))
        .map(str::to_ascii_lowercase)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_and_diagnostics_headers_stay_at_the_proxy() {
    let relay = Relay::start(node().url().trim_start_matches("http://")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = ConfigBuilder::new(dir.path())
        .cluster("main", &relay.endpoint())
        .passthrough("main", &["hy-"])
        .principal("svc", TOKEN, Grant::Partitions(vec!["acme".into()]))
        .shared_index("hygiene", "main", "hyg-shared")
        .start(std::path::Path::new(env!("CARGO_BIN_EXE_osproxy")));
    let svc = As::new(&proxy, TOKEN);
    let headers = [
        ("x-debug-directive", "not-a-real-directive"),
        ("x-request-id", "hygiene-req-0001"),
        // Headers the security plugin acts on for osproxy's own user
        // (impersonation, proxy authentication, host-based mappings).
        ("opendistro_security_impersonate_as", "admin"),
        ("x-proxy-user", "admin"),
        ("x-proxy-roles", "all_access"),
        ("x-forwarded-for", "10.9.8.7"),
    ];
    let doc = json!({"n": 1});
    for (method, path, body) in [
        (Method::PUT, "/hy-notes/_doc/1?refresh=true", Some(&doc)),
        (Method::PUT, "/hygiene/_doc/1?refresh=true", Some(&doc)),
        (Method::GET, "/hygiene/_search", None),
    ] {
        relay.clear_sent();
        let r = svc.call(method.clone(), path, body, &headers).await;
        assert!(
            r.status.is_success(),
            "{method} {path}: {} {}",
            r.status,
            r.text()
        );
        let seen = heads(&relay);
        assert!(
            seen.iter()
                .any(|h| h.contains("x-request-id: hygiene-req-0001")),
            "{method} {path}: the request id did not reach the cluster: {seen:?}"
        );
        for head in &seen {
            for (forbidden, what) in [
                (TOKEN, "the bearer token"),
                ("authorization:", "an authorization header"),
                ("x-debug-directive", "the diagnostics header"),
                ("traceparent", "a trace context for an unselected request"),
                ("opendistro_security", "an impersonation header"),
                ("x-proxy-", "a proxy-authentication header"),
                ("10.9.8.7", "the client's claimed address"),
            ] {
                assert!(
                    !head.contains(forbidden),
                    "{method} {path}: {what} went upstream: {head}"
                );
            }
        }
    }
}

/// A prefix-passthrough query body is parsed to find the indices it names;
/// the tree that parse builds is charged to the budget before it is built,
/// so a body of millions of small values is refused (503, retryable) rather
/// than grown into gigabytes, and a plain one still passes.
#[tokio::test(flavor = "multi_thread")]
async fn a_passthrough_bodys_parse_is_charged_to_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = ConfigBuilder::new(dir.path())
        .cluster("main", &node().url())
        .passthrough("main", &["hyb-"])
        .principal("svc", TOKEN, Grant::Partitions(vec!["acme".into()]))
        .shared_index("hygiene", "main", "hybshared")
        .start(std::path::Path::new(env!("CARGO_BIN_EXE_osproxy")));
    let svc = As::new(&proxy, TOKEN);
    // 4 million values (~8 MB): 1 GiB at the parse's cost per value, past
    // the default 512 MiB budget.
    let body = format!(
        "{{\"query\":{{\"match_all\":{{}}}},\"x\":[{}0]}}",
        "0,".repeat(4 * 1024 * 1024)
    );
    let (rss, _) = proxy.rss_kib().unwrap();
    let r = svc
        .raw(
            Method::POST,
            "/hyb-notes/_search",
            Some(body.into()),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "overloaded", "{}", r.text());
    let (_, peak) = proxy.rss_kib().unwrap();
    assert!(
        peak.saturating_sub(rss) < 256 * 1024,
        "peak RSS grew by {} KiB",
        peak.saturating_sub(rss)
    );
    let r = svc
        .call(
            Method::POST,
            "/hyb-notes/_search?ignore_unavailable=true",
            Some(&json!({"query": {"match_all": {}}})),
            &[],
        )
        .await;
    assert!(
        r.status.is_success() || r.status == 404,
        "{} {}",
        r.status,
        r.text()
    );
}
