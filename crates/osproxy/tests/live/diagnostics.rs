//! Diagnostics directives end to end: each channel (admin API, etcd, signed
//! header) selects exactly what it matches, at its rate, until it expires,
//! on every instance of a fleet; explanations diagnose failures on their
//! own; nothing recorded anywhere holds a tenant's value; OTLP spans reach a
//! receiver decoding the official OpenTelemetry protobuf definitions.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use osproxy_proxy::tenancy::cursor::CursorKey;
use osproxy_testkit::{Http, HttpResponse, ProxyInstance};
use prost::Message;
use serde_json::{json, Value};

use crate::common::{metric, node};
use crate::control::{EtcdFleet, ACME, GLOBEX, OPS};

const HEADER_KEY: &str = "a-debug-header-key-of-at-least-32-characters";

/// The documented sampling rule: FNV-1a 64 of `directive \0 request id`,
/// MurmurHash3's 64-bit finaliser, below `rate × 2^64`.
fn sampled(directive: &str, request_id: &str, rate: f64) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in directive.bytes().chain([0u8]).chain(request_id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h as f64) < rate * 18_446_744_073_709_551_616.0
}

fn rfc3339(unix: u64) -> String {
    let (y, m, d) = osproxy_core::civil::civil_from_days((unix / 86_400) as i64);
    let secs = unix % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(directive: &Value, key: &str) -> String {
    let payload = osproxy_core::b64::encode_url(directive.to_string().as_bytes());
    let mac = CursorKey::new(key.as_bytes()).sign(payload.as_bytes());
    format!("{payload}.{mac}")
}

async fn call(
    http: &Http,
    base: &str,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    extra: &[(&str, &str)],
) -> HttpResponse {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    http.send_with(
        method,
        &format!("{base}{path}"),
        body.map(|b| Bytes::from(b.to_string())),
        &headers,
    )
    .await
    .unwrap()
}

async fn explain(http: &Http, admin: &str, request_id: &str) -> Option<Value> {
    let auth = format!("Bearer {OPS}");
    let r = http
        .send_with(
            Method::GET,
            &format!("{admin}/v1/explain/{request_id}"),
            None,
            &[("authorization", auth.as_str())],
        )
        .await
        .unwrap();
    (r.status == 200).then(|| r.json())
}

async fn search(
    http: &Http,
    base: &str,
    token: &str,
    rid: &str,
    extra: &[(&str, &str)],
) -> HttpResponse {
    let mut headers = vec![("x-request-id", rid)];
    headers.extend_from_slice(extra);
    let r = call(
        http,
        base,
        token,
        Method::POST,
        "/orders/_search",
        Some(json!({"query": {"match_all": {}}})),
        &headers,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r
}

/// A three-instance fleet on etcd whose instances accept debug headers
/// signed with [`HEADER_KEY`]; keep the key file while the fleet runs.
fn fleet_with_header_key(tag: &str) -> (EtcdFleet, tempfile::NamedTempFile) {
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key_file.path(), HEADER_KEY).unwrap();
    let extra = format!(
        "[diagnostics]\nheader_key_file = \"{}\"\n",
        key_file.path().display()
    );
    (EtcdFleet::start_with(tag, 3, false, &extra), key_file)
}

/// Asserts that a `ctl` run succeeded.
fn ctl_ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The names of an explanation's stages.
fn stage_names(e: &Value) -> Vec<&str> {
    e["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect()
}

/// The published channels in turn, on every instance of a fleet: the admin
/// API selects acme's searches only; a set published in etcd replaces it
/// and selects globex's requests at its sampling rate (captured as
/// sampled); a directive that expires selects until then and nothing after.
#[tokio::test(flavor = "multi_thread")]
async fn each_channel_selects_what_it_matches_at_its_rate_until_it_expires_on_every_instance() {
    let (fleet, _key) = fleet_with_header_key("diag");
    let http = Http::new();
    let far = rfc3339(now() + 3600);

    // 1. The admin API: acme's searches, at timing.
    let set = json!({"directives": [{"id": "adm", "match": {"partition": "acme", "endpoint": "search"},
                                      "level": "timing", "expires_at": far}]});
    ctl_ok(&fleet.ctl(0, &["directives", "put", "--set", &set.to_string()]));
    wait_directive(&fleet, "adm").await;
    for (i, p) in fleet.instances.iter().enumerate() {
        let rid = format!("adm-acme-{i}");
        search(&http, &p.url(), ACME, &rid, &[]).await;
        let e = explain(&http, &p.admin_url(), &rid)
            .await
            .unwrap_or_else(|| panic!("instance {i} did not explain {rid}"));
        assert_eq!(e["selected_by"], json!(["adm"]));
        assert_eq!(e["level"], "timing");
        assert_eq!(e["partition"], "acme");
        assert!(e["duration_us"].is_u64(), "{e}");
        let stages = stage_names(&e);
        for s in [
            "authenticate",
            "classify",
            "resolve",
            "rewrite",
            "dispatch",
            "reverse",
        ] {
            assert!(stages.contains(&s), "{s} missing: {e}");
        }
        // Not matched: another partition, another endpoint.
        let other = format!("adm-globex-{i}");
        search(&http, &p.url(), GLOBEX, &other, &[]).await;
        assert!(explain(&http, &p.admin_url(), &other).await.is_none());
        let doc = format!("adm-doc-{i}");
        let rid = [("x-request-id", doc.as_str())];
        call(
            &http,
            &p.url(),
            ACME,
            Method::GET,
            "/orders/_doc/x",
            None,
            &rid,
        )
        .await;
        assert!(explain(&http, &p.admin_url(), &doc).await.is_none());
    }

    // 2. The store: a set published with etcdctl replaces the admin one;
    // globex's requests on orders, half of them by request id.
    let set = json!({"directives": [{"id": "etcd-d", "match": {"index": "orders", "principal": "globex-svc"},
                                      "level": "shape", "sample_rate": 0.5, "expires_at": far, "capture": true}]});
    fleet
        .etcd
        .etcdctl(&["put", &fleet.key("directives"), &set.to_string()])
        .unwrap();
    wait_directive(&fleet, "etcd-d").await;
    let mut expected = 0;
    for n in 0..30 {
        let i = n % 3;
        let p = &fleet.instances[i];
        let rid = format!("etcd-globex-{n}");
        search(&http, &p.url(), GLOBEX, &rid, &[]).await;
        let want = sampled("etcd-d", &rid, 0.5);
        expected += usize::from(want);
        let got = explain(&http, &p.admin_url(), &rid).await;
        assert_eq!(got.is_some(), want, "{rid} on instance {i}");
        if let Some(e) = got {
            assert_eq!(e["level"], "shape");
            assert!(e.get("duration_us").is_none(), "shape has no timings: {e}");
        }
        let acme = format!("etcd-acme-{n}");
        search(&http, &p.url(), ACME, &acme, &[]).await;
        assert!(
            explain(&http, &p.admin_url(), &acme).await.is_none(),
            "adm was replaced"
        );
    }
    assert!((5..=25).contains(&expected), "{expected} of 30 sampled");
    let mut captured = 0;
    for i in 0..3 {
        let v = fleet.admin(i, "/v1/explain?directive=etcd-d").await.json();
        captured += v["explanations"].as_array().unwrap().len();
    }
    assert_eq!(captured, expected);

    // 3. Expiry: a directive that expires in a few seconds selects until
    // then and nothing after.
    let soon = now() + 3;
    let set = json!({"directives": [{"id": "brief", "match": {"partition": "acme"}, "level": "shape", "expires_at": rfc3339(soon)}]});
    let current = fleet.admin(0, "/v1/directives").await.json()["epoch"]
        .as_u64()
        .unwrap()
        .to_string();
    let set = set.to_string();
    ctl_ok(&fleet.ctl(
        0,
        &["directives", "put", "--set", &set, "--epoch", &current],
    ));
    wait_directive(&fleet, "brief").await;
    let second = &fleet.instances[1];
    search(&http, &second.url(), ACME, "brief-before", &[]).await;
    assert!(explain(&http, &second.admin_url(), "brief-before")
        .await
        .is_some());
    while now() <= soon {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (i, p) in fleet.instances.iter().enumerate() {
        let rid = format!("brief-after-{i}");
        search(&http, &p.url(), ACME, &rid, &[]).await;
        assert!(
            explain(&http, &p.admin_url(), &rid).await.is_none(),
            "expired directive still selects on {i}"
        );
    }
    assert!(
        metric(&fleet.instances[0], "osproxy_directives_matched_total")
            .await
            .unwrap()
            >= 2.0
    );
}

/// The signed header selects its own request, on any instance of a fleet,
/// with no published directive matching; unsigned, badly signed and
/// expired headers are ignored and counted.
#[tokio::test(flavor = "multi_thread")]
async fn a_signed_header_selects_its_own_request_on_any_instance_and_bad_ones_are_counted() {
    let (fleet, _key) = fleet_with_header_key("diagh");
    let http = Http::new();
    let far = rfc3339(now() + 3600);
    let d = json!({"id": "hdr", "level": "rewrite-diff", "expires_at": far});
    let good = sign(&d, HEADER_KEY);
    let forged = sign(&d, "another-key-that-is-also-32-characters-long");
    let expired = sign(
        &json!({"id": "old", "level": "shape", "expires_at": "2020-01-01T00:00:00Z"}),
        HEADER_KEY,
    );
    let unsigned = osproxy_core::b64::encode_url(d.to_string().as_bytes());
    for (i, p) in fleet.instances.iter().enumerate() {
        let rid = format!("hdr-{i}");
        let header = [("x-debug-directive", good.as_str())];
        search(&http, &p.url(), GLOBEX, &rid, &header).await;
        let e = explain(&http, &p.admin_url(), &rid)
            .await
            .unwrap_or_else(|| panic!("header ignored on {i}"));
        assert_eq!(e["selected_by"], json!(["header:hdr"]));
        assert_eq!(e["level"], "rewrite-diff");
        let rewrite = e["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == "rewrite")
            .unwrap();
        assert!(
            rewrite["added"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == "query.bool.filter.term"),
            "{e}"
        );
        for (bad, why) in [
            (&forged, "bad_signature"),
            (&expired, "expired"),
            (&unsigned, "unsigned"),
        ] {
            let sample = format!("osproxy_debug_header_ignored_total{{reason=\"{why}\"}}");
            let before = metric(p, &sample).await.unwrap();
            let rid = format!("hdr-{why}-{i}");
            let header = [("x-debug-directive", bad.as_str())];
            search(&http, &p.url(), GLOBEX, &rid, &header).await;
            assert!(
                explain(&http, &p.admin_url(), &rid).await.is_none(),
                "{why} header selected"
            );
            assert_eq!(metric(p, &sample).await.unwrap(), before + 1.0, "{why}");
        }
    }
}

async fn wait_directive(fleet: &EtcdFleet, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for i in 0..fleet.instances.len() {
        loop {
            let v = fleet.admin(i, "/v1/directives").await.json();
            if v["directives"]
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d["id"] == id))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "directive {id} did not reach instance {i}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// An OTLP/HTTP receiver: keeps every `POST /v1/traces` body. (A test
/// double for a collector, decoding with the official protobuf types.)
struct Receiver {
    addr: String,
    bodies: Arc<Mutex<Vec<Bytes>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let bodies: Arc<Mutex<Vec<Bytes>>> = Arc::default();
        let keep = bodies.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let keep = keep.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let keep = keep.clone();
                            async move {
                                let body = http_body_util::BodyExt::collect(req.into_body())
                                    .await?
                                    .to_bytes();
                                keep.lock().unwrap().push(body);
                                Ok::<_, hyper::Error>(http::Response::new(
                                    http_body_util::Full::new(Bytes::new()),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { addr, bodies }
    }

    /// Every exported body as received (protobuf carries strings as UTF-8,
    /// so a value recorded anywhere in a span shows up here verbatim).
    fn raw(&self) -> String {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    fn spans(&self) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| {
                ExportTraceServiceRequest::decode(b.clone())
                    .unwrap()
                    .resource_spans
                    .into_iter()
                    .flat_map(|r| r.scope_spans)
                    .flat_map(|s| s.spans)
            })
            .collect()
    }
}

/// One instance (memory backend) in front of the shared node with the
/// tenancy catalogue, a passthrough prefix, an unreachable cluster for one
/// partition, and `extra` config.
pub(crate) fn single(dir: &std::path::Path, extra: &str) -> ProxyInstance {
    for (name, token) in [("acme", ACME), ("globex", GLOBEX), ("ops", OPS)] {
        std::fs::write(dir.join(name), token).unwrap();
    }
    std::fs::write(dir.join("multi"), "multi-token-0123456789").unwrap();
    let dead = osproxy_testkit::free_port().unwrap();
    let config = format!(
        "[[clusters]]\nid = \"main\"\nurl = \"{}\"\n[[clusters]]\nid = \"down\"\nurl = \"http://127.0.0.1:{dead}\"\n\
         [upstream]\nconnect_timeout = \"1s\"\n\
         [passthrough]\ncluster = \"main\"\nindices = [\"dg-legacy-\"]\n\
         [[principals]]\nname = \"acme-svc\"\ntoken_file = \"{d}/acme\"\npartitions = [\"acme\"]\n\
         [[principals]]\nname = \"globex-svc\"\ntoken_file = \"{d}/globex\"\npartitions = [\"globex\"]\n\
         [[principals]]\nname = \"multi-svc\"\ntoken_file = \"{d}/multi\"\npartitions = [\"acme\", \"downco\"]\n\
         [[principals]]\nname = \"ops\"\ntoken_file = \"{d}/ops\"\noperator = true\nany_partition = true\n\
         [[indices]]\nname = \"orders\"\ndefault = {{ kind = \"shared\", cluster = \"main\", index = \"dg-shared\" }}\n\
         [[placements]]\nindex = \"orders\"\npartition = \"downco\"\nplacement = {{ kind = \"index\", cluster = \"down\", index = \"dg-downco\" }}\n\
         [log]\nformat = \"json\"\n{extra}",
        node().url(),
        d = dir.display()
    );
    ProxyInstance::start(std::path::Path::new(env!("CARGO_BIN_EXE_osproxy")), &config).unwrap()
}

async fn publish(http: &Http, admin: &str, set: Value) {
    let auth = format!("Bearer {OPS}");
    let r = http
        .send_with(
            Method::PUT,
            &format!("{admin}/v1/directives"),
            Some(set.to_string().into()),
            &[("authorization", auth.as_str())],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

/// `POST url` with an NDJSON `body` by `token`, tagged with request id
/// `rid`.
async fn post_ndjson(http: &Http, url: &str, token: &str, body: String, rid: &str) {
    let auth = format!("Bearer {token}");
    http.send_with(
        Method::POST,
        url,
        Some(body.into()),
        &[
            ("authorization", &auth),
            ("content-type", "application/x-ndjson"),
            ("x-request-id", rid),
        ],
    )
    .await
    .unwrap();
}

/// One request of the leak test: method, path, body, token.
type Step = (Method, String, Option<Value>, &'static str);

/// The requests of the leak test, each carrying the canary `c` (in ids,
/// documents, queries, a script, a passthrough write, a token): writes,
/// reads, update, searches, scroll, count, mget, delete by query, a refused
/// script, a delete, another tenant's read, an unknown token.
fn leak_steps(c: &str, doc: &Value) -> Vec<Step> {
    vec![
        (
            Method::PUT,
            format!("/orders/_doc/{c}-id1?refresh=true"),
            Some(doc.clone()),
            ACME,
        ),
        (
            Method::POST,
            "/orders/_doc?refresh=true".to_string(),
            Some(doc.clone()),
            ACME,
        ),
        (Method::GET, format!("/orders/_doc/{c}-id1"), None, ACME),
        (Method::GET, format!("/orders/_source/{c}-id1"), None, ACME),
        (
            Method::POST,
            format!("/orders/_update/{c}-id1"),
            Some(json!({"doc": {"extra": format!("{c}-upd")}})),
            ACME,
        ),
        (
            Method::POST,
            "/orders/_search".to_string(),
            Some(json!({"query": {"match": {"title": format!("{c}-query")}}})),
            ACME,
        ),
        (
            Method::POST,
            "/orders/_search?scroll=1m".to_string(),
            Some(json!({"query": {"term": {"secret": format!("{c}-term")}}})),
            ACME,
        ),
        (
            Method::POST,
            "/orders/_count".to_string(),
            Some(json!({"query": {"match": {"title": format!("{c}-count")}}})),
            ACME,
        ),
        (
            Method::POST,
            "/orders/_mget".to_string(),
            Some(json!({"ids": [format!("{c}-id1"), format!("{c}-id2")]})),
            ACME,
        ),
        (
            Method::POST,
            "/orders/_delete_by_query".to_string(),
            Some(json!({"query": {"term": {"title": format!("{c}-dbq")}}})),
            ACME,
        ),
        (
            Method::POST,
            "/orders/_search".to_string(),
            Some(json!({"query": {"script": {"script": {"source": format!("'{c}-script'")}}}})),
            ACME,
        ),
        (Method::DELETE, format!("/orders/_doc/{c}-id1"), None, ACME),
        (
            Method::PUT,
            format!("/dg-legacy-x/_doc/{c}-pt?refresh=true"),
            Some(doc.clone()),
            ACME,
        ),
        (Method::GET, format!("/orders/_doc/{c}-nope"), None, GLOBEX),
        (
            Method::GET,
            "/orders/_search".to_string(),
            None,
            "canary7f3a-not-a-token-0123",
        ),
    ]
}

/// With every request explained at the most verbose level, captured,
/// logged at debug and exported as spans, no canary value of a tenant's
/// documents, queries or ids and no token is recorded anywhere.
#[tokio::test(flavor = "multi_thread")]
async fn no_tenant_value_or_secret_appears_in_logs_explanations_metrics_or_spans() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let p = single(
        dir.path(),
        // `level` lands in `single`'s `[log]` table: the most verbose logs
        // are searched too.
        &format!(
            "level = \"debug\"\n[diagnostics]\nlog_all_requests = true\notlp_endpoint = \"http://{}\"\npartition_metrics = 10\n",
            receiver.addr
        ),
    );
    // Not ready by design (the "down" cluster never answers); it serves.
    let http = Http::new();
    let base = p.url();
    publish(
        &http,
        &p.admin_url(),
        json!({"directives": [{"id": "all", "level": "rewrite-diff", "expires_at": rfc3339(now() + 3600), "capture": true}]}),
    )
    .await;

    let c = "canary7f3a";
    let doc = json!({"title": format!("{c}-title"), "secret": format!("{c}-secret"), "n": 1});
    let mut rids = Vec::new();
    let mut go = |rid: &str| {
        rids.push(rid.to_string());
        rid.to_string()
    };
    let steps = leak_steps(c, &doc);
    let mut statuses = Vec::new();
    for (n, (method, path, body, token)) in steps.into_iter().enumerate() {
        let rid = go(&format!("leak-{n}"));
        let r = call(
            &http,
            &base,
            token,
            method.clone(),
            &path,
            body,
            &[("x-request-id", &rid)],
        )
        .await;
        assert!(
            !r.status.is_server_error(),
            "{method} {path}: {} {}",
            r.status,
            r.text()
        );
        statuses.push(r.status.as_u16());
    }
    // The requests did what they say: the writes and reads succeeded, the
    // refused script and the wrong token failed as they should.
    assert_eq!(&statuses[..4], &[201, 201, 200, 200], "{statuses:?}");
    assert_eq!(statuses[10], 400, "the script query: {statuses:?}");
    assert_eq!(
        statuses[13], 404,
        "globex reading acme's document: {statuses:?}"
    );
    assert_eq!(statuses[14], 401, "an unknown token: {statuses:?}");
    // Bulk and msearch (NDJSON).
    let bulk = format!(
        "{{\"index\":{{\"_index\":\"orders\",\"_id\":\"{c}-b1\"}}}}\n{}\n{{\"delete\":{{\"_index\":\"orders\",\"_id\":\"{c}-b2\"}}}}\n",
        doc
    );
    let rid = go("leak-bulk");
    post_ndjson(&http, &format!("{base}/_bulk"), ACME, bulk, &rid).await;
    let ms =
        format!("{{\"index\":\"orders\"}}\n{{\"query\":{{\"match\":{{\"title\":\"{c}-ms\"}}}}}}\n");
    let rid = go("leak-msearch");
    post_ndjson(&http, &format!("{base}/_msearch"), ACME, ms, &rid).await;

    // Everything recorded, gathered.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut recorded = String::new();
    let mut explained = 0;
    for rid in &rids {
        if let Some(e) = explain(&http, &p.admin_url(), rid).await {
            explained += 1;
            recorded.push_str(&e.to_string());
        }
    }
    let capture = call(
        &http,
        &p.admin_url(),
        OPS,
        Method::GET,
        "/v1/explain?directive=all",
        None,
        &[],
    )
    .await;
    recorded.push_str(&capture.text());
    let metrics = http
        .send(Method::GET, &format!("{}/metrics", p.admin_url()), None)
        .await
        .unwrap()
        .text();
    recorded.push_str(&metrics);
    let spans = receiver.spans();
    recorded.push_str(&receiver.raw());
    let log = p.log();
    recorded.push_str(&log);
    recorded.push_str(&p.stdout());

    assert!(
        explained >= rids.len() - 1,
        "only {explained} of {} explained",
        rids.len()
    );
    assert!(!spans.is_empty(), "no spans exported");
    assert!(
        log.contains("request explained"),
        "no explanation log lines: {log}"
    );
    assert!(
        metrics.contains("osproxy_partition_requests_total{partition=\"acme\"}"),
        "{metrics}"
    );
    for secret in [
        c,
        ACME,
        GLOBEX,
        OPS,
        "multi-token-0123456789",
        "not-a-token",
    ] {
        if let Some(at) = recorded.find(secret) {
            panic!(
                "{secret:?} was recorded: …{}…",
                &recorded[at.saturating_sub(300)..(at + 100).min(recorded.len())]
            );
        }
    }
}

/// (name, token, method, path, body, extra headers, failed stage, code,
/// retryable)
type Case<'a> = (
    &'a str,
    &'a str,
    Method,
    &'a str,
    Option<Value>,
    Vec<(&'a str, &'a str)>,
    &'a str,
    &'a str,
    bool,
);

/// A request failing at each stage, with what its explanation must say.
fn failure_cases() -> Vec<Case<'static>> {
    vec![
        (
            "no credentials",
            "",
            Method::GET,
            "/orders/_search",
            None,
            vec![],
            "authenticate",
            "unauthenticated",
            false,
        ),
        (
            "forbidden partition",
            "multi-token-0123456789",
            Method::GET,
            "/orders/_search",
            None,
            vec![("x-osproxy-partition", "globex")],
            "resolve",
            "partition_forbidden",
            false,
        ),
        (
            "unknown logical index",
            ACME,
            Method::GET,
            "/nowhere/_search",
            None,
            vec![],
            "resolve",
            "unsupported_endpoint",
            false,
        ),
        (
            "refused construct",
            ACME,
            Method::POST,
            "/orders/_search",
            Some(json!({"query": {"script": {"script": {"source": "1"}}}})),
            vec![],
            "rewrite",
            "construct_refused",
            false,
        ),
        (
            "upstream down",
            "multi-token-0123456789",
            Method::GET,
            "/orders/_doc/1",
            None,
            vec![("x-osproxy-partition", "downco")],
            "dispatch",
            "upstream_unavailable",
            true,
        ),
        (
            "upstream 4xx",
            ACME,
            Method::POST,
            "/orders/_search",
            Some(json!({"query": {"match": {"title": {"query": "x", "bogus_option": 1}}}})),
            vec![],
            "dispatch",
            "upstream_client_error",
            false,
        ),
    ]
}

/// The explanation of a failed request alone says at which stage it
/// failed, with which code, whether it is retryable and what to do, for
/// each failure kind, a stale epoch at dispatch included.
#[tokio::test(flavor = "multi_thread")]
async fn an_explanation_alone_diagnoses_each_failure_kind() {
    let dir = tempfile::tempdir().unwrap();
    let p = single(dir.path(), "");
    // Not ready by design (the "down" cluster never answers); it serves.
    let http = Http::new();
    let base = p.url();
    publish(
        &http,
        &p.admin_url(),
        json!({"directives": [{"id": "why", "level": "shape", "expires_at": rfc3339(now() + 3600)}]}),
    )
    .await;
    let cases = failure_cases();
    for (n, (what, token, method, path, body, extra, stage, code, retryable)) in
        cases.into_iter().enumerate()
    {
        let rid = format!("why-{n}");
        let mut headers = vec![("x-request-id", rid.as_str())];
        headers.extend(extra);
        let auth = format!("Bearer {token}");
        if !token.is_empty() {
            headers.push(("authorization", auth.as_str()));
        }
        let r = http
            .send_with(
                method,
                &format!("{base}{path}"),
                body.map(|b| Bytes::from(b.to_string())),
                &headers,
            )
            .await
            .unwrap();
        assert!(r.status.as_u16() >= 400, "{what}: {}", r.text());
        let e = explain(&http, &p.admin_url(), &rid)
            .await
            .unwrap_or_else(|| panic!("{what}: not explained"));
        let o = &e["outcome"];
        assert_eq!(o["ok"], false, "{what}: {e}");
        assert_eq!(o["failed_stage"], stage, "{what}: {e}");
        assert_eq!(o["code"], code, "{what}: {e}");
        assert_eq!(o["retryable"], retryable, "{what}: {e}");
        assert!(
            o["remediation"].as_str().is_some_and(|s| s.len() > 20),
            "{what}: {e}"
        );
        assert_eq!(o["status"], r.status.as_u16(), "{what}: {e}");
    }

    // Stale epoch: a write resolved under one placement whose body is
    // still arriving when the placement changes is refused at dispatch.
    let body = br#"{"title":"late","pad":"xxxxxxxxxxxxxxxxxxxxxxxx"}"#;
    let head = format!(
        "PUT /orders/_doc/stale1 HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ACME}\r\ncontent-type: application/json\r\nx-request-id: why-stale\r\ncontent-length: {}\r\n",
        body.len()
    );
    let answer =
        crate::gate::move_mid_upload(&p, &head, &body[..10], &body[10..], "dg-acme-own").await;
    assert!(answer.starts_with("HTTP/1.1 409"), "{answer}");
    assert!(answer.contains("stale_epoch"), "{answer}");
    let e = explain(&http, &p.admin_url(), "why-stale")
        .await
        .expect("stale write explained");
    let o = &e["outcome"];
    assert_eq!(o["failed_stage"], "dispatch", "{e}");
    assert_eq!(o["code"], "stale_epoch", "{e}");
    assert_eq!(o["retryable"], true, "{e}");
    // Nothing was written anywhere.
    for index in ["dg-shared", "dg-acme-own"] {
        let r = http
            .send(
                Method::GET,
                &format!("{}/{index}/_search?q=title:late", node().url()),
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            r.json()["hits"]["total"]["value"].as_u64().unwrap_or(0),
            0,
            "{index}: {}",
            r.text()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn otlp_spans_continue_the_callers_trace() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let p = single(
        dir.path(),
        &format!(
            "[diagnostics]\notlp_endpoint = \"http://{}\"\n",
            receiver.addr
        ),
    );
    // Not ready by design (the "down" cluster never answers); it serves.
    let http = Http::new();
    publish(
        &http,
        &p.admin_url(),
        json!({"directives": [{"id": "otel", "match": {"partition": "acme"}, "level": "timing", "expires_at": rfc3339(now() + 3600)}]}),
    )
    .await;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    search(&http, &p.url(), ACME, "otel-1", &[("traceparent", parent)]).await;
    search(
        &http,
        &p.url(),
        GLOBEX,
        "otel-2",
        &[("traceparent", parent)],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let spans = loop {
        let spans = receiver.spans();
        if !spans.is_empty() || Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let root = spans
        .iter()
        .find(|s| s.name == "osproxy search")
        .unwrap_or_else(|| panic!("{spans:?}"));
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(hex(&root.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&root.parent_span_id), "00f067aa0ba902b7");
    let attr = |k: &str| {
        root.attributes
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| a.value.as_ref())
            .and_then(|v| v.value.clone())
    };
    assert!(
        matches!(attr("osproxy.partition"), Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) if s == "acme")
    );
    let children: Vec<&str> = spans
        .iter()
        .filter(|s| s.parent_span_id == root.span_id)
        .map(|s| s.name.as_str())
        .collect();
    for stage in ["resolve", "dispatch"] {
        assert!(children.contains(&stage), "{children:?}");
    }
    // Only the selected request was exported.
    assert_eq!(
        spans
            .iter()
            .filter(|s| s.name.starts_with("osproxy "))
            .count(),
        1,
        "{spans:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn directives_reach_bulk_cursors_passthrough_and_early_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = single(dir.path(), "");
    // Not ready by design (the "down" cluster never answers); it serves.
    let http = Http::new();
    let base = p.url();
    let far = rfc3339(now() + 3600);
    publish(
        &http,
        &p.admin_url(),
        json!({"directives": [
            {"id": "bulk", "match": {"partition": "acme", "endpoint": "bulk"}, "level": "shape", "expires_at": far},
            {"id": "scroll", "match": {"partition": "acme", "endpoint": "scroll"}, "level": "shape", "expires_at": far},
            {"id": "pt", "match": {"principal": "globex-svc", "endpoint": "document"}, "level": "shape", "expires_at": far},
            {"id": "early", "match": {"endpoint": "search"}, "level": "shape", "expires_at": far}
        ]}),
    )
    .await;
    let auth = format!("Bearer {ACME}");
    let bulk = "{\"index\":{\"_index\":\"orders\",\"_id\":\"b1\"}}\n{\"n\":1}\n";
    let r = http
        .send_with(
            Method::POST,
            &format!("{base}/_bulk?refresh=true"),
            Some(bulk.into()),
            &[
                ("authorization", &auth),
                ("content-type", "application/x-ndjson"),
                ("x-request-id", "sel-bulk"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let e = explain(&http, &p.admin_url(), "sel-bulk")
        .await
        .expect("bulk selected");
    assert_eq!(e["selected_by"], json!(["bulk"]));

    let r = call(
        &http,
        &base,
        ACME,
        Method::POST,
        "/orders/_search?scroll=1m&size=1",
        Some(json!({"query": {"match_all": {}}})),
        &[],
    )
    .await;
    let scroll_id = r.json()["_scroll_id"].as_str().unwrap().to_string();
    call(
        &http,
        &base,
        ACME,
        Method::POST,
        "/_search/scroll",
        Some(json!({"scroll": "1m", "scroll_id": scroll_id})),
        &[("x-request-id", "sel-scroll")],
    )
    .await;
    let e = explain(&http, &p.admin_url(), "sel-scroll")
        .await
        .expect("scroll continuation selected");
    assert_eq!(e["partition"], "acme");

    call(
        &http,
        &base,
        GLOBEX,
        Method::PUT,
        "/dg-legacy-sel/_doc/1",
        Some(json!({"n": 1})),
        &[("x-request-id", "sel-pt")],
    )
    .await;
    let e = explain(&http, &p.admin_url(), "sel-pt")
        .await
        .expect("passthrough selected");
    assert!(
        e["stages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["route"] == "passthrough"),
        "{e}"
    );

    let r = http
        .send_with(
            Method::GET,
            &format!("{base}/orders/_search"),
            None,
            &[
                ("authorization", "Bearer wrong-token-0123456789"),
                ("x-request-id", "sel-early"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    let e = explain(&http, &p.admin_url(), "sel-early")
        .await
        .expect("an error before resolution selected");
    assert_eq!(e["outcome"]["failed_stage"], "authenticate");
}
