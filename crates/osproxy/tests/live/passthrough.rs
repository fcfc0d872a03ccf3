//! Passthrough is transparent: every response through the proxy equals the
//! same request sent straight to OpenSearch (status, content type, body
//! modulo `took` and opaque cursor ids).

use http::Method;
use osproxy_testkit::{Http, HttpResponse, ProxyInstance};
use serde_json::{json, Value};

use crate::common::{metric, node, ready_proxy};

/// One side of the comparison: a base URL and the index name it uses. Both
/// names have the same length so `_cat` column widths match.
struct Side {
    base: String,
    index: &'static str,
}

struct Pair {
    http: Http,
    proxy: Side,
    direct: Side,
}

impl Pair {
    /// Sends the request to both sides (`{i}` in path and body is the side's
    /// index; `{cursor}` the side's cursor) and asserts equal responses.
    async fn same(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> (HttpResponse, HttpResponse) {
        self.same_with_cursor(method, path, body, ("", "")).await
    }

    async fn same_with_cursor(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        cursors: (&str, &str),
    ) -> (HttpResponse, HttpResponse) {
        let fill = |s: &str, side: &Side, cursor: &str| {
            s.replace("{i}", side.index).replace("{cursor}", cursor)
        };
        let p_path = fill(path, &self.proxy, cursors.0);
        let d_path = fill(path, &self.direct, cursors.1);
        let p_body = body.map(|b| fill(b, &self.proxy, cursors.0));
        let d_body = body.map(|b| fill(b, &self.direct, cursors.1));
        let via = self
            .http
            .send(
                method.clone(),
                &format!("{}{p_path}", self.proxy.base),
                p_body.as_deref(),
            )
            .await
            .unwrap_or_else(|e| panic!("via proxy: {e}"));
        let direct = self
            .http
            .send(
                method.clone(),
                &format!("{}{d_path}", self.direct.base),
                d_body.as_deref(),
            )
            .await
            .unwrap_or_else(|e| panic!("direct: {e}"));
        let what = format!("{method} {path}");
        assert_eq!(
            via.status,
            direct.status,
            "{what}: status; proxy said {}",
            via.text()
        );
        assert_eq!(
            via.header("content-type"),
            direct.header("content-type"),
            "{what}: content type"
        );
        assert!(
            via.header("x-request-id").is_some(),
            "{what}: x-request-id missing"
        );
        let normalise = |r: &HttpResponse, index: &str| normalise(&r.text(), index);
        assert_eq!(
            normalise(&via, self.proxy.index),
            normalise(&direct, self.direct.index),
            "{what}: body"
        );
        (via, direct)
    }
}

/// Removes `took`, blanks opaque ids and index uuids (also inside error
/// reasons), and names the index `INDEX`.
fn normalise(body: &str, index: &str) -> String {
    let mut replaced = body.replace(index, "INDEX");
    if let Ok(v) = serde_json::from_str::<Value>(&replaced) {
        let mut uuids = Vec::new();
        collect_uuids(&v, &mut uuids);
        for u in uuids {
            replaced = replaced.replace(&u, "<uuid>");
        }
    }
    match serde_json::from_str::<Value>(&replaced) {
        Ok(mut v) => {
            scrub(&mut v);
            v.to_string()
        }
        Err(_) => replaced,
    }
}

fn collect_uuids(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(u)) = map.get("index_uuid") {
                out.push(u.clone());
            }
            map.values().for_each(|v| collect_uuids(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_uuids(v, out)),
        _ => {}
    }
}

fn scrub(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("took");
            map.remove("creation_time");
            for key in ["_scroll_id", "pit_id", "index_uuid"] {
                if map.get(key).is_some_and(Value::is_string) {
                    map.insert(key.to_string(), json!("<opaque>"));
                }
            }
            map.values_mut().for_each(scrub);
        }
        Value::Array(items) => items.iter_mut().for_each(scrub),
        _ => {}
    }
}

