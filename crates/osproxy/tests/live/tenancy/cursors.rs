//! Scroll and PIT ids bound to their tenant.

use http::Method;
use serde_json::json;

use super::*;
use crate::common::node;

#[tokio::test(flavor = "multi_thread")]
async fn scroll_and_pit_are_bound_to_their_tenant() {
    let f = Fleet::start(&node().url(), "cur");
    for i in 0..5 {
        f.call(
            "acme-svc",
            Method::PUT,
            &format!("/orders/_doc/a{i}"),
            Some(json!({"n": i})),
            &[],
        )
        .await;
    }
    for i in 0..3 {
        f.call(
            "globex-svc",
            Method::PUT,
            &format!("/orders/_doc/g{i}"),
            Some(json!({"n": i})),
            &[],
        )
        .await;
    }
    f.call("acme-svc", Method::POST, "/orders/_refresh", None, &[])
        .await;

    // Scroll across pages, with a deletion in between.
    let first = f
        .call(
            "acme-svc",
            Method::POST,
            "/orders/_search?scroll=1m",
            Some(json!({"size": 2, "sort": [{"n": "asc"}]})),
            &[],
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.text());
    let mut id = first.json()["_scroll_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("osp1."), "scroll id not wrapped: {id}");
    let mut seen: Vec<String> = first.json()["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["_id"].as_str().unwrap().to_string())
        .collect();
    f.call(
        "acme-svc",
        Method::DELETE,
        "/orders/_doc/a4?refresh=true",
        None,
        &[],
    )
    .await;
    // Another tenant, a tampered id, a raw upstream id: refused, never dispatched.
    let r = f
        .call(
            "globex-svc",
            Method::POST,
            "/_search/scroll",
            Some(json!({"scroll": "1m", "scroll_id": id})),
            &[],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let mut tampered = id.clone();
    tampered.insert(10, 'x');
    let r = f
        .call(
            "acme-svc",
            Method::POST,
            "/_search/scroll",
            Some(json!({"scroll_id": tampered})),
            &[],
        )
        .await;
    assert!(r.status == 403 || r.status == 400, "{}", r.text());
    let r = f
        .call(
            "acme-svc",
            Method::POST,
            "/_search/scroll",
            Some(json!({"scroll_id": "FGluY2x1ZGVfY29udGV4dF91dWlk"})),
            &[],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    loop {
        let page = f
            .call(
                "acme-svc",
                Method::POST,
                "/_search/scroll",
                Some(json!({"scroll": "1m", "scroll_id": id})),
                &[],
            )
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
        seen.extend(hits.iter().map(|h| h["_id"].as_str().unwrap().to_string()));
        id = page.json()["_scroll_id"].as_str().unwrap().to_string();
    }
    assert_eq!(
        seen,
        ["a0", "a1", "a2", "a3", "a4"],
        "the scroll is a snapshot of acme's documents only"
    );
    let r = f
        .call(
            "acme-svc",
            Method::DELETE,
            "/_search/scroll",
            Some(json!({"scroll_id": [id]})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["succeeded"], true);
    // `_all` closes the caller's own scrolls, not another tenant's.
    let mine = f
        .call(
            "acme-svc",
            Method::POST,
            "/orders/_search?scroll=1m",
            Some(json!({"size": 1})),
            &[],
        )
        .await
        .json();
    let theirs = f
        .call(
            "globex-svc",
            Method::POST,
            "/orders/_search?scroll=1m",
            Some(json!({"size": 1})),
            &[],
        )
        .await
        .json();
    let r = f
        .call(
            "acme-svc",
            Method::DELETE,
            "/_search/scroll/_all",
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["num_freed"].as_u64().unwrap_or(0) >= 1,
        "{}",
        r.text()
    );
    let r = f
        .call(
            "acme-svc",
            Method::POST,
            "/_search/scroll",
            Some(json!({"scroll": "1m", "scroll_id": mine["_scroll_id"]})),
            &[],
        )
        .await;
    assert_eq!(r.status, 404, "acme's scroll was cleared: {}", r.text());
    let r = f
        .call(
            "globex-svc",
            Method::POST,
            "/_search/scroll",
            Some(json!({"scroll": "1m", "scroll_id": theirs["_scroll_id"]})),
            &[],
        )
        .await;
    assert_eq!(
        r.status,
        200,
        "globex's scroll must survive acme's _all: {}",
        r.text()
    );

    // Point in time: open, page with search_after, refuse others, close.
    let pit = f
        .call(
            "acme-svc",
            Method::POST,
            "/orders/_search/point_in_time?keep_alive=1m",
            None,
            &[],
        )
        .await;
    assert_eq!(pit.status, 200, "{}", pit.text());
    let pit_id = pit.json()["pit_id"].as_str().unwrap().to_string();
    assert!(pit_id.starts_with("osp1."));
    let page = f.call("acme-svc", Method::POST, "/_search", Some(json!({"size": 10, "pit": {"id": pit_id, "keep_alive": "1m"}, "sort": [{"n": "asc"}], "query": {"match_all": {}}})), &[]).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let ids: Vec<&str> = page.json()["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["_id"].as_str().unwrap_or(""))
        .map(|s| if s.starts_with('a') { "a" } else { "other" })
        .collect::<Vec<_>>();
    assert_eq!(ids, ["a", "a", "a", "a"], "{}", page.text());
    assert!(page.json()["pit_id"].as_str().unwrap().starts_with("osp1."));
    let r = f
        .call(
            "globex-svc",
            Method::POST,
            "/_search",
            Some(json!({"pit": {"id": pit_id}})),
            &[],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = f
        .call(
            "acme-svc",
            Method::POST,
            "/_search",
            Some(json!({"query": {"match_all": {}}})),
            &[],
        )
        .await;
    assert_eq!(
        r.status,
        400,
        "a search naming no index and no PIT: {}",
        r.text()
    );
    let r = f
        .call(
            "globex-svc",
            Method::DELETE,
            "/_search/point_in_time",
            Some(json!({"pit_id": [pit_id]})),
            &[],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = f
        .call(
            "acme-svc",
            Method::DELETE,
            "/_search/point_in_time",
            Some(json!({"pit_id": [pit_id]})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["pits"][0]["successful"], true, "{}", r.text());
    assert_eq!(r.json()["pits"][0]["pit_id"], pit_id);
    // `_all` closes the caller's own PITs only.
    let mine = f
        .call(
            "acme-svc",
            Method::POST,
            "/orders/_search/point_in_time?keep_alive=1m",
            None,
            &[],
        )
        .await
        .json();
    let theirs = f
        .call(
            "globex-svc",
            Method::POST,
            "/orders/_search/point_in_time?keep_alive=1m",
            None,
            &[],
        )
        .await
        .json();
    let r = f
        .call(
            "acme-svc",
            Method::DELETE,
            "/_search/point_in_time/_all",
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["pits"][0]["pit_id"],
        mine["pit_id"],
        "{}",
        r.text()
    );
    let still = f
        .call(
            "globex-svc",
            Method::POST,
            "/_search",
            Some(json!({"pit": {"id": theirs["pit_id"]}})),
            &[],
        )
        .await;
    assert_eq!(
        still.status,
        200,
        "globex's PIT must survive acme's _all: {}",
        still.text()
    );
}
