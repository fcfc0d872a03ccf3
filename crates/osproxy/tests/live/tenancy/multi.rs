//! `_mget`, `_msearch` and by-query, each part confined.

use http::Method;
use serde_json::json;

use super::*;
use crate::common::node;

/// An `_msearch` of NDJSON `body` with `token`, for `partition`.
async fn msearch(
    f: &Fleet,
    token: &str,
    partition: &str,
    body: String,
) -> osproxy_testkit::HttpResponse {
    let auth = format!("Bearer {token}");
    f.http
        .send_with(
            Method::POST,
            &format!("{}/_msearch", f.proxy.url()),
            Some(body.into()),
            &[
                ("authorization", auth.as_str()),
                ("x-osproxy-partition", partition),
                ("content-type", "application/x-ndjson"),
            ],
        )
        .await
        .unwrap()
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
    let r = msearch(&f, "multi-token-0123456789", "initech", body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // OpenSearch's own answer has `took` (typed clients require it).
    assert!(r.json()["took"].is_u64(), "{}", r.text());
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

/// A document's own error (a version conflict) names it by the id the
/// client asked for, on the streamed path (one target) and the whole one
/// (two); a search read whole (two clusters) keeps the tenant's sources as
/// they are stored, members named like an error's included.
#[tokio::test(flavor = "multi_thread")]
async fn per_part_errors_and_sources_read_as_the_client_wrote_them() {
    let f = Fleet::start(&node().url(), "parts");
    let r = f
        .call(
            "acme-svc",
            Method::PUT,
            "/orders/_doc/1?refresh=true",
            Some(json!({"title": "a1"})),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    for docs in [
        json!([{"_index": "orders", "_id": "1", "version": 5}]),
        json!([{"_index": "orders", "_id": "1", "version": 5}, {"_index": "invoices", "_id": "1"}]),
    ] {
        let r = f
            .call(
                "acme-svc",
                Method::POST,
                "/_mget",
                Some(json!({"docs": docs})),
                &[],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let doc = &r.json()["docs"][0];
        assert_eq!(doc["_id"], "1", "{}", r.text());
        assert_eq!(
            doc["error"]["type"],
            "version_conflict_engine_exception",
            "{}",
            r.text()
        );
        let reason = doc["error"]["reason"].as_str().unwrap_or_default();
        assert!(reason.starts_with("[1]"), "{}", r.text());
        assert!(
            !r.text().contains("acme:") && !r.text().contains("t-parts"),
            "a physical name leaked: {}",
            r.text()
        );
    }

    // A search failing on every shard of the shared index names neither
    // it nor the node holding it (found by review: `failed_shards[].node`).
    let r = f
        .call(
            "acme-svc",
            Method::POST,
            "/orders/_search",
            Some(json!({"query": {"regexp": {"title": "[a-"}}})),
            &[],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let failed = &r.json()["error"]["failed_shards"];
    assert!(failed.is_array(), "{}", r.text());
    assert!(failed[0].get("node").is_none(), "{}", r.text());
    assert_eq!(failed[0]["index"], "orders", "{}", r.text());

    // umbrella's orders are on the dedicated cluster, its invoices on main.
    let umbrella: &[(&str, &str)] = &[("x-osproxy-partition", "umbrella")];
    let stored = [
        (
            "orders",
            json!({"title": "u", "stack_trace": "mine", "index_uuid": "mine too"}),
        ),
        (
            "invoices",
            json!({"stack_trace": "mine", "index_uuid": "mine too"}),
        ),
    ];
    for (index, source) in &stored {
        let r = f
            .call(
                "gateway",
                Method::PUT,
                &format!("/{index}/_doc/u1?refresh=true"),
                Some(source.clone()),
                umbrella,
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let body = ndjson(&[
        json!({"index": "orders"}),
        json!({"query": {"match_all": {}}}),
        json!({"index": "invoices"}),
        json!({"query": {"match_all": {}}}),
    ]);
    let r = msearch(&f, "gateway-token-0123456789", "umbrella", body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let responses = r.json()["responses"].as_array().cloned().unwrap();
    for (i, (_, source)) in stored.iter().enumerate() {
        assert_eq!(
            responses[i]["hits"]["hits"][0]["_source"],
            *source,
            "{}",
            r.text()
        );
        assert_eq!(responses[i]["hits"]["hits"][0]["_id"], "u1", "{}", r.text());
    }
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

/// A stored document with a lone surrogate escape (`\ud800`: valid for
/// OpenSearch, refused by strict JSON trees) is relayed as stored, and the
/// other documents of the same `_mget` are answered too (before, every
/// entry of its group failed, and building the answer panicked).
#[tokio::test(flavor = "multi_thread")]
async fn an_mget_relays_a_document_with_a_lone_surrogate() {
    let f = Fleet::start(&node().url(), "surrogate");
    let acme = f.client("acme-svc");
    let r = acme
        .put("/orders/_doc/plain?refresh=true", &json!({"t": "fine"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    // Written on the node directly: osproxy itself takes only strict JSON.
    let r = Http::new()
        .send_with(
            Method::PUT,
            &format!(
                "{}/t-surrogate-shared/_doc/acme:odd?routing=acme&refresh=true",
                node().url()
            ),
            Some(bytes::Bytes::from_static(
                br#"{"_tenant":"acme","t":"a\ud800b"}"#,
            )),
            &[("content-type", "application/json")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    // And one with such a key (found by review: the partition field was
    // left in the answer when a key could not be unescaped). OpenSearch 3
    // refuses to store such a name ("broken surrogate pair in property
    // name"); 2.x stores it.
    let odd_key = Http::new()
        .send_with(
            Method::PUT,
            &format!(
                "{}/t-surrogate-shared/_doc/acme:oddkey?routing=acme&refresh=true",
                node().url()
            ),
            Some(bytes::Bytes::from_static(
                br#"{"\ud800":1,"_tenant":"acme","t":"k"}"#,
            )),
            &[("content-type", "application/json")],
        )
        .await
        .unwrap();
    let odd_key = match odd_key.status.as_u16() {
        201 => true,
        400 if odd_key.text().contains("surrogate") => false,
        _ => panic!("{}", odd_key.text()),
    };
    let r = acme
        .post(
            "/orders/_mget",
            &json!({"ids": ["plain", "odd", "missing", "oddkey"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(text.contains(r#""t":"a\ud800b""#), "{text}");
    assert!(text.contains(r#""t":"fine""#), "{text}");
    assert!(
        !text.contains("_tenant") && !text.contains("acme:"),
        "{text}"
    );
    assert!(text.contains(r#""found":false"#), "{text}");
    // A search and a get relay it too.
    assert_eq!(text.contains(r#""\ud800":1"#), odd_key, "{text}");
    for path in ["/orders/_search", "/orders/_doc/odd"] {
        let r = acme.get(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert!(r.text().contains(r#"a\ud800b"#), "{path}: {}", r.text());
    }
    for path in ["/orders/_search", "/orders/_doc/oddkey"]
        .into_iter()
        .filter(|_| odd_key)
    {
        let r = acme.get(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let text = r.text();
        assert!(text.contains(r#""\ud800":1"#), "{path}: {text}");
        assert!(!text.contains("_tenant"), "{path}: {text}");
    }
}
