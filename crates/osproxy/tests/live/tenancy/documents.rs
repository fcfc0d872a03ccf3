//! Documents and searches by placement kind, and where the partition comes from.

use http::Method;
use osproxy_testkit::{As, Http, OpenSearchNode};
use serde_json::json;

use super::*;
use crate::common::node;

/// A fleet tagged `tag` in which acme and globex have each written their
/// own document `1` to the shared `orders`: acme an anvil, globex a globe.
async fn two_tenants(tag: &str) -> (Fleet, As, As) {
    let f = Fleet::start(&node().url(), tag);
    let (acme, globex) = (f.client("acme-svc"), f.client("globex-svc"));
    let put = acme
        .put(
            "/orders/_doc/1?refresh=true",
            &json!({"title": "anvil", "n": 1}),
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.text());
    assert_eq!(put.json()["_index"], "orders");
    assert_eq!(put.json()["_id"], "1");
    let put = globex
        .put(
            "/orders/_doc/1?refresh=true",
            &json!({"title": "globe", "n": 2}),
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.text());
    (f, acme, globex)
}

/// Physically, a shared placement is one shared index holding
/// partition-scoped ids, the injected partition field and routing, created
/// from the catalogue's declared mapping.
#[tokio::test(flavor = "multi_thread")]
async fn a_shared_placement_stores_scoped_ids_the_partition_field_and_routing() {
    let (_f, _, _) = two_tenants("docs").await;
    let raw = on_node("/t-docs-shared/_doc/acme:1?routing=acme")
        .await
        .json();
    assert_eq!(
        raw["_source"],
        json!({"_tenant": "acme", "title": "anvil", "n": 1})
    );
    assert_eq!(raw["_routing"], "acme");
    let raw = on_node("/t-docs-shared/_doc/globex:1?routing=globex")
        .await
        .json();
    assert_eq!(raw["_source"]["_tenant"], "globex");
    // The shared index was created from the catalogue's declared mapping
    // (`title` as plain `text`, where dynamic mapping would have added a
    // `keyword` sub-field), with the partition field as keyword.
    let mapping = on_node("/t-docs-shared/_mapping").await.json();
    let props = &mapping["t-docs-shared"]["mappings"]["properties"];
    assert_eq!(props["title"], json!({"type": "text"}), "{mapping}");
    assert_eq!(props["_tenant"]["type"], "keyword", "{mapping}");
}

/// Each tenant of a shared placement reads its own document, in logical
/// form: logical index and id, its source without the partition field, no
/// routing.
#[tokio::test(flavor = "multi_thread")]
async fn each_tenant_reads_its_own_document_in_logical_form() {
    let (_f, acme, globex) = two_tenants("docr").await;
    let got = acme.get("/orders/_doc/1").await.json();
    assert_eq!(got["_index"], "orders");
    assert_eq!(got["_id"], "1");
    assert_eq!(got["_source"], json!({"title": "anvil", "n": 1}));
    assert!(got.get("_routing").is_none(), "routing leaked: {got}");
    let src = globex.get("/orders/_source/1").await.json();
    assert_eq!(src, json!({"title": "globe", "n": 2}));
    assert_eq!(acme.head("/orders/_doc/1").await.status, 200);
}