/// A pair comparing `proxy` (with index `via`) against the shared node
/// (with index `dir`).
fn pair(proxy: &ProxyInstance, via: &'static str, dir: &'static str) -> Pair {
    Pair {
        http: Http::new(),
        proxy: Side {
            base: proxy.url(),
            index: via,
        },
        direct: Side {
            base: node().url(),
            index: dir,
        },
    }
}

fn ndjson(lines: &[Value]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Both sides' cursor ids (`key` of each answer), which must be present.
fn cursors(p: &HttpResponse, d: &HttpResponse, key: &str) -> (String, String) {
    let ids = (
        p.json()[key].as_str().unwrap_or_default().to_string(),
        d.json()[key].as_str().unwrap_or_default().to_string(),
    );
    assert!(
        !ids.0.is_empty() && !ids.1.is_empty(),
        "{key} missing: {}",
        p.text()
    );
    ids
}

/// Index creation, documents, bulk, search, count, mget and msearch, _cat,
/// deletes and errors (relayed as is) through passthrough answer exactly
/// as OpenSearch itself does.
#[tokio::test(flavor = "multi_thread")]
async fn passthrough_is_transparent_for_documents_bulk_searches_and_errors() {
    let proxy = ready_proxy("");
    let pair = pair(&proxy, "pt-via", "pt-dir");

    pair.same(Method::PUT, "/{i}", Some(r#"{"settings":{"number_of_shards":1,"number_of_replicas":0},"mappings":{"properties":{"n":{"type":"integer"},"title":{"type":"text"}}}}"#)).await;
    pair.same(Method::PUT, "/{i}", Some("{}")).await; // 400 resource_already_exists, relayed as is
    pair.same(
        Method::PUT,
        "/{i}/_doc/1?refresh=true",
        Some(r#"{"title":"hello world","n":1}"#),
    )
    .await;
    pair.same(
        Method::PUT,
        "/{i}/_create/2",
        Some(r#"{"title":"second","n":2}"#),
    )
    .await;
    pair.same(
        Method::PUT,
        "/{i}/_create/2",
        Some(r#"{"title":"again","n":2}"#),
    )
    .await; // 409
    pair.same(Method::GET, "/{i}/_doc/1", None).await;
    pair.same(Method::HEAD, "/{i}/_doc/1", None).await;
    pair.same(Method::GET, "/{i}/_source/1", None).await;
    pair.same(Method::GET, "/{i}/_doc/missing", None).await; // 404
    pair.same(Method::POST, "/{i}/_update/1", Some(r#"{"doc":{"n":10}}"#))
        .await;
    let bulk = ndjson(&[
        json!({"index": {"_id": "3"}}),
        json!({"title": "third", "n": 3}),
        json!({"create": {"_id": "4"}}),
        json!({"title": "fourth", "n": 4}),
        json!({"update": {"_id": "2"}}),
        json!({"doc": {"n": 20}}),
        json!({"delete": {"_id": "missing"}}),
    ]);
    pair.same(Method::POST, "/{i}/_bulk?refresh=true", Some(&bulk))
        .await;
    pair.same(Method::POST, "/{i}/_refresh", None).await;
    pair.same(
        Method::POST,
        "/{i}/_search",
        Some(r#"{"query":{"match_all":{}},"sort":[{"n":"asc"}]}"#),
    )
    .await;
    pair.same(Method::GET, "/{i}/_search?q=title:hello", None)
        .await;
    pair.same(
        Method::POST,
        "/{i}/_count",
        Some(r#"{"query":{"range":{"n":{"gte":3}}}}"#),
    )
    .await;
    pair.same(
        Method::POST,
        "/{i}/_mget",
        Some(r#"{"ids":["1","2","nope"]}"#),
    )
    .await;
    let msearch = ndjson(&[
        json!({"index": "{i}"}),
        json!({"query": {"term": {"n": 3}}}),
        json!({"index": "{i}"}),
        json!({"size": 0, "aggs": {"total": {"sum": {"field": "n"}}}}),
    ]);
    pair.same(Method::POST, "/_msearch", Some(&msearch)).await;

    pair.same(
        Method::GET,
        "/_cat/indices/{i}?h=index,health,status,pri,rep,docs.count",
        None,
    )
    .await;
    pair.same(
        Method::GET,
        "/_cat/indices/{i}?format=json&h=index,health,docs.count",
        None,
    )
    .await;
    pair.same(Method::DELETE, "/{i}/_doc/1", None).await;
    pair.same(Method::DELETE, "/{i}/_doc/1", None).await; // 404 not_found
    pair.same(Method::GET, "/{i}/_unknown_endpoint", None).await; // upstream's 4xx
    pair.same(Method::DELETE, "/{i}", None).await;
    pair.same(Method::GET, "/{i}/_search", None).await; // 404 index_not_found
}

/// Scroll and point in time through passthrough answer as OpenSearch does,
/// each side continuing its own cursor; upstream connections are kept
/// alive and reused, and searches are counted.
#[tokio::test(flavor = "multi_thread")]
async fn passthrough_is_transparent_for_scroll_and_point_in_time_over_reused_connections() {
    let proxy = ready_proxy("");
    let pair = pair(&proxy, "pt-vcu", "pt-dcu");
    pair.same(Method::PUT, "/{i}", Some(r#"{"settings":{"number_of_shards":1,"number_of_replicas":0},"mappings":{"properties":{"n":{"type":"integer"},"title":{"type":"text"}}}}"#)).await;
    let docs = ndjson(&[
        json!({"index": {"_id": "1"}}),
        json!({"title": "first", "n": 1}),
        json!({"index": {"_id": "2"}}),
        json!({"title": "second", "n": 2}),
        json!({"index": {"_id": "3"}}),
        json!({"title": "third", "n": 3}),
    ]);
    pair.same(Method::POST, "/{i}/_bulk?refresh=true", Some(&docs))
        .await;
    pair.same(
        Method::POST,
        "/{i}/_search",
        Some(r#"{"query":{"match_all":{}},"sort":[{"n":"asc"}]}"#),
    )
    .await;

    // Scroll: each side continues its own cursor.
    let (p, d) = pair
        .same(
            Method::POST,
            "/{i}/_search?scroll=1m",
            Some(r#"{"size":2,"sort":[{"n":"asc"}]}"#),
        )
        .await;
    let ids = cursors(&p, &d, "_scroll_id");
    pair.same_with_cursor(
        Method::POST,
        "/_search/scroll",
        Some(r#"{"scroll":"1m","scroll_id":"{cursor}"}"#),
        (&ids.0, &ids.1),
    )
    .await;
    pair.same_with_cursor(
        Method::DELETE,
        "/_search/scroll",
        Some(r#"{"scroll_id":"{cursor}"}"#),
        (&ids.0, &ids.1),
    )
    .await;

    // Point in time.
    let (p, d) = pair
        .same(
            Method::POST,
            "/{i}/_search/point_in_time?keep_alive=1m",
            None,
        )
        .await;
    let pits = cursors(&p, &d, "pit_id");
    pair.same_with_cursor(
        Method::POST,
        "/_search",
        Some(r#"{"size":10,"pit":{"id":"{cursor}","keep_alive":"1m"},"sort":[{"n":"asc"}]}"#),
        (&pits.0, &pits.1),
    )
    .await;
    pair.same_with_cursor(
        Method::DELETE,
        "/_search/point_in_time",
        Some(r#"{"pit_id":["{cursor}"]}"#),
        (&pits.0, &pits.1),
    )
    .await;
    pair.same(Method::DELETE, "/{i}", None).await;

    // Keep-alive connections were reused, not reopened per request.
    let (opened, reused) = connections(&proxy).await;
    assert!(
        opened >= 1.0 && reused > opened,
        "opened {opened}, reused {reused}"
    );
    let searches = metric(
        &proxy,
        r#"osproxy_requests_total{kind="search",status_class="2xx"}"#,
    )
    .await;
    assert!(
        searches.is_some_and(|n| n >= 3.0),
        "search requests counted: {searches:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_cleartext_ingress_reaches_an_http1_upstream() {
    let proxy = ready_proxy("");
    let h2 = Http::h2c();
    let via = h2
        .send(
            Method::GET,
            &format!("{}/_cluster/health", proxy.url()),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(via.status, 200, "{}", via.text());
    assert_eq!(
        via.json()["cluster_name"],
        Http::new()
            .send(
                Method::GET,
                &format!("{}/_cluster/health", node().url()),
                None
            )
            .await
            .map(|r| r.json()["cluster_name"].clone())
            .unwrap_or_default()
    );
    let put = h2
        .send(
            Method::PUT,
            &format!("{}/pt-h2/_doc/1?refresh=true", proxy.url()),
            Some(r#"{"a":1}"#),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(put.status, 201, "{}", put.text());
    let got = Http::new()
        .send(Method::GET, &format!("{}/pt-h2/_doc/1", node().url()), None)
        .await
        .map(|r| r.json())
        .unwrap_or_default();
    assert_eq!(got["_source"], json!({"a": 1}));
}

#[tokio::test(flavor = "multi_thread")]
async fn request_ids_are_echoed_or_minted() {
    let proxy = ready_proxy("");
    let http = Http::new();
    let url = format!("{}/", proxy.url());
    let echoed = http
        .send_with(Method::GET, &url, None, &[("x-request-id", "client-id-42")])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(echoed.header("x-request-id"), Some("client-id-42"));
    let replaced = http
        .send_with(
            Method::GET,
            &url,
            None,
            &[("x-request-id", "bad id with spaces")],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let minted = replaced
        .header("x-request-id")
        .unwrap_or_default()
        .to_string();
    assert!(
        minted.len() == 32 && minted.bytes().all(|b| b.is_ascii_hexdigit()),
        "minted {minted:?}"
    );
    let other = http
        .send(Method::GET, &url, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(other.header("x-request-id"), Some(minted.as_str()));
}

/// Node info names the node's own HTTP address; through osproxy it names
/// osproxy's, so a sniffing client stays behind the proxy.
#[tokio::test(flavor = "multi_thread")]
async fn node_info_advertises_the_proxy_not_the_nodes() {
    let proxy = ready_proxy("");
    let http = Http::new();
    for path in ["/_nodes/http", "/_nodes", "/_nodes/_all/http?pretty"] {
        let direct = http
            .send(Method::GET, &format!("{}{path}", node().url()), None)
            .await
            .unwrap();
        let node_addr = node().addr();
        let own: Vec<String> = direct.json()["nodes"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n["http"]["publish_address"].as_str().unwrap().to_string())
            .collect();
        assert!(
            own.iter()
                .all(|a| a.ends_with(node_addr.rsplit(':').next().unwrap())),
            "{own:?}"
        );
        let r = http
            .send_with(
                Method::GET,
                &format!("{}{path}", proxy.url()),
                None,
                &[("accept-encoding", "gzip")],
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("content-encoding"), None, "{path}");
        let answer = r.json();
        let nodes = answer["nodes"].as_object().unwrap();
        assert!(!nodes.is_empty(), "{path}");
        for n in nodes.values() {
            assert_eq!(
                n["http"]["publish_address"],
                proxy.data_addr(),
                "{path}: {n}"
            );
            assert_eq!(
                n["http"]["bound_address"],
                json!([proxy.data_addr()]),
                "{path}"
            );
        }
        assert!(
            !r.text().contains(&node_addr),
            "{path}: the node's address leaked"
        );
        assert_eq!(path.contains("pretty"), r.text().contains("\n  "), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prefix_passthrough_confines_to_listed_indices() {
    let proxy = ready_proxy("indices = [\"legacy-\"]");
    let http = Http::new();
    let put = http
        .send(
            Method::PUT,
            &format!("{}/legacy-a/_doc/1?refresh=true", proxy.url()),
            Some(r#"{"x":1}"#),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(put.status, 201, "{}", put.text());
    let search = http
        .send(
            Method::GET,
            &format!("{}/legacy-*/_search", proxy.url()),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(search.status, 200);
    assert_eq!(search.json()["hits"]["total"]["value"], 1);

    for path in [
        "/orders/_search",
        "/legacy-a,orders/_search",
        "/legacy-a%2Corders/_search",
        "/_search",
        "/_all/_search",
        "/_cat/indices",
    ] {
        let r = http
            .send(Method::POST, &format!("{}{path}", proxy.url()), Some("{}"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        let err = r.json();
        assert_eq!(err["error"]["type"], "unsupported_endpoint", "{path}");
        assert_eq!(err["status"], 400);
        assert_eq!(err["error"]["osproxy"]["retryable"], false);
        assert!(err["error"]["osproxy"]["remediation"]
            .as_str()
            .is_some_and(|s| s.contains("passthrough")));
        assert_eq!(
            err["error"]["osproxy"]["request_id"].as_str(),
            r.header("x-request-id")
        );
    }
    // Nothing reached the cluster for the refused requests.
    let orders = http
        .send(Method::GET, &format!("{}/orders", node().url()), None)
        .await
        .map(|r| r.status)
        .unwrap_or_default();
    assert_eq!(orders, 404);

    // A bulk passes when every action stays within the prefixes...
    let ok = "{\"index\":{\"_id\":\"b1\"}}\n{\"x\":1}\n{\"index\":{\"_index\":\"legacy-b\",\"_id\":\"b2\"}}\n{\"x\":2}\n";
    let r = http
        .send_with(
            Method::POST,
            &format!("{}/legacy-a/_bulk?refresh=true", proxy.url()),
            Some(ok.into()),
            &[("content-type", "application/x-ndjson")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["errors"], false, "{}", r.text());
    // ...and is stopped, with nothing applied, when one names another index.
    let bad = "{\"index\":{\"_id\":\"never\"}}\n{\"x\":1}\n{\"delete\":{\"_index\":\"orders\",\"_id\":\"1\"}}\n";
    let r = http
        .send_with(
            Method::POST,
            &format!("{}/legacy-a/_bulk?refresh=true", proxy.url()),
            Some(bad.into()),
            &[("content-type", "application/x-ndjson")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "unsupported_endpoint");
    assert!(r.text().contains("orders"), "{}", r.text());
    let never = http
        .send(
            Method::GET,
            &format!("{}/legacy-a/_doc/never", node().url()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        never.status, 404,
        "no item of a stopped bulk may be applied"
    );
    // A per-action ingest pipeline is refused before the cluster sees the
    // bulk: one that sets `_index` would send the document outside the
    // prefixes. (This node has no ingest processors, so the pipeline here
    // is an empty one; what is checked is that the bulk never runs.)
    let pipeline = http
        .send_with(
            Method::PUT,
            &format!("{}/_ingest/pipeline/route-out", node().url()),
            Some(r#"{"processors":[]}"#.into()),
            &[("content-type", "application/json")],
        )
        .await
        .unwrap();
    assert_eq!(pipeline.status, 200, "{}", pipeline.text());
    let piped = "{\"index\":{\"_id\":\"piped\",\"pipeline\":\"route-out\"}}\n{\"x\":1}\n";
    let r = http
        .send_with(
            Method::POST,
            &format!("{}/legacy-a/_bulk?refresh=true", proxy.url()),
            Some(piped.into()),
            &[("content-type", "application/x-ndjson")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("pipeline"), "{}", r.text());
    let piped = http
        .send(
            Method::GET,
            &format!("{}/legacy-a/_doc/piped", node().url()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(piped.status, 404, "the piped bulk ran: {}", piped.text());
}

/// osproxy reads the cluster's answers itself (decision 0010). OpenSearch
/// frames every answer with a length, so this test puts nginx between the
/// two, compressing: its answers are chunked. Each is dechunked, handed on
/// whole and the connection used again for the next, for bodies, errors
/// and HEAD alike.
#[tokio::test(flavor = "multi_thread")]
async fn chunked_answers_from_a_real_server_are_read_whole_and_the_connection_reused() {
    use std::io::Read;
    let gzip = osproxy_testkit::GzipProxy::start(&node().addr()).unwrap();
    let proxy = crate::common::proxy_to(&gzip.url(), "");
    proxy
        .wait_ready(std::time::Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    let http = Http::new();
    let doc = json!({"n": 1, "pad": "x".repeat(20_000)}).to_string();
    let put = http
        .send(
            Method::PUT,
            &format!("{}/chunked-answers/_doc/1?refresh=true", node().url()),
            Some(&doc),
        )
        .await
        .unwrap();
    assert!(put.status.is_success(), "{}", put.text());
    let gz = [("accept-encoding", "gzip")];
    // nginx really answers chunked.
    let raw = http
        .send_with(
            Method::GET,
            &format!("{}/chunked-answers/_doc/1", gzip.url()),
            None,
            &gz,
        )
        .await
        .unwrap();
    assert_eq!(raw.header("transfer-encoding"), Some("chunked"));
    let direct = http
        .send(
            Method::GET,
            &format!("{}/chunked-answers/_doc/1", node().url()),
            None,
        )
        .await
        .unwrap()
        .json();
    let gunzip = |r: &HttpResponse| {
        assert_eq!(
            r.header("content-encoding"),
            Some("gzip"),
            "{:?}",
            r.headers
        );
        let mut text = String::new();
        flate2::read::GzDecoder::new(&r.body[..])
            .read_to_string(&mut text)
            .unwrap();
        serde_json::from_str::<Value>(&text).unwrap()
    };
    for round in 0..10 {
        let url = format!("{}/chunked-answers/_doc/1", proxy.url());
        let got = http.send_with(Method::GET, &url, None, &gz).await.unwrap();
        assert_eq!(got.status, 200, "round {round}");
        assert_eq!(gunzip(&got), direct, "round {round}");
        let missing = http
            .send_with(
                Method::GET,
                &format!("{}/chunked-answers/_doc/nope", proxy.url()),
                None,
                &gz,
            )
            .await
            .unwrap();
        assert_eq!(missing.status, 404, "round {round}");
        assert_eq!(gunzip(&missing)["found"], false, "round {round}");
        let head = http.send_with(Method::HEAD, &url, None, &gz).await.unwrap();
        assert_eq!(head.status, 200, "round {round}");
        assert!(head.body.is_empty(), "round {round}");
    }
    let (opened, reused) = connections(&proxy).await;
    assert!(
        opened >= 1.0 && reused >= 25.0,
        "opened {opened}, reused {reused}: chunked answers should leave their connection reusable"
    );
    let _ = http
        .send(
            Method::DELETE,
            &format!("{}/chunked-answers", node().url()),
            None,
        )
        .await;
}

/// Upstream connections the proxy opened, and the requests that reused one.
async fn connections(proxy: &ProxyInstance) -> (f64, f64) {
    let count = |what: &str| {
        let sample = format!(r#"osproxy_upstream_connections_{what}_total{{cluster="main"}}"#);
        async move { metric(proxy, &sample).await.unwrap_or(0.0) }
    };
    (count("opened").await, count("reused").await)
}
