//! The copy engine of partition moves, against the real node: a shared →
//! dedicated copy while the partition keeps changing, catch-up by sequence
//! number, deletions found by id comparison, idempotent re-copies, and the
//! way back (dedicated → shared) with the partition field and ids rebuilt,
//! and a purge of the source that takes the moving partition only.

use std::time::Duration;

use http::Method;
use osproxy_control::LogicalIndex;
use osproxy_core::{PartitionId, Placement};
use osproxy_migrate::copy::{self as migrate, Side, Unfenced};
use osproxy_observe::Metrics;
use osproxy_testkit::{Http, ProxyInstance};
use osproxy_upstream::{UpstreamCluster, Upstreams};
use serde_json::{json, Value};

use crate::common::node;
use crate::control::{ACME, GLOBEX};

const T: Duration = Duration::from_secs(30);

async fn put(http: &Http, p: &ProxyInstance, token: &str, id: &str, body: Value) {
    let auth = format!("Bearer {token}");
    let r = http
        .send_with(
            Method::PUT,
            &format!("{}/orders/_doc/{id}", p.url()),
            Some(body.to_string().into()),
            &[("authorization", auth.as_str())],
        )
        .await
        .unwrap();
    assert!(r.status.is_success(), "{}", r.text());
}

async fn direct(http: &Http, method: Method, path: &str) -> Value {
    http.send(method, &format!("{}{path}", node().url()), None)
        .await
        .unwrap()
        .json()
}

async fn delete(http: &Http, p: &ProxyInstance, token: &str, id: &str) {
    let auth = format!("Bearer {token}");
    http.send_with(
        Method::DELETE,
        &format!("{}/orders/_doc/{id}", p.url()),
        None,
        &[("authorization", auth.as_str())],
    )
    .await
    .unwrap();
}

/// A proxy (memory backend) whose `orders` lives in the shared index
/// `mv-shared`, with acme and globex as tenants; and its config text.
fn start_proxy(dir: &std::path::Path) -> (ProxyInstance, String) {
    std::fs::write(dir.join("acme"), ACME).unwrap();
    std::fs::write(dir.join("globex"), GLOBEX).unwrap();
    let config = format!(
        "[[clusters]]\nid = \"main\"\nurl = \"{}\"\n\
         [[principals]]\nname = \"acme-svc\"\ntoken_file = \"{d}/acme\"\npartitions = [\"acme\"]\n\
         [[principals]]\nname = \"globex-svc\"\ntoken_file = \"{d}/globex\"\npartitions = [\"globex\"]\n\
         [[indices]]\nname = \"orders\"\ndefault = {{ kind = \"shared\", cluster = \"main\", index = \"mv-shared\" }}\n",
        node().url(),
        d = dir.display()
    );
    let p =
        ProxyInstance::start(std::path::Path::new(env!("CARGO_BIN_EXE_osproxy")), &config).unwrap();
    (p, config)
}

/// The writes made while copying: five updates, three new documents, a12
/// deleted and written again (its `_version` starts over, its sequence
/// number does not), a10 and a11 deleted.
async fn write_while_copying(http: &Http, p: &ProxyInstance) {
    for i in 0..5 {
        let body = json!({"n": i, "title": "updated"});
        put(http, p, ACME, &format!("a{i}"), body).await;
    }
    for i in 50..53 {
        put(http, p, ACME, &format!("a{i}"), json!({"n": i})).await;
    }
    delete(http, p, ACME, "a12").await;
    let recreated = json!({"n": 12, "title": "recreated"});
    put(http, p, ACME, "a12", recreated).await;
    for id in ["a10", "a11"] {
        delete(http, p, ACME, id).await;
    }
}

/// A shared placement on `main` in `index`.
fn shared_in(index: &str) -> Placement {
    Placement::Shared {
        cluster: "main".into(),
        index: index.into(),
    }
}

fn side<'a>(
    cluster: &'a UpstreamCluster,
    placement: &'a Placement,
    logical: &'a LogicalIndex,
    partition: &'a PartitionId,
) -> Side<'a> {
    Side {
        cluster,
        placement,
        logical,
        partition,
    }
}

