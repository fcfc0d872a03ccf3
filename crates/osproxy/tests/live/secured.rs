//! osproxy in front of a real OpenSearch with its security plugin (2.19.4
//! with Maven Central's `opensearch-security` 2.19.4.0, started by the
//! testkit): HTTPS only, a CA of the node's own, an internal user with
//! basic auth. Tenancy, prefix passthrough, the readiness probe and a
//! migration from the plain node onto it, all through osproxy's `https` +
//! basic connector, with clients that only hold osproxy bearer tokens.

use std::path::Path;
use std::time::Duration;

use http::Method;
use osproxy_testkit::{
    Http, HttpResponse, OpenSearchNode, ProxyInstance, SECURED_PASSWORD, SECURED_USER,
};
use serde_json::{json, Value};

use crate::common::{migrate_and_wait, node};
use crate::control::{ACME, OPS};
use crate::tls::curl;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_osproxy"))
}

/// A request straight to the secured node with curl, as `user` (or
/// anonymous, or with a bearer token); (status, body).
fn direct(node: &OpenSearchNode, auth: &[&str], method: &str, path: &str) -> (u16, String) {
    let mut extra = auth.to_vec();
    extra.extend(["-X", method]);
    let (code, body, _) = curl(node.ca().unwrap(), &format!("{}{path}", node.url()), &extra);
    (code, body)
}

fn as_user() -> [String; 2] {
    [
        "-u".to_string(),
        format!("{SECURED_USER}:{SECURED_PASSWORD}"),
    ]
}

