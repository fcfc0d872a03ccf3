//! Principals: every request needs a known bearer token once principals are
//! configured; the token is checked before anything is routed.

use http::Method;
use osproxy_testkit::Http;

use crate::common::ready_proxy;

#[tokio::test(flavor = "multi_thread")]
async fn bearer_tokens_gate_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("svc.token");
    std::fs::write(&token_file, "svc-token-0123456789abcdef\n").unwrap();
    let extra = format!(
        "indices = [\"authz-legacy-\"]\n\n\
         [[principals]]\nname = \"svc\"\ntoken_file = \"{}\"\npartitions = [\"acme\"]\n\n\
         [[indices]]\nname = \"orders\"\ndefault = {{ kind = \"shared\", cluster = \"main\", index = \"orders-shared\" }}\n",
        token_file.display()
    );
    let proxy = ready_proxy(&extra);
    let http = Http::new();
    let url = format!("{}/authz-legacy-1/_doc/1?refresh=true", proxy.url());

    let none = http
        .send(Method::PUT, &url, Some(r#"{"a":1}"#))
        .await
        .unwrap();
    assert_eq!(none.status, 401, "{}", none.text());
    assert_eq!(none.json()["error"]["type"], "unauthenticated");
    assert_eq!(
        none.header("www-authenticate"),
        Some("Bearer realm=\"osproxy\"")
    );

    let wrong = http
        .send_with(
            Method::PUT,
            &url,
            Some(r#"{"a":1}"#.into()),
            &[("authorization", "Bearer not-the-token-at-all")],
        )
        .await
        .unwrap();
    assert_eq!(wrong.status, 401);
    let basic = http
        .send_with(
            Method::PUT,
            &url,
            Some(r#"{"a":1}"#.into()),
            &[("authorization", "Basic c3ZjOnN2Yw==")],
        )
        .await
        .unwrap();
    assert_eq!(basic.status, 401);

    let auth = [("authorization", "Bearer svc-token-0123456789abcdef")];
    let ok = http
        .send_with(Method::PUT, &url, Some(r#"{"a":1}"#.into()), &auth)
        .await
        .unwrap();
    assert_eq!(ok.status, 201, "{}", ok.text());

    // A logical index of the catalogue is served by tenancy, not passed
    // through: its shared physical index is created on first use (with the
    // partition field mapped as keyword) and the answer names no physical index.
    let logical = http
        .send_with(
            Method::GET,
            &format!("{}/orders/_search", proxy.url()),
            None,
            &auth,
        )
        .await
        .unwrap();
    assert_eq!(logical.status, 200, "{}", logical.text());
    assert_eq!(logical.json()["hits"]["total"]["value"], 0);
    assert!(
        !logical.text().contains("orders-shared"),
        "{}",
        logical.text()
    );
}
