//! Official clients, unchanged, through osproxy (installed by
//! `scripts/setup` into `target/clients-venv`).

use std::process::Command;

use osproxy_testkit::{free_port, repo_root};

use crate::common::{proxy_to, ready_proxy};

/// Runs one of `tests/clients/*.py` with the project's venv; fails the test
/// with the script's output unless it exits 0.
pub(crate) fn run_python(script: &str, args: &[&str]) {
    let python = repo_root().join("target/clients-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup",
        python.display()
    );
    let mut cmd = Command::new(&python);
    cmd.arg(repo_root().join("tests/clients").join(script))
        .args(args);
    run_client(script, &mut cmd);
}

/// Runs a client program; fails the test with its output unless it exits 0.
fn run_client(what: &str, cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what} did not run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn opensearch_py_works_unchanged_through_passthrough() {
    let proxy = ready_proxy("");
    let dead = proxy_to(&format!("http://127.0.0.1:{}", free_port().unwrap()), "");
    run_python(
        "opensearch_py_passthrough.py",
        &[&proxy.url(), &dead.url(), "pt-python"],
    );
}

/// A proxy where tenants `acme` and `globex` share the logical index
/// `orders` (shared placement `<tag>-orders-shared`); returns it with the two
/// tokens (the temp dir holds the token files).
fn two_tenants(
    tag: &str,
) -> (
    osproxy_testkit::ProxyInstance,
    tempfile::TempDir,
    String,
    String,
) {
    two_tenants_with(tag, "")
}

/// [`two_tenants`] with more configuration (`more`, TOML appended).
fn two_tenants_with(
    tag: &str,
    more: &str,
) -> (
    osproxy_testkit::ProxyInstance,
    tempfile::TempDir,
    String,
    String,
) {
    let dir = tempfile::tempdir().unwrap();
    let (acme, globex) = (
        format!("{tag}-acme-token-0123456789"),
        format!("{tag}-globex-token-0123456789"),
    );
    std::fs::write(dir.path().join("acme"), &acme).unwrap();
    std::fs::write(dir.path().join("globex"), &globex).unwrap();
    let extra = format!(
        "indices = [\"{tag}-legacy-\"]\n\n\
         [[principals]]\nname = \"acme\"\ntoken_file = \"{}\"\npartitions = [\"acme\"]\n\n\
         [[principals]]\nname = \"globex\"\ntoken_file = \"{}\"\npartitions = [\"globex\"]\n\n\
         [[indices]]\nname = \"orders\"\ndefault = {{ kind = \"shared\", cluster = \"main\", index = \"{tag}-orders-shared\" }}\n\n{more}",
        dir.path().join("acme").display(),
        dir.path().join("globex").display()
    );
    (ready_proxy(&extra), dir, acme, globex)
}

#[test]
fn opensearch_py_works_unchanged_against_tenancy() {
    let (proxy, _dir, acme, globex) = two_tenants("py");
    run_python("opensearch_py_tenancy.py", &[&proxy.url(), &acme, &globex]);
}

