//! Tenants that try to reach each other, and cluster-wide endpoints. Each
//! group of isolation attempts runs against its own fleet in which globex
//! has written a secret document; acme tries to reach or change it, and the
//! document is checked, straight on the node, to be exactly as written.

use http::Method;
use osproxy_testkit::{As, HttpResponse};
use serde_json::json;

use super::*;
use crate::common::node;

/// A fleet tagged `tag` in which globex has written its secret document,
/// and a client for acme.
async fn with_globex_secret(tag: &str) -> (Fleet, As) {
    let f = Fleet::start(&node().url(), tag);
    let seed = f
        .client("globex-svc")
        .put(
            "/orders/_doc/secret?refresh=true",
            &json!({"title": "globex secret"}),
        )
        .await;
    assert_eq!(seed.status, 201, "{}", seed.text());
    let acme = f.client("acme-svc");
    (f, acme)
}

/// Nothing of globex's changed, and acme's forged document `x` was not
/// written.
async fn assert_globex_untouched(tag: &str) {
    let raw = on_node(&format!(
        "/t-{tag}-shared/_doc/globex:secret?routing=globex"
    ))
    .await
    .json();
    assert_eq!(
        raw["_source"],
        json!({"_tenant": "globex", "title": "globex secret"})
    );
    let x = on_node(&format!("/t-{tag}-shared/_doc/acme:x?routing=acme")).await;
    assert_eq!(
        x.status, 404,
        "the forged document must not have been written"
    );
}

/// Asserts that `r` is a refusal with `status` and error type `code`.
fn refused(r: &HttpResponse, status: u16, code: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    assert_eq!(r.json()["error"]["type"], code, "{what}: {}", r.text());
}

/// Naming a partition outside the grant, none where several are granted,
/// or an invalid partition id is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_partition_outside_the_grant_none_of_several_or_an_invalid_one_is_refused() {
    let tag = "isog";
    let (f, acme) = with_globex_secret(tag).await;
    let r = acme
        .call(
            Method::GET,
            "/orders/_doc/secret",
            None,
            &[("x-osproxy-partition", "globex")],
        )
        .await;
    refused(&r, 403, "partition_forbidden", "naming another partition");
    let r = f.client("multi-svc").get("/orders/_doc/secret").await;
    refused(&r, 400, "partition_required", "several grants, none named");
    let r = f
        .gateway_for("bad partition!")
        .get("/orders/_doc/secret")
        .await;
    refused(&r, 400, "invalid_partition", "invalid partition id");
    assert_globex_untouched(tag).await;
}

/// Forging the injected field (in a document, an update's doc or upsert),
/// routing, preference or `q`, a scripted update in a shared placement and
/// an ingest pipeline (which could rewrite the partition field) are
/// refused.
#[tokio::test(flavor = "multi_thread")]
async fn forging_the_partition_field_routing_or_a_rewrite_is_refused() {
    let tag = "isof";
    let (_f, acme) = with_globex_secret(tag).await;
    let r = acme
        .put(
            "/orders/_doc/x",
            &json!({"_tenant": "globex", "title": "forged"}),
        )
        .await;
    refused(
        &r,
        400,
        "bad_request",
        "document carrying the injected field",
    );
    for q in ["routing=globex", "preference=_shards:0", "q=*:*"] {
        let r = acme.get(&format!("/orders/_search?{q}")).await;
        refused(&r, 400, "bad_request", q);
    }
    // Scripted updates in a shared placement.
    let script = json!({"script": {"source": "ctx._source._tenant = 'acme'"}});
    let r = acme.post("/orders/_update/secret", &script).await;
    refused(&r, 400, "bad_request", "scripted update");
    // An ingest pipeline could rewrite the partition field.
    let r = acme
        .put("/orders/_doc/p?pipeline=anything", &json!({"a": 1}))
        .await;
    refused(&r, 400, "bad_request", "pipeline parameter");
    // Forging the field through an update's doc or upsert.
    for body in [
        json!({"doc": {"_tenant": "globex"}}),
        json!({"doc": {"a": 1}, "upsert": {"_tenant": "globex"}}),
    ] {
        let r = acme.post("/orders/_update/secret", &body).await;
        refused(
            &r,
            400,
            "bad_request",
            &format!("update forging the field: {body}"),
        );
    }
    assert_globex_untouched(tag).await;
}

