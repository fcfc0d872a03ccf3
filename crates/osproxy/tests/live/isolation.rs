//! The adversarial isolation suite, by class of attack, against the real
//! binary and a real OpenSearch node. Two tenants (acme, globex) share
//! `orders` in one shared index, a third (initech) has its own index, and
//! `legacy-` indices pass through. globex's document holds a secret word;
//! every attack by acme must be refused (4xx) or confined (nothing of
//! globex's in the answer), and at the end globex's document is checked,
//! straight on the node, to be exactly as written.

use bytes::Bytes;
use http::Method;
use osproxy_testkit::{ConfigBuilder, Grant, Http, HttpResponse, ProxyInstance};
use serde_json::{json, Value};

use crate::common::node;

const ACME: &str = "Bearer iso-acme-token-0123456789";
const GLOBEX: &str = "Bearer iso-globex-token-0123456789";
const INITECH: &str = "Bearer iso-initech-token-0123456789";
const OPS: &str = "Bearer iso-ops-token-0123456789";
const SECRET: &str = "zanzibar";

struct Site {
    proxy: ProxyInstance,
    http: Http,
    _dir: tempfile::TempDir,
}

impl Site {
    /// `shared` and `own` name the shared index and initech's own index.
    fn start(shared: &str, own: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let token = |t: &'static str| t.trim_start_matches("Bearer ");
        let one = |p: &str| Grant::Partitions(vec![p.to_string()]);
        let proxy = ConfigBuilder::new(dir.path())
            .cluster("main", &node().url())
            .passthrough("main", &["legacy-"])
            .principal("acme", token(ACME), one("acme"))
            .principal("globex", token(GLOBEX), one("globex"))
            .principal("initech", token(INITECH), one("initech"))
            .principal("ops", token(OPS), Grant::Operator)
            .shared_index("orders", "main", shared)
            .own_index("orders", "initech", "main", own)
            .start(std::path::Path::new(env!("CARGO_BIN_EXE_osproxy")));
        Site {
            proxy,
            http: Http::new(),
            _dir: dir,
        }
    }

    /// An operator's `PUT /v1/placements/orders/acme` with `placement`.
    async fn place_acme(&self, placement: &str) -> HttpResponse {
        Http::new()
            .send_with(
                Method::PUT,
                &format!("{}/v1/placements/orders/acme", self.proxy.admin_url()),
                Some(Bytes::from(placement.to_string())),
                &[("authorization", OPS)],
            )
            .await
            .unwrap()
    }

    async fn send(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<&str>,
        extra: &[(&str, &str)],
    ) -> HttpResponse {
        let mut headers = vec![("authorization", token)];
        headers.extend_from_slice(extra);
        self.http
            .send_with(
                method,
                &format!("{}{path}", self.proxy.url()),
                body.map(|b| Bytes::from(b.to_string())),
                &headers,
            )
            .await
            .unwrap()
    }
}

/// One attack: what it tries, and the request.
struct Attack {
    class: &'static str,
    what: &'static str,
    token: &'static str,
    method: Method,
    path: &'static str,
    body: Option<&'static str>,
    headers: &'static [(&'static str, &'static str)],
}

fn attack(
    class: &'static str,
    what: &'static str,
    method: Method,
    path: &'static str,
    body: Option<&'static str>,
) -> Attack {
    Attack {
        class,
        what,
        token: ACME,
        method,
        path,
        body,
        headers: &[],
    }
}

