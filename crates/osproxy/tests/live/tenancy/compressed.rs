//! Compressed bodies on tenancy routes: gzip and deflate request bodies
//! (a document, a search, a streamed bulk) are decoded and confined like
//! plain ones; answers are gzip-compressed for a client that accepts it;
//! a gzip bomb gets 413 at `server.max_decompressed_body` with the proxy's
//! memory bounded, and a truncated stream or another coding a clear 400.

use std::io::{Read, Write};
use std::process::Command;

use bytes::Bytes;
use http::Method;
use serde_json::{json, Value};

use super::*;
use crate::common::node;

fn gzip(data: &[u8]) -> Bytes {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap().into()
}

fn zlib(data: &[u8]) -> Bytes {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap().into()
}

fn raw_deflate(data: &[u8]) -> Bytes {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap().into()
}

fn gunzip(data: &[u8]) -> Value {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    serde_json::from_slice(&out).unwrap()
}

const JSON: (&str, &str) = ("content-type", "application/json");
const NDJSON: (&str, &str) = ("content-type", "application/x-ndjson");

#[tokio::test(flavor = "multi_thread")]
async fn gzip_and_deflate_bodies_are_decoded_confined_and_answers_compressed() {
    let tag = "gz";
    let f = Fleet::start(&node().url(), tag);
    let acme = f.client("acme-svc");
    let globex = f.client("globex-svc");

    // A document in each coding (deflate as zlib and as raw deflate, both
    // of which clients send under that name).
    for (id, coding, body) in [
        ("g1", "gzip", gzip(br#"{"title":"gzip doc"}"#)),
        ("g2", "deflate", zlib(br#"{"title":"zlib doc"}"#)),
        (
            "g3",
            "deflate",
            raw_deflate(br#"{"title":"raw deflate doc"}"#),
        ),
        ("g4", "x-gzip", gzip(br#"{"title":"x-gzip doc"}"#)),
    ] {
        let r = acme
            .raw(
                Method::PUT,
                &format!("/orders/_doc/{id}"),
                Some(body),
                &[JSON, ("content-encoding", coding)],
            )
            .await;
        assert_eq!(r.status, 201, "{id}: {}", r.text());
    }
    // A streamed bulk of 2,000 documents, gzip, in one request.
    let mut bulk = String::new();
    for i in 0..2000 {
        bulk.push_str(&format!(
            "{{\"index\":{{\"_id\":\"b{i}\"}}}}\n{{\"title\":\"bulk {i}\"}}\n"
        ));
    }
    let r = acme
        .raw(
            Method::POST,
            "/orders/_bulk?refresh=true",
            Some(gzip(bulk.as_bytes())),
            &[NDJSON, ("content-encoding", "gzip")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    assert_eq!(answer["errors"], false, "{}", r.text());
    assert_eq!(answer["items"].as_array().unwrap().len(), 2000);

    // Stored as any document of acme's: partition injected, id prefixed.
    let stored = on_node(&format!("/t-{tag}-shared/_doc/acme:g3?routing=acme")).await;
    assert_eq!(
        stored.json()["_source"],
        json!({"_tenant": "acme", "title": "raw deflate doc"}),
        "{}",
        stored.text()
    );

    // A gzip search body, and a gzip answer for a client that accepts it.
    let query = json!({"query": {"match_all": {}}, "size": 3, "track_total_hits": true});
    let r = acme
        .raw(
            Method::POST,
            "/orders/_search",
            Some(gzip(query.to_string().as_bytes())),
            &[
                JSON,
                ("content-encoding", "gzip"),
                ("accept-encoding", "gzip, deflate"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert!(r
        .headers
        .get_all("vary")
        .iter()
        .any(|v| v.to_str().unwrap_or("").contains("Accept-Encoding")));
    let found = gunzip(&r.body);
    assert_eq!(found["hits"]["total"]["value"], 2004, "{found}");
    for hit in found["hits"]["hits"].as_array().unwrap() {
        assert!(hit["_source"].get("_tenant").is_none(), "{hit}");
        assert!(!hit["_id"].as_str().unwrap().contains(':'), "{hit}");
    }
    // The streamed bulk answer compressed too.
    let r = acme
        .raw(
            Method::POST,
            "/orders/_bulk",
            Some(Bytes::from_static(
                b"{\"index\":{\"_id\":\"z1\"}}\n{\"title\":\"z\"}\n",
            )),
            &[NDJSON, ("accept-encoding", "gzip")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&r.body)["items"][0]["index"]["_id"], "z1");
    // Not asked for (or refused with q=0): plain.
    for accept in [None, Some("identity"), Some("gzip;q=0"), Some("br")] {
        let extra: Vec<(&str, &str)> = accept.map(|a| ("accept-encoding", a)).into_iter().collect();
        let r = acme.raw(Method::GET, "/orders/_doc/g1", None, &extra).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), None, "{accept:?}");
        assert_eq!(r.json()["_source"]["title"], "gzip doc");
    }
    // Confinement holds for compressed bodies: globex sees none of it.
    let r = globex
        .raw(
            Method::POST,
            "/orders/_count",
            Some(gzip(br#"{"query":{"match_all":{}}}"#)),
            &[JSON, ("content-encoding", "gzip")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["count"], 0, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gzip_bomb_a_truncated_stream_and_other_codings_are_refused() {
    let tag = "gzbomb";
    let f = Fleet::start_with(
        &node().url(),
        tag,
        "[server]\nmax_decompressed_body = \"8mb\"\n",
    );
    let acme = f.client("acme-svc");
    // 1 GiB of zeros: about 1 MiB compressed (gzip, C zlib: quick).
    let dir = tempfile::tempdir().unwrap();
    let bomb_file = dir.path().join("bomb.gz");
    let made = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c 1073741824 /dev/zero | gzip -9 > {}",
            bomb_file.display()
        ))
        .status()
        .unwrap();
    assert!(made.success());
    let bomb = Bytes::from(std::fs::read(&bomb_file).unwrap());
    assert!(bomb.len() < 2 * 1024 * 1024, "{}", bomb.len());
    let (rss_before, _) = f.proxy.rss_kib().unwrap();
    for (method, path, ct) in [
        (Method::PUT, "/orders/_doc/bomb", JSON),
        (Method::POST, "/orders/_bulk", NDJSON),
        (Method::POST, "/orders/_search", JSON),
    ] {
        let r = acme
            .raw(
                method,
                path,
                Some(bomb.clone()),
                &[ct, ("content-encoding", "gzip")],
            )
            .await;
        assert_eq!(r.status, 413, "{path}: {}", r.text());
        let e = r.json();
        assert_eq!(e["error"]["type"], "request_too_large", "{path}: {e}");
        assert!(
            e["error"]["reason"]
                .as_str()
                .unwrap()
                .contains("max_decompressed_body"),
            "{path}: {e}"
        );
    }
    // Bounded by the limit, not by the 1 GiB the bomb decodes to: a
    // non-bulk body is held decoded (8 MiB, and its copy into one buffer).
    let (_, peak) = f.proxy.rss_kib().unwrap();
    let grown_mib = peak.saturating_sub(rss_before) / 1024;
    assert!(
        grown_mib < 40,
        "RSS grew {grown_mib} MiB on a gzip bomb (from {rss_before} KiB)"
    );

    // A truncated stream, data after its end, a bad checksum: 400, and
    // nothing written.
    let good = gzip(br#"{"title":"never stored"}"#);
    let mut bad_crc = good.to_vec();
    let n = bad_crc.len();
    bad_crc[n - 8] ^= 0xff;
    for (what, body) in [
        ("truncated", good.slice(..good.len() - 4)),
        ("trailing data", Bytes::from([&good[..], b"{}"].concat())),
        ("bad checksum", Bytes::from(bad_crc)),
        ("not gzip", Bytes::from_static(br#"{"title":"plain"}"#)),
    ] {
        let r = acme
            .raw(
                Method::PUT,
                "/orders/_doc/broken?refresh=true",
                Some(body),
                &[JSON, ("content-encoding", "gzip")],
            )
            .await;
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert_eq!(r.json()["error"]["type"], "bad_request", "{what}");
        assert!(r.text().contains("gzip"), "{what}: {}", r.text());
    }
    // A truncated bulk stream: nothing of it applied.
    let mut bulk = String::new();
    for i in 0..50 {
        bulk.push_str(&format!(
            "{{\"index\":{{\"_id\":\"t{i}\"}}}}\n{{\"n\":{i}}}\n"
        ));
    }
    let whole = gzip(bulk.as_bytes());
    let r = acme
        .raw(
            Method::POST,
            "/orders/_bulk?refresh=true",
            Some(whole.slice(..whole.len() - 3)),
            &[NDJSON, ("content-encoding", "gzip")],
        )
        .await;
    assert!(r.text().contains("truncated"), "{}: {}", r.status, r.text());
    for id in ["t0", "t49"] {
        let got = on_node(&format!("/t-{tag}-shared/_doc/acme:{id}?routing=acme")).await;
        assert_eq!(got.status, 404, "{id}: {}", got.text());
    }
    // A truncated bulk long enough that batches were sent before the body
    // broke off: the answer says so (errors, and an item where reading
    // stopped), and exactly the items it answers 2xx are stored.
    let mut bulk = String::new();
    for i in 0..3000 {
        bulk.push_str(&format!(
            "{{\"index\":{{\"_id\":\"u{i}\"}}}}\n{{\"tail\":1,\"n\":{i},\"pad\":\"{}\"}}\n",
            "x".repeat(i % 97)
        ));
    }
    let whole = gzip(bulk.as_bytes());
    let r = acme
        .raw(
            Method::POST,
            "/orders/_bulk?refresh=true",
            Some(whole.slice(..whole.len() * 9 / 10)),
            &[NDJSON, ("content-encoding", "gzip")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    assert_eq!(answer["errors"], true, "{}", r.text());
    let items = answer["items"].as_array().unwrap();
    let applied = items
        .iter()
        .filter(|i| i["index"]["status"].as_u64().is_some_and(|s| s < 300))
        .count();
    assert!((1000..3000).contains(&applied), "{applied} applied");
    let last = &items[items.len() - 1]["index"];
    assert!(
        last["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("not read past"),
        "{last}"
    );
    let stored = Http::new()
        .send(
            Method::POST,
            &format!("{}/t-{tag}-shared/_count", node().url()),
            Some(r#"{"query":{"term":{"tail":1}}}"#),
        )
        .await
        .unwrap();
    assert_eq!(stored.json()["count"], applied as u64, "{}", stored.text());
    let got = on_node(&format!("/t-{tag}-shared/_doc/acme:broken?routing=acme")).await;
    assert_eq!(got.status, 404, "{}", got.text());
    // Codings osproxy does not decode are refused by name.
    let r = acme
        .raw(
            Method::PUT,
            "/orders/_doc/twice",
            Some(gzip(br#"{"title":"x"}"#)),
            &[
                JSON,
                ("content-encoding", "gzip"),
                ("content-encoding", "gzip"),
            ],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("several content-encoding"),
        "{}",
        r.text()
    );
    for coding in ["br", "zstd", "gzip, gzip"] {
        let r = acme
            .raw(
                Method::PUT,
                "/orders/_doc/other",
                Some(Bytes::from_static(b"\x00\x01")),
                &[JSON, ("content-encoding", coding)],
            )
            .await;
        assert_eq!(r.status, 400, "{coding}: {}", r.text());
        assert!(r.text().contains(coding), "{coding}: {}", r.text());
    }
}

/// `server.max_decompressed_body` bounds one request; the sum of all of
/// them is bounded by `server.max_buffered_total` (default 512 MiB). 32
/// requests at once, each ~100 KB of gzip decoding to 99 MiB (searches
/// held whole, bulks whose one line is 99 MiB), would hold over 3 GiB: past
/// the budget they are refused 503 `overloaded` (retryable, Retry-After),
/// and the proxy's peak RSS grows by far less than their sum.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_compressed_bodies_are_bounded_by_the_process_budget() {
    let _turn = crate::common::one_heavy_test_at_a_time().await;
    let tag = "gzmany";
    let f = Fleet::start(&node().url(), tag);
    let pad = "x".repeat(99 * 1024 * 1024);
    let search = gzip(format!(r#"{{"query":{{"match_all":{{}}}},"pad":"{pad}"}}"#).as_bytes());
    let bulk =
        gzip(format!("{{\"index\":{{\"_id\":\"b\",\"pad\":\"{pad}\"}}}}\n{{}}\n").as_bytes());
    drop(pad);
    assert!(search.len() < 200 * 1024 && bulk.len() < 200 * 1024);
    let (_, peak_before) = f.proxy.rss_kib().unwrap();
    let acme = f.client("acme-svc");
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..32 {
        let (path, body, ct) = if i % 2 == 0 {
            ("/orders/_search", search.clone(), JSON)
        } else {
            ("/orders/_bulk", bulk.clone(), NDJSON)
        };
        let client = f.client("acme-svc");
        calls.spawn(async move {
            let r = client
                .raw(
                    Method::POST,
                    path,
                    Some(body),
                    &[ct, ("content-encoding", "gzip")],
                )
                .await;
            (path, r)
        });
    }
    let answers = calls.join_all().await;
    let (_, peak) = f.proxy.rss_kib().unwrap();
    let mut overloaded = 0;
    for (path, r) in &answers {
        let v = r.json();
        // A search is refused whole; a bulk answers 200 with its item
        // refused (an unknown metadata key) or not read (the budget).
        let kind = if *path == "/orders/_bulk" && r.status == 200 {
            v["items"][0]["index"]["error"]["type"].clone()
        } else {
            v["error"]["type"].clone()
        };
        match kind.as_str() {
            Some("overloaded") => {
                overloaded += 1;
                if r.status == 503 {
                    assert_eq!(v["error"]["osproxy"]["retryable"], true, "{v}");
                    assert_eq!(r.headers["retry-after"], "1", "{v}");
                }
            }
            Some("construct_refused" | "illegal_argument_exception" | "bad_request") => {}
            _ => panic!("{path}: {} {}", r.status, r.text()),
        }
    }
    assert!(overloaded > 0, "no request was refused by the budget");
    let grown_mib = peak.saturating_sub(peak_before) / 1024;
    eprintln!("32 bodies of 99 MiB decoded: peak RSS grew {grown_mib} MiB, {overloaded} refused");
    assert!(
        grown_mib < 512,
        "peak RSS grew {grown_mib} MiB on 32 bodies of 99 MiB decoded ({overloaded} refused by the budget)"
    );
    // The budget is given back: the same search alone is read again.
    let r = acme
        .raw(
            Method::POST,
            "/orders/_search",
            Some(search),
            &[JSON, ("content-encoding", "gzip")],
        )
        .await;
    assert_ne!(r.json()["error"]["type"], "overloaded", "{}", r.text());
}

/// What the budget counts is what is held: a body that announces 100 MiB
/// and sends nothing holds nothing; a small body that parses into millions
/// of values (`_mget` ids, `_msearch` lines, two bytes each) is charged for
/// the tree it would build, and refused 503 before it is built.
#[tokio::test(flavor = "multi_thread")]
async fn the_budget_counts_parsed_values_and_not_announced_lengths() {
    use tokio::io::AsyncWriteExt;
    let tag = "gzparse";
    let f = Fleet::start(&node().url(), tag);
    let acme = f.client("acme-svc");
    let gauge = "osproxy_buffered_request_bytes";
    // Two requests announce 100 MiB each and send nothing.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(f.proxy.data_addr())
            .await
            .unwrap();
        let head = format!(
            "POST /orders/_search HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 104857600\r\n\r\n{{",
            token("acme-svc")
        );
        s.write_all(head.as_bytes()).await.unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let held = crate::common::metric(&f.proxy, gauge).await.unwrap();
    assert!(
        held < 1024.0 * 1024.0,
        "{gauge} {held} with two bodies stalled"
    );
    // 99 MiB of `_mget` ids and of `_msearch` lines, ~100 KB of gzip each.
    let (rss, _) = f.proxy.rss_kib().unwrap();
    let ids = format!("{{\"ids\":[{}0]}}", "0,".repeat(99 * 512 * 1024));
    let lines = "{}\n".repeat(33 * 1024 * 1024);
    for (path, body, ct) in [
        ("/orders/_mget", gzip(ids.as_bytes()), JSON),
        ("/orders/_msearch", gzip(lines.as_bytes()), NDJSON),
    ] {
        let r = acme
            .raw(
                Method::POST,
                path,
                Some(body),
                &[ct, ("content-encoding", "gzip")],
            )
            .await;
        assert_eq!(r.status, 503, "{path}: {}", r.text());
        assert_eq!(
            r.json()["error"]["type"],
            "overloaded",
            "{path}: {}",
            r.text()
        );
    }
    let (_, peak) = f.proxy.rss_kib().unwrap();
    let grown_mib = peak.saturating_sub(rss) / 1024;
    eprintln!("99 MiB of _mget ids and _msearch lines, refused: peak RSS grew {grown_mib} MiB");
    assert!(grown_mib < 512, "peak RSS grew {grown_mib} MiB");
    drop(stalled);
    // Nothing stays charged.
    crate::common::wait_metric(&f.proxy, gauge, 0.0, std::time::Duration::from_secs(10)).await;
}

/// The cluster's answers osproxy reads whole (to reverse them) are charged
/// to the budget too (a search's is not read whole: it streams): a read
/// whose answer the budget cannot cover is not
/// read further and is refused 503 `overloaded` (retryable: nothing
/// changed), while one it covers is answered; a write's answer is always
/// read and told; and the charge is given back afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn the_clusters_answers_read_whole_are_charged_to_the_budget() {
    let tag = "gzanswer";
    let f = Fleet::start_with(
        &node().url(),
        tag,
        "[server]\nmax_buffered_total = \"4mb\"\n",
    );
    let acme = f.client("acme-svc");
    let pad = "y".repeat(700 * 1024);
    for i in 0..3 {
        let r = acme
            .put(
                &format!("/orders/_doc/big{i}?refresh=true"),
                &json!({"title": "big", "pad": pad}),
            )
            .await;
        assert!(r.status == 200 || r.status == 201, "{}", r.text());
    }
    // One document's answer (~0.7 MiB, counted twice) is covered.
    let r = acme.get("/orders/_doc/big0").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["_source"]["pad"].as_str().map(str::len),
        Some(pad.len())
    );
    // A search streams, reversed one hit at a time: three of them in one
    // answer are covered.
    let r = acme
        .raw(
            Method::POST,
            "/orders/_search",
            Some(Bytes::from_static(
                br#"{"query":{"match_all":{}},"size":3}"#,
            )),
            &[JSON],
        )
        .await;
    assert_eq!(r.status, 200, "{}", &r.text()[..r.text().len().min(300)]);
    let hits = r.json()["hits"]["hits"].as_array().cloned().unwrap();
    assert_eq!(hits.len(), 3);
    for h in &hits {
        assert_eq!(h["_index"], "orders", "{}", h["_id"]);
        assert!(h["_source"].get("_tenant").is_none(), "{}", h["_id"]);
        assert_eq!(h["_source"]["pad"].as_str().map(str::len), Some(pad.len()));
    }
    // An `_mget` of one target streams the same way: covered.
    let r = acme
        .raw(
            Method::POST,
            "/orders/_mget",
            Some(Bytes::from_static(br#"{"ids":["big0","big1","big2"]}"#)),
            &[JSON],
        )
        .await;
    assert_eq!(r.status, 200, "{}", &r.text()[..r.text().len().min(300)]);
    let docs = r.json()["docs"].as_array().cloned().unwrap();
    assert_eq!(docs.len(), 3);
    for d in &docs {
        assert_eq!(d["_index"], "orders");
        assert!(d["_source"].get("_tenant").is_none());
        assert_eq!(d["_source"]["pad"].as_str().map(str::len), Some(pad.len()));
    }
    // An `_mget` of two targets has each target's answer read whole: three
    // of those documents (~2.1 MiB, counted twice) are not covered.
    let r = acme
        .raw(
            Method::POST,
            "/_mget",
            Some(Bytes::from_static(
                br#"{"docs":[{"_index":"orders","_id":"big0"},{"_index":"orders","_id":"big1"},{"_index":"orders","_id":"big2"},{"_index":"invoices","_id":"none"}]}"#,
            )),
            &[JSON],
        )
        .await;
    assert_eq!(r.status, 503, "{}", &r.text()[..r.text().len().min(300)]);
    let v = r.json();
    assert_eq!(v["error"]["type"], "overloaded", "{v}");
    assert_eq!(v["error"]["osproxy"]["retryable"], true, "{v}");
    assert_eq!(r.headers["retry-after"], "1", "{v}");
    assert!(
        v["error"]["reason"]
            .as_str()
            .is_some_and(|s| s.contains("answer") && s.contains("max_buffered_total")),
        "{v}"
    );
    // A bulk whose answers add up to more than the budget is applied and
    // told in full.
    let mut bulk = String::new();
    for i in 0..6000 {
        bulk.push_str(&format!(
            "{{\"index\":{{\"_index\":\"orders\",\"_id\":\"small-{i}\"}}}}\n{{\"title\":\"t\"}}\n"
        ));
    }
    let r = f.bulk_as("acme-svc", bulk).await;
    assert_eq!(r.status, 200, "{}", &r.text()[..r.text().len().min(300)]);
    let v = r.json();
    assert_eq!(
        v["errors"],
        false,
        "{}",
        &r.text()[..r.text().len().min(600)]
    );
    assert_eq!(v["items"].as_array().map(Vec::len), Some(6000));
    // Everything is given back.
    let gauge = "osproxy_buffered_request_bytes";
    let mut held = f64::MAX;
    for _ in 0..50 {
        held = crate::common::metric(&f.proxy, gauge).await.unwrap();
        if held == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(held, 0.0, "{gauge} after every answer was sent");
}

/// A search answer streams through tenancy, reversed one hit at a time: a
/// 100 MiB answer grows the proxy's memory by far less than its size, and
/// every hit is still reversed (logical index and id, partition field
/// gone).
#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_mib_search_answer_streams_through_tenancy_in_bounded_memory() {
    let _turn = crate::common::one_heavy_test_at_a_time().await;
    const MIB: usize = 1024 * 1024;
    let tag = "bigsearch";
    let f = Fleet::start(&node().url(), tag);
    let acme = f.client("acme-svc");
    // The shared index is made through the proxy; the bulk of the data goes
    // to the node directly, so loading it does not touch the proxy's peak.
    let r = acme
        .put("/orders/_doc/seed?refresh=true", &json!({"title": "seed"}))
        .await;
    assert!(r.status == 200 || r.status == 201, "{}", r.text());
    let filler = "x".repeat(100_000);
    let docs = 1050;
    let mut bulk = String::with_capacity(106 * MIB);
    for i in 0..docs {
        bulk.push_str(
            &json!({"index": {"_id": format!("acme:big{i}"), "routing": "acme"}}).to_string(),
        );
        bulk.push('\n');
        bulk.push_str(&json!({"_tenant": "acme", "title": "big", "pad": filler}).to_string());
        bulk.push('\n');
    }
    let r = Http::new()
        .send_with(
            Method::POST,
            &format!("{}/t-{tag}-shared/_bulk?refresh=true", node().url()),
            Some(bulk.into()),
            &[("content-type", "application/x-ndjson")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["errors"], false);
    // Warm the path.
    let r = acme.get("/orders/_search?size=1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (rss_before, _) = f.proxy.rss_kib().unwrap();
    // The proxy's peak RSS since before the first large answer.
    let peak_within = |what: &str| {
        let (_, peak) = f.proxy.rss_kib().unwrap();
        let grown_mib = peak.saturating_sub(rss_before) / 1024;
        eprintln!("{what}: proxy RSS {rss_before} KiB before, peak {peak} KiB (+{grown_mib} MiB)");
        assert!(grown_mib < 16, "peak RSS grew {grown_mib} MiB {what}");
    };
    let large = |r: &osproxy_testkit::HttpResponse| {
        assert_eq!(r.status, 200, "{}", &r.text()[..r.text().len().min(300)]);
        assert!(
            r.body.len() >= 100 * MIB,
            "answer of {} bytes",
            r.body.len()
        );
    };
    let r = acme
        .raw(
            Method::POST,
            "/orders/_search",
            Some(Bytes::from(format!(
                r#"{{"size":{},"query":{{"match":{{"title":"big"}}}}}}"#,
                docs
            ))),
            &[JSON],
        )
        .await;
    large(&r);
    let v = r.json();
    let hits = v["hits"]["hits"].as_array().unwrap();
    assert_eq!(hits.len(), docs);
    for h in hits {
        assert_eq!(h["_index"], "orders");
        let id = h["_id"].as_str().unwrap();
        assert!(id.starts_with("big"), "{id}");
        assert!(h["_source"].get("_tenant").is_none(), "{id}");
        assert!(h.get("_routing").is_none(), "{id}");
    }
    peak_within(&format!(
        "after a {} MiB search answer through tenancy",
        r.body.len() / MIB
    ));

    // A scroll's later page and a point in time's page stream the same way
    // (they were read whole: +100 MiB and more for pages this size).
    let big_page = |r: &osproxy_testkit::HttpResponse, what: &str| {
        assert_eq!(
            r.status,
            200,
            "{what}: {}",
            &r.text()[..r.text().len().min(300)]
        );
        let v = r.json();
        let hits = v["hits"]["hits"].as_array().unwrap();
        assert_eq!(hits.len(), docs / 2, "{what}");
        for h in hits {
            assert_eq!(h["_index"], "orders", "{what}");
            assert!(h["_id"].as_str().unwrap().starts_with("big"), "{what}");
            assert!(h["_source"].get("_tenant").is_none(), "{what}");
        }
        v
    };
    let page = format!(
        r#"{{"size":{},"query":{{"match":{{"title":"big"}}}}}}"#,
        docs / 2
    );
    let r = acme
        .raw(
            Method::POST,
            "/orders/_search?scroll=1m",
            Some(Bytes::from(page.clone())),
            &[JSON],
        )
        .await;
    let first = big_page(&r, "a scroll's first page");
    let id = first["_scroll_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("osp2."), "{id}");
    drop((r, first));
    let r = acme
        .raw(
            Method::POST,
            "/_search/scroll",
            Some(Bytes::from(
                json!({"scroll": "1m", "scroll_id": id}).to_string(),
            )),
            &[JSON],
        )
        .await;
    let second = big_page(&r, "a scroll's second page");
    assert!(second["_scroll_id"].as_str().unwrap().starts_with("osp2."));
    drop((r, second));
    let pit = acme
        .post_empty("/orders/_search/point_in_time?keep_alive=1m")
        .await;
    assert_eq!(pit.status, 200, "{}", pit.text());
    let pit_id = pit.json()["pit_id"].as_str().unwrap().to_string();
    let r = acme
        .raw(
            Method::POST,
            "/_search",
            Some(Bytes::from(
                json!({"size": docs / 2, "pit": {"id": pit_id, "keep_alive": "1m"}, "query": {"match": {"title": "big"}}})
                    .to_string(),
            )),
            &[JSON],
        )
        .await;
    let paged = big_page(&r, "a point in time's page");
    assert!(paged["pit_id"].as_str().unwrap().starts_with("osp2."));
    drop((r, paged));
    peak_within(&format!(
        "after a scroll's pages and a PIT page of {} hits",
        docs / 2
    ));

    // An `_mget` of every document and an `_msearch` of two halves stream
    // the same way, one document (one hit) held at a time, each reversed
    // in its client position.
    let ids: Vec<String> = (0..docs).map(|i| format!("big{i}")).collect();
    let mut mget_ids = ids.clone();
    mget_ids.insert(3, "not-there".into());
    let r = acme
        .raw(
            Method::POST,
            "/orders/_mget",
            Some(Bytes::from(json!({"ids": mget_ids}).to_string())),
            &[JSON],
        )
        .await;
    large(&r);
    let v = r.json();
    let got = v["docs"].as_array().unwrap();
    assert_eq!(got.len(), docs + 1);
    for (d, want) in got.iter().zip(&mget_ids) {
        assert_eq!(d["_index"], "orders");
        assert_eq!(d["_id"].as_str(), Some(want.as_str()));
        assert_eq!(d["found"], want != "not-there", "{want}");
        assert!(d.get("_routing").is_none(), "{want}");
        if let Some(source) = d.get("_source") {
            assert!(source.get("_tenant").is_none(), "{want}");
            assert_eq!(source["title"], "big");
        }
    }
    drop((r, v));
    let half = json!({"size": docs / 2, "query": {"match": {"title": "big"}}, "sort": ["_doc"]});
    let mut nd = String::new();
    for from in [0, docs / 2] {
        nd.push_str("{\"index\":\"orders\"}\n");
        let mut page = half.clone();
        page["from"] = json!(from);
        nd.push_str(&page.to_string());
        nd.push('\n');
    }
    let r = acme
        .raw(Method::POST, "/_msearch", Some(Bytes::from(nd)), &[NDJSON])
        .await;
    large(&r);
    let v = r.json();
    assert!(v["took"].is_u64());
    let responses = v["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 2);
    let mut seen = std::collections::HashSet::new();
    for resp in responses {
        assert_eq!(resp["status"], 200);
        let hits = resp["hits"]["hits"].as_array().unwrap();
        assert_eq!(hits.len(), docs / 2);
        for h in hits {
            assert_eq!(h["_index"], "orders");
            assert!(h["_source"].get("_tenant").is_none());
            seen.insert(h["_id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(seen.len(), docs, "the two halves are every document once");
    drop((r, v));
    peak_within("after a 100 MiB _mget and _msearch");

    // A client that does not read a streamed answer holds its
    // `server.max_in_flight` slot while it waits (the slot was given back
    // when the handler returned, before the answer was sent).
    use tokio::io::AsyncWriteExt;
    let mut stalled = tokio::net::TcpStream::connect(f.proxy.data_addr())
        .await
        .unwrap();
    let body = format!(r#"{{"size":{docs},"query":{{"match":{{"title":"big"}}}}}}"#);
    let head = format!(
        "POST /orders/_search HTTP/1.1\r\nhost: osproxy\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        token("acme-svc"),
        body.len()
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(body.as_bytes()).await.unwrap();
    // Long past the answer's head: the stream is stuck on the client.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let held = crate::common::metric(&f.proxy, "osproxy_in_flight_requests").await;
    assert_eq!(
        held,
        Some(1.0),
        "a streamed answer the client does not read is in flight"
    );
    drop(stalled);
    let mut after = None;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        after = crate::common::metric(&f.proxy, "osproxy_in_flight_requests").await;
        if after == Some(0.0) {
            break;
        }
    }
    assert_eq!(
        after,
        Some(0.0),
        "the slot is given back when the client goes"
    );
}