/// Constructs evaluated outside the query (a global aggregation, suggest,
/// a terms lookup, more_like_this by document, a script query) are refused;
/// the other tenant's id space cannot be read through the logical id.
#[tokio::test(flavor = "multi_thread")]
async fn constructs_evaluated_outside_the_query_are_refused() {
    let tag = "iso";
    let (_f, acme) = with_globex_secret(tag).await;
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
        let r = acme.post("/orders/_search", &body).await;
        refused(&r, 400, "construct_refused", what);
    }
    // Reading the other tenant's id space through the logical id.
    for id in ["globex:secret", "secret"] {
        let r = acme.get(&format!("/orders/_doc/{id}")).await;
        assert_eq!(r.status, 404, "{id}: {}", r.text());
    }
    assert_globex_untouched(tag).await;
}

/// Endpoints not served for logical indices are refused, never forwarded;
/// a tenant can neither delete nor remap the shared index; a multi-index
/// path mixing a logical index is refused.
#[tokio::test(flavor = "multi_thread")]
async fn unserved_endpoints_and_changes_to_the_shared_index_are_refused() {
    let tag = "isoe";
    let (_f, acme) = with_globex_secret(tag).await;
    for (method, path) in [
        (Method::GET, "/orders/_explain/secret"),
        (Method::GET, "/orders/_termvectors/secret"),
        (Method::GET, "/orders/_validate/query"),
        (Method::GET, "/orders/_field_caps"),
        (Method::POST, "/orders/_search/template"),
        (Method::POST, "/orders/_close"),
        (Method::GET, "/orders/_stats"),
    ] {
        let body = json!({"query": {"match_all": {}}});
        let r = acme.call(method.clone(), path, Some(&body), &[]).await;
        assert_eq!(r.status, 400, "{method} {path}: {}", r.text());
        assert_eq!(
            r.json()["error"]["type"],
            "unsupported_endpoint",
            "{method} {path}"
        );
    }
    // The shared index cannot be deleted or remapped by a tenant.
    let r = acme.delete("/orders").await;
    refused(&r, 400, "bad_request", "deleting a shared logical index");
    let r = acme
        .put(
            "/orders/_mapping",
            &json!({"properties": {"_tenant": {"type": "text"}}}),
        )
        .await;
    refused(
        &r,
        403,
        "operator_required",
        "remapping a shared logical index",
    );
    // Multi-index paths mixing a logical index.
    let r = acme.get(&format!("/orders,t-{tag}-shared/_search")).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_globex_untouched(tag).await;
}

