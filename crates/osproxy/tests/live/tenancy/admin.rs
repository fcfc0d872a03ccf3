//! Logical index management and placements changed at runtime.

use http::Method;
use serde_json::{json, Value};

use super::*;
use crate::common::node;

#[tokio::test(flavor = "multi_thread")]
async fn logical_index_management() {
    let f = Fleet::start(&node().url(), "admin");
    assert_eq!(
        f.call("acme-svc", Method::HEAD, "/orders", None, &[])
            .await
            .status,
        404
    );
    // A tenant may not shape the shared index for the others in it.
    for body in [
        json!({"settings": {"number_of_shards": 1}, "mappings": {"properties": {"title": {"type": "text"}}}}),
        json!({"aliases": {"everyone": {}}}),
        json!({"settings": {"index.default_pipeline": "p"}}),
        json!({"mappings": {"dynamic_templates": [{"s": {"match": "*", "mapping": {"type": "keyword"}}}]}}),
        json!({"mappings": {"properties": {"t": {"type": "text", "copy_to": "_tenant"}}}}),
        json!({"mappings": {"properties": {"o": {"properties": {"t": {"type": "text", "copy_to": "x"}}}}}}),
    ] {
        let refused = f
            .call("acme-svc", Method::PUT, "/orders", Some(body.clone()), &[])
            .await;
        assert_eq!(refused.status, 403, "{body}: {}", refused.text());
        assert_eq!(
            refused.json()["error"]["type"],
            "operator_required",
            "{body}"
        );
    }
    let created = f
        .call(
            "acme-svc",
            Method::PUT,
            "/orders",
            Some(json!({"mappings": {"properties": {"title": {"type": "text"}}}})),
            &[],
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text());
    assert_eq!(created.json()["index"], "orders");
    assert_eq!(
        f.call("acme-svc", Method::HEAD, "/orders", None, &[])
            .await
            .status,
        200
    );
    // Physically: the shared index, with the partition field as keyword.
    let physical = direct(&node().url(), Method::GET, "/t-admin-shared/_mapping")
        .await
        .json();
    assert_eq!(
        physical["t-admin-shared"]["mappings"]["properties"]["_tenant"]["type"],
        "keyword"
    );
    // A field the catalogue does not declare is the operator's to add.
    let undeclared = f
        .call(
            "acme-svc",
            Method::PUT,
            "/orders",
            Some(json!({"mappings": {"properties": {"title": {"type": "keyword"}}}})),
            &[],
        )
        .await;
    assert_eq!(undeclared.status, 403, "{}", undeclared.text());
    // Tenants see the catalogue's declared mapping, not the physical one:
    // a field only globex's documents created stays invisible to acme.
    let w = f
        .call(
            "globex-svc",
            Method::PUT,
            "/orders/_doc/m1",
            Some(json!({"globex_only_field": 1})),
            &[],
        )
        .await;
    assert_eq!(w.status, 201, "{}", w.text());
    let mapping = f
        .call("acme-svc", Method::GET, "/orders/_mapping", None, &[])
        .await
        .json();
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
    let settings = f
        .call("acme-svc", Method::GET, "/orders/_settings", None, &[])
        .await;
    assert!(
        settings.json().get("orders").is_some() && !settings.text().contains("t-admin-shared"),
        "{}",
        settings.text()
    );
    // A second tenant sees the same logical index exists.
    let again = f
        .call("globex-svc", Method::PUT, "/orders", Some(json!({})), &[])
        .await;
    assert_eq!(again.status, 400, "{}", again.text());
    assert_eq!(
        again.json()["error"]["type"],
        "resource_already_exists_exception"
    );
    assert!(!again.text().contains("t-admin-shared"), "{}", again.text());
    // The shared mapping: operators only; the partition field never.
    let add = json!({"properties": {"qty": {"type": "integer"}}});
    let r = f
        .call(
            "acme-svc",
            Method::PUT,
            "/orders/_mapping",
            Some(add.clone()),
            &[],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = f
        .call(
            "ops",
            Method::PUT,
            "/orders/_mapping",
            Some(add),
            &[("x-osproxy-partition", "acme")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = f
        .call(
            "ops",
            Method::PUT,
            "/orders/_mapping",
            Some(json!({"properties": {"_tenant": {"type": "text"}}})),
            &[("x-osproxy-partition", "acme")],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // Refresh; delete refused for the shared placement.
    assert_eq!(
        f.call("acme-svc", Method::POST, "/orders/_refresh", None, &[])
            .await
            .status,
        200
    );
    let r = f
        .call("acme-svc", Method::DELETE, "/orders", None, &[])
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        direct(&node().url(), Method::HEAD, "/t-admin-shared")
            .await
            .status,
        200
    );
    // A dedicated index: created, and deleted, for its partition only.
    let initech: &[(&str, &str)] = &[("x-osproxy-partition", "initech")];
    let r = f
        .call(
            "multi-svc",
            Method::PUT,
            "/orders",
            Some(json!({"mappings": {"properties": {"x": {"type": "keyword"}}}})),
            initech,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        direct(&node().url(), Method::HEAD, "/t-admin-initech")
            .await
            .status,
        200
    );
    let r = f
        .call("multi-svc", Method::DELETE, "/orders", None, initech)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        direct(&node().url(), Method::HEAD, "/t-admin-initech")
            .await
            .status,
        404
    );
    assert_eq!(
        direct(&node().url(), Method::HEAD, "/t-admin-shared")
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn placements_change_at_runtime_with_compare_and_swap() {
    let f = Fleet::start(&node().url(), "rt");
    let admin = |path: &str| format!("{}{path}", f.proxy.admin_url());
    let ops = [("authorization", "Bearer ops-token-0123456789")];
    // The admin API is for operators only.
    let r = f
        .http
        .send_with(
            Method::GET,
            &admin("/v1/placements/orders"),
            None,
            &[("authorization", "Bearer acme-token-0123456789")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    let r = f
        .http
        .send_with(Method::GET, &admin("/v1/placements/orders"), None, &ops)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["default"]["kind"], "shared");

    // Give partition hooli its own index, while the proxy runs.
    let own = json!({"kind": "index", "cluster": "main", "index": "t-rt-hooli"}).to_string();
    let r = f
        .http
        .send_with(
            Method::PUT,
            &admin("/v1/placements/orders/hooli"),
            Some(own.clone().into()),
            &ops,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let epoch = r.json()["epoch"].as_u64().unwrap();
    let put = f
        .call(
            "gateway",
            Method::PUT,
            "/orders/_doc/1?refresh=true",
            Some(json!({"n": 1})),
            &[("x-osproxy-partition", "hooli")],
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.text());
    assert_eq!(
        direct(&node().url(), Method::GET, "/t-rt-hooli/_doc/1")
            .await
            .json()["_source"],
        json!({"n": 1}),
        "served from the new placement without a restart"
    );

    // Compare-and-swap: absent epoch on an existing entry, or a stale one, is a 409 with the current entry.
    let elsewhere =
        json!({"kind": "index", "cluster": "main", "index": "t-rt-hooli-2"}).to_string();
    let r = f
        .http
        .send_with(
            Method::PUT,
            &admin("/v1/placements/orders/hooli"),
            Some(elsewhere.clone().into()),
            &ops,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["current"]["epoch"], epoch);
    let r = f
        .http
        .send_with(
            Method::PUT,
            &admin(&format!(
                "/v1/placements/orders/hooli?epoch={}",
                epoch + 100
            )),
            Some(elsewhere.clone().into()),
            &ops,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", r.text());
    let r = f
        .http
        .send_with(
            Method::PUT,
            &admin(&format!("/v1/placements/orders/hooli?epoch={epoch}")),
            Some(elsewhere.into()),
            &ops,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["epoch"].as_u64().unwrap() > epoch);

    // A placement that would put another partition into hooli's old index, or into the shared one as its own, is refused.
    let steal = json!({"kind": "index", "cluster": "main", "index": "t-rt-shared"}).to_string();
    let r = f
        .http
        .send_with(
            Method::PUT,
            &admin("/v1/placements/orders/wayne"),
            Some(steal.into()),
            &ops,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    let r = f
        .http
        .send_with(
            Method::PUT,
            &admin("/v1/placements/orders/wayne"),
            Some(
                json!({"kind": "cluster", "cluster": "nope"})
                    .to_string()
                    .into(),
            ),
            &ops,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());

    // The catalogue too: a logical index added, served at once, removed.
    let notes = json!({"default": {"kind": "shared", "cluster": "main", "index": "t-rt-notes"}})
        .to_string();
    let r = f
        .http
        .send_with(
            Method::PUT,
            &admin("/v1/catalogue/notes"),
            Some(notes.clone().into()),
            &ops,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let notes_epoch = r.json()["epoch"].as_u64().unwrap();
    let put = f
        .call(
            "acme-svc",
            Method::PUT,
            "/notes/_doc/1?refresh=true",
            Some(json!({"text": "hi"})),
            &[],
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.text());
    let raw = direct(
        &node().url(),
        Method::GET,
        "/t-rt-notes/_doc/acme:1?routing=acme",
    )
    .await
    .json();
    assert_eq!(raw["_source"], json!({"_tenant": "acme", "text": "hi"}));
    let r = f
        .http
        .send_with(
            Method::PUT,
            &admin("/v1/catalogue/notes"),
            Some(notes.into()),
            &ops,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["current_epoch"], notes_epoch);
    let ambiguous = json!({"id": "{partition}-{id}", "default": {"kind": "shared", "cluster": "main", "index": "t-rt-notes"}}).to_string();
    let r = f
        .http
        .send_with(
            Method::PUT,
            &admin(&format!("/v1/catalogue/notes?epoch={notes_epoch}")),
            Some(ambiguous.into()),
            &ops,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    let stealing =
        json!({"default": {"kind": "shared", "cluster": "main", "index": "t-rt-shared"}})
            .to_string();
    let r = f
        .http
        .send_with(
            Method::PUT,
            &admin("/v1/catalogue/letters"),
            Some(stealing.into()),
            &ops,
        )
        .await
        .unwrap();
    assert_eq!(
        r.status,
        400,
        "another logical index's shared index: {}",
        r.text()
    );
    let r = f
        .http
        .send_with(
            Method::DELETE,
            &admin(&format!("/v1/catalogue/notes?epoch={notes_epoch}")),
            None,
            &ops,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let gone = f
        .call("acme-svc", Method::GET, "/notes/_doc/1", None, &[])
        .await;
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