async fn call(
    p: &ProxyInstance,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> HttpResponse {
    let auth = format!("Bearer {token}");
    let body = body.map(|b| b.to_string().into());
    Http::new()
        .send_with(
            method,
            &format!("{}{path}", p.url()),
            body,
            &[("authorization", auth.as_str())],
        )
        .await
        .unwrap()
}

async fn ok(
    p: &ProxyInstance,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let r = call(p, token, method, path, body).await;
    assert!(r.status.is_success(), "{path}: {} {}", r.status, r.text());
    r.json()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_with_the_security_plugin_serves_tenancy_passthrough_and_a_migration_onto_it() {
    let secured = OpenSearchNode::start_secured().unwrap_or_else(|e| panic!("{e}"));
    let user = as_user();
    let user: Vec<&str> = user.iter().map(String::as_str).collect();
    // The plugin is on: anonymous and bearer requests are refused, its own
    // user is served, and it is that user's identity the node sees.
    assert_eq!(direct(&secured, &[], "GET", "/").0, 401);
    let bearer = format!("Authorization: Bearer {ACME}");
    assert_eq!(direct(&secured, &["-H", &bearer], "GET", "/").0, 401);
    let (code, who) = direct(&secured, &user, "GET", "/_plugins/_security/authinfo");
    assert_eq!(code, 200, "{who}");
    let who: Value = serde_json::from_str(&who).unwrap();
    assert_eq!(who["user_name"], SECURED_USER, "{who}");

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("acme"), ACME).unwrap();
    std::fs::write(d.join("ops"), OPS).unwrap();
    std::fs::write(d.join("password"), format!("{SECURED_PASSWORD}\n")).unwrap();
    let config = format!(
        "[[clusters]]\nid = \"main\"\nurl = \"{main}\"\n\n\
         [[clusters]]\nid = \"secured\"\nurl = \"{url}\"\nusername = \"{SECURED_USER}\"\n\
         password_file = \"{d}/password\"\ntls = {{ ca_file = \"{ca}\" }}\n\n\
         [passthrough]\ncluster = \"secured\"\nindices = [\"legacy-\"]\n\n\
         [[principals]]\nname = \"acme-svc\"\ntoken_file = \"{d}/acme\"\npartitions = [\"acme\"]\n\n\
         [[principals]]\nname = \"ops\"\ntoken_file = \"{d}/ops\"\noperator = true\nany_partition = true\n\n\
         [[indices]]\nname = \"orders\"\ndefault = {{ kind = \"shared\", cluster = \"main\", index = \"sec-orders\" }}\n\n\
         [[indices]]\nname = \"notes\"\ndefault = {{ kind = \"shared\", cluster = \"secured\", index = \"sec-notes\" }}\n",
        main = node().url(),
        url = secured.url(),
        ca = secured.ca().unwrap().display(),
        d = d.display()
    );
    let p = ProxyInstance::start(binary(), &config).unwrap();
    // Ready: the probe reached the secured cluster with its credentials.
    p.wait_ready(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", p.log()));

    // Tenancy on the secured cluster: the client holds only its bearer
    // token; osproxy presents the cluster's user instead.
    let mut bulk = String::new();
    for i in 0..10 {
        bulk.push_str(&format!(
            "{{\"index\":{{\"_id\":\"n{i}\"}}}}\n{{\"n\":{i}}}\n"
        ));
    }
    let auth = format!("Bearer {ACME}");
    let r = Http::new()
        .send_with(
            Method::POST,
            &format!("{}/notes/_bulk?refresh=true", p.url()),
            Some(bulk.into()),
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/x-ndjson"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["errors"], false, "{}", r.text());
    let found = ok(
        &p,
        ACME,
        Method::POST,
        "/notes/_search",
        Some(json!({"query": {"range": {"n": {"gte": 5}}}})),
    )
    .await;
    assert_eq!(found["hits"]["total"]["value"], 5, "{found}");
    let got = ok(&p, ACME, Method::GET, "/notes/_doc/n3", None).await;
    assert_eq!(got["_source"]["n"], 3, "{got}");
    // The documents are on the secured node, in the shared index.
    let (code, count) = direct(&secured, &user, "GET", "/sec-notes/_count");
    assert_eq!(code, 200, "{count}");
    assert_eq!(serde_json::from_str::<Value>(&count).unwrap()["count"], 10);

    // Prefix passthrough to the secured cluster.
    let put = call(
        &p,
        OPS,
        Method::PUT,
        "/legacy-a/_doc/1?refresh=true",
        Some(json!({"x": 1})),
    )
    .await;
    assert_eq!(put.status, 201, "{}", put.text());
    let got = ok(&p, OPS, Method::GET, "/legacy-a/_doc/1", None).await;
    assert_eq!(got["_source"]["x"], 1, "{got}");
    let (code, body) = direct(&secured, &user, "GET", "/legacy-a/_doc/1");
    assert_eq!(code, 200, "{body}");

    // A migration from the plain node onto the secured one.
    for i in 0..20 {
        ok(
            &p,
            ACME,
            Method::PUT,
            &format!("/orders/_doc/d{i}"),
            Some(json!({"n": i})),
        )
        .await;
    }
    ok(&p, ACME, Method::POST, "/orders/_refresh", None).await;
    let to = json!({"kind": "cluster", "cluster": "secured", "index": "sec-acme"});
    let body = json!({"index": "orders", "partition": "acme", "to": to});
    migrate_and_wait(&p, OPS, body, Duration::from_secs(60)).await;
    let found = ok(
        &p,
        ACME,
        Method::POST,
        "/orders/_search?size=0",
        Some(json!({})),
    )
    .await;
    assert_eq!(found["hits"]["total"]["value"], 20, "{found}");
    let (code, count) = direct(&secured, &user, "GET", "/sec-acme/_count");
    assert_eq!(code, 200, "{count}");
    assert_eq!(
        serde_json::from_str::<Value>(&count).unwrap()["count"],
        20,
        "{count}"
    );
    // Writes after the cutover land on the secured node.
    ok(
        &p,
        ACME,
        Method::PUT,
        "/orders/_doc/after?refresh=true",
        Some(json!({"n": 99})),
    )
    .await;
    let (code, body) = direct(&secured, &user, "GET", "/sec-acme/_doc/after");
    assert_eq!(code, 200, "{body}");
}
