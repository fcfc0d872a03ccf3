//! Tenancy `_bulk`: items routed one by one, answered in order, streamed.

use http::Method;
use serde_json::json;

use super::*;
use crate::common::node;

/// One bulk of mixed items: each is routed (or refused) on its own and
/// answered in order under logical names; the landed items are checked in
/// their physical places; another tenant sees only its own.
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
    let ndjson_type = [("content-type", "application/x-ndjson")];
    let r = f
        .client("acme-svc")
        .raw(
            Method::POST,
            "/_bulk?refresh=true",
            Some(body.into()),
            &ndjson_type,
        )
        .await;
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
    let raw = on_node("/t-bulk-shared/_doc/acme:1?routing=acme")
        .await
        .json();
    assert_eq!(
        raw["_source"],
        json!({"_tenant": "acme", "title": "one", "n": 2})
    );
    let raw = on_node("/t-bulk-invoices/_doc/acme:1?routing=acme")
        .await
        .json();
    assert_eq!(raw["_source"], json!({"_tenant": "acme", "amount": 10}));
    let raw = on_node(&format!("/t-bulk-shared/_doc/acme:{auto_id}?routing=acme"))
        .await
        .json();
    assert_eq!(raw["_source"]["title"], "auto");
    for refused in ["acme:r", "globex:r", "acme:f", "acme:5"] {
        let r = on_node(&format!("/t-bulk-shared/_doc/{refused}?routing=acme")).await;
        assert_eq!(r.status, 404, "{refused} must not have been written");
    }
    let six = on_node("/t-bulk-shared/_doc/acme:6?routing=acme")
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
    let globex = f.client("globex-svc");
    let r = globex
        .raw(
            Method::POST,
            "/orders/_bulk?refresh=true",
            Some(body.into()),
            &[],
        )
        .await;
    assert_eq!(r.json()["errors"], false, "{}", r.text());
    let mine = globex.get("/orders/_count").await.json();
    assert_eq!(mine["count"], 1);
    let theirs = f.client("acme-svc").get("/orders/_count").await.json();
    assert_eq!(theirs["count"], 3);
}

