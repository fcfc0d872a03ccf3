//! Scroll and PIT ids bound to their tenant.

use osproxy_testkit::As;
use serde_json::json;

use super::*;
use crate::common::node;

/// A fleet tagged `tag` where acme has written `acme_docs` documents
/// (`a0`, `a1`, ... with `n` = 0, 1, ...) and globex three (`g0`..`g2`),
/// all refreshed; with a client for each.
async fn seeded(tag: &str, acme_docs: u64) -> (Fleet, As, As) {
    let f = Fleet::start(&node().url(), tag);
    let (acme, globex) = (f.client("acme-svc"), f.client("globex-svc"));
    for i in 0..acme_docs {
        acme.put(&format!("/orders/_doc/a{i}"), &json!({"n": i}))
            .await;
    }
    for i in 0..3 {
        globex
            .put(&format!("/orders/_doc/g{i}"), &json!({"n": i}))
            .await;
    }
    acme.post_empty("/orders/_refresh").await;
    (f, acme, globex)
}

/// The ids of the hits of a search answer.
fn hit_ids(v: &serde_json::Value) -> Vec<String> {
    v["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["_id"].as_str().unwrap().to_string())
        .collect()
}

/// A scroll pages through a snapshot of its tenant's documents (a deletion
/// in between does not show), in logical form; another tenant, a tampered
/// id and a raw upstream id are refused, never dispatched; its tenant
/// clears it.
#[tokio::test(flavor = "multi_thread")]
async fn a_scroll_is_a_snapshot_of_its_tenants_documents_refused_to_anyone_else() {
    let (_f, acme, globex) = seeded("cur", 5).await;
    let first = acme
        .post(
            "/orders/_search?scroll=1m",
            &json!({"size": 2, "sort": [{"n": "asc"}]}),
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.text());
    let mut id = first.json()["_scroll_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("osp2."), "scroll id not wrapped: {id}");
    let mut seen = hit_ids(&first.json());
    acme.delete("/orders/_doc/a4?refresh=true").await;
    // Another tenant, a tampered id, a raw upstream id: refused, never dispatched.
    let r = globex
        .post("/_search/scroll", &json!({"scroll": "1m", "scroll_id": id}))
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let mut tampered = id.clone();
    tampered.insert(10, 'x');
    let r = acme
        .post("/_search/scroll", &json!({"scroll_id": tampered}))
        .await;
    assert!(r.status == 403 || r.status == 400, "{}", r.text());
    let raw = json!({"scroll_id": "FGluY2x1ZGVfY29udGV4dF91dWlk"});
    let r = acme.post("/_search/scroll", &raw).await;
    assert_eq!(r.status, 400, "{}", r.text());
    loop {
        let page = acme
            .post("/_search/scroll", &json!({"scroll": "1m", "scroll_id": id}))
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
        seen.extend(hit_ids(&page.json()));
        id = page.json()["_scroll_id"].as_str().unwrap().to_string();
    }
    assert_eq!(
        seen,
        ["a0", "a1", "a2", "a3", "a4"],
        "the scroll is a snapshot of acme's documents only"
    );
    let r = acme
        .delete_json("/_search/scroll", &json!({"scroll_id": [id]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["succeeded"], true);
}

/// Clearing `_all` scrolls closes the caller's own scrolls, not another
/// tenant's.
#[tokio::test(flavor = "multi_thread")]
async fn clearing_all_scrolls_clears_only_the_callers_own() {
    let (_f, acme, globex) = seeded("cura", 5).await;
    let one = json!({"size": 1});
    let mine = acme.post("/orders/_search?scroll=1m", &one).await.json();
    let theirs = globex.post("/orders/_search?scroll=1m", &one).await.json();
    let r = acme.delete("/_search/scroll/_all").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["num_freed"].as_u64().unwrap_or(0) >= 1,
        "{}",
        r.text()
    );
    let r = acme
        .post(
            "/_search/scroll",
            &json!({"scroll": "1m", "scroll_id": mine["_scroll_id"]}),
        )
        .await;
    assert_eq!(r.status, 404, "acme's scroll was cleared: {}", r.text());
    let r = globex
        .post(
            "/_search/scroll",
            &json!({"scroll": "1m", "scroll_id": theirs["_scroll_id"]}),
        )
        .await;
    assert_eq!(
        r.status,
        200,
        "globex's scroll must survive acme's _all: {}",
        r.text()
    );
}

/// A scroll is cleared by its id in the path (`DELETE /_search/scroll/<id>`,
/// as the Go client sends it); another tenant's id there is refused and its
/// scroll survives.
#[tokio::test(flavor = "multi_thread")]
async fn a_scroll_is_cleared_by_its_id_in_the_path() {
    let (_f, acme, globex) = seeded("curp", 5).await;
    let one = json!({"size": 1});
    let mine = acme.post("/orders/_search?scroll=1m", &one).await.json();
    let theirs = globex.post("/orders/_search?scroll=1m", &one).await.json();
    let theirs_id = theirs["_scroll_id"].as_str().unwrap();
    let r = acme.delete(&format!("/_search/scroll/{theirs_id}")).await;
    assert!(r.status == 403 || r.status == 404, "{}", r.text());
    // Mixed with one of its own, the other tenant's id refuses the whole.
    let id = mine["_scroll_id"].as_str().unwrap();
    let r = acme
        .delete(&format!("/_search/scroll/{id},{theirs_id}"))
        .await;
    assert!(r.status == 403 || r.status == 404, "{}", r.text());
    let r = acme.delete(&format!("/_search/scroll/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["succeeded"], true, "{}", r.text());
    assert_eq!(r.json()["num_freed"], 1, "{}", r.text());
    let again = json!({"scroll": "1m", "scroll_id": id});
    assert_eq!(acme.post("/_search/scroll", &again).await.status, 404);
    let survives = json!({"scroll": "1m", "scroll_id": theirs_id});
    assert_eq!(globex.post("/_search/scroll", &survives).await.status, 200);
}

/// A point in time pages (with search_after sorting) through its tenant's
/// documents only; another tenant may neither search nor close it; a
/// search naming no index and no PIT is refused; its tenant closes it.
#[tokio::test(flavor = "multi_thread")]
async fn a_pit_sees_its_tenants_documents_and_is_refused_to_anyone_else() {
    let (_f, acme, globex) = seeded("curp", 4).await;
    let pit = acme
        .post_empty("/orders/_search/point_in_time?keep_alive=1m")
        .await;
    assert_eq!(pit.status, 200, "{}", pit.text());
    let pit_id = pit.json()["pit_id"].as_str().unwrap().to_string();
    assert!(pit_id.starts_with("osp2."));
    // Found by review: the id was signed, not sealed, and its payload
    // named the shared index, the cluster and the upstream PIT id (which
    // carries the index's uuid). None of it can be read from the id now.
    let uuid = index_uuid("t-curp-shared").await;
    let sealed = osproxy_core::b64::decode_url(pit_id.trim_start_matches("osp2.")).unwrap();
    let readable = String::from_utf8_lossy(&sealed);
    for secret in ["t-curp-shared", uuid.as_str(), "\"x\""] {
        assert!(!readable.contains(secret), "{secret} readable in {pit_id}");
    }
    let page = acme.post("/_search", &json!({"size": 10, "pit": {"id": pit_id, "keep_alive": "1m"}, "sort": [{"n": "asc"}], "query": {"match_all": {}}})).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let ids: Vec<&str> = page.json()["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["_id"].as_str().unwrap_or(""))
        .map(|s| if s.starts_with('a') { "a" } else { "other" })
        .collect::<Vec<_>>();
    assert_eq!(ids, ["a", "a", "a", "a"], "{}", page.text());
    assert!(page.json()["pit_id"].as_str().unwrap().starts_with("osp2."));
    let r = globex
        .post("/_search", &json!({"pit": {"id": pit_id}}))
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = acme
        .post("/_search", &json!({"query": {"match_all": {}}}))
        .await;
    assert_eq!(
        r.status,
        400,
        "a search naming no index and no PIT: {}",
        r.text()
    );
    let close = json!({"pit_id": [pit_id]});
    let r = globex.delete_json("/_search/point_in_time", &close).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = acme.delete_json("/_search/point_in_time", &close).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["pits"][0]["successful"], true, "{}", r.text());
    assert_eq!(r.json()["pits"][0]["pit_id"], pit_id);
}

/// Closing `_all` PITs closes the caller's own PITs only.
#[tokio::test(flavor = "multi_thread")]
async fn closing_all_pits_closes_only_the_callers_own() {
    let (_f, acme, globex) = seeded("curq", 5).await;
    let open = "/orders/_search/point_in_time?keep_alive=1m";
    let mine = acme.post_empty(open).await.json();
    let theirs = globex.post_empty(open).await.json();
    let r = acme.delete("/_search/point_in_time/_all").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["pits"][0]["pit_id"],
        mine["pit_id"],
        "{}",
        r.text()
    );
    let still = globex
        .post("/_search", &json!({"pit": {"id": theirs["pit_id"]}}))
        .await;
    assert_eq!(
        still.status,
        200,
        "globex's PIT must survive acme's _all: {}",
        still.text()
    );
}