#[test]
fn opensearch_py_completes_a_bulk_load_under_a_write_limit() {
    // 1,500 documents at 300 a second and 4 bulks a second: the load takes
    // about 5 s, and most chunks are refused at least once.
    let (proxy, _dir, acme, _) = two_tenants_with(
        "pylim",
        "[limits.partitions.acme]\ndocuments_per_second = 300\nwrites_per_second = 4\n",
    );
    run_python("opensearch_py_limits.py", &[&proxy.url(), &acme, "1500"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let limited = rt.block_on(crate::common::metric(
        &proxy,
        "osproxy_usage_limited_total{partition=\"acme\"}",
    ));
    assert!(
        limited.is_some_and(|n| n >= 1.0),
        "the limit was never hit: {limited:?}"
    );
    let documents = rt.block_on(crate::common::metric(
        &proxy,
        "osproxy_usage_documents_total{partition=\"acme\"}",
    ));
    assert_eq!(documents, Some(1500.0), "every document written once");
}

#[test]
fn opensearch_py_works_unchanged_against_tenancy_with_compression() {
    let (proxy, _dir, acme, globex) = two_tenants("pyz");
    run_python(
        "opensearch_py_tenancy.py",
        &[&proxy.url(), &acme, &globex, "compress"],
    );
}

#[test]
fn opensearch_py_async_works_unchanged_against_tenancy() {
    let (proxy, _dir, acme, globex) = two_tenants("pya");
    run_python(
        "opensearch_py_async_tenancy.py",
        &[&proxy.url(), &acme, &globex],
    );
}

#[test]
fn opensearch_js_works_unchanged_against_tenancy() {
    run_js("js", None);
}

#[test]
fn opensearch_js_works_unchanged_against_tenancy_with_compression() {
    run_js("jsz", Some("compress"));
}

#[test]
fn opensearch_go_works_unchanged_against_tenancy() {
    let (proxy, _dir, acme, globex) = two_tenants("go");
    run_client(
        "opensearch-go (scripts/setup fetches its module)",
        Command::new("go")
            .args(["run", "."])
            .args([proxy.url().as_str(), &acme, &globex])
            .current_dir(repo_root().join("tests/clients/go")),
    );
}

#[test]
fn opensearch_java_works_unchanged_against_tenancy() {
    let project = repo_root().join("tests/clients/java");
    assert!(
        project.join("target/lib").exists(),
        "{} is not built: run scripts/setup",
        project.display()
    );
    let (proxy, _dir, acme, globex) = two_tenants("java");
    run_client(
        "opensearch-java",
        Command::new("java")
            .arg("-cp")
            .arg(format!(
                "{}:{}/*",
                project.join("target/classes").display(),
                project.join("target/lib").display()
            ))
            .arg("dev.osproxy.clients.Tenancy")
            .args([proxy.url().as_str(), &acme, &globex]),
    );
}

/// The JavaScript client's two-tenant application, against a fleet tagged
/// `tag`, with an optional mode argument.
fn run_js(tag: &str, mode: Option<&str>) {
    let modules = repo_root().join("target/clients-node/node_modules");
    assert!(
        modules.join("@opensearch-project/opensearch").exists(),
        "{} is missing: run scripts/setup",
        modules.display()
    );
    let (proxy, _dir, acme, globex) = two_tenants(tag);
    run_client(
        "opensearch-js",
        Command::new("node")
            .arg(repo_root().join("tests/clients/opensearch_js_tenancy.js"))
            .args([proxy.url().as_str(), &acme, &globex])
            .args(mode)
            .env("OSPROXY_NODE_MODULES", &modules),
    );
}

/// The official Rust client (`opensearch` 2.4, rustls; it asks for gzip
/// answers), unchanged, running the two-tenant application.
#[tokio::test(flavor = "multi_thread")]
async fn opensearch_rs_works_unchanged_against_tenancy() {
    use opensearch::http::headers::{HeaderValue, AUTHORIZATION};
    use opensearch::http::request::JsonBody;
    use opensearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
    use opensearch::indices::{IndicesCreateParts, IndicesExistsParts};
    use opensearch::params::Refresh;
    use opensearch::{
        BulkOperation, BulkOperations, BulkParts, ClearScrollParts, CountParts, DeleteByQueryParts,
        DeleteParts, GetParts, IndexParts, MgetParts, MsearchParts, OpenSearch, ScrollParts,
        SearchParts, UpdateParts,
    };
    use serde_json::{json, Value};

    let (proxy, _dir, acme_token, globex_token) = two_tenants("rs");
    let client = |token: &str| {
        let url = opensearch::http::Url::parse(&proxy.url()).unwrap();
        let transport = TransportBuilder::new(SingleNodeConnectionPool::new(url))
            .header(
                AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
            )
            .disable_proxy()
            .build()
            .unwrap();
        OpenSearch::new(transport)
    };
    let (acme, globex) = (client(&acme_token), client(&globex_token));
    async fn json_of(r: opensearch::http::response::Response) -> Value {
        let r = r.error_for_status_code().unwrap();
        r.json::<Value>().await.unwrap()
    }
    let count = |c: &OpenSearch| {
        let c = c.clone();
        async move {
            let r = c
                .count(CountParts::Index(&["orders"]))
                .send()
                .await
                .unwrap();
            json_of(r).await["count"].as_u64().unwrap()
        }
    };

    for c in [&acme, &globex] {
        let exists = c
            .indices()
            .exists(IndicesExistsParts::Index(&["orders"]))
            .send()
            .await
            .unwrap();
        if exists.status_code() == 404 {
            let r = c
                .indices()
                .create(IndicesCreateParts::Index("orders"))
                .body(json!({"mappings": {"properties": {"item": {"type": "keyword"}, "n": {"type": "integer"}}}}))
                .send()
                .await
                .unwrap();
            json_of(r).await;
        }
    }
    let r = acme
        .index(IndexParts::IndexId("orders", "1"))
        .body(json!({"item": "anvil", "n": 0}))
        .refresh(Refresh::True)
        .send()
        .await
        .unwrap();
    let indexed = json_of(r).await;
    assert_eq!(
        (indexed["_index"].as_str(), indexed["_id"].as_str()),
        (Some("orders"), Some("1"))
    );
    let r = globex
        .index(IndexParts::IndexId("orders", "1"))
        .body(json!({"item": "globe", "n": 0}))
        .refresh(Refresh::True)
        .send()
        .await
        .unwrap();
    json_of(r).await;

    let mut ops = BulkOperations::new();
    for n in 1..=200 {
        let item = if n % 2 == 0 { "nut" } else { "bolt" };
        ops.push(BulkOperation::index(json!({"item": item, "n": n})).id(format!("b{n}")))
            .unwrap();
    }
    let r = acme
        .bulk(BulkParts::Index("orders"))
        .body(vec![ops])
        .refresh(Refresh::True)
        .send()
        .await
        .unwrap();
    let bulk = json_of(r).await;
    assert_eq!(bulk["errors"], false, "{bulk}");
    assert_eq!(bulk["items"].as_array().unwrap().len(), 200);
    assert_eq!(count(&acme).await, 201);
    assert_eq!(count(&globex).await, 1);

    let r = acme
        .get(GetParts::IndexId("orders", "1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(r).await["_source"],
        json!({"item": "anvil", "n": 0})
    );
    let r = globex
        .get(GetParts::IndexId("orders", "1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(r).await["_source"],
        json!({"item": "globe", "n": 0})
    );

    let r = acme
        .search(SearchParts::Index(&["orders"]))
        .body(json!({"size": 5, "query": {"range": {"n": {"gte": 1}}},
                     "aggs": {"items": {"terms": {"field": "item"}}}}))
        .send()
        .await
        .unwrap();
    let found = json_of(r).await;
    assert_eq!(found["hits"]["total"]["value"], 200, "{found}");
    for hit in found["hits"]["hits"].as_array().unwrap() {
        assert_eq!(hit["_index"], "orders");
        assert!(!hit["_id"].as_str().unwrap().contains(':'), "{hit}");
        assert!(hit["_source"].get("_tenant").is_none(), "{hit}");
    }
    let buckets = found["aggregations"]["items"]["buckets"]
        .as_array()
        .unwrap();
    assert_eq!(buckets.len(), 2);
    assert_eq!(buckets[0]["doc_count"], 100);

    let r = acme
        .update(UpdateParts::IndexId("orders", "1"))
        .body(json!({"doc": {"n": 7}}))
        .refresh(Refresh::True)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r).await["result"], "updated");

    let r = acme
        .mget(MgetParts::Index("orders"))
        .body(json!({"ids": ["1", "b2", "nope"]}))
        .send()
        .await
        .unwrap();
    let found: Vec<bool> = json_of(r).await["docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["found"].as_bool().unwrap())
        .collect();
    assert_eq!(found, [true, true, false]);

    let searches: Vec<JsonBody<Value>> = vec![
        json!({"index": "orders"}).into(),
        json!({"query": {"term": {"item": "anvil"}}}).into(),
        json!({"index": "orders"}).into(),
        json!({"size": 0}).into(),
    ];
    let r = acme
        .msearch(MsearchParts::None)
        .body(searches)
        .send()
        .await
        .unwrap();
    let multi = json_of(r).await;
    assert!(multi["took"].is_u64(), "{multi}");
    let totals: Vec<u64> = multi["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["hits"]["total"]["value"].as_u64().unwrap())
        .collect();
    assert_eq!(totals, [1, 201]);

    // Scroll, then clear the scroll by the id in the path.
    let r = acme
        .search(SearchParts::Index(&["orders"]))
        .scroll("1m")
        .body(json!({"size": 50, "query": {"match_all": {}}}))
        .send()
        .await
        .unwrap();
    let mut page = json_of(r).await;
    let mut seen = page["hits"]["hits"].as_array().unwrap().len();
    let mut scroll_id = page["_scroll_id"].as_str().unwrap().to_string();
    loop {
        let r = acme
            .scroll(ScrollParts::None)
            .body(json!({"scroll": "1m", "scroll_id": scroll_id}))
            .send()
            .await
            .unwrap();
        page = json_of(r).await;
        let hits = page["hits"]["hits"].as_array().unwrap().len();
        if hits == 0 {
            break;
        }
        seen += hits;
        scroll_id = page["_scroll_id"].as_str().unwrap().to_string();
    }
    assert_eq!(seen, 201);
    let r = acme
        .clear_scroll(ClearScrollParts::ScrollId(&[scroll_id.as_str()]))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r).await["succeeded"], true);

    let r = acme
        .delete(DeleteParts::IndexId("orders", "b1"))
        .refresh(Refresh::True)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r).await["result"], "deleted");
    let r = acme
        .delete_by_query(DeleteByQueryParts::Index(&["orders"]))
        .body(json!({"query": {"term": {"item": "nut"}}}))
        .refresh(true)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r).await["deleted"], 100);
    assert_eq!(count(&acme).await, 100);
    assert_eq!(count(&globex).await, 1);

    // Refusals: the client's error for the status, with OpenSearch's shape.
    let r = globex
        .get(GetParts::IndexId("orders", "b2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status_code(), 404);
    let r = acme
        .search(SearchParts::Index(&["orders"]))
        .body(json!({"aggs": {"s": {"scripted_metric": {"map_script": "state.x = 1"}}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status_code(), 400);
    let e = r.error_for_status_code_ref().unwrap_err();
    assert_eq!(e.status_code().map(|s| s.as_u16()), Some(400));
    let r = client("not-a-valid-token-0123456789")
        .count(CountParts::Index(&["orders"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status_code(), 401);
    let body = r.json::<Value>().await.unwrap();
    assert_eq!(body["status"], 401, "{body}");
}
