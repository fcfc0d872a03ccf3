//! The epoch gate: writes routed by a placement entry that changed before
//! they were dispatched are refused (409 `stale_epoch`, retryable) and
//! nothing is written.

use std::time::Duration;

use http::Method;
use osproxy_testkit::{Http, ProxyInstance};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::node;
use crate::control::{ACME, OPS};
use crate::diagnostics::single;

#[tokio::test(flavor = "multi_thread")]
async fn bulk_items_routed_by_a_changed_placement_are_refused_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let p = single(dir.path(), "");
    let http = Http::new();
    // Two items for acme (shared placement, epoch 0); the body is still
    // arriving when the operator gives acme its own index.
    let first = "{\"index\":{\"_index\":\"orders\",\"_id\":\"g1\"}}\n{\"title\":\"gated\"}\n";
    let rest = "{\"index\":{\"_index\":\"orders\",\"_id\":\"g2\"}}\n{\"title\":\"gated\"}\n";
    let head = format!(
        "POST /_bulk?refresh=true HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ACME}\r\ncontent-type: application/x-ndjson\r\ncontent-length: {}\r\n",
        first.len() + rest.len()
    );
    let text = move_mid_upload(
        &p,
        &head,
        first.as_bytes(),
        rest.as_bytes(),
        "gate-acme-own",
    )
    .await;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    // The response is chunked: find the JSON object inside.
    let json = &body[body.find('{').unwrap_or(0)..body.rfind('}').map_or(0, |i| i + 1)];
    let json: String = json
        .lines()
        .filter(|l| !l.chars().all(|c| c.is_ascii_hexdigit()))
        .collect();
    let v: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {text}"));
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{v}");
    // The item routed before the change is refused in place; the one that
    // arrived after it is routed by the new placement.
    assert_eq!(items[0]["index"]["status"], 409, "{v}");
    assert_eq!(items[0]["index"]["error"]["type"], "stale_epoch", "{v}");
    assert_eq!(items[1]["index"]["status"], 201, "{v}");
    assert_eq!(v["errors"], true);
    assert_eq!(
        gated(&http, "dg-shared").await,
        0,
        "nothing went to the old placement"
    );
    assert_eq!(
        gated(&http, "gate-acme-own").await,
        1,
        "only the item after the change"
    );
    // A retry is routed by the new placement and lands there.
    let auth = format!("Bearer {ACME}");
    let r = http
        .send_with(
            Method::POST,
            &format!("{}/_bulk?refresh=true", p.url()),
            Some(format!("{first}{rest}").into()),
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/x-ndjson"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(r.json()["errors"], false, "{}", r.text());
    assert_eq!(gated(&http, "gate-acme-own").await, 2);
    assert_eq!(gated(&http, "dg-shared").await, 0);
}

/// How many of this test's documents an index holds.
async fn gated(http: &Http, index: &str) -> u64 {
    let r = http
        .send(
            Method::GET,
            &format!("{}/{index}/_search?q=title:gated", node().url()),
            None,
        )
        .await
        .unwrap();
    r.json()["hits"]["total"]["value"].as_u64().unwrap_or(0)
}

/// Sends `head` (without its final blank line) and `first` of a request,
/// gives acme its own index `index` through the admin API while `rest` is
/// still to come, then sends `rest` and returns the whole raw answer.
pub(crate) async fn move_mid_upload(
    p: &ProxyInstance,
    head: &str,
    first: &[u8],
    rest: &[u8],
    index: &str,
) -> String {
    let mut conn = tokio::net::TcpStream::connect(p.data_addr()).await.unwrap();
    conn.write_all(format!("{head}connection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    conn.write_all(first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let auth = format!("Bearer {OPS}");
    let moved = Http::new()
        .send_with(
            Method::PUT,
            &format!("{}/v1/placements/orders/acme", p.admin_url()),
            Some(format!(r#"{{"kind":"index","cluster":"main","index":"{index}"}}"#).into()),
            &[("authorization", auth.as_str())],
        )
        .await
        .unwrap();
    assert_eq!(moved.status, 200, "{}", moved.text());
    conn.write_all(rest).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A shared bulk batch holding two partitions' items is gated by both
/// placement entries: when one partition moves while the body is still
/// arriving, its item (routed by the old entry) is refused in place rather
/// than riding on the other partition's gate into the index it left.
#[tokio::test(flavor = "multi_thread")]
async fn a_mixed_partition_batch_is_gated_by_every_partition_in_it() {
    use osproxy_testkit::{ConfigBuilder, Grant};
    let dir = tempfile::tempdir().unwrap();
    let gateway = "gate-gateway-token-0123456789";
    let ops = "gate-ops-token-0123456789";
    let p = ConfigBuilder::new(dir.path())
        .cluster("main", &node().url())
        .principal("gateway", gateway, Grant::Any)
        .principal("ops", ops, Grant::Operator)
        .raw("[[indices]]\nname = \"events\"\npartition = { body = \"tenant_id\" }\ndefault = { kind = \"shared\", cluster = \"main\", index = \"gm-shared\" }\n")
        .start(std::path::Path::new(env!("CARGO_BIN_EXE_osproxy")));
    // acme's and globex's items land in one batch for `gm-shared`.
    let first = "{\"index\":{\"_index\":\"events\",\"_id\":\"a1\"}}\n{\"tenant_id\":\"acme\",\"title\":\"mixed\"}\n\
                 {\"index\":{\"_index\":\"events\",\"_id\":\"g1\"}}\n{\"tenant_id\":\"globex\",\"title\":\"mixed\"}\n";
    let rest = "{\"index\":{\"_index\":\"events\",\"_id\":\"a2\"}}\n{\"tenant_id\":\"acme\",\"title\":\"mixed\"}\n";
    let mut conn = tokio::net::TcpStream::connect(p.data_addr()).await.unwrap();
    let head = format!(
        "POST /_bulk?refresh=true HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {gateway}\r\ncontent-type: application/x-ndjson\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        first.len() + rest.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(first.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // globex moves to an index of its own while the batch is still open.
    let moved = Http::new()
        .send_with(
            Method::PUT,
            &format!("{}/v1/placements/events/globex", p.admin_url()),
            Some(r#"{"kind":"index","cluster":"main","index":"gm-globex"}"#.into()),
            &[("authorization", &format!("Bearer {ops}"))],
        )
        .await
        .unwrap();
    assert_eq!(moved.status, 200, "{}", moved.text());
    conn.write_all(rest.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let json: String = body[body.find('{').unwrap_or(0)..body.rfind('}').map_or(0, |i| i + 1)]
        .lines()
        .filter(|l| !l.chars().all(|c| c.is_ascii_hexdigit()))
        .collect();
    let v: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {text}"));
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{v}");
    // globex's item was routed by the entry that changed: refused in place.
    assert_eq!(items[1]["index"]["status"], 409, "{v}");
    assert_eq!(items[1]["index"]["error"]["type"], "stale_epoch", "{v}");
    assert_eq!(items[1]["index"]["_id"], "g1", "{v}");
    // Nothing of globex's reached the index it left.
    let leaked = Http::new()
        .send(
            Method::GET,
            &format!("{}/gm-shared/_search?q=_tenant:globex", node().url()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        leaked.json()["hits"]["total"]["value"],
        0,
        "{}",
        leaked.text()
    );
}
