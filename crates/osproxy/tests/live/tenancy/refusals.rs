//! Tenants that try to reach each other, and cluster-wide endpoints.

use http::Method;
use osproxy_testkit::HttpResponse;
use serde_json::json;

use super::*;
use crate::common::node;

#[tokio::test(flavor = "multi_thread")]
async fn isolation_attempts_are_refused_or_confined() {
    let f = Fleet::start(&node().url(), "iso");
    let seed = f
        .call(
            "globex-svc",
            Method::PUT,
            "/orders/_doc/secret?refresh=true",
            Some(json!({"title": "globex secret"})),
            &[],
        )
        .await;
    assert_eq!(seed.status, 201, "{}", seed.text());

    let refused = |r: &HttpResponse, status: u16, code: &str, what: &str| {
        assert_eq!(r.status, status, "{what}: {}", r.text());
        assert_eq!(r.json()["error"]["type"], code, "{what}: {}", r.text());
    };
    // Another tenant's grant.
    let r = f
        .call(
            "acme-svc",
            Method::GET,
            "/orders/_doc/secret",
            None,
            &[("x-osproxy-partition", "globex")],
        )
        .await;
    refused(&r, 403, "partition_forbidden", "naming another partition");
    let r = f
        .call("multi-svc", Method::GET, "/orders/_doc/secret", None, &[])
        .await;
    refused(&r, 400, "partition_required", "several grants, none named");
    let r = f
        .call(
            "gateway",
            Method::GET,
            "/orders/_doc/secret",
            None,
            &[("x-osproxy-partition", "bad partition!")],
        )
        .await;
    refused(&r, 400, "invalid_partition", "invalid partition id");
    // Forging the injected field, routing, preference, q.
    let r = f
        .call(
            "acme-svc",
            Method::PUT,
            "/orders/_doc/x",
            Some(json!({"_tenant": "globex", "title": "forged"})),
            &[],
        )
        .await;
    refused(
        &r,
        400,
        "bad_request",
        "document carrying the injected field",
    );
    for q in ["routing=globex", "preference=_shards:0", "q=*:*"] {
        let r = f
            .call(
                "acme-svc",
                Method::GET,
                &format!("/orders/_search?{q}"),
                None,
                &[],
            )
            .await;
        refused(&r, 400, "bad_request", q);
    }
    // Constructs evaluated outside the query.
    for (what, body) in [
        (
            "global aggregation",
            json!({"size": 0, "aggs": {"all": {"global": {}, "aggs": {"t": {"terms": {"field": "_tenant"}}}}}}),
        ),
        (
            "suggest",
            json!({"suggest": {"s": {"text": "glob", "term": {"field": "title"}}}}),
        ),
        (
            "terms lookup",
            json!({"query": {"terms": {"title": {"index": "t-iso-shared", "id": "globex:secret", "path": "title"}}}}),
        ),
        (
            "more_like_this by document",
            json!({"query": {"more_like_this": {"fields": ["title"], "like": [{"_index": "t-iso-shared", "_id": "globex:secret"}]}}}),
        ),
        ("script", json!({"query": {"script": {"script": "true"}}})),
    ] {
        let r = f
            .call("acme-svc", Method::POST, "/orders/_search", Some(body), &[])
            .await;
        refused(&r, 400, "construct_refused", what);
    }
    // Reading the other tenant's id space through the logical id.
    for id in ["globex:secret", "secret"] {
        let r = f
            .call(
                "acme-svc",
                Method::GET,
                &format!("/orders/_doc/{id}"),
                None,
                &[],
            )
            .await;
        assert_eq!(r.status, 404, "{id}: {}", r.text());
    }
    // Scripted updates in a shared placement.
    let r = f
        .call(
            "acme-svc",
            Method::POST,
            "/orders/_update/secret",
            Some(json!({"script": {"source": "ctx._source._tenant = 'acme'"}})),
            &[],
        )
        .await;
    refused(&r, 400, "bad_request", "scripted update");
    // An ingest pipeline could rewrite the partition field.
    let r = f
        .call(
            "acme-svc",
            Method::PUT,
            "/orders/_doc/p?pipeline=anything",
            Some(json!({"a": 1})),
            &[],
        )
        .await;
    refused(&r, 400, "bad_request", "pipeline parameter");
    // Forging the field through an update's doc or upsert.
    for body in [
        json!({"doc": {"_tenant": "globex"}}),
        json!({"doc": {"a": 1}, "upsert": {"_tenant": "globex"}}),
    ] {
        let r = f
            .call(
                "acme-svc",
                Method::POST,
                "/orders/_update/secret",
                Some(body.clone()),
                &[],
            )
            .await;
        refused(
            &r,
            400,
            "bad_request",
            &format!("update forging the field: {body}"),
        );
    }
    // Endpoints not served for logical indices are refused, never forwarded.
    for (method, path) in [
        (Method::GET, "/orders/_explain/secret"),
        (Method::GET, "/orders/_termvectors/secret"),
        (Method::GET, "/orders/_validate/query"),
        (Method::GET, "/orders/_field_caps"),
        (Method::POST, "/orders/_search/template"),
        (Method::POST, "/orders/_close"),
        (Method::GET, "/orders/_stats"),
    ] {
        let r = f
            .call(
                "acme-svc",
                method.clone(),
                path,
                Some(json!({"query": {"match_all": {}}})),
                &[],
            )
            .await;
        assert_eq!(r.status, 400, "{method} {path}: {}", r.text());
        assert_eq!(
            r.json()["error"]["type"],
            "unsupported_endpoint",
            "{method} {path}"
        );
    }
    // The shared index cannot be deleted or remapped by a tenant.
    let r = f
        .call("acme-svc", Method::DELETE, "/orders", None, &[])
        .await;
    refused(&r, 400, "bad_request", "deleting a shared logical index");
    let r = f
        .call(
            "acme-svc",
            Method::PUT,
            "/orders/_mapping",
            Some(json!({"properties": {"_tenant": {"type": "text"}}})),
            &[],
        )
        .await;
    refused(
        &r,
        403,
        "operator_required",
        "remapping a shared logical index",
    );
    // A compressed body is refused clearly, not misread.
    let gz = f
        .http
        .send_with(
            Method::PUT,
            &format!("{}/orders/_doc/gz", f.proxy.url()),
            Some(bytes::Bytes::from_static(
                b"\x1f\x8b\x08\x00\x00\x00\x00\x00",
            )),
            &[
                ("authorization", "Bearer acme-token-0123456789"),
                ("content-encoding", "gzip"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(gz.status, 400, "{}", gz.text());
    assert!(gz.text().contains("compressed"), "{}", gz.text());
    // Bad input: malformed JSON, a document that is not an object.
    let raw = f
        .http
        .send_with(
            Method::PUT,
            &format!("{}/orders/_doc/bad", f.proxy.url()),
            Some("{\"title\": ".into()),
            &[("authorization", "Bearer acme-token-0123456789")],
        )
        .await
        .unwrap();
    refused(&raw, 400, "bad_request", "malformed JSON");
    let r = f
        .call(
            "acme-svc",
            Method::PUT,
            "/orders/_doc/bad",
            Some(json!(["not", "an", "object"])),
            &[],
        )
        .await;
    refused(&r, 400, "bad_request", "document that is not an object");
    // Multi-index paths mixing a logical index.
    let r = f
        .call(
            "acme-svc",
            Method::GET,
            "/orders,t-iso-shared/_search",
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // Nothing of globex's changed.
    let raw = direct(
        &node().url(),
        Method::GET,
        "/t-iso-shared/_doc/globex:secret?routing=globex",
    )
    .await
    .json();
    assert_eq!(
        raw["_source"],
        json!({"_tenant": "globex", "title": "globex secret"})
    );
    let x = direct(
        &node().url(),
        Method::GET,
        "/t-iso-shared/_doc/acme:x?routing=acme",
    )
    .await;
    assert_eq!(
        x.status, 404,
        "the forged document must not have been written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_wide_endpoints_are_for_operators() {
    let f = Fleet::start(&node().url(), "ops");
    for path in [
        "/_cat/indices",
        "/_cluster/health",
        "/_nodes/stats",
        "/_tasks",
    ] {
        let r = f.call("acme-svc", Method::GET, path, None, &[]).await;
        assert_eq!(r.status, 403, "{path}: {}", r.text());
        assert_eq!(r.json()["error"]["type"], "operator_required");
    }
    // Two clusters are configured: the operator names one.
    let r = f
        .call("ops", Method::GET, "/_cluster/health", None, &[])
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = f
        .call(
            "ops",
            Method::GET,
            "/_cluster/health",
            None,
            &[("x-osproxy-cluster", "main")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["cluster_name"],
        direct(&node().url(), Method::GET, "/_cluster/health")
            .await
            .json()["cluster_name"]
    );
    let r = f
        .call(
            "ops",
            Method::GET,
            "/_cat/indices?format=json",
            None,
            &[("x-osproxy-cluster", "main")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = f
        .call(
            "ops",
            Method::GET,
            "/_cluster/health",
            None,
            &[("x-osproxy-cluster", "nope")],
        )
        .await;
    assert_eq!(r.status, 400);
}