/// A gzip body cut short is refused clearly, not misread (compressed.rs has
/// the rest); malformed JSON and a document that is not an object are
/// refused.
#[tokio::test(flavor = "multi_thread")]
async fn compressed_malformed_and_non_object_bodies_are_refused() {
    let tag = "isob";
    let (_f, acme) = with_globex_secret(tag).await;
    let gzip = bytes::Bytes::from_static(b"\x1f\x8b\x08\x00\x00\x00\x00\x00");
    let gz = acme
        .raw(
            Method::PUT,
            "/orders/_doc/gz",
            Some(gzip),
            &[("content-encoding", "gzip")],
        )
        .await;
    assert_eq!(gz.status, 400, "{}", gz.text());
    assert!(gz.text().contains("compressed"), "{}", gz.text());
    let raw = acme
        .raw(
            Method::PUT,
            "/orders/_doc/bad",
            Some("{\"title\": ".into()),
            &[],
        )
        .await;
    refused(&raw, 400, "bad_request", "malformed JSON");
    let r = acme
        .put("/orders/_doc/bad", &json!(["not", "an", "object"]))
        .await;
    refused(&r, 400, "bad_request", "document that is not an object");
    assert_globex_untouched(tag).await;
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

/// Found by review: `docvalue_fields: ["*ndex"]` passed the refusal of
/// `_index` (only a leading `_` was checked) and OpenSearch, which expands
/// the pattern to metadata fields, answered the shared index's name in
/// each hit's `fields._index`. Patterns that can match a metadata field
/// are refused where OpenSearch expands them so; the `fields` option's
/// `*`, which OpenSearch never expands to them, is served.
#[tokio::test(flavor = "multi_thread")]
async fn field_patterns_that_reach_metadata_fields_are_refused() {
    let tag = "isopat";
    let (_f, acme) = with_globex_secret(tag).await;
    let own = acme
        .put(
            "/orders/_doc/mine?refresh=true",
            &json!({"title": "acme own"}),
        )
        .await;
    assert_eq!(own.status, 201, "{}", own.text());
    for (what, body) in [
        ("docvalue_fields", json!({"docvalue_fields": ["*ndex"]})),
        (
            "docvalue_fields object",
            json!({"docvalue_fields": [{"field": "*seq_no"}]}),
        ),
        (
            "query_string fields",
            json!({"query": {"query_string": {"query": "t*", "fields": ["*ndex"]}}}),
        ),
    ] {
        let r = acme.post("/orders/_search", &body).await;
        refused(&r, 400, "construct_refused", what);
    }
    // Found by the review of the fix: the same pattern as a parameter, an
    // escaped field name in query text, a highlighted metadata field.
    let r = acme.get("/orders/_search?docvalue_fields=*ndex").await;
    assert_eq!(r.status, 400, "{}", r.text());
    for (what, body) in [
        (
            "escaped query text",
            json!({"query": {"query_string": {"query": "_in\\dex:t*"}}}),
        ),
        (
            "highlight",
            json!({"highlight": {"fields": {"_routing": {}}}}),
        ),
        // The second review: each answered a prefix oracle on the shared
        // index's name (count 2 for `t*`, 0 for `x*`).
        (
            "terms on _index",
            json!({"query": {"terms": {"_index": ["t*"]}}}),
        ),
        (
            "boosted field",
            json!({"query": {"query_string": {"query": "t*", "fields": ["_index^2"]}}}),
        ),
        (
            "quote_field_suffix",
            json!({"query": {"query_string": {"query": "_ind:\"t*\"", "quote_field_suffix": "ex"}}}),
        ),
        // The third review: Lucene ends a field name at `^`, `!` and `/`
        // (`hello^1_index:t*` answered 1 hit for `t*`, 0 for `x*`).
        (
            "name after a boost",
            json!({"query": {"query_string": {"query": "hello^1_index:t*", "default_operator": "AND"}}}),
        ),
        (
            "name after not",
            json!({"query": {"query_string": {"query": "a!_index:t*"}}}),
        ),
        (
            "name after a regex",
            json!({"query": {"query_string": {"query": "/a/_index:t*"}}}),
        ),
        (
            "approximate knn",
            json!({"query": {"knn": {"v": {"vector": [1.0], "k": 3}}}}),
        ),
    ] {
        let r = acme.post("/orders/_search", &body).await;
        refused(&r, 400, "construct_refused", what);
    }
    // Found by the review for regressions: ordinary requests stay served
    // (a field whose name holds `_id`, a `.sub-field` suffix, Discover's
    // empty `script_fields`, a boosted ordinary field).
    for body in [
        json!({"query": {"query_string": {"query": "user_id:5 OR title:acme"}}}),
        json!({"query": {"query_string": {"query": "\"acme own\"", "quote_field_suffix": ".exact"}}}),
        json!({"query": {"match_all": {}}, "script_fields": {}}),
        json!({"query": {"multi_match": {"query": "acme", "fields": ["title^2"]}}}),
        json!({"query": {"simple_query_string": {"query": "acme_id own"}}}),
    ] {
        let r = acme.post("/orders/_search", &body).await;
        assert_eq!(r.status, 200, "{body}: {}", r.text());
    }
    let r = acme
        .post("/orders/_search", &json!({"fields": ["*"]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(!text.contains(&format!("t-{tag}-shared")), "{text}");
    let hits = r.json()["hits"]["hits"].clone();
    assert_eq!(hits.as_array().map(Vec::len), Some(1), "{text}");
    assert_eq!(hits[0]["fields"]["title"], json!(["acme own"]), "{text}");
    assert_globex_untouched(tag).await;
}

/// Found by review: `error_trace=true` was forwarded, and the cluster's
/// Java stack trace (`[t-x-shared/<uuid>] QueryShardException...`) came
/// back with the shared index's uuid, proof of who shares it. The
/// parameter is not forwarded, and any `stack_trace` is removed from error
/// answers; the error itself is relayed.
#[tokio::test(flavor = "multi_thread")]
async fn error_traces_do_not_reach_tenants() {
    let tag = "isotrace";
    let f = Fleet::start(&node().url(), tag);
    let acme = f.client("acme-svc");
    let w = acme
        .put("/orders/_doc/n1?refresh=true", &json!({"n": 5}))
        .await;
    assert_eq!(w.status, 201, "{}", w.text());
    let uuid = index_uuid(&format!("t-{tag}-shared")).await;
    for path in [
        "/orders/_search?error_trace=true",
        "/orders/_count?error_trace=true",
    ] {
        let r = acme
            .post(path, &json!({"query": {"term": {"n": {"value": "abc"}}}}))
            .await;
        let text = r.text();
        assert_eq!(r.status, 400, "{path}: {text}");
        assert!(text.contains("query_shard_exception"), "{path}: {text}");
        assert!(!text.contains("stack_trace"), "{path}: {text}");
        assert!(!text.contains(&uuid), "{path}: {text}");
        assert!(!text.contains(&format!("t-{tag}-shared")), "{path}: {text}");
    }
}
