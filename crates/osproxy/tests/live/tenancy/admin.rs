//! Logical index management and placements changed at runtime.

use http::Method;
use osproxy_testkit::As;
use serde_json::{json, Value};

use super::*;
use crate::common::node;

/// A fleet tagged `tag` in which acme has created the shared logical index
/// `orders` with `title` as text.
async fn with_orders(tag: &str) -> Fleet {
    let f = Fleet::start(&node().url(), tag);
    let created = f
        .client("acme-svc")
        .put(
            "/orders",
            &json!({"mappings": {"properties": {"title": {"type": "text"}}}}),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text());
    assert_eq!(created.json()["index"], "orders");
    f
}

/// The status of `HEAD path` straight on the shared node.
async fn on_node_head(path: &str) -> u16 {
    direct(&node().url(), Method::HEAD, path)
        .await
        .status
        .as_u16()
}

/// A tenant creates the shared logical index (physically the shared index,
/// the partition field as keyword) but may not shape it for the others in
/// it; a second tenant sees that it exists, with no physical name.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_creates_the_shared_logical_index_but_may_not_shape_it() {
    let f = Fleet::start(&node().url(), "admin");
    let acme = f.client("acme-svc");
    assert_eq!(acme.head("/orders").await.status, 404);
    // A tenant may not shape the shared index for the others in it.
    for body in [
        json!({"settings": {"number_of_shards": 1}, "mappings": {"properties": {"title": {"type": "text"}}}}),
        json!({"aliases": {"everyone": {}}}),
        json!({"settings": {"index.default_pipeline": "p"}}),
        json!({"mappings": {"dynamic_templates": [{"s": {"match": "*", "mapping": {"type": "keyword"}}}]}}),
        json!({"mappings": {"properties": {"t": {"type": "text", "copy_to": "_tenant"}}}}),
        json!({"mappings": {"properties": {"o": {"properties": {"t": {"type": "text", "copy_to": "x"}}}}}}),
    ] {
        let refused = acme.put("/orders", &body).await;
        assert_eq!(refused.status, 403, "{body}: {}", refused.text());
        assert_eq!(
            refused.json()["error"]["type"],
            "operator_required",
            "{body}"
        );
    }
    let created = acme
        .put(
            "/orders",
            &json!({"mappings": {"properties": {"title": {"type": "text"}}}}),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text());
    assert_eq!(created.json()["index"], "orders");
    assert_eq!(acme.head("/orders").await.status, 200);
    // Physically: the shared index, with the partition field as keyword.
    let physical = on_node("/t-admin-shared/_mapping").await.json();
    assert_eq!(
        physical["t-admin-shared"]["mappings"]["properties"]["_tenant"]["type"],
        "keyword"
    );
    // A field the catalogue does not declare is the operator's to add.
    let undeclared = acme
        .put(
            "/orders",
            &json!({"mappings": {"properties": {"title": {"type": "keyword"}}}}),
        )
        .await;
    assert_eq!(undeclared.status, 403, "{}", undeclared.text());
    // A second tenant sees the same logical index exists.
    let again = f.client("globex-svc").put("/orders", &json!({})).await;
    assert_eq!(again.status, 400, "{}", again.text());
    assert_eq!(
        again.json()["error"]["type"],
        "resource_already_exists_exception"
    );
    assert!(!again.text().contains("t-admin-shared"), "{}", again.text());
    // Found by review: the reason named `[orders/<uuid>]`, the uuid every
    // tenant of the shared index would see alike.
    let uuid = index_uuid("t-admin-shared").await;
    assert!(!again.text().contains(&uuid), "{}", again.text());
    // Nor may a tenant plant an alias field to a metadata field.
    let alias = f
        .client("globex-svc")
        .put(
            "/orders",
            &json!({"mappings": {"properties": {"ix": {"type": "alias", "path": "_index"}}}}),
        )
        .await;
    assert_eq!(alias.status, 403, "{}", alias.text());
    assert!(alias.text().contains("alias"), "{}", alias.text());
}

/// Tenants see the catalogue's declared mapping, not the physical one: a
/// field only globex's documents created stays invisible to acme; and the
/// settings under the logical name only.
#[tokio::test(flavor = "multi_thread")]
async fn tenants_see_the_declared_mapping_and_logical_settings() {
    let f = with_orders("admm").await;
    let acme = f.client("acme-svc");
    let w = f
        .client("globex-svc")
        .put("/orders/_doc/m1", &json!({"globex_only_field": 1}))
        .await;
    assert_eq!(w.status, 201, "{}", w.text());
    let mapping = acme.get("/orders/_mapping").await.json();
    assert!(
        !mapping.to_string().contains("globex_only_field"),
        "{mapping}"
    );
    assert_eq!(
        mapping["orders"]["mappings"]["properties"]["title"]["type"], "text",
        "{mapping}"
    );
    assert!(
        mapping["orders"]["mappings"]["properties"]
            .get("_tenant")
            .is_none(),
        "{mapping}"
    );
    let settings = acme.get("/orders/_settings").await;
    assert!(
        settings.json().get("orders").is_some() && !settings.text().contains("t-admm-shared"),
        "{}",
        settings.text()
    );
    // Found by review: the shared index's uuid and creation date, alike
    // for all its tenants, came through (nested and flat).
    let uuid = index_uuid("t-admm-shared").await;
    let r = acme.get("/orders/_settings").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(!text.contains(&uuid), "{text}");
    assert!(!text.contains("creation_date"), "{text}");
    // Only what describes the logical index is shown.
    let index = r.json()["orders"]["settings"]["index"].clone();
    assert_eq!(index["number_of_shards"], "1", "{text}");
    let mut keys: Vec<String> = index
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    keys.retain(|k| !["number_of_shards", "number_of_replicas"].contains(&k.as_str()));
    assert!(keys.is_empty(), "{text}");
}

