//! What reaches the cluster: through a recording relay in front of the real
//! node, the caller's bearer token and the diagnostics header never go
//! upstream, the request id always does, and no trace context is invented
//! for a request no directive selected — on passthrough and tenancy alike.

use bytes::Bytes;
use http::Method;
use osproxy_testkit::{Http, ProxyInstance, Relay};

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
    let file = dir.path().join("t");
    std::fs::write(&file, TOKEN).unwrap();
    let config = format!(
        "[[clusters]]\nid = \"main\"\nurl = \"{}\"\n\n[passthrough]\ncluster = \"main\"\nindices = [\"hy-\"]\n\n\
         [[principals]]\nname = \"svc\"\ntoken_file = \"{}\"\npartitions = [\"acme\"]\n\n\
         [[indices]]\nname = \"hygiene\"\ndefault = {{ kind = \"shared\", cluster = \"main\", index = \"hyg-shared\" }}\n",
        relay.endpoint(),
        file.display()
    );
    let proxy =
        ProxyInstance::start(std::path::Path::new(env!("CARGO_BIN_EXE_osproxy")), &config).unwrap();
    proxy
        .wait_ready(std::time::Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    let http = Http::new();
    let bearer = format!("Bearer {TOKEN}");
    for (method, path, body) in [
        (
            Method::PUT,
            "/hy-notes/_doc/1?refresh=true",
            Some(r#"{"n":1}"#),
        ),
        (
            Method::PUT,
            "/hygiene/_doc/1?refresh=true",
            Some(r#"{"n":1}"#),
        ),
        (Method::GET, "/hygiene/_search", None),
    ] {
        relay.clear_sent();
        let r = http
            .send_with(
                method.clone(),
                &format!("{}{path}", proxy.url()),
                body.map(|b| Bytes::from(b.to_string())),
                &[
                    ("authorization", bearer.as_str()),
                    ("x-debug-directive", "not-a-real-directive"),
                    ("x-request-id", "hygiene-req-0001"),
                ],
            )
            .await
            .unwrap();
        assert!(
            r.status.is_success(),
            "{method} {path}: {} {}",
            r.status,
            r.text()
        );
        let seen = heads(&relay);
        let ours: Vec<&String> = seen
            .iter()
            .filter(|h| h.contains("x-request-id: hygiene-req-0001"))
            .collect();
        assert!(
            !ours.is_empty(),
            "{method} {path}: the request id did not reach the cluster: {seen:?}"
        );
        for head in &seen {
            assert!(
                !head.contains(TOKEN),
                "{method} {path}: the bearer token went upstream: {head}"
            );
            assert!(
                !head.contains("authorization:"),
                "{method} {path}: an authorization header went upstream: {head}"
            );
            assert!(
                !head.contains("x-debug-directive"),
                "{method} {path}: the diagnostics header went upstream: {head}"
            );
            assert!(
                !head.contains("traceparent"),
                "{method} {path}: a trace context was sent for an unselected request: {head}"
            );
        }
    }
}