/// acme's partition is copied from the shared index into its own while it
/// keeps changing, caught up by sequence number, its deletions found by id
/// comparison, copied again harmlessly, copied back into another shared
/// index with the field and ids rebuilt, and purged from the source
/// without touching the tenant that stays.
#[tokio::test(flavor = "multi_thread")]
async fn a_partition_is_copied_caught_up_and_verified_between_placement_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let (p, config) = start_proxy(dir.path());
    let http = Http::new();
    for i in 0..50 {
        let body = json!({"n": i, "title": format!("acme {i}")});
        put(&http, &p, ACME, &format!("a{i}"), body).await;
    }
    for i in 0..10 {
        put(&http, &p, GLOBEX, &format!("g{i}"), json!({"n": i})).await;
    }

    let cfg = osproxy_config::from_str(&config, std::iter::empty(), &[]).unwrap();
    let metrics = Metrics::new(["main"]);
    let upstreams = Upstreams::new(&cfg.clusters, &cfg.upstream, &metrics).unwrap();
    let cluster = upstreams.by_id("main").unwrap();
    let logical = LogicalIndex::from_config(&cfg.indices[0], 1).unwrap();
    let acme = PartitionId::new("acme").unwrap();
    let shared = shared_in("mv-shared");
    let own = Placement::Index {
        cluster: "main".into(),
        index: "mv-acme".into(),
    };
    let from = side(cluster, &shared, &logical, &acme);
    let to = side(cluster, &own, &logical, &acme);

    let checkpoint = migrate::checkpoint(&from, T).await.unwrap();
    migrate::prepare(&from, &to, T).await.unwrap();
    assert_eq!(migrate::purge(&to, T, &Unfenced).await.unwrap(), 0);
    let mut pages = 0;
    let first = migrate::copy(&from, &to, None, T, |_| pages += 1, &Unfenced, None)
        .await
        .unwrap();
    assert_eq!(first.written, 50, "{first:?}");
    assert!(pages >= 1);
    assert_eq!(migrate::count(&to, T).await.unwrap(), 50);

    // Writes made while copying: updates, new documents, deletions.
    write_while_copying(&http, &p).await;
    let caught = migrate::copy(&from, &to, Some(checkpoint), T, |_| {}, &Unfenced, None)
        .await
        .unwrap();
    assert!(
        caught.written >= 8,
        "updates and new documents caught up: {caught:?}"
    );
    assert!(
        caught.written < 50,
        "only what changed since the checkpoint: {caught:?}"
    );
    assert_eq!(
        migrate::count(&to, T).await.unwrap(),
        53,
        "deletions are not found by sequence number"
    );
    assert_eq!(
        migrate::remove_extra(&from, &to, T, &Unfenced)
            .await
            .unwrap(),
        2
    );
    assert_eq!(migrate::count(&from, T).await.unwrap(), 51);
    assert_eq!(migrate::count(&to, T).await.unwrap(), 51);
    assert_eq!(
        migrate::ids(&from, T).await.unwrap(),
        migrate::ids(&to, T).await.unwrap()
    );

    // The destination holds logical ids and no partition field; the latest
    // versions won.
    let doc = direct(&http, Method::GET, "/mv-acme/_doc/a1").await;
    assert_eq!(doc["_source"]["title"], "updated", "{doc}");
    let doc = direct(&http, Method::GET, "/mv-acme/_doc/a12").await;
    assert_eq!(doc["_source"]["title"], "recreated", "{doc}");
    assert!(doc["_source"].get("_tenant").is_none(), "{doc}");
    // Nothing of another partition moved.
    let other = direct(&http, Method::POST, "/mv-acme/_count?q=_id:g1").await;
    assert_eq!(other["count"], 0);

    // Copying again is harmless: the same documents, the same content.
    let again = migrate::copy(&from, &to, None, T, |_| {}, &Unfenced, None)
        .await
        .unwrap();
    assert_eq!(again.written, 51, "{again:?}");
    assert_eq!(migrate::count(&to, T).await.unwrap(), 51);
    let doc = direct(&http, Method::GET, "/mv-acme/_doc/a12").await;
    assert_eq!(doc["_source"]["title"], "recreated", "{doc}");

    // The way back, into another shared index: the field and ids rebuilt.
    let shared2 = shared_in("mv-shared2");
    let back = side(cluster, &shared2, &logical, &acme);
    migrate::prepare(&to, &back, T).await.unwrap();
    let copied = migrate::copy(&to, &back, None, T, |_| {}, &Unfenced, None)
        .await
        .unwrap();
    assert_eq!(copied.written, 51);
    assert_eq!(migrate::purge(&back, T, &Unfenced).await.unwrap(), 51);
    assert_eq!(migrate::count(&back, T).await.unwrap(), 0);
    migrate::copy(&to, &back, None, T, |_| {}, &Unfenced, None)
        .await
        .unwrap();
    let doc = direct(&http, Method::GET, "/mv-shared2/_doc/acme:a1?routing=acme").await;
    assert_eq!(doc["_source"]["_tenant"], "acme", "{doc}");
    assert_eq!(doc["_source"]["title"], "updated", "{doc}");
    let mapping = direct(&http, Method::GET, "/mv-shared2/_mapping").await;
    assert_eq!(
        mapping["mv-shared2"]["mappings"]["properties"]["_tenant"]["type"], "keyword",
        "{mapping}"
    );

    // `--delete-source` from a shared index purges the moving partition and
    // nothing of the tenants that stay there.
    let _ = direct(&http, Method::POST, "/mv-shared/_refresh").await;
    let globex_before = direct(&http, Method::POST, "/mv-shared/_count?q=_tenant:globex").await;
    assert_eq!(globex_before["count"], 10, "{globex_before}");
    assert_eq!(migrate::purge(&from, T, &Unfenced).await.unwrap(), 51);
    let _ = direct(&http, Method::POST, "/mv-shared/_refresh").await;
    let acme_after = direct(&http, Method::POST, "/mv-shared/_count?q=_tenant:acme").await;
    assert_eq!(acme_after["count"], 0, "{acme_after}");
    let globex_after = direct(&http, Method::POST, "/mv-shared/_count?q=_tenant:globex").await;
    assert_eq!(
        globex_after["count"], 10,
        "the other tenant's documents were purged: {globex_after}"
    );
}
