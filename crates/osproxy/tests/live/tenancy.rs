//! Tenancy through the real binary against real OpenSearch nodes: each
//! placement kind, checked by reading the physical indices directly, and
//! tenants that cannot reach each other.

use http::Method;
use osproxy_testkit::{Http, HttpResponse, OpenSearchNode, ProxyInstance};
use serde_json::{json, Value};

use crate::common::node;

const TOKENS: [(&str, &str); 5] = [
    ("acme-svc", "acme-token-0123456789"),
    ("globex-svc", "globex-token-0123456789"),
    ("multi-svc", "multi-token-0123456789"),
    ("gateway", "gateway-token-0123456789"),
    ("ops", "ops-token-0123456789"),
];

struct Fleet {
    proxy: ProxyInstance,
    http: Http,
    _dir: tempfile::TempDir,
}

impl Fleet {
    /// `tag` keeps each test's physical indices apart on the shared node.
    fn start(dedicated_url: &str, tag: &str) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let mut principals = String::new();
        for (name, token) in TOKENS {
            let file = dir.path().join(name);
            std::fs::write(&file, token).unwrap();
            let grants = match name {
                "acme-svc" => "partitions = [\"acme\"]",
                "globex-svc" => "partitions = [\"globex\"]",
                "multi-svc" => "partitions = [\"acme\", \"initech\"]",
                "ops" => "operator = true\nany_partition = true",
                _ => "any_partition = true",
            };
            principals.push_str(&format!(
                "[[principals]]\nname = \"{name}\"\ntoken_file = \"{}\"\n{grants}\n\n",
                file.display()
            ));
        }
        let config = format!(
            "[[clusters]]\nid = \"main\"\nurl = \"{}\"\n\n[[clusters]]\nid = \"dedicated\"\nurl = \"{dedicated_url}\"\n\n{principals}\
             [[indices]]\nname = \"orders\"\nid = \"{{partition}}:{{id}}\"\nfield = \"_tenant\"\n\
             default = {{ kind = \"shared\", cluster = \"main\", index = \"t-{tag}-shared\" }}\n\
             mappings = {{ properties = {{ title = {{ type = \"text\" }} }} }}\n\n\
             [[indices]]\nname = \"invoices\"\ndefault = {{ kind = \"shared\", cluster = \"main\", index = \"t-{tag}-invoices\" }}\n\n\
             [[indices]]\nname = \"events\"\npartition = {{ body = \"tenant_id\" }}\ndefault = {{ kind = \"shared\", cluster = \"main\", index = \"t-{tag}-events\" }}\n\n\
             [[indices]]\nname = \"tickets\"\npartition = {{ header = \"x-tenant\" }}\ndefault = {{ kind = \"shared\", cluster = \"main\", index = \"t-{tag}-tickets\" }}\n\n\
             [[placements]]\nindex = \"events\"\npartition = \"initech\"\nplacement = {{ kind = \"index\", cluster = \"main\", index = \"t-{tag}-events-initech\" }}\n\n\
             [[placements]]\nindex = \"orders\"\npartition = \"initech\"\nplacement = {{ kind = \"index\", cluster = \"main\", index = \"t-{tag}-initech\" }}\n\n\
             [[placements]]\nindex = \"orders\"\npartition = \"umbrella\"\nplacement = {{ kind = \"cluster\", cluster = \"dedicated\" }}\n",
            node().url()
        );
        let proxy =
            ProxyInstance::start(std::path::Path::new(env!("CARGO_BIN_EXE_osproxy")), &config)
                .unwrap();
        proxy
            .wait_ready(std::time::Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
        Fleet {
            proxy,
            http: Http::new(),
            _dir: dir,
        }
    }

    async fn call(
        &self,
        who: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        extra: &[(&str, &str)],
    ) -> HttpResponse {
        let token = TOKENS
            .iter()
            .find(|(n, _)| *n == who)
            .map(|(_, t)| format!("Bearer {t}"))
            .unwrap();
        let mut headers = vec![("authorization", token.as_str())];
        headers.extend_from_slice(extra);
        self.http
            .send_with(
                method,
                &format!("{}{path}", self.proxy.url()),
                body.map(|b| b.to_string().into()),
                &headers,
            )
            .await
            .unwrap()
    }
}

async fn direct(base: &str, method: Method, path: &str) -> HttpResponse {
    Http::new()
        .send(method, &format!("{base}{path}"), None)
        .await
        .unwrap()
}

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

