//! Documents and searches by placement kind, and where the partition comes from.

use http::Method;
use osproxy_testkit::{Http, OpenSearchNode};
use serde_json::json;

use super::*;
use crate::common::node;

#[tokio::test(flavor = "multi_thread")]
async fn shared_placement_confines_documents_and_searches() {
    let f = Fleet::start(&node().url(), "docs");
    let put = f
        .call(
            "acme-svc",
            Method::PUT,
            "/orders/_doc/1?refresh=true",
            Some(json!({"title": "anvil", "n": 1})),
            &[],
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.text());
    assert_eq!(put.json()["_index"], "orders");
    assert_eq!(put.json()["_id"], "1");
    let put = f
        .call(
            "globex-svc",
            Method::PUT,
            "/orders/_doc/1?refresh=true",
            Some(json!({"title": "globe", "n": 2})),
            &[],
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.text());

    // Physically: one shared index, partition-scoped ids, the injected field, routing.
    let raw = direct(
        &node().url(),
        Method::GET,
        "/t-docs-shared/_doc/acme:1?routing=acme",
    )
    .await
    .json();
    assert_eq!(
        raw["_source"],
        json!({"_tenant": "acme", "title": "anvil", "n": 1})
    );
    assert_eq!(raw["_routing"], "acme");
    let raw = direct(
        &node().url(),
        Method::GET,
        "/t-docs-shared/_doc/globex:1?routing=globex",
    )
    .await
    .json();
    assert_eq!(raw["_source"]["_tenant"], "globex");
    // The shared index was created from the catalogue's declared mapping
    // (`title` as plain `text`, where dynamic mapping would have added a
    // `keyword` sub-field), with the partition field as keyword.
    let mapping = direct(&node().url(), Method::GET, "/t-docs-shared/_mapping")
        .await
        .json();
    let props = &mapping["t-docs-shared"]["mappings"]["properties"];
    assert_eq!(props["title"], json!({"type": "text"}), "{mapping}");
    assert_eq!(props["_tenant"]["type"], "keyword", "{mapping}");

    // Each tenant reads its own document, in logical form.
    let got = f
        .call("acme-svc", Method::GET, "/orders/_doc/1", None, &[])
        .await
        .json();
    assert_eq!(got["_index"], "orders");
    assert_eq!(got["_id"], "1");
    assert_eq!(got["_source"], json!({"title": "anvil", "n": 1}));
    assert!(got.get("_routing").is_none(), "routing leaked: {got}");
    let src = f
        .call("globex-svc", Method::GET, "/orders/_source/1", None, &[])
        .await
        .json();
    assert_eq!(src, json!({"title": "globe", "n": 2}));
    let head = f
        .call("acme-svc", Method::HEAD, "/orders/_doc/1", None, &[])
        .await;
    assert_eq!(head.status, 200);

    // Search and count see one tenant only, whatever the query says.
    for who in ["acme-svc", "globex-svc"] {
        let r = f
            .call(
                who,
                Method::POST,
                "/orders/_search",
                Some(json!({"query": {"match_all": {}}})),
                &[],
            )
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
        let c = f
            .call(who, Method::POST, "/orders/_count", Some(escape), &[])
            .await;
        assert_eq!(c.json()["count"], 1, "{who}: {}", c.text());
    }

    // Nothing of the rewrite shows in hits: not in _source, fields,
    // highlights, inner hits or routing.
    let probe = json!({
        "query": {"match": {"title": "anvil"}},
        "highlight": {"fields": {"*": {}}},
        "docvalue_fields": ["_tenant"],
        "stored_fields": ["*"],
        "_source": true,
        "collapse": {"field": "n", "inner_hits": {"name": "same_n", "size": 2}}
    });
    let r = f
        .call(
            "acme-svc",
            Method::POST,
            "/orders/_search",
            Some(probe),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(
        !text.contains("_tenant")
            && !text.contains("acme:")
            && !text.contains("t-docs-shared")
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

    // Update (partial doc), create-only semantics, auto ids, delete.
    let up = f
        .call(
            "acme-svc",
            Method::POST,
            "/orders/_update/1?refresh=true",
            Some(json!({"doc": {"n": 10}})),
            &[],
        )
        .await;
    assert_eq!(up.status, 200, "{}", up.text());
    assert_eq!(up.json()["_id"], "1");
    let raw = direct(
        &node().url(),
        Method::GET,
        "/t-docs-shared/_doc/acme:1?routing=acme",
    )
    .await
    .json();
    assert_eq!(
        raw["_source"],
        json!({"_tenant": "acme", "title": "anvil", "n": 10})
    );
    let again = f
        .call(
            "acme-svc",
            Method::PUT,
            "/orders/_create/1",
            Some(json!({"title": "dup"})),
            &[],
        )
        .await;
    assert_eq!(again.status, 409, "{}", again.text());
    assert!(
        !again.text().contains("acme:1") && !again.text().contains("t-docs-shared"),
        "physical names leaked: {}",
        again.text()
    );
    let auto = f
        .call(
            "acme-svc",
            Method::POST,
            "/orders/_doc?refresh=true",
            Some(json!({"title": "auto"})),
            &[],
        )
        .await;
    assert_eq!(auto.status, 201, "{}", auto.text());
    let auto_id = auto.json()["_id"].as_str().unwrap().to_string();
    let got = f
        .call(
            "acme-svc",
            Method::GET,
            &format!("/orders/_doc/{auto_id}"),
            None,
            &[],
        )
        .await
        .json();
    assert_eq!(got["_source"], json!({"title": "auto"}));
    let gone = f
        .call(
            "globex-svc",
            Method::GET,
            &format!("/orders/_doc/{auto_id}"),
            None,
            &[],
        )
        .await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.json()["found"], false);
    let del = f
        .call(
            "globex-svc",
            Method::DELETE,
            "/orders/_doc/1?refresh=true",
            None,
            &[],
        )
        .await;
    assert_eq!(del.status, 200);
    assert_eq!(del.json()["result"], "deleted");
    // globex deleted its own 1; acme's 1 is still there.
    assert_eq!(
        f.call("acme-svc", Method::GET, "/orders/_doc/1", None, &[])
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn index_and_cluster_placements_route_and_rename() {
    let second = OpenSearchNode::start().unwrap();
    let f = Fleet::start(&second.url(), "kinds");
    // index placement: the partition's own physical index, body untouched.
    let put = f
        .call(
            "multi-svc",
            Method::PUT,
            "/orders/_doc/1?refresh=true",
            Some(json!({"title": "initech"})),
            &[("x-osproxy-partition", "initech")],
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.text());
    assert_eq!(put.json()["_index"], "orders");
    let raw = direct(&node().url(), Method::GET, "/t-kinds-initech/_doc/1")
        .await
        .json();
    assert_eq!(raw["_source"], json!({"title": "initech"}));
    let hits = f
        .call(
            "multi-svc",
            Method::GET,
            "/orders/_search?q=title:initech",
            None,
            &[("x-osproxy-partition", "initech")],
        )
        .await;
    assert_eq!(hits.status, 200, "{}", hits.text());
    assert_eq!(hits.json()["hits"]["hits"][0]["_index"], "orders");
    // The same principal acting for acme lands in the shared index.
    let put = f
        .call(
            "multi-svc",
            Method::PUT,
            "/orders/_doc/1?refresh=true",
            Some(json!({"title": "acme via multi"})),
            &[("x-osproxy-partition", "acme")],
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.text());
    assert_eq!(
        direct(
            &node().url(),
            Method::GET,
            "/t-kinds-shared/_doc/acme:1?routing=acme"
        )
        .await
        .status,
        200
    );

    // cluster placement: the partition's own cluster, logical index name there.
    let put = f
        .call(
            "gateway",
            Method::PUT,
            "/orders/_doc/u1?refresh=true",
            Some(json!({"title": "umbrella"})),
            &[("x-osproxy-partition", "umbrella")],
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.text());
    let raw = direct(&second.url(), Method::GET, "/orders/_doc/u1")
        .await
        .json();
    assert_eq!(raw["_source"], json!({"title": "umbrella"}));
    assert_eq!(
        direct(&node().url(), Method::GET, "/orders/_doc/u1")
            .await
            .status,
        404,
        "must not land on the main cluster"
    );
    let got = f
        .call(
            "gateway",
            Method::GET,
            "/orders/_doc/u1",
            None,
            &[("x-osproxy-partition", "umbrella")],
        )
        .await
        .json();
    assert_eq!(got["_source"], json!({"title": "umbrella"}));
    let count = f
        .call(
            "gateway",
            Method::GET,
            "/orders/_count",
            None,
            &[("x-osproxy-partition", "umbrella")],
        )
        .await
        .json();
    assert_eq!(count["count"], 1);

    // Every served endpoint in both dedicated kinds, checked at the physical place.
    for (partition, base, physical) in [
        ("initech", node().url(), "t-kinds-initech"),
        ("umbrella", second.url(), "orders"),
    ] {
        assert_eq!(
            gw(
                &f,
                partition,
                Method::PUT,
                "/orders/_create/c1?refresh=true",
                Some(json!({"n": 1}))
            )
            .await
            .status,
            201
        );
        assert_eq!(
            gw(
                &f,
                partition,
                Method::PUT,
                "/orders/_create/c1",
                Some(json!({"n": 1}))
            )
            .await
            .status,
            409
        );
        assert_eq!(
            gw(
                &f,
                partition,
                Method::POST,
                "/orders/_update/c1?refresh=true",
                Some(json!({"doc": {"n": 2}}))
            )
            .await
            .status,
            200
        );
        assert_eq!(
            direct(&base, Method::GET, &format!("/{physical}/_doc/c1"))
                .await
                .json()["_source"],
            json!({"n": 2})
        );
        assert_eq!(
            gw(&f, partition, Method::GET, "/orders/_source/c1", None)
                .await
                .json(),
            json!({"n": 2})
        );
        assert_eq!(
            gw(&f, partition, Method::HEAD, "/orders/_doc/c1", None)
                .await
                .status,
            200
        );
        let auto = gw(
            &f,
            partition,
            Method::POST,
            "/orders/_doc?refresh=true",
            Some(json!({"n": 3})),
        )
        .await;
        assert_eq!(auto.status, 201, "{}", auto.text());
        assert_eq!(auto.json()["_index"], "orders");
        let bulk = ndjson(&[
            json!({"index": {"_id": "b1"}}),
            json!({"n": 4}),
            json!({"delete": {"_id": "c1"}}),
        ]);
        let r = f
            .http
            .send_with(
                Method::POST,
                &format!("{}/orders/_bulk?refresh=true", f.proxy.url()),
                Some(bulk.into()),
                &[
                    ("authorization", "Bearer gateway-token-0123456789"),
                    ("x-osproxy-partition", partition),
                ],
            )
            .await
            .unwrap();
        assert_eq!(r.json()["errors"], false, "{}", r.text());
        assert_eq!(r.json()["items"][0]["index"]["_index"], "orders");
        assert_eq!(
            direct(&base, Method::GET, &format!("/{physical}/_doc/b1"))
                .await
                .json()["_source"],
            json!({"n": 4})
        );
        assert_eq!(
            direct(&base, Method::GET, &format!("/{physical}/_doc/c1"))
                .await
                .status,
            404
        );
        let hits = gw(
            &f,
            partition,
            Method::POST,
            "/orders/_search",
            Some(json!({"query": {"range": {"n": {"gte": 3}}}})),
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
            gw(
                &f,
                partition,
                Method::DELETE,
                "/orders/_doc/b1?refresh=true",
                None
            )
            .await
            .json()["result"],
            "deleted"
        );

        // The rest of the tenant API in this placement kind.
        for i in 0..3 {
            gw(
                &f,
                partition,
                Method::PUT,
                &format!("/orders/_doc/k{i}"),
                Some(json!({"n": 10 + i})),
            )
            .await;
        }
        assert_eq!(
            gw(&f, partition, Method::POST, "/orders/_refresh", None)
                .await
                .status,
            200
        );
        let mget = gw(
            &f,
            partition,
            Method::POST,
            "/orders/_mget",
            Some(json!({"ids": ["k0", "k1", "nope"]})),
        )
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
        let r = f
            .http
            .send_with(
                Method::POST,
                &format!("{}/orders/_msearch", f.proxy.url()),
                Some(ms.into()),
                &[
                    ("authorization", "Bearer gateway-token-0123456789"),
                    ("x-osproxy-partition", partition),
                    ("content-type", "application/x-ndjson"),
                ],
            )
            .await
            .unwrap();
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
        let first = gw(
            &f,
            partition,
            Method::POST,
            "/orders/_search?scroll=1m",
            Some(json!({"size": 2, "query": {"range": {"n": {"gte": 10}}}})),
        )
        .await
        .json();
        let sid = first["_scroll_id"].as_str().unwrap().to_string();
        assert!(sid.starts_with("osp1."));
        let next = gw(
            &f,
            partition,
            Method::POST,
            "/_search/scroll",
            Some(json!({"scroll": "1m", "scroll_id": sid})),
        )
        .await
        .json();
        assert_eq!(
            next["hits"]["hits"].as_array().map(Vec::len),
            Some(1),
            "{next}"
        );
        let pit = gw(
            &f,
            partition,
            Method::POST,
            "/orders/_search/point_in_time?keep_alive=1m",
            None,
        )
        .await
        .json();
        let pid = pit["pit_id"].as_str().unwrap().to_string();
        let page = gw(
            &f,
            partition,
            Method::POST,
            "/_search",
            Some(json!({"pit": {"id": pid}, "query": {"range": {"n": {"gte": 10}}}})),
        )
        .await
        .json();
        assert_eq!(page["hits"]["total"]["value"], 3, "{page}");
        assert_eq!(
            gw(
                &f,
                partition,
                Method::DELETE,
                "/_search/point_in_time",
                Some(json!({"pit_id": [pid]}))
            )
            .await
            .status,
            200
        );
        let d = gw(
            &f,
            partition,
            Method::POST,
            "/orders/_delete_by_query?refresh=true",
            Some(json!({"query": {"term": {"n": 10}}})),
        )
        .await
        .json();
        assert_eq!(d["deleted"], 1, "{d}");
        assert_eq!(
            direct(&base, Method::GET, &format!("/{physical}/_doc/k0"))
                .await
                .status,
            404
        );
        assert_eq!(
            gw(&f, partition, Method::HEAD, "/orders", None)
                .await
                .status,
            200
        );
        let mapping = gw(&f, partition, Method::GET, "/orders/_mapping", None)
            .await
            .json();
        assert!(mapping.get("orders").is_some(), "{mapping}");
    }
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