fn suite() -> Vec<Attack> {
    use Method as M;
    let qs = "query-string smuggling";
    let enc = "encodings and formats";
    let lenient = "lenient JSON";
    let refs = "cross-index references";
    let stats = "statistics";
    let pt = "passthrough bodies";
    let mut v = vec![
        attack(qs, "`;q=` replaces the query", M::GET, "/orders/_search?size=100;q=*:*", None),
        attack(qs, "`;q=` on _count", M::GET, "/orders/_count?terminate_after=10;q=_tenant:globex", None),
        attack(qs, "percent-encoded name", M::GET, "/orders/_search?%71=*:*", None),
        attack(qs, "routing smuggled after `;`", M::GET, "/orders/_search?size=5;routing=globex", None),
        attack(qs, "encoded routing name", M::GET, "/orders/_doc/1?rout%69ng=globex", None),
        attack(qs, "update_by_query with `;q=`", M::POST, "/orders/_update_by_query?conflicts=proceed;q=_tenant:globex", Some(r#"{}"#)),
        attack(qs, "delete_by_query with `;q=`", M::POST, "/orders/_delete_by_query?refresh=true;q=title:zanzibar", Some(r#"{}"#)),
        attack(qs, "pipeline after `;`", M::PUT, "/orders/_doc/9?refresh=true;pipeline=p", Some(r#"{"t":1}"#)),
        attack(qs, "search_pipeline after `;`", M::GET, "/orders/_search?size=1;search_pipeline=p", None),
        attack(qs, "suggest_field after `;`", M::GET, "/orders/_search?size=1;suggest_field=title", None),
        attack(qs, "async by-query, encoded `false`", M::POST, "/orders/_delete_by_query?wait_for_completion=%66alse", Some(r#"{"query":{"match_all":{}}}"#)),
        attack(qs, "async by-query, empty value", M::POST, "/orders/_delete_by_query?wait_for_completion=", Some(r#"{"query":{"match_all":{}}}"#)),
        attack(qs, "empty name", M::GET, "/orders/_search?=q", None),
        attack(qs, "bad escape", M::GET, "/orders/_search?size=%zz", None),
        attack(enc, "format=yaml", M::GET, "/orders/_search?format=yaml", None),
        attack(enc, "format=cbor on a get", M::GET, "/orders/_doc/1?format=cbor", None),
        attack(lenient, "comment hides `doc` in an update", M::POST, "/orders/_update/1", Some(r#"{"_source":[/*"*/],"doc_as_upsert":true,"doc":{"_tenant":"globex","title":"planted"}/*"*/}"#)),
        attack(lenient, "comment hides a script in an update", M::POST, "/orders/_update/1", Some(r#"{"doc":{}/*"*/,"script":{"source":"ctx._source._tenant='globex'"}/*"*/}"#)),
        attack(lenient, "duplicate `query` in a search", M::POST, "/orders/_search", Some(r#"{"query":{"match_all":{}},"query":{"match_all":{}}}"#)),
        attack(lenient, "trailing data after a search", M::POST, "/orders/_search", Some(r#"{"size":1} {"query":{"match_all":{}}}"#)),
        attack(lenient, "line comment in a document", M::PUT, "/orders/_doc/7", Some("{\"t\":1 // \"_tenant\":\"globex\"\n}")),
        attack(lenient, "duplicate partition field in a document", M::PUT, "/orders/_doc/8", Some(r#"{"_tenant":"acme","_tenant":"globex"}"#)),
        attack(lenient, "trailing dot: OpenSearch reads `_tenant.` as `_tenant`", M::PUT, "/orders/_doc/10?refresh=true", Some(r#"{"_tenant.":"globex","title":"planted"}"#)),
        attack(lenient, "trailing dots in a bulk source", M::POST, "/orders/_bulk?refresh=true", Some("{\"index\":{\"_id\":\"11\"}}\n{\"_tenant..\":\"globex\",\"title\":\"planted\"}\n")),
        attack(lenient, "trailing dot in an update's doc", M::POST, "/orders/_update/12?refresh=true", Some(r#"{"doc":{"_tenant.":"globex"},"doc_as_upsert":true}"#)),
        attack(lenient, "comment in a bulk update line", M::POST, "/orders/_bulk", Some("{\"update\":{\"_id\":\"1\"}}\n{\"_source\":[/*\"*/],\"doc_as_upsert\":true,\"doc\":{\"_tenant\":\"globex\"}/*\"*/}\n")),
        attack(refs, "terms lookup into the shared index", M::POST, "/orders/_search", Some(r#"{"query":{"terms":{"title":{"index":"iso-shared","id":"globex:1","path":"title"}}}}"#)),
        attack(refs, "indices_boost", M::POST, "/orders/_search", Some(r#"{"indices_boost":[{"iso-*":2}]}"#)),
        attack(refs, "percolate by id", M::POST, "/orders/_search", Some(r#"{"query":{"percolate":{"field":"q","index":"iso-shared","id":"globex:1"}}}"#)),
        attack(refs, "a raw pit id in the body", M::POST, "/orders/_search", Some(r#"{"pit":{"id":"abc"}}"#)),
        attack(stats, "profile", M::POST, "/orders/_search", Some(r#"{"profile":true,"query":{"prefix":{"title":"z"}}}"#)),
        attack(stats, "explain in the body", M::POST, "/orders/_search", Some(r#"{"explain":true}"#)),
        attack(stats, "explain as a parameter", M::GET, "/orders/_search?explain=true", None),
        attack(stats, "fuzzy with max_expansions", M::POST, "/orders/_search", Some(r#"{"query":{"fuzzy":{"title":{"value":"zanzibor","max_expansions":1}}}}"#)),
        attack(stats, "top_terms rewrite", M::POST, "/orders/_search", Some(r#"{"query":{"prefix":{"title":{"value":"z","rewrite":"top_terms_1"}}}}"#)),
        attack(stats, "more_like_this term statistics", M::POST, "/orders/_search", Some(r#"{"query":{"more_like_this":{"fields":["title"],"like":"zanzibar","min_doc_freq":1,"min_term_freq":1}}}"#)),
        attack(pt, "blank source line hides a delete", M::POST, "/legacy-x/_bulk", Some("{\"index\":{\"_index\":\"legacy-x\"}}\n\n{\"delete\":{\"_index\":\"iso-shared\",\"_id\":\"globex:1\",\"routing\":\"globex\"}}\n")),
        attack(pt, "blank source line, index-less bulk path", M::POST, "/legacy-y/_bulk", Some("{\"create\":{}}\n   \n{\"delete\":{\"_index\":\"iso-shared\",\"_id\":\"globex:1\"}}\n")),
        attack(pt, "terms lookup into the shared index", M::POST, "/legacy-x/_search", Some(r#"{"query":{"terms":{"title":{"index":"iso-shared","id":"globex:1","path":"title","routing":"globex"}}}}"#)),
        attack(pt, "like-document in the shared index", M::POST, "/legacy-x/_search", Some(r#"{"query":{"more_like_this":{"fields":["title"],"like":[{"_index":"iso-shared","_id":"globex:1"}],"min_term_freq":1,"min_doc_freq":1}}}"#)),
        attack(pt, "lookup naming a list of indices", M::POST, "/legacy-x/_count", Some(r#"{"query":{"bool":{"filter":[{"terms":{"t":{"index":"iso-shared,legacy-x","id":"1","path":"t"}}}]}}}"#)),
        attack(pt, "search template", M::POST, "/legacy-x/_search/template", Some(r#"{"source":"{\"query\":{\"match_all\":{}}}"}"#)),
        attack(pt, "comment in a passthrough search", M::POST, "/legacy-x/_search", Some(r#"{"query":{"match_all":{}}/*,"x":{"index":"iso-shared"}*/}"#)),
        attack(pt, "delete_by_query with a lookup", M::POST, "/legacy-x/_delete_by_query", Some(r#"{"query":{"terms":{"t":{"index":"iso-shared","id":"globex:1","path":"title"}}}}"#)),
        attack(pt, "a query in the `source` parameter", M::GET, "/legacy-x/_validate/query?rewrite=true&source_content_type=application/json&source=%7B%22query%22%3A%7B%22terms%22%3A%7B%22title%22%3A%7B%22index%22%3A%22iso-shared%22%2C%22id%22%3A%22globex%3A1%22%2C%22path%22%3A%22title%22%7D%7D%7D%7D", None),
        attack(pt, "`source` smuggled after `;`", M::GET, "/legacy-x/_search?size=1;source=%7B%7D", None),
        attack(pt, "an alias claiming a name outside the prefixes", M::PUT, "/legacy-x/_alias/iso-newco", None),
        attack(pt, "aliases in a create body", M::PUT, "/legacy-z", Some(r#"{"aliases":{"iso-newco":{}}}"#)),
        attack(pt, "an alias body naming the shared index in a list", M::PUT, "/legacy-x/_alias/legacy-al", Some(r#"{"index":["iso-shared"]}"#)),
        attack(pt, "an alias body naming its alias in a list", M::PUT, "/legacy-x/_aliases", Some(r#"{"alias":["iso-claimed"]}"#)),
        attack(pt, "an alias name in the query string", M::PUT, "/legacy-x/_alias?name=iso-claimed", None),
        attack(pt, "a rollover target in the query string", M::POST, "/legacy-x/_rollover?new_index=iso-claimed", None),
        attack(pt, "a remote cluster's index", M::GET, "/legacy-*:iso-shared/_search", None),
        attack(pt, "an alias body naming the shared index after an object closes", M::PUT, "/legacy-x/_alias/legacy-al2", Some(r#"{"x":[{"index":"legacy-x"},"iso-shared"]}"#)),
        attack(pt, "an alias body naming the shared index in a nested list", M::PUT, "/legacy-x/_alias/legacy-al3", Some(r#"{"index":[["iso-shared"]]}"#)),
        attack(pt, "a default search pipeline in dotted settings", M::PUT, "/legacy-x/_settings", Some(r#"{"index.search.default_pipeline":"p"}"#)),
        attack(stats, "span_multi (clause-limit oracle)", M::POST, "/orders/_search", Some(r#"{"query":{"span_multi":{"match":{"prefix":{"title":{"value":"z"}}}}}}"#)),
        attack(stats, "verbose_pipeline", M::POST, "/orders/_search", Some(r#"{"verbose_pipeline":true,"query":{"match_all":{}}}"#)),
        attack(stats, "top_hits sorted by _index", M::POST, "/orders/_search", Some(r#"{"size":0,"aggs":{"t":{"top_hits":{"size":1,"sort":["_index"]}}}}"#)),
        attack(stats, "cutoff_frequency (document-count oracle)", M::POST, "/orders/_count", Some(r#"{"query":{"match":{"title":{"query":"zanzibar anvil","operator":"and","cutoff_frequency":7}}}}"#)),
        attack(pt, "a clone target outside the prefixes", M::POST, "/legacy-x/_clone/iso-newco", None),
        attack(pt, "rank_eval with a template", M::POST, "/legacy-x/_rank_eval", Some(r#"{"templates":[{"id":"t","template":{"source":"{\"query\":{\"terms\":{\"title\":{\"index\":\"iso-shared\",\"id\":\"globex:1\",\"path\":\"title\"}}}}"}}],"requests":[{"id":"r","template_id":"t","ratings":[]}],"metric":{"precision":{}}}"#)),
        attack(stats, "explain inside top_hits", M::POST, "/orders/_search", Some(r#"{"query":{"match":{"title":"zanzibar"}},"aggs":{"t":{"top_hits":{"explain":true}}}}"#)),
        attack(stats, "fuzzy_rewrite top_terms", M::POST, "/orders/_search", Some(r#"{"query":{"match":{"title":{"query":"zanzibor","fuzziness":2,"fuzzy_rewrite":"top_terms_1"}}}}"#)),
        attack(stats, "fuzzy_max_expansions", M::POST, "/orders/_search", Some(r#"{"query":{"query_string":{"query":"zanzibor~","fuzzy_max_expansions":1}}}"#)),
        attack(stats, "docvalue_fields on _index", M::POST, "/orders/_search", Some(r#"{"docvalue_fields":["_index"]}"#)),
        attack(stats, "docvalue_fields `*` written as an object", M::POST, "/orders/_search", Some(r#"{"docvalue_fields":[{"field":"*"}]}"#)),
        attack(stats, "scoring_boolean rewrite (clause-limit oracle)", M::POST, "/orders/_search", Some(r#"{"query":{"prefix":{"title":{"value":"z","rewrite":"scoring_boolean"}}}}"#)),
        attack(stats, "intervals prefix rule (expansion-limit oracle)", M::POST, "/orders/_search", Some(r#"{"query":{"intervals":{"title":{"prefix":{"prefix":"z"}}}}}"#)),
        attack(stats, "prefix query on _index", M::POST, "/orders/_search", Some(r#"{"query":{"prefix":{"_index":"iso-s"}}}"#)),
        attack(stats, "multi_terms on _index", M::POST, "/orders/_search", Some(r#"{"size":0,"aggs":{"m":{"multi_terms":{"terms":[{"field":"_index"},{"field":"_routing"}]}}}}"#)),
        attack(stats, "sort on the physical _id", M::POST, "/orders/_search", Some(r#"{"sort":["_id"]}"#)),
        attack(stats, "sort on _id as a parameter", M::GET, "/orders/_search?sort=_id:asc", None),
        attack(qs, "update_by_query with a trailing slash (read as a delete before)", M::POST, "/orders/_update_by_query/", Some(r#"{}"#)),
        attack(qs, "encoded by-query endpoint", M::POST, "/orders/_update%5Fby_query", Some(r#"{}"#)),
        attack(pt, "an ingest pipeline on a passthrough write", M::PUT, "/legacy-x/_doc/p1?pipeline=p", Some(r#"{"t":1}"#)),
        attack(pt, "a search pipeline parameter on passthrough", M::GET, "/legacy-x/_search?search_pipeline=p", None),
        attack(pt, "a search pipeline in a passthrough body", M::POST, "/legacy-x/_search", Some(r#"{"search_pipeline":{"request_processors":[]}}"#)),
        attack(pt, "a default pipeline in a passthrough create body", M::PUT, "/legacy-q", Some(r#"{"settings":{"index":{"default_pipeline":"p"}}}"#)),
        attack(stats, "docvalue_fields=_index as a parameter", M::GET, "/orders/_search?docvalue_fields=_index", None),
        attack(stats, "query_string naming _index", M::POST, "/orders/_search", Some(r#"{"query":{"query_string":{"query":"_index:iso-shared"}}}"#)),
        attack(pt, "a percolator mapping through passthrough", M::PUT, "/legacy-p", Some(r#"{"mappings":{"properties":{"q":{"type":"percolator"}}}}"#)),
        attack(refs, "a percolator field in a shared create body", M::PUT, "/orders", Some(r#"{"mappings":{"properties":{"q":{"type":"percolator"}}}}"#)),
        attack(stats, "terms aggregation on _index", M::POST, "/orders/_search", Some(r#"{"size":0,"aggs":{"i":{"terms":{"field":"_index"}}}}"#)),
    ];
    // Dedicated placement (initech's own index): references into the shared one.
    for (what, body) in [
        (
            "terms lookup from a dedicated placement",
            r#"{"query":{"terms":{"title":{"index":"iso-shared","id":"globex:1","path":"title","routing":"globex"}}}}"#,
        ),
        (
            "more_like_this of a shared document",
            r#"{"query":{"more_like_this":{"fields":["title"],"like":[{"_index":"iso-shared","_id":"globex:1","routing":"globex"}],"min_term_freq":1,"min_doc_freq":1}}}"#,
        ),
        (
            "indexed shape in the shared index",
            r#"{"query":{"geo_shape":{"g":{"indexed_shape":{"index":"iso-shared","id":"globex:1","path":"g"}}}}}"#,
        ),
        (
            "percolate a shared document",
            r#"{"query":{"percolate":{"field":"q","index":"iso-shared","id":"globex:1"}}}"#,
        ),
        (
            "indices_boost from a dedicated placement",
            r#"{"indices_boost":[{"iso-shared":2}]}"#,
        ),
        (
            "wrapper query from a dedicated placement",
            r#"{"query":{"wrapper":{"query":"eyJtYXRjaF9hbGwiOnt9fQ=="}}}"#,
        ),
        (
            "a search pipeline from a dedicated placement",
            r#"{"search_pipeline":{"request_processors":[{"ml_inference":{"model_id":"m","query_template":"{}"}}]}}"#,
        ),
        (
            "phrase suggester collate",
            r#"{"suggest":{"s":{"text":"w1 w2","phrase":{"field":"title","collate":{"prune":true,"query":{"source":"{\"match_all\":{}}"}}}}}}"#,
        ),
    ] {
        v.push(Attack {
            class: refs,
            what,
            token: INITECH,
            method: M::POST,
            path: "/orders/_search",
            body: Some(body),
            headers: &[],
        });
    }
    v.push(Attack {
        class: refs,
        what: "an ingest pipeline on a dedicated write",
        token: INITECH,
        method: M::PUT,
        path: "/orders/_doc/p1?pipeline=p",
        body: Some(r#"{"t":1}"#),
        headers: &[],
    });
    v.push(Attack {
        class: refs,
        what: "aliases in a dedicated tenant's create body",
        token: INITECH,
        method: M::PUT,
        path: "/orders",
        body: Some(r#"{"aliases":{"iso-shared2":{}}}"#),
        headers: &[],
    });
    v.push(Attack {
        class: pt,
        what: "a compressed passthrough search body",
        token: ACME,
        method: M::POST,
        path: "/legacy-x/_search",
        body: Some("not really gzip"),
        headers: &[("content-encoding", "gzip")],
    });
    for (what, headers) in [
        ("Accept: YAML", &[("accept", "application/yaml")][..]),
        ("Accept: CBOR", &[("accept", "application/cbor")]),
        ("Accept: SMILE", &[("accept", "application/smile")]),
    ] {
        v.push(Attack {
            class: enc,
            what,
            token: ACME,
            method: M::GET,
            path: "/orders/_search",
            body: None,
            headers,
        });
    }
    for (what, ct, body) in [
        (
            "a YAML search body",
            "application/yaml",
            "query:\n  match_all: {}\n",
        ),
        (
            "a form body",
            "application/x-www-form-urlencoded",
            "{\"query\":{\"match_all\":{}}}",
        ),
        ("a text body", "text/plain", "{\"title\":\"x\"}"),
    ] {
        let _ = ct;
        v.push(Attack {
            class: enc,
            what,
            token: ACME,
            method: M::POST,
            path: "/orders/_search",
            body: Some(body),
            headers: match ct {
                "application/yaml" => &[("content-type", "application/yaml")],
                "text/plain" => &[("content-type", "text/plain")],
                _ => &[("content-type", "application/x-www-form-urlencoded")],
            },
        });
    }
    v
}

/// `PUT path` with `body` by `token`, which must succeed.
async fn seed_doc(site: &Site, token: &str, path: &str, body: &str) {
    let r = site.send(token, Method::PUT, path, Some(body), &[]).await;
    assert_eq!(r.status, 201, "{}", r.text());
}

/// A site whose shared index is `shared` and initech's own index `own`,
/// seeded: globex's secret, acme's own document, initech's own, each `1`.
async fn seeded_site(shared: &str, own: &str) -> Site {
    let site = Site::start(shared, own);
    for (token, doc) in [
        (
            GLOBEX,
            json!({"title": format!("{SECRET} plans"), "g": null}),
        ),
        (ACME, json!({"title": "acme anvils"})),
        (INITECH, json!({"title": "initech staplers"})),
    ] {
        seed_doc(
            &site,
            token,
            "/orders/_doc/1?refresh=true",
            &doc.to_string(),
        )
        .await;
    }
    site
}

/// `method path` with an optional body straight on the shared node.
async fn on_node(method: Method, path: &str, body: Option<&str>) -> Value {
    Http::new()
        .send(method, &format!("{}{path}", node().url()), body)
        .await
        .unwrap()
        .json()
}

/// Runs every attack of the suite against `site`, asserting each refusal
/// is OpenSearch-shaped, and returns the attacks that got through (a leak,
/// a 5xx, or an answer neither refused nor successful).
async fn attacks_that_got_through(site: &Site) -> Vec<String> {
    let mut report = Vec::new();
    let mut leaks = Vec::new();
    for a in suite() {
        let r = site
            .send(a.token, a.method.clone(), a.path, a.body, a.headers)
            .await;
        let text = r.text();
        let refused = r.status.is_client_error();
        let leaked = text.contains(SECRET) || text.contains("globex");
        let outcome = if refused { "refused" } else { "confined" };
        report.push(format!(
            "{:<26} {:<48} {} {}",
            a.class,
            a.what,
            r.status.as_u16(),
            outcome
        ));
        if leaked || r.status.is_server_error() || (!refused && !r.status.is_success()) {
            leaks.push(format!("[{}] {}: {} {}", a.class, a.what, r.status, text));
        }
        // Refusals are OpenSearch-shaped and say what was wrong.
        if refused {
            let v: Value = r.json();
            assert!(
                v["error"]["reason"].as_str().is_some_and(|s| !s.is_empty()),
                "[{}] {}: unshaped refusal {text}",
                a.class,
                a.what
            );
        }
    }
    eprintln!("isolation suite:\n{}", report.join("\n"));
    leaks
}

/// Every attack of the suite is refused or confined; afterwards globex's
/// document is exactly as written, nothing was planted in its partition,
/// and the legitimate forms of the refused requests still work.
#[tokio::test(flavor = "multi_thread")]
async fn every_attack_is_refused_or_confined() {
    let site = seeded_site("iso-shared", "iso-initech").await;
    let globex_doc = "/iso-shared/_doc/globex:1?routing=globex";
    let before = on_node(Method::GET, globex_doc, None).await;
    assert_eq!(before["found"], true, "{before}");

    let leaks = attacks_that_got_through(&site).await;
    assert!(
        leaks.is_empty(),
        "attacks that got through:\n{}",
        leaks.join("\n")
    );

    // Nothing of globex's changed, and nothing was planted in its partition.
    let after = on_node(Method::GET, globex_doc, None).await;
    assert_eq!(
        after["_source"], before["_source"],
        "globex's document changed"
    );
    let _ = on_node(Method::POST, "/iso-shared/_refresh", None).await;
    let globex_only = r#"{"query":{"term":{"_tenant":"globex"}}}"#;
    let planted = on_node(Method::POST, "/iso-shared/_count", Some(globex_only)).await;
    assert_eq!(
        planted["count"], 1,
        "documents planted in globex's partition: {planted}"
    );

    // No alias points at the shared index, and no name outside the
    // prefixes was claimed as one.
    let aliases = on_node(Method::GET, "/iso-shared/_alias", None).await;
    assert_eq!(aliases["iso-shared"]["aliases"], json!({}), "{aliases}");
    let claimed = on_node(Method::GET, "/_alias/iso-claimed", None).await;
    assert_eq!(claimed["status"], 404, "{claimed}");

    // The legitimate forms of the refused requests still work.
    for (path, body) in [
        (
            "/orders/_search?size=10&format=json",
            Some(r#"{"query":{"match_all":{}}}"#),
        ),
        (
            "/orders/_search?size=10",
            Some(r#"{"profile":false,"query":{"fuzzy":{"title":"anvil"}}}"#),
        ),
    ] {
        let r = site.send(ACME, Method::POST, path, body, &[]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert!(!r.text().contains(SECRET));
        assert_eq!(r.json()["hits"]["total"]["value"], 1, "{}", r.text());
    }
}

/// Answers are reversed everywhere: top_hits inside aggregations too,
/// whatever the aggregation is named, and queries naming ids find the
/// caller's own documents; no physical name or partition field shows.
#[tokio::test(flavor = "multi_thread")]
async fn answers_are_reversed_in_aggregations_and_id_queries() {
    let site = seeded_site("isr-shared", "isr-initech").await;
    let r = site
        .send(
            ACME,
            Method::POST,
            "/orders/_search",
            Some(r#"{"query":{"ids":{"values":["1"]}},"aggs":{"t":{"terms":{"field":"title.keyword"},"aggs":{"top":{"top_hits":{"size":1}}}}}}"#),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["hits"]["total"]["value"], 1, "{v}");
    assert_eq!(v["hits"]["hits"][0]["_id"], "1", "{v}");
    let top = &v["aggregations"]["t"]["buckets"][0]["top"]["hits"]["hits"][0];
    assert_eq!(top["_id"], "1", "{v}");
    assert_eq!(top["_index"], "orders", "{v}");
    assert!(top["_source"].get("_tenant").is_none(), "{v}");
    assert!(
        !r.text().contains("isr-shared") && !r.text().contains("acme:1"),
        "{v}"
    );
    // Reversed by shape, whatever the aggregation is named.
    let r = site
        .send(ACME, Method::POST, "/orders/_search", Some(r#"{"size":0,"aggs":{"hits":{"top_hits":{"size":1}},"f":{"filter":{"match_all":{}},"aggs":{"hits":{"top_hits":{}}}}}}"#), &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        !r.text().contains("isr-shared")
            && !r.text().contains("acme:1")
            && !r.text().contains("_tenant"),
        "{}",
        r.text()
    );
    assert_eq!(
        r.json()["aggregations"]["hits"]["hits"]["hits"][0]["_id"],
        "1",
        "{}",
        r.text()
    );
}

/// A dedicated tenant's create body may not set a default or final
/// pipeline, and its bulk actions may not name one.
#[tokio::test(flavor = "multi_thread")]
async fn a_dedicated_tenant_may_not_name_a_pipeline_when_creating_or_in_bulk() {
    let site = seeded_site("isp-shared", "isp-initech").await;
    let r = site
        .send(
            INITECH,
            Method::PUT,
            "/orders",
            Some(r#"{"settings":{"index.final_pipeline":"p"}}"#),
            &[],
        )
        .await;
    assert_eq!(
        r.json()["error"]["type"],
        "operator_required",
        "{}",
        r.text()
    );
    let r = site
        .send(
            INITECH,
            Method::POST,
            "/orders/_bulk",
            Some("{\"index\":{\"_id\":\"p2\",\"pipeline\":\"p\"}}\n{\"t\":1}\n"),
            &[("content-type", "application/x-ndjson")],
        )
        .await;
    assert_eq!(r.json()["items"][0]["index"]["status"], 400, "{}", r.text());
}

/// An operator's runtime placement is checked like the config: no wildcard
/// that would reach every index, nor a name passthrough would forward to
/// every caller.
#[tokio::test(flavor = "multi_thread")]
async fn runtime_placements_are_checked_like_the_config() {
    let site = seeded_site("isq-shared", "isq-initech").await;
    let bad = site
        .place_acme(r#"{"kind":"index","cluster":"main","index":"iso-*"}"#)
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    // Nor a name passthrough would forward to every caller.
    let bad = site
        .place_acme(r#"{"kind":"index","cluster":"main","index":"legacy-acme"}"#)
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.text().contains("passthrough"), "{}", bad.text());
}

/// A client mistake OpenSearch answers with a 5xx is a 400; a passthrough
/// search whose lookup stays within its prefixes still works.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_mistake_answered_with_a_5xx_is_a_400_and_lookups_within_prefixes_work() {
    let site = seeded_site("isx-shared", "isx-initech").await;
    let r = site
        .send(
            ACME,
            Method::POST,
            "/orders/_search",
            Some(r#"{"slice":{"id":0,"max":2}}"#),
            &[],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // A passthrough search that stays within its prefixes still works.
    let r = site
        .send(
            ACME,
            Method::POST,
            "/legacy-x/_search",
            Some(r#"{"query":{"terms":{"t":{"index":"legacy-x","id":"1","path":"t"}}}}"#),
            &[],
        )
        .await;
    assert!(r.status == 200 || r.status == 404, "{}", r.text());
}

/// A cursor opened while the partition was in the shared index must not
/// outlive a move to its own index on the same cluster: searched there it
/// would run unconfined over the shared index.
#[tokio::test(flavor = "multi_thread")]
async fn cursors_are_refused_after_the_placement_changes() {
    let site = Site::start("isc-shared", "isc-initech");
    for token in [GLOBEX, ACME] {
        let r = site
            .send(
                token,
                Method::PUT,
                "/orders/_doc/1?refresh=true",
                Some(r#"{"title":"x"}"#),
                &[],
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let pit = site
        .send(
            ACME,
            Method::POST,
            "/orders/_search/point_in_time?keep_alive=1m",
            None,
            &[],
        )
        .await;
    assert_eq!(pit.status, 200, "{}", pit.text());
    let pit_id = pit.json()["pit_id"].as_str().unwrap().to_string();
    let scroll = site
        .send(
            ACME,
            Method::POST,
            "/orders/_search?scroll=1m&size=1",
            Some("{}"),
            &[],
        )
        .await;
    assert_eq!(scroll.status, 200, "{}", scroll.text());
    let scroll_id = scroll.json()["_scroll_id"].as_str().unwrap().to_string();
    let search = json!({"pit": {"id": pit_id, "keep_alive": "1m"}, "size": 10}).to_string();
    let r = site
        .send(ACME, Method::POST, "/_search", Some(&search), &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["hits"]["total"]["value"], 1, "{}", r.text());

    // The operator moves acme to an index of its own on the same cluster.
    let moved = site
        .place_acme(r#"{"kind":"index","cluster":"main","index":"isc-acme"}"#)
        .await;
    assert!(moved.status.is_success(), "{}", moved.text());

    let r = site
        .send(ACME, Method::POST, "/_search", Some(&search), &[])
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "stale_epoch", "{}", r.text());
    assert!(!r.text().contains("globex"));
    let body = json!({"scroll": "1m", "scroll_id": scroll_id}).to_string();
    let r = site
        .send(ACME, Method::POST, "/_search/scroll", Some(&body), &[])
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(!r.text().contains("globex"));
}