fn ndjson(lines: &[Value]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_routes_each_item_and_answers_in_order() {
    let f = Fleet::start(&node().url(), "bulk");
    let body = ndjson(&[
        json!({"index": {"_index": "orders", "_id": "1"}}),
        json!({"title": "one"}),
        json!({"create": {"_index": "invoices", "_id": "1"}}),
        json!({"amount": 10}),
        json!({"index": {"_index": "orders"}}),
        json!({"title": "auto"}),
        json!({"index": {"_index": "not-logical", "_id": "x"}}),
        json!({"title": "nowhere"}),
        json!({"index": {"_index": "orders", "_id": "r", "routing": "globex"}}),
        json!({"title": "forged routing"}),
        json!({"index": {"_index": "orders", "_id": "f"}}),
        json!({"_tenant": "globex", "title": "forged field"}),
        json!({"index": {"_index": "orders", "_id": 5}}),
        json!({"title": "bad id type"}),
        json!({"update": {"_index": "orders", "_id": "1"}}),
        json!({"doc": {"n": 2}}),
        json!({"create": {"_index": "orders", "_id": "1"}}),
        json!({"title": "duplicate create"}),
        json!({"delete": {"_index": "invoices", "_id": "missing"}}),
        json!({"index": {"_index": "orders", "_id": "6"}}),
        json!({"title": "six"}),
    ]);
    let r = f
        .http
        .send_with(
            Method::POST,
            &format!("{}/_bulk?refresh=true", f.proxy.url()),
            Some(body.into()),
            &[
                ("authorization", "Bearer acme-token-0123456789"),
                ("content-type", "application/x-ndjson"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let items = v["items"].as_array().cloned().unwrap_or_default();
    let summary: Vec<(String, u64)> = items
        .iter()
        .map(|i| {
            let (op, inner) = i
                .as_object()
                .and_then(|o| o.iter().next())
                .map(|(k, v)| (k.clone(), v.clone()))
                .unwrap();
            (op, inner["status"].as_u64().unwrap_or(0))
        })
        .collect();
    let expected: Vec<(String, u64)> = [
        ("index", 201),
        ("create", 201),
        ("index", 201),
        ("index", 400),
        ("index", 400),
        ("index", 400),
        ("index", 400),
        ("update", 200),
        ("create", 409),
        ("delete", 404),
        ("index", 201),
    ]
    .iter()
    .map(|(o, s)| (o.to_string(), *s))
    .collect();
    assert_eq!(summary, expected, "{}", r.text());
    assert_eq!(v["errors"], true);
    // Logical names and ids in the answers; no physical names anywhere.
    assert_eq!(items[0]["index"]["_index"], "orders");
    assert_eq!(items[0]["index"]["_id"], "1");
    assert_eq!(items[1]["create"]["_index"], "invoices");
    assert!(
        !r.text().contains("t-bulk-") && !r.text().contains("acme:"),
        "physical names leaked: {}",
        r.text()
    );
    let auto_id = items[2]["index"]["_id"].as_str().unwrap().to_string();

    // Physically: every landed item is in its partition's place, with the field.
    let raw = direct(
        &node().url(),
        Method::GET,
        "/t-bulk-shared/_doc/acme:1?routing=acme",
    )
    .await
    .json();
    assert_eq!(
        raw["_source"],
        json!({"_tenant": "acme", "title": "one", "n": 2})
    );
    let raw = direct(
        &node().url(),
        Method::GET,
        "/t-bulk-invoices/_doc/acme:1?routing=acme",
    )
    .await
    .json();
    assert_eq!(raw["_source"], json!({"_tenant": "acme", "amount": 10}));
    let raw = direct(
        &node().url(),
        Method::GET,
        &format!("/t-bulk-shared/_doc/acme:{auto_id}?routing=acme"),
    )
    .await
    .json();
    assert_eq!(raw["_source"]["title"], "auto");
    for refused in ["acme:r", "globex:r", "acme:f", "acme:5"] {
        let r = direct(
            &node().url(),
            Method::GET,
            &format!("/t-bulk-shared/_doc/{refused}?routing=acme"),
        )
        .await;
        assert_eq!(r.status, 404, "{refused} must not have been written");
    }
    let six = direct(
        &node().url(),
        Method::GET,
        "/t-bulk-shared/_doc/acme:6?routing=acme",
    )
    .await
    .json();
    assert_eq!(
        six["_source"]["title"], "six",
        "items after refused ones still land"
    );

    // The same via the path index, for another tenant; it sees only its own.
    let body = ndjson(&[
        json!({"index": {"_id": "1"}}),
        json!({"title": "globex one"}),
    ]);
    let r = f
        .http
        .send_with(
            Method::POST,
            &format!("{}/orders/_bulk?refresh=true", f.proxy.url()),
            Some(body.into()),
            &[("authorization", "Bearer globex-token-0123456789")],
        )
        .await
        .unwrap();
    assert_eq!(r.json()["errors"], false, "{}", r.text());
    let mine = f
        .call("globex-svc", Method::GET, "/orders/_count", None, &[])
        .await
        .json();
    assert_eq!(mine["count"], 1);
    let theirs = f
        .call("acme-svc", Method::GET, "/orders/_count", None, &[])
        .await
        .json();
    assert_eq!(theirs["count"], 3);
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
async fn a_hundred_mib_tenancy_bulk_streams_in_bounded_memory() {
    let f = Fleet::start(&node().url(), "big");
    let filler = "y".repeat(10_000);
    let mut body = String::with_capacity(106 * 1024 * 1024);
    let docs = 10_500;
    for i in 0..docs {
        body.push_str(&json!({"index": {"_index": "events", "_id": format!("b{i}")}}).to_string());
        body.push('\n');
        body.push_str(&json!({"tenant_id": format!("t{}", i % 10), "payload": filler}).to_string());
        body.push('\n');
    }
    assert!(
        body.len() >= 100 * 1024 * 1024,
        "body is {} bytes",
        body.len()
    );
    let _ = f
        .call(
            "gateway",
            Method::GET,
            "/events/_count",
            None,
            &[("x-osproxy-partition", "t0")],
        )
        .await;
    let (before, _) = f.proxy.rss_kib().unwrap();
    let r = f
        .http
        .send_with(
            Method::POST,
            &format!("{}/_bulk", f.proxy.url()),
            Some(body.into()),
            &[
                ("authorization", "Bearer gateway-token-0123456789"),
                ("content-type", "application/x-ndjson"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        r.status,
        200,
        "{}",
        r.text().chars().take(300).collect::<String>()
    );
    let v = r.json();
    assert_eq!(v["errors"], false);
    assert_eq!(v["items"].as_array().map(Vec::len), Some(docs));
    let (_, peak) = f.proxy.rss_kib().unwrap();
    let grown = peak.saturating_sub(before) / 1024;
    eprintln!(
        "tenancy bulk of 100 MiB: proxy RSS {before} KiB before, peak {peak} KiB (+{grown} MiB)"
    );
    assert!(
        grown < 64,
        "proxy RSS grew by {grown} MiB for a 100 MiB bulk"
    );
    let _ = direct(&node().url(), Method::POST, "/t-big-events/_refresh").await;
    let count = direct(&node().url(), Method::GET, "/t-big-events/_count")
        .await
        .json();
    assert_eq!(count["count"], docs as u64);
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

#[tokio::test(flavor = "multi_thread")]
async fn logical_index_management() {
    let f = Fleet::start(&node().url(), "admin");
    assert_eq!(
        f.call("acme-svc", Method::HEAD, "/orders", None, &[])
            .await
            .status,
        404
    );
    // A tenant may not shape the shared index for the others in it.
    for body in [
        json!({"settings": {"number_of_shards": 1}, "mappings": {"properties": {"title": {"type": "text"}}}}),
        json!({"aliases": {"everyone": {}}}),
        json!({"settings": {"index.default_pipeline": "p"}}),
        json!({"mappings": {"dynamic_templates": [{"s": {"match": "*", "mapping": {"type": "keyword"}}}]}}),
        json!({"mappings": {"properties": {"t": {"type": "text", "copy_to": "_tenant"}}}}),
        json!({"mappings": {"properties": {"o": {"properties": {"t": {"type": "text", "copy_to": "x"}}}}}}),
    ] {
        let refused = f
            .call("acme-svc", Method::PUT, "/orders", Some(body.clone()), &[])
            .await;
        assert_eq!(refused.status, 403, "{body}: {}", refused.text());
        assert_eq!(
            refused.json()["error"]["type"],
            "operator_required",
            "{body}"
        );
    }
    let created = f
        .call(
            "acme-svc",
            Method::PUT,
            "/orders",
            Some(json!({"mappings": {"properties": {"title": {"type": "text"}}}})),
            &[],
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text());
    assert_eq!(created.json()["index"], "orders");
    assert_eq!(
        f.call("acme-svc", Method::HEAD, "/orders", None, &[])
            .await
            .status,
        200
    );
    // Physically: the shared index, with the partition field as keyword.
    let physical = direct(&node().url(), Method::GET, "/t-admin-shared/_mapping")
        .await
        .json();
    assert_eq!(
        physical["t-admin-shared"]["mappings"]["properties"]["_tenant"]["type"],
        "keyword"
    );
    // A field the catalogue does not declare is the operator's to add.
    let undeclared = f
        .call(
            "acme-svc",
            Method::PUT,
            "/orders",
            Some(json!({"mappings": {"properties": {"title": {"type": "keyword"}}}})),
            &[],
        )
        .await;
    assert_eq!(undeclared.status, 403, "{}", undeclared.text());
    // Tenants see the catalogue's declared mapping, not the physical one:
    // a field only globex's documents created stays invisible to acme.
    let w = f
        .call(
            "globex-svc",
            Method::PUT,
            "/orders/_doc/m1",
            Some(json!({"globex_only_field": 1})),
            &[],
        )
        .await;
    assert_eq!(w.status, 201, "{}", w.text());
    let mapping = f
        .call("acme-svc", Method::GET, "/orders/_mapping", None, &[])
        .await
        .json();
    assert!(
        !mapping.to_string().contains("globex_only_field"),
        "{mapping}"
    );
    assert_eq!(
        mapping["orders"]["mappings"]["properties"]["title"]["type"], "text",
        "{mapping}"
    );
    assert!(
        mapping["orders"]["mappings"]["properties"]
            .get("_tenant")
            .is_none(),
        "{mapping}"
    );
    let settings = f
        .call("acme-svc", Method::GET, "/orders/_settings", None, &[])
        .await;
    assert!(
        settings.json().get("orders").is_some() && !settings.text().contains("t-admin-shared"),
        "{}",
        settings.text()
    );
    // A second tenant sees the same logical index exists.
    let again = f
        .call("globex-svc", Method::PUT, "/orders", Some(json!({})), &[])
        .await;
    assert_eq!(again.status, 400, "{}", again.text());
    assert_eq!(
        again.json()["error"]["type"],
        "resource_already_exists_exception"
    );
    assert!(!again.text().contains("t-admin-shared"), "{}", again.text());
    // The shared mapping: operators only; the partition field never.
    let add = json!({"properties": {"qty": {"type": "integer"}}});
    let r = f
        .call(
            "acme-svc",
            Method::PUT,
            "/orders/_mapping",
            Some(add.clone()),
            &[],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = f
        .call(
            "ops",
            Method::PUT,
            "/orders/_mapping",
            Some(add),
            &[("x-osproxy-partition", "acme")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = f
        .call(
            "ops",
            Method::PUT,
            "/orders/_mapping",
            Some(json!({"properties": {"_tenant": {"type": "text"}}})),
            &[("x-osproxy-partition", "acme")],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // Refresh; delete refused for the shared placement.
    assert_eq!(
        f.call("acme-svc", Method::POST, "/orders/_refresh", None, &[])
            .await
            .status,
        200
    );
    let r = f
        .call("acme-svc", Method::DELETE, "/orders", None, &[])
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        direct(&node().url(), Method::HEAD, "/t-admin-shared")
            .await
            .status,
        200
    );
    // A dedicated index: created, and deleted, for its partition only.
    let initech: &[(&str, &str)] = &[("x-osproxy-partition", "initech")];
    let r = f
        .call(
            "multi-svc",
            Method::PUT,
            "/orders",
            Some(json!({"mappings": {"properties": {"x": {"type": "keyword"}}}})),
            initech,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        direct(&node().url(), Method::HEAD, "/t-admin-initech")
            .await
            .status,
        200
    );
    let r = f
        .call("multi-svc", Method::DELETE, "/orders", None, initech)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        direct(&node().url(), Method::HEAD, "/t-admin-initech")
            .await
            .status,
        404
    );
    assert_eq!(
        direct(&node().url(), Method::HEAD, "/t-admin-shared")
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mget_and_msearch_confine_each_part() {
    let f = Fleet::start(&node().url(), "multi");
    for (who, id, title) in [
        ("acme-svc", "1", "a1"),
        ("acme-svc", "2", "a2"),
        ("globex-svc", "1", "g1"),
    ] {
        let r = f
            .call(
                who,
                Method::PUT,
                &format!("/orders/_doc/{id}?refresh=true"),
                Some(json!({"title": title})),
                &[],
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let r = f
        .call(
            "acme-svc",
            Method::POST,
            "/orders/_mget",
            Some(json!({"ids": ["1", "2", "3"]})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let docs = r.json()["docs"].as_array().cloned().unwrap();
    assert_eq!(
        docs.iter()
            .map(|d| d["found"].as_bool())
            .collect::<Vec<_>>(),
        [Some(true), Some(true), Some(false)],
        "{}",
        r.text()
    );
    assert_eq!(docs[0]["_source"], json!({"title": "a1"}));
    assert_eq!(docs[0]["_index"], "orders");
    assert_eq!(docs[0]["_id"], "1");
    assert!(
        !r.text().contains("_tenant") && !r.text().contains("acme:"),
        "{}",
        r.text()
    );

    let forged = json!({"docs": [
        {"_index": "orders", "_id": "1"},
        {"_index": "t-multi-shared", "_id": "globex:1"},
        {"_index": "orders", "_id": "1", "routing": "globex"},
    ]});
    let r = f
        .call("acme-svc", Method::POST, "/_mget", Some(forged), &[])
        .await;
    let docs = r.json()["docs"].as_array().cloned().unwrap();
    assert_eq!(docs[0]["_source"], json!({"title": "a1"}), "{}", r.text());
    assert!(
        docs[1].get("error").is_some() && docs[2].get("error").is_some(),
        "{}",
        r.text()
    );
    assert!(
        !r.text().contains("g1"),
        "another tenant's document leaked: {}",
        r.text()
    );

    // msearch across placements: initech's orders are in its own index,
    // its invoices in a shared one.
    let initech: &[(&str, &str)] = &[("x-osproxy-partition", "initech")];
    f.call(
        "multi-svc",
        Method::PUT,
        "/orders/_doc/i1?refresh=true",
        Some(json!({"title": "i-order"})),
        initech,
    )
    .await;
    f.call(
        "multi-svc",
        Method::PUT,
        "/invoices/_doc/v1?refresh=true",
        Some(json!({"title": "i-invoice"})),
        initech,
    )
    .await;
    let body = ndjson(&[
        json!({"index": "orders"}),
        json!({"query": {"match_all": {}}}),
        json!({"index": "invoices"}),
        json!({"query": {"match_all": {}}}),
        json!({"index": "t-multi-shared"}),
        json!({"query": {"match_all": {}}}),
        json!({"index": "invoices"}),
        json!({"size": 0, "aggs": {"g": {"global": {}}}}),
        json!({"index": "invoices", "routing": "acme"}),
        json!({"query": {"match_all": {}}}),
    ]);
    let r = f
        .http
        .send_with(
            Method::POST,
            &format!("{}/_msearch", f.proxy.url()),
            Some(body.into()),
            &[
                ("authorization", "Bearer multi-token-0123456789"),
                ("x-osproxy-partition", "initech"),
                ("content-type", "application/x-ndjson"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let responses = r.json()["responses"].as_array().cloned().unwrap();
    assert_eq!(responses.len(), 5, "{}", r.text());
    assert_eq!(responses[0]["hits"]["hits"][0]["_id"], "i1");
    assert_eq!(responses[0]["hits"]["hits"][0]["_index"], "orders");
    assert_eq!(responses[1]["hits"]["total"]["value"], 1);
    assert_eq!(
        responses[1]["hits"]["hits"][0]["_source"],
        json!({"title": "i-invoice"})
    );
    assert_eq!(responses[2]["status"], 400);
    assert_eq!(responses[3]["status"], 400);
    assert_eq!(responses[3]["error"]["type"], "construct_refused");
    assert_eq!(responses[4]["status"], 400);
    assert!(
        !r.text().contains("a1") && !r.text().contains("g1"),
        "{}",
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn by_query_is_confined_to_the_partition() {
    let f = Fleet::start(&node().url(), "byq");
    for (who, id, n) in [
        ("acme-svc", "a1", 1),
        ("acme-svc", "a2", 2),
        ("globex-svc", "g1", 1),
    ] {
        let r = f
            .call(
                who,
                Method::PUT,
                &format!("/orders/_doc/{id}?refresh=true"),
                Some(json!({"n": n})),
                &[],
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let r = f
        .call(
            "acme-svc",
            Method::POST,
            "/orders/_update_by_query?refresh=true",
            Some(json!({"query": {"match_all": {}}})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["total"], 2, "{}", r.text());
    let r = f
        .call(
            "acme-svc",
            Method::POST,
            "/orders/_update_by_query",
            Some(json!({"script": {"source": "ctx._source._tenant = 'globex'"}})),
            &[],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "construct_refused");
    let r = f
        .call(
            "acme-svc",
            Method::POST,
            "/orders/_delete_by_query?wait_for_completion=false",
            Some(json!({"query": {"match_all": {}}})),
            &[],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = f
        .call(
            "acme-svc",
            Method::POST,
            "/orders/_delete_by_query?q=*",
            Some(json!({})),
            &[],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // Deleting n = 1 deletes acme's only.
    let r = f
        .call(
            "acme-svc",
            Method::POST,
            "/orders/_delete_by_query?refresh=true",
            Some(json!({"query": {"term": {"n": 1}}})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["deleted"], 1, "{}", r.text());
    let g1 = direct(
        &node().url(),
        Method::GET,
        "/t-byq-shared/_doc/globex:g1?routing=globex",
    )
    .await;
    assert_eq!(g1.status, 200, "another tenant's document was deleted");
    let a2 = direct(
        &node().url(),
        Method::GET,
        "/t-byq-shared/_doc/acme:a2?routing=acme",
    )
    .await
    .json();
    assert_eq!(a2["_source"], json!({"_tenant": "acme", "n": 2}));
}

#[tokio::test(flavor = "multi_thread")]
async fn scroll_and_pit_are_bound_to_their_tenant() {
    let f = Fleet::start(&node().url(), "cur");
    for i in 0..5 {
        f.call(
            "acme-svc",
            Method::PUT,
            &format!("/orders/_doc/a{i}"),
            Some(json!({"n": i})),
            &[],
        )
        .await;
    }
    for i in 0..3 {
        f.call(
            "globex-svc",
            Method::PUT,
            &format!("/orders/_doc/g{i}"),
            Some(json!({"n": i})),
            &[],
        )
        .await;
    }
    f.call("acme-svc", Method::POST, "/orders/_refresh", None, &[])
        .await;

    // Scroll across pages, with a deletion in between.
    let first = f
        .call(
            "acme-svc",
            Method::POST,
            "/orders/_search?scroll=1m",
            Some(json!({"size": 2, "sort": [{"n": "asc"}]})),
            &[],
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.text());
    let mut id = first.json()["_scroll_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("osp1."), "scroll id not wrapped: {id}");
    let mut seen: Vec<String> = first.json()["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["_id"].as_str().unwrap().to_string())
        .collect();
    f.call(
        "acme-svc",
        Method::DELETE,
        "/orders/_doc/a4?refresh=true",
        None,
        &[],
    )
    .await;
    // Another tenant, a tampered id, a raw upstream id: refused, never dispatched.
    let r = f
        .call(
            "globex-svc",
            Method::POST,
            "/_search/scroll",
            Some(json!({"scroll": "1m", "scroll_id": id})),
            &[],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let mut tampered = id.clone();
    tampered.insert(10, 'x');
    let r = f
        .call(
            "acme-svc",
            Method::POST,
            "/_search/scroll",
            Some(json!({"scroll_id": tampered})),
            &[],
        )
        .await;
    assert!(r.status == 403 || r.status == 400, "{}", r.text());
    let r = f
        .call(
            "acme-svc",
            Method::POST,
            "/_search/scroll",
            Some(json!({"scroll_id": "FGluY2x1ZGVfY29udGV4dF91dWlk"})),
            &[],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    loop {
        let page = f
            .call(
                "acme-svc",
                Method::POST,
                "/_search/scroll",
                Some(json!({"scroll": "1m", "scroll_id": id})),
                &[],
            )
            .await;
        assert_eq!(page.status, 200, "{}", page.text());
        let hits = page.json()["hits"]["hits"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if hits.is_empty() {
            break;
        }
        assert!(hits
            .iter()
            .all(|h| h["_index"] == "orders" && h["_source"].get("_tenant").is_none()));
        seen.extend(hits.iter().map(|h| h["_id"].as_str().unwrap().to_string()));
        id = page.json()["_scroll_id"].as_str().unwrap().to_string();
    }
    assert_eq!(
        seen,
        ["a0", "a1", "a2", "a3", "a4"],
        "the scroll is a snapshot of acme's documents only"
    );
    let r = f
        .call(
            "acme-svc",
            Method::DELETE,
            "/_search/scroll",
            Some(json!({"scroll_id": [id]})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["succeeded"], true);
    // `_all` closes the caller's own scrolls, not another tenant's.
    let mine = f
        .call(
            "acme-svc",
            Method::POST,
            "/orders/_search?scroll=1m",
            Some(json!({"size": 1})),
            &[],
        )
        .await
        .json();
    let theirs = f
        .call(
            "globex-svc",
            Method::POST,
            "/orders/_search?scroll=1m",
            Some(json!({"size": 1})),
            &[],
        )
        .await
        .json();
    let r = f
        .call(
            "acme-svc",
            Method::DELETE,
            "/_search/scroll/_all",
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["num_freed"].as_u64().unwrap_or(0) >= 1,
        "{}",
        r.text()
    );
    let r = f
        .call(
            "acme-svc",
            Method::POST,
            "/_search/scroll",
            Some(json!({"scroll": "1m", "scroll_id": mine["_scroll_id"]})),
            &[],
        )
        .await;
    assert_eq!(r.status, 404, "acme's scroll was cleared: {}", r.text());
    let r = f
        .call(
            "globex-svc",
            Method::POST,
            "/_search/scroll",
            Some(json!({"scroll": "1m", "scroll_id": theirs["_scroll_id"]})),
            &[],
        )
        .await;
    assert_eq!(
        r.status,
        200,
        "globex's scroll must survive acme's _all: {}",
        r.text()
    );

    // Point in time: open, page with search_after, refuse others, close.
    let pit = f
        .call(
            "acme-svc",
            Method::POST,
            "/orders/_search/point_in_time?keep_alive=1m",
            None,
            &[],
        )
        .await;
    assert_eq!(pit.status, 200, "{}", pit.text());
    let pit_id = pit.json()["pit_id"].as_str().unwrap().to_string();
    assert!(pit_id.starts_with("osp1."));
    let page = f.call("acme-svc", Method::POST, "/_search", Some(json!({"size": 10, "pit": {"id": pit_id, "keep_alive": "1m"}, "sort": [{"n": "asc"}], "query": {"match_all": {}}})), &[]).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let ids: Vec<&str> = page.json()["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["_id"].as_str().unwrap_or(""))
        .map(|s| if s.starts_with('a') { "a" } else { "other" })
        .collect::<Vec<_>>();
    assert_eq!(ids, ["a", "a", "a", "a"], "{}", page.text());
    assert!(page.json()["pit_id"].as_str().unwrap().starts_with("osp1."));
    let r = f
        .call(
            "globex-svc",
            Method::POST,
            "/_search",
            Some(json!({"pit": {"id": pit_id}})),
            &[],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = f
        .call(
            "acme-svc",
            Method::POST,
            "/_search",
            Some(json!({"query": {"match_all": {}}})),
            &[],
        )
        .await;
    assert_eq!(
        r.status,
        400,
        "a search naming no index and no PIT: {}",
        r.text()
    );
    let r = f
        .call(
            "globex-svc",
            Method::DELETE,
            "/_search/point_in_time",
            Some(json!({"pit_id": [pit_id]})),
            &[],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = f
        .call(
            "acme-svc",
            Method::DELETE,
            "/_search/point_in_time",
            Some(json!({"pit_id": [pit_id]})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["pits"][0]["successful"], true, "{}", r.text());
    assert_eq!(r.json()["pits"][0]["pit_id"], pit_id);
    // `_all` closes the caller's own PITs only.
    let mine = f
        .call(
            "acme-svc",
            Method::POST,
            "/orders/_search/point_in_time?keep_alive=1m",
            None,
            &[],
        )
        .await
        .json();
    let theirs = f
        .call(
            "globex-svc",
            Method::POST,
            "/orders/_search/point_in_time?keep_alive=1m",
            None,
            &[],
        )
        .await
        .json();
    let r = f
        .call(
            "acme-svc",
            Method::DELETE,
            "/_search/point_in_time/_all",
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["pits"][0]["pit_id"],
        mine["pit_id"],
        "{}",
        r.text()
    );
    let still = f
        .call(
            "globex-svc",
            Method::POST,
            "/_search",
            Some(json!({"pit": {"id": theirs["pit_id"]}})),
            &[],
        )
        .await;
    assert_eq!(
        still.status,
        200,
        "globex's PIT must survive acme's _all: {}",
        still.text()
    );
}

/// A call by the gateway principal acting for `partition`.
async fn gw(
    f: &Fleet,
    partition: &str,
    m: Method,
    path: &str,
    body: Option<Value>,
) -> HttpResponse {
    f.call(
        "gateway",
        m,
        path,
        body,
        &[("x-osproxy-partition", partition)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn placements_change_at_runtime_with_compare_and_swap() {
    let f = Fleet::start(&node().url(), "rt");
    let admin = |path: &str| format!("{}{path}", f.proxy.admin_url());
    let ops = [("authorization", "Bearer ops-token-0123456789")];
    // The admin API is for operators only.
    let r = f
        .http
        .send_with(
            Method::GET,
            &admin("/v1/placements/orders"),
            None,
            &[("authorization", "Bearer acme-token-0123456789")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    let r = f
        .http
        .send_with(Method::GET, &admin("/v1/placements/orders"), None, &ops)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["default"]["kind"], "shared");

    // Give partition hooli its own index, while the proxy runs.
    let own = json!({"kind": "index", "cluster": "main", "index": "t-rt-hooli"}).to_string();
    let r = f
        .http
        .send_with(
            Method::PUT,
            &admin("/v1/placements/orders/hooli"),
            Some(own.clone().into()),
            &ops,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let epoch = r.json()["epoch"].as_u64().unwrap();
    let put = f
        .call(
            "gateway",
            Method::PUT,
            "/orders/_doc/1?refresh=true",
            Some(json!({"n": 1})),
            &[("x-osproxy-partition", "hooli")],
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.text());
    assert_eq!(
        direct(&node().url(), Method::GET, "/t-rt-hooli/_doc/1")
            .await
            .json()["_source"],
        json!({"n": 1}),
        "served from the new placement without a restart"
    );

    // Compare-and-swap: absent epoch on an existing entry, or a stale one, is a 409 with the current entry.
    let elsewhere =
        json!({"kind": "index", "cluster": "main", "index": "t-rt-hooli-2"}).to_string();
    let r = f
        .http
        .send_with(
            Method::PUT,
            &admin("/v1/placements/orders/hooli"),
            Some(elsewhere.clone().into()),
            &ops,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["current"]["epoch"], epoch);
    let r = f
        .http
        .send_with(
            Method::PUT,
            &admin(&format!(
                "/v1/placements/orders/hooli?epoch={}",
                epoch + 100
            )),
            Some(elsewhere.clone().into()),
            &ops,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", r.text());
    let r = f
        .http
        .send_with(
            Method::PUT,
            &admin(&format!("/v1/placements/orders/hooli?epoch={epoch}")),
            Some(elsewhere.into()),
            &ops,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["epoch"].as_u64().unwrap() > epoch);

    // A placement that would put another partition into hooli's old index, or into the shared one as its own, is refused.
    let steal = json!({"kind": "index", "cluster": "main", "index": "t-rt-shared"}).to_string();
    let r = f
        .http
        .send_with(
            Method::PUT,
            &admin("/v1/placements/orders/wayne"),
            Some(steal.into()),
            &ops,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    let r = f
        .http
        .send_with(
            Method::PUT,
            &admin("/v1/placements/orders/wayne"),
            Some(
                json!({"kind": "cluster", "cluster": "nope"})
                    .to_string()
                    .into(),
            ),
            &ops,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());

    // The catalogue too: a logical index added, served at once, removed.
    let notes = json!({"default": {"kind": "shared", "cluster": "main", "index": "t-rt-notes"}})
        .to_string();
    let r = f
        .http
        .send_with(
            Method::PUT,
            &admin("/v1/catalogue/notes"),
            Some(notes.clone().into()),
            &ops,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let notes_epoch = r.json()["epoch"].as_u64().unwrap();
    let put = f
        .call(
            "acme-svc",
            Method::PUT,
            "/notes/_doc/1?refresh=true",
            Some(json!({"text": "hi"})),
            &[],
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.text());
    let raw = direct(
        &node().url(),
        Method::GET,
        "/t-rt-notes/_doc/acme:1?routing=acme",
    )
    .await
    .json();
    assert_eq!(raw["_source"], json!({"_tenant": "acme", "text": "hi"}));
    let r = f
        .http
        .send_with(
            Method::PUT,
            &admin("/v1/catalogue/notes"),
            Some(notes.into()),
            &ops,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["current_epoch"], notes_epoch);
    let ambiguous = json!({"id": "{partition}-{id}", "default": {"kind": "shared", "cluster": "main", "index": "t-rt-notes"}}).to_string();
    let r = f
        .http
        .send_with(
            Method::PUT,
            &admin(&format!("/v1/catalogue/notes?epoch={notes_epoch}")),
            Some(ambiguous.into()),
            &ops,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    let stealing =
        json!({"default": {"kind": "shared", "cluster": "main", "index": "t-rt-shared"}})
            .to_string();
    let r = f
        .http
        .send_with(
            Method::PUT,
            &admin("/v1/catalogue/letters"),
            Some(stealing.into()),
            &ops,
        )
        .await
        .unwrap();
    assert_eq!(
        r.status,
        400,
        "another logical index's shared index: {}",
        r.text()
    );
    let r = f
        .http
        .send_with(
            Method::DELETE,
            &admin(&format!("/v1/catalogue/notes?epoch={notes_epoch}")),
            None,
            &ops,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let gone = f
        .call("acme-svc", Method::GET, "/notes/_doc/1", None, &[])
        .await;
    assert_eq!(gone.status, 400, "{}", gone.text());
    assert_eq!(gone.json()["error"]["type"], "unsupported_endpoint");
}

#[tokio::test(flavor = "multi_thread")]
async fn ctl_reads_and_sets_placements() {
    let f = Fleet::start(&node().url(), "ctl");
    let ctl = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_osproxy"))
            .args([
                "ctl",
                "--admin",
                &f.proxy.admin_url(),
                "--token",
                "ops-token-0123456789",
            ])
            .args(args)
            .output()
            .unwrap()
    };
    let set = [
        "placement",
        "set",
        "orders",
        "stark",
        "--kind",
        "index",
        "--cluster",
        "main",
        "--index-name",
        "t-ctl-stark",
    ];
    let out = ctl(&set);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl(&["--json", "placement", "get", "orders", "stark"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["placement"]["index"], "t-ctl-stark");
    let epoch = v["epoch"].as_u64().unwrap();
    // A second set without the epoch loses the compare-and-swap.
    let out = ctl(&set);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("409"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut with_epoch: Vec<String> = set.iter().map(|s| s.to_string()).collect();
    with_epoch.extend(["--epoch".to_string(), epoch.to_string()]);
    with_epoch[9] = "t-ctl-stark-2".into();
    let out = ctl(&with_epoch.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl(&["placement", "list", "orders"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("stark") && table.contains("t-ctl-stark-2") && table.contains("(default)"),
        "{table}"
    );
    let spec = r#"{"default":{"kind":"shared","cluster":"main","index":"t-ctl-notes"}}"#;
    let out = ctl(&["catalogue", "put", "notes", "--spec", spec]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl(&["--json", "catalogue", "get", "notes"]);
    let notes: Value = serde_json::from_slice(&out.stdout).unwrap();
    let notes_epoch = notes["epoch"].as_u64().unwrap().to_string();
    let out = ctl(&["catalogue", "delete", "notes", "--epoch", &notes_epoch]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl(&["fleet"]);
    let fleet = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && fleet.contains(f.proxy.data_addr()),
        "{fleet}"
    );
    let out = ctl(&["--json", "catalogue", "get", "orders"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["id"], "{partition}:{id}");
    assert_eq!(v["default"]["index"], "t-ctl-shared");
    // Without an operator token: refused.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_osproxy"))
        .args([
            "ctl",
            "--admin",
            &f.proxy.admin_url(),
            "--token",
            "acme-token-0123456789",
            "placement",
            "list",
            "orders",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
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