/// An action line whose metadata OpenSearch cannot read or validate (an
/// unknown key, a bad or duplicate value, values that do not go together)
/// fails that item alone, with OpenSearch's message; OpenSearch would refuse
/// the whole batch it is sent in.
#[tokio::test(flavor = "multi_thread")]
async fn a_bad_metadata_line_fails_its_item_alone() {
    let f = Fleet::start(&node().url(), "bulkmeta");
    // Every bad line below makes OpenSearch refuse a whole `_bulk` (each was
    // checked against a real node); sent in one upstream batch with the good
    // lines, it would fail them too. Raw lines: some have duplicate keys.
    let lines: &[(&str, &str, Option<u64>)] = &[
        (r#"{"index":{"_index":"orders","_id":"m1"}}"#, "", Some(201)),
        (
            r#"{"index":{"_index":"orders","_id":"m2","colour":"red"}}"#,
            "unknown parameter [colour]",
            None,
        ),
        (
            r#"{"update":{"_index":"orders","_id":"m1","retry_on_conflict":3}}"#,
            "",
            Some(200),
        ),
        (
            r#"{"index":{"_index":"orders","_id":"m3","if_seq_no":0,"if_primary_term":1,"unknown_thing":true}}"#,
            "unknown parameter [unknown_thing]",
            None,
        ),
        (
            r#"{"create":{"_index":"orders","_id":"m4","require_alias":false}}"#,
            "",
            Some(201),
        ),
        (
            r#"{"index":{"_index":"orders","_id":"m5","version":"abc","version_type":"external"}}"#,
            "For input string: \"abc\"",
            None,
        ),
        (
            r#"{"index":{"_index":"orders","_id":"m6","op_type":"index","op_type":"create"}}"#,
            "duplicate field `op_type`",
            None,
        ),
        (
            r#"{"index":{"_index":"orders","_id":"m7","if_seq_no":1}}"#,
            "ifSeqNo is set, but primary term is [0]",
            None,
        ),
        (
            r#"{"delete":{"_index":"orders","_id":"m1","if_primary_term":2}}"#,
            "ifSeqNo is unassigned, but primary term is [2]",
            None,
        ),
        (
            r#"{"index":{"_index":"orders","_id":"m8","version":5}}"#,
            "internal versioning can not be used",
            None,
        ),
        (
            r#"{"index":{"_index":"orders","_id":"m9","version_type":"foo","version":1}}"#,
            "No version type match [foo]",
            None,
        ),
        (
            r#"{"index":{"_index":"orders","_id":"m10","require_alias":1}}"#,
            "not of boolean type",
            None,
        ),
        (
            r#"{"index":{"_index":"orders","_id":"m11","_source":5}}"#,
            "Expected one of [VALUE_BOOLEAN, START_OBJECT]",
            None,
        ),
        (
            r#"{"index":{"_index":"orders","_id":"m12","retry_on_conflict":[1]}}"#,
            "expected a simple value for field [retry_on_conflict]",
            None,
        ),
        (
            r#"{"create":{"_index":"orders","_id":"m13","version":3,"version_type":"external"}}"#,
            "create operations only support internal versioning",
            None,
        ),
        (
            r#"{"update":{"_index":"orders","_id":"m4","version":3}}"#,
            "Update requests do not support versioning",
            None,
        ),
        (
            r#"{"index":{"_index":"orders","_id":"m14","if_seq_no":-5,"if_primary_term":1}}"#,
            "sequence numbers must be non negative",
            None,
        ),
        (
            r#"{"index":{"_index":"orders","_id":"m15","version":99999999999999999999,"version_type":"external"}}"#,
            "out of range",
            None,
        ),
        // Lenient values OpenSearch accepts are forwarded in canonical form.
        (
            r#"{"index":{"_index":"orders","_id":"m16","version":"7","version_type":"external_gt"}}"#,
            "",
            Some(201),
        ),
        (
            r#"{"index":{"_index":"orders","_id":"m17","require_alias":"false","op_type":5,"_source":{"include":"a"}}}"#,
            "",
            Some(201),
        ),
    ];
    // Lines checked for the op and id they are sent with, update bodies,
    // ids: given with their source line where it matters.
    let long_id = "a".repeat(510);
    let long = format!(r#"{{"index":{{"_index":"orders","_id":"{long_id}"}}}}"#);
    // A number of 1,499 digits (Jackson reads 1,000 at most).
    let long_number = format!(
        "{{\"update\":{{\"_index\":\"orders\",\"_id\":\"m1\"}}}}\n{{\"doc\":{{\"n\":0.{}1}}}}",
        "0".repeat(1497)
    );
    let more: Vec<(&str, &str, Option<u64>)> = vec![
        // In a shared placement an `index` without `_id` is sent as `create`.
        (
            r#"{"index":{"_index":"orders","version":5,"version_type":"external"}}"#,
            "create operations only support internal versioning",
            None,
        ),
        (
            r#"{"index":{"_index":"orders","if_seq_no":1,"if_primary_term":1}}"#,
            "create operations do not support compare and set",
            None,
        ),
        (r#"{"delete":{"_index":"orders","_id":""}}"#, "must not be empty", None),
        // 510 bytes, over 512 with the partition prefix.
        (&long, "id is too long", None),
        (&long_number, "Number value length (1499) exceeds", None),
        (
            "{\"update\":{\"_index\":\"orders\",\"_id\":\"m1\"}}\n{}",
            "script or doc is missing",
            None,
        ),
        (
            "{\"update\":{\"_index\":\"orders\",\"_id\":\"m1\"}}\n{\"doc\":{\"n\":2},\"lang\":\"x\"}",
            "unknown field [lang]",
            None,
        ),
        (
            "{\"update\":{\"_index\":\"orders\",\"_id\":\"m1\"}}\n{\"doc\":{\"n\":3},\"detect_noop\":\"false\"}",
            "",
            Some(200),
        ),
    ];
    let lines: Vec<(&str, &str, Option<u64>)> = lines.iter().copied().chain(more).collect();
    let mut body = String::new();
    for (i, (action, _, _)) in lines.iter().enumerate() {
        body.push_str(action);
        body.push('\n');
        if !action.starts_with(r#"{"delete""#) && !action.contains('\n') {
            if action.starts_with(r#"{"update""#) {
                body.push_str(r#"{"doc":{"n":1}}"#);
            } else {
                body.push_str(&format!(r#"{{"title":"item {i}"}}"#));
            }
            body.push('\n');
        }
    }
    let r = f.bulk_as("acme-svc", body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["errors"], true, "{v}");
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), lines.len(), "{v}");
    for (item, (action, reason, ok)) in items.iter().zip(&lines) {
        let inner = item.as_object().unwrap().values().next().unwrap();
        match ok {
            Some(status) => assert_eq!(inner["status"], *status, "{action}: {item}"),
            None => {
                assert_eq!(inner["status"], 400, "{action}: {item}");
                let got = inner["error"]["reason"].as_str().unwrap_or("");
                assert!(got.contains(reason), "{action}: {item}");
            }
        }
    }
    assert_eq!(items[18]["index"]["_version"], 7, "{v}");
    for id in 1..=17 {
        let id = format!("m{id}");
        let found = ["m1", "m4", "m16", "m17"].contains(&id.as_str());
        let got = on_node(&format!("/t-bulkmeta-shared/_doc/acme:{id}?routing=acme")).await;
        assert_eq!(got.status == 200, found, "{id}: {}", got.text());
    }
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

/// Found by review: routed targets were cached under `index\0partition`,
/// so an item naming the index `events\u0000acme` (no such logical index)
/// took the cached target of an earlier `events` item for acme without its
/// own partition (its document named globex) being read or checked.
#[tokio::test(flavor = "multi_thread")]
async fn an_index_name_cannot_pose_as_a_cached_partition() {
    let f = Fleet::start(&node().url(), "bulkkey");
    let body = concat!(
        r#"{"index":{"_index":"events","_id":"e1"}}"#,
        "\n",
        r#"{"tenant_id":"acme","n":1}"#,
        "\n",
        r#"{"index":{"_index":"events\u0000acme","_id":"e2"}}"#,
        "\n",
        r#"{"tenant_id":"globex","n":2}"#,
        "\n",
    );
    let r = f.bulk_as("acme-svc", body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["items"][0]["index"]["status"], 201, "{v}");
    assert_eq!(v["items"][1]["index"]["status"], 400, "{v}");
    let reason = v["items"][1]["index"]["error"]["reason"]
        .as_str()
        .unwrap_or("");
    assert!(reason.contains("not a logical index"), "{reason}");
    let stored = on_node("/t-bulkkey-events/_count?q=n:2").await;
    assert_eq!(stored.json()["count"], 0, "{}", stored.text());
}

/// Found by review: OpenSearch refuses a whole `_bulk` when an update body
/// has a field name past its 50,000-character limit; sent in one batch
/// with good items, it failed them too. The item is refused alone.
#[tokio::test(flavor = "multi_thread")]
async fn an_update_body_past_opensearchs_name_limit_fails_its_item_alone() {
    let f = Fleet::start(&node().url(), "bulkname");
    let long = "n".repeat(60_000);
    let body = format!(
        "{}\n{}\n{}\n{{\"doc\":{{\"{long}\":1}}}}\n{}\n{}\n",
        r#"{"index":{"_index":"orders","_id":"n1"}}"#,
        r#"{"t":1}"#,
        r#"{"update":{"_index":"orders","_id":"n1"}}"#,
        r#"{"index":{"_index":"orders","_id":"n2"}}"#,
        r#"{"t":2}"#,
    );
    let r = f.bulk_as("acme-svc", body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let statuses: Vec<u64> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i.as_object().unwrap().values().next().unwrap()["status"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        statuses,
        [201, 400, 201],
        "{}",
        r.text().chars().take(2000).collect::<String>()
    );
    let reason = v["items"][1]["update"]["error"]["reason"]
        .as_str()
        .unwrap_or("");
    assert!(reason.contains("field name"), "{reason}");
}

/// The body of a chunked answer.
fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = raw;
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap_or("0").trim(), 16)
                .unwrap_or(0);
        rest = &rest[eol + 2..];
        if size == 0 || rest.len() < size {
            return out;
        }
        out.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
}

/// Found by review: a client that sends its whole bulk before it reads the
/// answer (as many HTTP/1.1 clients do) deadlocked once the answer filled
/// the socket: osproxy waited for the client to read before reading more
/// body, the client never finished sending, and the connection was cut at
/// `send_timeout` with items applied and unreported. The results now wait
/// in osproxy (counted in its memory budget) while the body is read.
#[test]
fn a_client_that_reads_only_after_sending_its_whole_bulk_gets_every_result() {
    use std::io::{Read, Write};
    let f = Fleet::start_with(
        &node().url(),
        "bulkwhole",
        "[server]\nsend_timeout = \"5s\"\n",
    );
    // The answer (about 170 bytes an item) outgrows what the sockets
    // buffer (some 10 MB on loopback) long before the body is sent.
    let n = 150_000;
    let mut body = String::new();
    for i in 0..n {
        body.push_str(&format!(
            "{{\"index\":{{\"_index\":\"orders\",\"_id\":\"w{i}\"}}}}\n{{\"n\":{i}}}\n"
        ));
    }
    let mut conn = std::net::TcpStream::connect(f.proxy.data_addr()).unwrap();
    conn.set_write_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let head = format!(
        "POST /_bulk HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/x-ndjson\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        super::token("acme-svc"),
        body.len()
    );
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(body.as_bytes())
        .expect("the whole body is taken while the answer waits");
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let answer: serde_json::Value = serde_json::from_slice(&dechunk(&raw[split + 4..]))
        .unwrap_or_else(|e| {
            let log = f.proxy.log();
            let tail: String = log
                .chars()
                .skip(log.chars().count().saturating_sub(3000))
                .collect();
            let end = String::from_utf8_lossy(&raw[raw.len().saturating_sub(300)..]).to_string();
            panic!(
                "{e} after {} bytes, ending {end:?}; proxy log: {tail}",
                raw.len()
            )
        });
    assert_eq!(answer["errors"], false);
    assert_eq!(answer["items"].as_array().unwrap().len(), n);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let refreshed = rt.block_on(on_node("/t-bulkwhole-shared/_refresh"));
    assert_eq!(refreshed.status, 200);
    let count = rt.block_on(on_node("/t-bulkwhole-shared/_count"));
    assert_eq!(count.json()["count"], n, "{}", count.text());
}