/// The shared mapping is the operators' to extend, never with the
/// partition field; tenants refresh the shared index but may not delete it.
#[tokio::test(flavor = "multi_thread")]
async fn the_shared_mapping_is_for_operators_and_the_shared_index_stays() {
    let f = with_orders("admo").await;
    let acme = f.client("acme-svc");
    let ops = f.client("ops").with("x-osproxy-partition", "acme");
    let add = json!({"properties": {"qty": {"type": "integer"}}});
    let r = acme.put("/orders/_mapping", &add).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = ops.put("/orders/_mapping", &add).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = ops
        .put(
            "/orders/_mapping",
            &json!({"properties": {"_tenant": {"type": "text"}}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // Refresh; delete refused for the shared placement.
    assert_eq!(acme.post_empty("/orders/_refresh").await.status, 200);
    let r = acme.delete("/orders").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(on_node_head("/t-admo-shared").await, 200);
}

/// A dedicated index is created, and deleted, for its partition only: the
/// shared index stays.
#[tokio::test(flavor = "multi_thread")]
async fn a_dedicated_index_is_created_and_deleted_for_its_partition_only() {
    let f = with_orders("admd").await;
    let initech = f.client("multi-svc").with("x-osproxy-partition", "initech");
    let r = initech
        .put(
            "/orders",
            &json!({"mappings": {"properties": {"x": {"type": "keyword"}}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(on_node_head("/t-admd-initech").await, 200);
    let r = initech.delete("/orders").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(on_node_head("/t-admd-initech").await, 404);
    assert_eq!(on_node_head("/t-admd-shared").await, 200);
}

/// The operator's client for the admin listener of `f`.
fn operator(f: &Fleet) -> As {
    As::at(&f.proxy.admin_url(), token("ops"))
}

/// The admin API is for operators only: a tenant's token is not accepted.
#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_is_for_operators_only() {
    let f = Fleet::start(&node().url(), "rta");
    let r = As::at(&f.proxy.admin_url(), token("acme-svc"))
        .get("/v1/placements/orders")
        .await;
    assert_eq!(r.status, 401);
    let r = operator(&f).get("/v1/placements/orders").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["default"]["kind"], "shared");
}

/// A placement set while the proxy runs is served at once; changing it is a
/// compare-and-swap: an absent epoch on an existing entry, or a stale one,
/// is a 409 with the current entry; the current epoch wins.
#[tokio::test(flavor = "multi_thread")]
async fn a_placement_set_at_runtime_is_served_and_changed_by_compare_and_swap() {
    let f = Fleet::start(&node().url(), "rt");
    let ops = operator(&f);
    // Give partition hooli its own index, while the proxy runs.
    let own = json!({"kind": "index", "cluster": "main", "index": "t-rt-hooli"});
    let r = ops.put("/v1/placements/orders/hooli", &own).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let epoch = r.json()["epoch"].as_u64().unwrap();
    let put = f
        .gateway_for("hooli")
        .put("/orders/_doc/1?refresh=true", &json!({"n": 1}))
        .await;
    assert_eq!(put.status, 201, "{}", put.text());
    assert_eq!(
        on_node("/t-rt-hooli/_doc/1").await.json()["_source"],
        json!({"n": 1}),
        "served from the new placement without a restart"
    );
    // Compare-and-swap: absent epoch on an existing entry, or a stale one, is a 409 with the current entry.
    let elsewhere = json!({"kind": "index", "cluster": "main", "index": "t-rt-hooli-2"});
    let r = ops.put("/v1/placements/orders/hooli", &elsewhere).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["current"]["epoch"], epoch);
    let stale = format!("/v1/placements/orders/hooli?epoch={}", epoch + 100);
    let r = ops.put(&stale, &elsewhere).await;
    assert_eq!(r.status, 409, "{}", r.text());
    let current = format!("/v1/placements/orders/hooli?epoch={epoch}");
    let r = ops.put(&current, &elsewhere).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["epoch"].as_u64().unwrap() > epoch);
}

/// A runtime placement that would put a partition into the shared index as
/// its own, or onto an unknown cluster, is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_runtime_placement_into_the_shared_index_or_an_unknown_cluster_is_refused() {
    let f = Fleet::start(&node().url(), "rts");
    let ops = operator(&f);
    let steal = json!({"kind": "index", "cluster": "main", "index": "t-rts-shared"});
    let r = ops.put("/v1/placements/orders/wayne", &steal).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let nowhere = json!({"kind": "cluster", "cluster": "nope"});
    let r = ops.put("/v1/placements/orders/wayne", &nowhere).await;
    assert_eq!(r.status, 400, "{}", r.text());
}

/// The catalogue changes at runtime too: a logical index added is served at
/// once, changed by compare-and-swap only, refused with an ambiguous id
/// template or another logical index's shared index, and removed.
#[tokio::test(flavor = "multi_thread")]
async fn a_logical_index_is_added_served_and_removed_at_runtime() {
    let f = Fleet::start(&node().url(), "rtc");
    let ops = operator(&f);
    let acme = f.client("acme-svc");
    let notes = json!({"default": {"kind": "shared", "cluster": "main", "index": "t-rtc-notes"}});
    let r = ops.put("/v1/catalogue/notes", &notes).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let notes_epoch = r.json()["epoch"].as_u64().unwrap();
    let put = acme
        .put("/notes/_doc/1?refresh=true", &json!({"text": "hi"}))
        .await;
    assert_eq!(put.status, 201, "{}", put.text());
    let raw = on_node("/t-rtc-notes/_doc/acme:1?routing=acme")
        .await
        .json();
    assert_eq!(raw["_source"], json!({"_tenant": "acme", "text": "hi"}));
    let r = ops.put("/v1/catalogue/notes", &notes).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["current_epoch"], notes_epoch);
    let ambiguous = json!({"id": "{partition}-{id}", "default": {"kind": "shared", "cluster": "main", "index": "t-rtc-notes"}});
    let at_epoch = format!("/v1/catalogue/notes?epoch={notes_epoch}");
    let r = ops.put(&at_epoch, &ambiguous).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let stealing =
        json!({"default": {"kind": "shared", "cluster": "main", "index": "t-rtc-shared"}});
    let r = ops.put("/v1/catalogue/letters", &stealing).await;
    assert_eq!(
        r.status,
        400,
        "another logical index's shared index: {}",
        r.text()
    );
    let r = ops.delete(&at_epoch).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let gone = acme.get("/notes/_doc/1").await;
    assert_eq!(gone.status, 400, "{}", gone.text());
    assert_eq!(gone.json()["error"]["type"], "unsupported_endpoint");
}

#[tokio::test(flavor = "multi_thread")]
async fn ctl_reads_and_sets_placements() {
    let f = Fleet::start(&node().url(), "ctl");
    let ctl = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_osproxy"))
            .args([
                "ctl",
                "--admin",
                &f.proxy.admin_url(),
                "--token",
                "ops-token-0123456789",
            ])
            .args(args)
            .output()
            .unwrap()
    };
    let set = [
        "placement",
        "set",
        "orders",
        "stark",
        "--kind",
        "index",
        "--cluster",
        "main",
        "--index-name",
        "t-ctl-stark",
    ];
    let out = ctl(&set);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl(&["--json", "placement", "get", "orders", "stark"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["placement"]["index"], "t-ctl-stark");
    let epoch = v["epoch"].as_u64().unwrap();
    // A second set without the epoch loses the compare-and-swap.
    let out = ctl(&set);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("409"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut with_epoch: Vec<String> = set.iter().map(|s| s.to_string()).collect();
    with_epoch.extend(["--epoch".to_string(), epoch.to_string()]);
    with_epoch[9] = "t-ctl-stark-2".into();
    let out = ctl(&with_epoch.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl(&["placement", "list", "orders"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("stark") && table.contains("t-ctl-stark-2") && table.contains("(default)"),
        "{table}"
    );
    let spec = r#"{"default":{"kind":"shared","cluster":"main","index":"t-ctl-notes"}}"#;
    let out = ctl(&["catalogue", "put", "notes", "--spec", spec]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl(&["--json", "catalogue", "get", "notes"]);
    let notes: Value = serde_json::from_slice(&out.stdout).unwrap();
    let notes_epoch = notes["epoch"].as_u64().unwrap().to_string();
    let out = ctl(&["catalogue", "delete", "notes", "--epoch", &notes_epoch]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl(&["fleet"]);
    let fleet = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && fleet.contains(f.proxy.data_addr()),
        "{fleet}"
    );
    let out = ctl(&["--json", "catalogue", "get", "orders"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["id"], "{partition}:{id}");
    assert_eq!(v["default"]["index"], "t-ctl-shared");
    // Without an operator token: refused.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_osproxy"))
        .args([
            "ctl",
            "--admin",
            &f.proxy.admin_url(),
            "--token",
            "acme-token-0123456789",
            "placement",
            "list",
            "orders",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