/// Search and count in a shared placement see one tenant only, whatever
/// the query says.
#[tokio::test(flavor = "multi_thread")]
async fn searches_and_counts_see_one_tenant_whatever_the_query_says() {
    let (_f, acme, globex) = two_tenants("docq").await;
    for (who, client) in [("acme-svc", &acme), ("globex-svc", &globex)] {
        let r = client
            .post("/orders/_search", &json!({"query": {"match_all": {}}}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let hits = r.json()["hits"]["hits"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(hits.len(), 1, "{who}: {}", r.text());
        assert_eq!(hits[0]["_id"], "1");
        assert_eq!(hits[0]["_index"], "orders");
        assert!(hits[0]["_source"].get("_tenant").is_none());
        let escape = json!({"query": {"bool": {"should": [{"term": {"_tenant": "acme"}}, {"term": {"_tenant": "globex"}}]}}});
        let c = client.post("/orders/_count", &escape).await;
        assert_eq!(c.json()["count"], 1, "{who}: {}", c.text());
    }
}

/// Nothing of the rewrite shows in hits: not in _source, fields,
/// highlights, inner hits or routing.
#[tokio::test(flavor = "multi_thread")]
async fn nothing_of_the_rewrite_shows_in_hits() {
    let (_f, acme, _) = two_tenants("doch").await;
    let probe = json!({
        "query": {"match": {"title": "anvil"}},
        "highlight": {"fields": {"*": {}}},
        "docvalue_fields": ["_tenant"],
        "stored_fields": ["*"],
        "_source": true,
        "collapse": {"field": "n", "inner_hits": {"name": "same_n", "size": 2}}
    });
    let r = acme.post("/orders/_search", &probe).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(
        !text.contains("_tenant")
            && !text.contains("acme:")
            && !text.contains("t-doch-shared")
            && !text.contains("_routing"),
        "rewrite leaked into hits: {text}"
    );
    let hit = &r.json()["hits"]["hits"][0];
    assert_eq!(hit["_id"], "1");
    assert_eq!(
        hit["inner_hits"]["same_n"]["hits"]["hits"][0]["_id"], "1",
        "{text}"
    );
    assert_eq!(
        hit["inner_hits"]["same_n"]["hits"]["hits"][0]["_index"], "orders",
        "{text}"
    );
}

/// Writes in a shared placement stay within the tenant: a partial update,
/// create-only semantics, auto ids and deletes touch the caller's own
/// documents only, and physical names never show in errors.
#[tokio::test(flavor = "multi_thread")]
async fn updates_creates_auto_ids_and_deletes_stay_within_the_tenant() {
    let (_f, acme, globex) = two_tenants("docw").await;
    let up = acme
        .post("/orders/_update/1?refresh=true", &json!({"doc": {"n": 10}}))
        .await;
    assert_eq!(up.status, 200, "{}", up.text());
    assert_eq!(up.json()["_id"], "1");
    let raw = on_node("/t-docw-shared/_doc/acme:1?routing=acme")
        .await
        .json();
    assert_eq!(
        raw["_source"],
        json!({"_tenant": "acme", "title": "anvil", "n": 10})
    );
    let again = acme
        .put("/orders/_create/1", &json!({"title": "dup"}))
        .await;
    assert_eq!(again.status, 409, "{}", again.text());
    assert!(
        !again.text().contains("acme:1") && !again.text().contains("t-docw-shared"),
        "physical names leaked: {}",
        again.text()
    );
    let auto = acme
        .post("/orders/_doc?refresh=true", &json!({"title": "auto"}))
        .await;
    assert_eq!(auto.status, 201, "{}", auto.text());
    let auto_id = auto.json()["_id"].as_str().unwrap().to_string();
    let got = acme.get(&format!("/orders/_doc/{auto_id}")).await.json();
    assert_eq!(got["_source"], json!({"title": "auto"}));
    let gone = globex.get(&format!("/orders/_doc/{auto_id}")).await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.json()["found"], false);
    let del = globex.delete("/orders/_doc/1?refresh=true").await;
    assert_eq!(del.status, 200);
    assert_eq!(del.json()["result"], "deleted");
    // globex deleted its own 1; acme's 1 is still there.
    assert_eq!(acme.get("/orders/_doc/1").await.status, 200);
}

/// An index placement: the partition's own physical index, body untouched,
/// answered under the logical name; the same principal acting for another
/// partition lands in the shared index.
#[tokio::test(flavor = "multi_thread")]
async fn an_index_placement_keeps_the_partition_in_its_own_index_under_the_logical_name() {
    let f = Fleet::start(&node().url(), "kinds");
    let initech = f.client("multi-svc").with("x-osproxy-partition", "initech");
    let put = initech
        .put("/orders/_doc/1?refresh=true", &json!({"title": "initech"}))
        .await;
    assert_eq!(put.status, 201, "{}", put.text());
    assert_eq!(put.json()["_index"], "orders");
    let raw = on_node("/t-kinds-initech/_doc/1").await.json();
    assert_eq!(raw["_source"], json!({"title": "initech"}));
    let hits = initech.get("/orders/_search?q=title:initech").await;
    assert_eq!(hits.status, 200, "{}", hits.text());
    assert_eq!(hits.json()["hits"]["hits"][0]["_index"], "orders");
    // The same principal acting for acme lands in the shared index.
    let put = f
        .client("multi-svc")
        .with("x-osproxy-partition", "acme")
        .put(
            "/orders/_doc/1?refresh=true",
            &json!({"title": "acme via multi"}),
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.text());
    assert_eq!(
        on_node("/t-kinds-shared/_doc/acme:1?routing=acme")
            .await
            .status,
        200
    );
}

/// A cluster placement: the partition's own cluster, under the logical
/// index name there, never the main cluster; and every served endpoint of
/// the tenant API works in it, checked on that cluster.
#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_placement_keeps_the_partition_on_its_own_cluster_and_serves_every_endpoint() {
    let second = OpenSearchNode::start().unwrap();
    let f = Fleet::start(&second.url(), "kindc");
    let umbrella = f.gateway_for("umbrella");
    let put = umbrella
        .put(
            "/orders/_doc/u1?refresh=true",
            &json!({"title": "umbrella"}),
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.text());
    let raw = direct(&second.url(), Method::GET, "/orders/_doc/u1")
        .await
        .json();
    assert_eq!(raw["_source"], json!({"title": "umbrella"}));
    assert_eq!(
        on_node("/orders/_doc/u1").await.status,
        404,
        "must not land on the main cluster"
    );
    let got = umbrella.get("/orders/_doc/u1").await.json();
    assert_eq!(got["_source"], json!({"title": "umbrella"}));
    let count = umbrella.get("/orders/_count").await.json();
    assert_eq!(count["count"], 1);

    serves_documents_bulk_and_search(&f, "umbrella", &second.url(), "orders").await;
    serves_mget_msearch_cursors_and_by_query(&f, "umbrella", &second.url(), "orders").await;
}

/// Every served endpoint of the tenant API works in an index placement,
/// checked at the partition's own physical index.
#[tokio::test(flavor = "multi_thread")]
async fn an_index_placement_serves_every_endpoint() {
    let f = Fleet::start(&node().url(), "kindi");
    serves_documents_bulk_and_search(&f, "initech", &node().url(), "t-kindi-initech").await;
    serves_mget_msearch_cursors_and_by_query(&f, "initech", &node().url(), "t-kindi-initech").await;
}

/// Create, update, get, head, auto ids, bulk, search and delete for
/// `partition` (in a dedicated placement), each checked at the physical
/// index `physical` on the node at `base`.
async fn serves_documents_bulk_and_search(f: &Fleet, partition: &str, base: &str, physical: &str) {
    let g = f.gateway_for(partition);
    let doc = |id: &str| format!("/{physical}/_doc/{id}");
    let c1 = g
        .put("/orders/_create/c1?refresh=true", &json!({"n": 1}))
        .await;
    assert_eq!(c1.status, 201);
    assert_eq!(
        g.put("/orders/_create/c1", &json!({"n": 1})).await.status,
        409
    );
    let up = g
        .post("/orders/_update/c1?refresh=true", &json!({"doc": {"n": 2}}))
        .await;
    assert_eq!(up.status, 200);
    assert_eq!(
        direct(base, Method::GET, &doc("c1")).await.json()["_source"],
        json!({"n": 2})
    );
    assert_eq!(g.get("/orders/_source/c1").await.json(), json!({"n": 2}));
    assert_eq!(g.head("/orders/_doc/c1").await.status, 200);
    let auto = g.post("/orders/_doc?refresh=true", &json!({"n": 3})).await;
    assert_eq!(auto.status, 201, "{}", auto.text());
    assert_eq!(auto.json()["_index"], "orders");
    let bulk = ndjson(&[
        json!({"index": {"_id": "b1"}}),
        json!({"n": 4}),
        json!({"delete": {"_id": "c1"}}),
    ]);
    let r = g
        .raw(
            Method::POST,
            "/orders/_bulk?refresh=true",
            Some(bulk.into()),
            &[],
        )
        .await;
    assert_eq!(r.json()["errors"], false, "{}", r.text());
    assert_eq!(r.json()["items"][0]["index"]["_index"], "orders");
    assert_eq!(
        direct(base, Method::GET, &doc("b1")).await.json()["_source"],
        json!({"n": 4})
    );
    assert_eq!(direct(base, Method::GET, &doc("c1")).await.status, 404);
    let hits = g
        .post(
            "/orders/_search",
            &json!({"query": {"range": {"n": {"gte": 3}}}}),
        )
        .await
        .json();
    assert_eq!(hits["hits"]["total"]["value"], 2, "{hits}");
    assert!(hits["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["_index"] == "orders"));
    assert_eq!(
        g.delete("/orders/_doc/b1?refresh=true").await.json()["result"],
        "deleted"
    );
}

/// The rest of the tenant API for `partition` (in a dedicated placement):
/// refresh, mget, msearch, scroll, PIT, delete by query, index exists and
/// mapping, checked at the physical index `physical` on the node at `base`.
async fn serves_mget_msearch_cursors_and_by_query(
    f: &Fleet,
    partition: &str,
    base: &str,
    physical: &str,
) {
    let g = f.gateway_for(partition);
    for i in 0..3 {
        g.put(&format!("/orders/_doc/k{i}"), &json!({"n": 10 + i}))
            .await;
    }
    assert_eq!(g.post_empty("/orders/_refresh").await.status, 200);
    let mget = g
        .post("/orders/_mget", &json!({"ids": ["k0", "k1", "nope"]}))
        .await
        .json();
    let found: Vec<bool> = mget["docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["found"].as_bool().unwrap_or(false))
        .collect();
    assert_eq!(found, [true, true, false], "{mget}");
    assert_eq!(mget["docs"][0]["_index"], "orders");
    let ms = ndjson(&[json!({}), json!({"query": {"range": {"n": {"gte": 10}}}})]);
    let ndjson_type = [("content-type", "application/x-ndjson")];
    let r = g
        .raw(
            Method::POST,
            "/orders/_msearch",
            Some(ms.into()),
            &ndjson_type,
        )
        .await;
    assert_eq!(
        r.json()["responses"][0]["hits"]["total"]["value"],
        3,
        "{}",
        r.text()
    );
    assert_eq!(
        r.json()["responses"][0]["hits"]["hits"][0]["_index"],
        "orders"
    );
    let tens = json!({"size": 2, "query": {"range": {"n": {"gte": 10}}}});
    let first = g.post("/orders/_search?scroll=1m", &tens).await.json();
    let sid = first["_scroll_id"].as_str().unwrap().to_string();
    assert!(sid.starts_with("osp2."));
    let next = g
        .post(
            "/_search/scroll",
            &json!({"scroll": "1m", "scroll_id": sid}),
        )
        .await
        .json();
    assert_eq!(
        next["hits"]["hits"].as_array().map(Vec::len),
        Some(1),
        "{next}"
    );
    let pit = g
        .post_empty("/orders/_search/point_in_time?keep_alive=1m")
        .await
        .json();
    let pid = pit["pit_id"].as_str().unwrap().to_string();
    let in_pit = json!({"pit": {"id": pid}, "query": {"range": {"n": {"gte": 10}}}});
    let page = g.post("/_search", &in_pit).await.json();
    assert_eq!(page["hits"]["total"]["value"], 3, "{page}");
    let closed = g
        .delete_json("/_search/point_in_time", &json!({"pit_id": [pid]}))
        .await;
    assert_eq!(closed.status, 200);
    let d = g
        .post(
            "/orders/_delete_by_query?refresh=true",
            &json!({"query": {"term": {"n": 10}}}),
        )
        .await
        .json();
    assert_eq!(d["deleted"], 1, "{d}");
    let k0 = direct(base, Method::GET, &format!("/{physical}/_doc/k0")).await;
    assert_eq!(k0.status, 404);
    assert_eq!(g.head("/orders").await.status, 200);
    let mapping = g.get("/orders/_mapping").await.json();
    assert!(mapping.get("orders").is_some(), "{mapping}");
}

#[tokio::test(flavor = "multi_thread")]
async fn partition_from_the_document_body() {
    let f = Fleet::start(&node().url(), "body");
    // One bulk from a gateway, items for several partitions and two targets.
    let mut lines = Vec::new();
    for (i, tenant) in ["acme", "globex", "initech", "acme"].iter().enumerate() {
        lines.push(json!({"index": {"_index": "events", "_id": format!("e{i}")}}));
        lines.push(json!({"tenant_id": tenant, "seq": i}));
    }
    lines.push(json!({"index": {"_index": "events", "_id": "nobody"}}));
    lines.push(json!({"seq": 99}));
    let r = f
        .http
        .send_with(
            Method::POST,
            &format!("{}/_bulk?refresh=true", f.proxy.url()),
            Some(ndjson(&lines).into()),
            &[("authorization", "Bearer gateway-token-0123456789")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let statuses: Vec<u64> = r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["index"]["status"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(statuses, [201, 201, 201, 201, 400], "{}", r.text());
    let shared = direct(
        &node().url(),
        Method::GET,
        "/t-body-events/_doc/globex:e1?routing=globex",
    )
    .await
    .json();
    assert_eq!(
        shared["_source"],
        json!({"_tenant": "globex", "tenant_id": "globex", "seq": 1})
    );
    let own = direct(&node().url(), Method::GET, "/t-body-events-initech/_doc/e2")
        .await
        .json();
    assert_eq!(own["_source"], json!({"tenant_id": "initech", "seq": 2}));
    // Reads use the grant (or x-osproxy-partition): acme sees its two events.
    let acme = f
        .call("acme-svc", Method::GET, "/events/_count", None, &[])
        .await
        .json();
    assert_eq!(acme["count"], 2);
    // A principal may only write documents of partitions it is granted.
    let r = f
        .call(
            "acme-svc",
            Method::PUT,
            "/events/_doc/x?refresh=true",
            Some(json!({"tenant_id": "globex"})),
            &[],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = f
        .call(
            "acme-svc",
            Method::PUT,
            "/events/_doc/x?refresh=true",
            Some(json!({"tenant_id": "acme"})),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = f
        .call(
            "acme-svc",
            Method::PUT,
            "/events/_doc/y",
            Some(json!({"no_tenant": true})),
            &[],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "partition_required");
}

#[tokio::test(flavor = "multi_thread")]
async fn partition_from_a_gateway_header() {
    let f = Fleet::start(&node().url(), "hdr");
    let r = f
        .call(
            "gateway",
            Method::PUT,
            "/tickets/_doc/1?refresh=true",
            Some(json!({"t": "a"})),
            &[("x-tenant", "acme")],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let raw = direct(
        &node().url(),
        Method::GET,
        "/t-hdr-tickets/_doc/acme:1?routing=acme",
    )
    .await
    .json();
    assert_eq!(raw["_source"], json!({"_tenant": "acme", "t": "a"}));
    // Missing header; a header naming a partition outside the grant.
    let r = f
        .call("gateway", Method::GET, "/tickets/_doc/1", None, &[])
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "partition_required");
    let r = f
        .call(
            "acme-svc",
            Method::GET,
            "/tickets/_doc/1",
            None,
            &[("x-tenant", "globex")],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = f
        .call(
            "acme-svc",
            Method::GET,
            "/tickets/_doc/1",
            None,
            &[("x-tenant", "acme")],
        )
        .await;
    assert_eq!(r.json()["_source"], json!({"t": "a"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_index_with_a_tokenised_partition_field_is_refused() {
    // Someone created the shared index with the partition field as `text`: a
    // term filter on `acme` would also match `acme-eu`, so osproxy must not use it.
    let made = Http::new()
        .send(
            Method::PUT,
            &format!("{}/t-unsafe-shared", node().url()),
            Some(r#"{"mappings":{"properties":{"_tenant":{"type":"text"}}}}"#),
        )
        .await
        .unwrap();
    assert_eq!(made.status, 200, "{}", made.text());
    let f = Fleet::start(&node().url(), "unsafe");
    for (method, path, body) in [
        (Method::PUT, "/orders/_doc/1", Some(json!({"a": 1}))),
        (Method::GET, "/orders/_search", None),
    ] {
        let r = f.call("acme-svc", method, path, body, &[]).await;
        assert_eq!(r.status, 500, "{}", r.text());
        assert!(r.text().contains("keyword"), "{}", r.text());
    }
    let count = direct(&node().url(), Method::GET, "/t-unsafe-shared/_count")
        .await
        .json();
    assert_eq!(
        count["count"], 0,
        "nothing may be written to an unsafe shared index"
    );
}

/// Found by review: a conflict's error named the shared physical index's
/// `index_uuid`, the same for every tenant of it, so two tenants could
/// prove they share an index. It is removed in shared placements, from
/// single-document and bulk item errors alike.
#[tokio::test(flavor = "multi_thread")]
async fn errors_in_a_shared_placement_do_not_name_the_physical_index_uuid() {
    let f = Fleet::start(&node().url(), "uuid");
    let acme = f.client("acme-svc");
    let first = acme
        .put("/orders/_create/c1?refresh=true", &json!({"t": 1}))
        .await;
    assert_eq!(first.status, 201, "{}", first.text());
    let again = acme.put("/orders/_create/c1", &json!({"t": 2})).await;
    assert_eq!(again.status, 409, "{}", again.text());
    let text = again.text();
    assert!(text.contains("version_conflict_engine_exception"), "{text}");
    assert!(
        !text.contains("index_uuid") && !text.contains("t-uuid-shared"),
        "{text}"
    );
    let body = "{\"create\":{\"_index\":\"orders\",\"_id\":\"c1\"}}\n{\"t\":3}\n";
    let r = acme
        .raw(
            Method::POST,
            "/_bulk",
            Some(body.into()),
            &[("content-type", "application/x-ndjson")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(text.contains("version_conflict_engine_exception"), "{text}");
    assert!(
        !text.contains("index_uuid") && !text.contains("t-uuid-shared"),
        "{text}"
    );
    // The physical index does have one: the answers were stripped of it.
    let direct = on_node("/t-uuid-shared/_settings").await;
    assert!(direct.text().contains("\"uuid\""), "{}", direct.text());
}
